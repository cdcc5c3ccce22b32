//! Any binary message must decode to a frame or an error — never panic —
//! and a decoded frame must re-encode to a message that decodes the same.
#![no_main]

use beeline_frame::{decode_binary, Encoded};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode_binary(data) {
        let Encoded::Binary(bytes) = frame.encode() else {
            panic!("binary stream frames encode as binary")
        };
        assert_eq!(
            decode_binary(&bytes).expect("re-encoded frame decodes"),
            frame
        );
    }
});
