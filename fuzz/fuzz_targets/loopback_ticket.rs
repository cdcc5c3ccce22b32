//! Any page or local process can send home-peer's loopback listener an
//! `x-beeline-ticket` (or `__beeline_ticket=`): any text must be refused or
//! opened, never panic, and only a ticket this key issued opens.
#![no_main]

use beeline_seal::LoopbackKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = LoopbackKey::from_home_token("fuzz-home-token");
    assert!(
        key.open(text, 0).is_err(),
        "a forged ticket opened: {text:?}"
    );
    // The fuzzer's text as a session id: the ticket issued for it opens to
    // the same session and expiry, and a single changed byte is refused.
    if !text.contains('.') {
        let issued = key.issue(text, 10);
        let ticket = key.open(&issued.ticket, 5).expect("an issued ticket opens");
        assert_eq!((ticket.session.as_str(), ticket.expires), (text, 10));
        assert!(
            key.open(&issued.ticket, 11).is_err(),
            "an expired ticket opened"
        );
        let mut tampered = issued.ticket.into_bytes();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x01;
        if let Ok(tampered) = String::from_utf8(tampered) {
            assert!(key.open(&tampered, 5).is_err(), "a tampered ticket opened");
        }
    }
});
