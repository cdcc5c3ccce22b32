//! Any bytes must decode to a resumable envelope or an error — never a
//! panic — and an envelope must re-encode to bytes that decode to it again.
#![no_main]

use beeline_frame::resume::Envelope;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(envelope) = Envelope::decode(&bytes) {
        assert_eq!(Envelope::decode(&envelope.encode()), Ok(envelope));
    }
});
