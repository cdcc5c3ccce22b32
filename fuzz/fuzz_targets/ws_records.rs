//! Any bytes, split anywhere, must come out of a WebSocket record reader as
//! messages or one error — never a panic — and every message must re-encode
//! to a record the reader gives back unchanged.
#![no_main]

use beeline_frame::ws::Reader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let mut reader = Reader::new(64 * 1024);
    let step = usize::from(split).max(1);
    for piece in bytes.chunks(step) {
        reader.push(piece);
        loop {
            match reader.next_message() {
                Ok(Some(message)) => {
                    let mut again = Reader::new(64 * 1024);
                    again.push(&message.encode());
                    assert_eq!(
                        again.next_message().expect("re-encoded record reads"),
                        Some(message)
                    );
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
