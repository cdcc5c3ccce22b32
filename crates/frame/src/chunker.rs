//! Cutting a byte stream into UTF-8 text pieces for v1 `chunk` frames.

/// Turns arbitrary byte chunks into valid UTF-8 text without splitting a
/// character across two frames: an incomplete sequence at the end of one
/// input is held back and completed by the next. Invalid bytes become U+FFFD
/// (v1 frames carry text only).
#[derive(Debug, Default)]
pub struct Utf8Chunker {
    pending: Vec<u8>,
}

impl Utf8Chunker {
    /// Creates an empty chunker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the text that is complete so far.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let keep = incomplete_suffix_len(&self.pending);
        let split = self.pending.len() - keep;
        let tail = self.pending.split_off(split);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = tail;
        text
    }

    /// Ends the stream; returns whatever was held back (lossily).
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// Length of a trailing, possibly valid but incomplete, UTF-8 sequence.
fn incomplete_suffix_len(bytes: &[u8]) -> usize {
    // A sequence is at most 4 bytes: look back up to 3 for its lead byte.
    for back in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte, keep looking for the lead
        }
        let needed = match b {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return 0,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

/// Splits `text` into pieces of at most `max_bytes` bytes on character
/// boundaries (a piece is never empty unless `text` is).
pub fn split_text(text: &str, max_bytes: usize) -> impl Iterator<Item = &str> {
    let max_bytes = max_bytes.max(4);
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(max_bytes);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multibyte_characters_survive_any_split() {
        let text = "héllo ☃ wörld 🐝!";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let mut c = Utf8Chunker::new();
            let mut out = c.push(&bytes[..cut]);
            out += &c.push(&bytes[cut..]);
            out += &c.finish();
            assert_eq!(out, text, "cut at {cut}");
        }
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut c = Utf8Chunker::new();
        let mut out = c.push(b"a\xffb");
        out += &c.push(b"\xe2\x98");
        out += &c.finish();
        assert_eq!(out, "a\u{fffd}b\u{fffd}");
    }

    #[test]
    fn split_text_respects_boundaries() {
        let text = "aé☃🐝".repeat(50);
        let pieces: Vec<&str> = split_text(&text, 7).collect();
        assert!(pieces.iter().all(|p| p.len() <= 7 && !p.is_empty()));
        assert_eq!(pieces.concat(), text);
        assert_eq!(split_text("", 10).count(), 0);
    }
}
