//! A browser's offer or answer reaches home-peer through signal-api, so any
//! text must parse to a description or an error, never panic. Two inputs
//! per case: the bytes as a whole description, and the bytes as the lines
//! of a valid data-channel offer's media section (where the attributes
//! beeline reads live), so the fuzzer reaches past the `v=` line at once.
#![no_main]

use beeline_transport::RemoteDescription;
use libfuzzer_sys::fuzz_target;

const HEAD: &str = "v=0\r\n\
o=- 4358802486016024582 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
c=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Rz8u\r\n\
a=ice-pwd:oLJmFIc5ZfJvx2XUlGSsm0Ku\r\n";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for candidate in [text.to_owned(), format!("{HEAD}{text}")] {
        if let Ok(description) = RemoteDescription::parse(&candidate) {
            // Absent means RFC 8841's 64 KiB, 0 means no limit: never 0.
            assert!(description.max_message_size() > 0);
        }
    }
});
