//! Any text message must decode to a frame, to "unknown type", or to an
//! error — never panic — and a decoded frame must survive a re-encode.
#![no_main]

use beeline_frame::{decode_binary, decode_text, Encoded};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(frame)) = decode_text(data) {
        let again = match frame.encode() {
            Encoded::Text(t) => decode_text(t.as_bytes())
                .expect("re-encoded frame decodes")
                .expect("known type"),
            Encoded::Binary(b) => decode_binary(&b).expect("re-encoded frame decodes"),
        };
        assert_eq!(again, frame);
    }
});
