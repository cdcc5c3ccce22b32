//! A trickled ICE candidate line reaches home-peer from any browser through
//! signal-api, and the sans-I/O stack hands what follows its `candidate:`
//! prefix to rtc-ice's parser (`beeline-transport`'s
//! `add_remote_candidate`). Any text must parse or be refused, never panic,
//! and what beeline then reads of a parsed candidate must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtc_ice::candidate::unmarshal_candidate;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(candidate) = unmarshal_candidate(text) {
        // Only what beeline reads next: the address, to check it against
        // the allow-list, and the network type.
        let _ = candidate.address().parse::<std::net::IpAddr>();
        let _ = candidate.network_type().is_tcp();
    }
});
