//! WebSocket messages on a v2 upgrade stream (`docs/protocol.md` §4.7).
//!
//! After the `101` response head, each direction of the stream is a byte
//! stream of *records*, carried in `data` frames exactly like a body (so
//! flow control and frame sizes are those of bodies, and a record may be
//! split across frames anywhere):
//!
//! ```text
//! [kind: u8][length: u32 big-endian][payload: length bytes]
//! ```
//!
//! Kinds are WebSocket opcodes: 1 text (UTF-8), 2 binary, 8 close (payload
//! empty, or a u16 code then a UTF-8 reason of at most 123 bytes), 9 ping,
//! 10 pong. A record is one whole message: boundaries are kept, nothing is
//! fragmented at this level. [`Reader`] takes the bytes as they arrive and
//! hands out whole messages, refusing a message over its size limit as soon
//! as the record's length says so.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes before a record's payload.
pub const RECORD_HEADER_LEN: usize = 5;

/// The largest message a side accepts unless `agree` says otherwise.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 16 << 20;

/// Close codes this layer uses (RFC 6455 §7.4.1).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away.
    pub const GOING_AWAY: u16 = 1001;
    /// A protocol error (a malformed record).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// No status was given (never sent in a close record).
    pub const NO_STATUS: u16 = 1005;
    /// The connection dropped without a close (never sent).
    pub const ABNORMAL: u16 = 1006;
    /// A text message that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// A message over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The far end failed (the upstream could not be reached).
    pub const INTERNAL_ERROR: u16 = 1011;
}

mod kind {
    pub(super) const TEXT: u8 = 1;
    pub(super) const BINARY: u8 = 2;
    pub(super) const CLOSE: u8 = 8;
    pub(super) const PING: u8 = 9;
    pub(super) const PONG: u8 = 10;
}

/// One WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Bytes),
    /// A ping (carried where both ends can use it; browsers cannot).
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close, with a code and reason, or without (code 1005 to the page).
    Close(Option<Close>),
}

/// The code and reason of a close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The close code.
    pub code: u16,
    /// Why, at most 123 bytes of UTF-8.
    pub reason: String,
}

/// Why a record stream was refused; each maps to the close code the
/// receiver answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A kind this version does not know, or a malformed close or control
    /// record.
    #[error("malformed WebSocket record: {0}")]
    Malformed(&'static str),
    /// A text message that is not UTF-8.
    #[error("a text message is not valid UTF-8")]
    InvalidUtf8,
    /// A message over the receiver's limit.
    #[error("a {size}-byte message is over the {limit}-byte limit")]
    TooBig {
        /// The record's length.
        size: u64,
        /// The receiver's limit.
        limit: u64,
    },
}

impl RecordError {
    /// The close code the receiver closes with.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::Malformed(_) => close_code::PROTOCOL_ERROR,
            Self::InvalidUtf8 => close_code::INVALID_DATA,
            Self::TooBig { .. } => close_code::TOO_BIG,
        }
    }
}

impl Message {
    /// The record for this message.
    pub fn encode(&self) -> Bytes {
        let (kind, payload): (u8, Bytes) = match self {
            Self::Text(text) => (kind::TEXT, Bytes::copy_from_slice(text.as_bytes())),
            Self::Binary(data) => (kind::BINARY, data.clone()),
            Self::Ping(data) => (kind::PING, data.clone()),
            Self::Pong(data) => (kind::PONG, data.clone()),
            Self::Close(None) => (kind::CLOSE, Bytes::new()),
            Self::Close(Some(close)) => {
                let reason = truncate_utf8(&close.reason, 123);
                let mut p = BytesMut::with_capacity(2 + reason.len());
                p.put_u16(close.code);
                p.extend_from_slice(reason.as_bytes());
                (kind::CLOSE, p.freeze())
            }
        };
        let mut out = BytesMut::with_capacity(RECORD_HEADER_LEN + payload.len());
        out.put_u8(kind);
        out.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
        out.extend_from_slice(&payload);
        out.freeze()
    }

    /// A close with `code` and `reason`.
    pub fn close(code: u16, reason: impl Into<String>) -> Self {
        Self::Close(Some(Close {
            code,
            reason: reason.into(),
        }))
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Turns the bytes of one direction of an upgrade stream, as they arrive,
/// into whole messages.
#[derive(Debug)]
pub struct Reader {
    buffer: BytesMut,
    limit: u64,
}

impl Reader {
    /// A reader that refuses messages over `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self {
            buffer: BytesMut::new(),
            limit,
        }
    }

    /// Adds bytes from a `data` frame.
    pub fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next whole message, `Ok(None)` when more bytes are needed. An
    /// error is final: the stream must be closed with its code.
    pub fn next_message(&mut self) -> Result<Option<Message>, RecordError> {
        if self.buffer.len() < RECORD_HEADER_LEN {
            return Ok(None);
        }
        let kind = self.buffer[0];
        let length = u64::from(u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]));
        match kind {
            kind::TEXT | kind::BINARY if length > self.limit => {
                return Err(RecordError::TooBig {
                    size: length,
                    limit: self.limit,
                })
            }
            kind::TEXT | kind::BINARY => {}
            kind::CLOSE | kind::PING | kind::PONG if length > 125 => {
                return Err(RecordError::Malformed("a control record over 125 bytes"))
            }
            kind::CLOSE if length == 1 => {
                return Err(RecordError::Malformed("a close record of one byte"))
            }
            kind::CLOSE | kind::PING | kind::PONG => {}
            _ => return Err(RecordError::Malformed("unknown record kind")),
        }
        let total = RECORD_HEADER_LEN + length as usize;
        if self.buffer.len() < total {
            return Ok(None);
        }
        self.buffer.advance(RECORD_HEADER_LEN);
        let payload = self.buffer.split_to(length as usize).freeze();
        let message = match kind {
            kind::TEXT => Message::Text(
                String::from_utf8(payload.to_vec()).map_err(|_| RecordError::InvalidUtf8)?,
            ),
            kind::BINARY => Message::Binary(payload),
            kind::PING => Message::Ping(payload),
            kind::PONG => Message::Pong(payload),
            _ if payload.is_empty() => Message::Close(None),
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                let reason = std::str::from_utf8(&payload[2..])
                    .map_err(|_| RecordError::InvalidUtf8)?
                    .to_owned();
                Message::Close(Some(Close { code, reason }))
            }
        };
        Ok(Some(message))
    }

    /// Bytes held that do not make a whole record yet.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_all(reader: &mut Reader) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(m) = reader.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn records_round_trip_and_keep_boundaries() {
        let messages = vec![
            Message::Text("héllo".into()),
            Message::Binary(Bytes::from_static(&[0, 1, 2, 255])),
            Message::Text(String::new()),
            Message::Ping(Bytes::from_static(b"p")),
            Message::Pong(Bytes::new()),
            Message::close(4001, "bye now"),
            Message::Close(None),
        ];
        let mut reader = Reader::new(1024);
        for m in &messages {
            reader.push(&m.encode());
        }
        assert_eq!(read_all(&mut reader), messages);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn the_wire_form_is_kind_length_payload() {
        assert_eq!(
            &Message::Text("hi".into()).encode()[..],
            &[1, 0, 0, 0, 2, b'h', b'i']
        );
        assert_eq!(
            &Message::close(1000, "ok").encode()[..],
            &[8, 0, 0, 0, 4, 0x03, 0xe8, b'o', b'k']
        );
    }

    #[test]
    fn a_long_reason_is_cut_on_a_character_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let record = Message::close(1000, reason).encode();
        let mut reader = Reader::new(1024);
        reader.push(&record);
        let Some(Message::Close(Some(close))) = reader.next_message().unwrap() else {
            panic!("a close")
        };
        assert!(close.reason.len() <= 123);
        assert!(close.reason.chars().all(|c| c == 'é'));
    }

    #[test]
    fn bad_records_map_to_close_codes() {
        let mut too_big = Reader::new(10);
        too_big.push(&[2, 0, 0, 0, 11]);
        let e = too_big.next_message().unwrap_err();
        assert_eq!(e.close_code(), 1009, "refused from the header alone");

        let mut bad_utf8 = Reader::new(10);
        bad_utf8.push(&[1, 0, 0, 0, 1, 0xff]);
        assert_eq!(bad_utf8.next_message().unwrap_err().close_code(), 1007);

        for bad in [
            &[3u8, 0, 0, 0, 0][..],
            &[9, 0, 0, 0, 126],
            &[8, 0, 0, 0, 1, 0],
        ] {
            let mut r = Reader::new(1 << 20);
            r.push(bad);
            assert_eq!(r.next_message().unwrap_err().close_code(), 1002, "{bad:?}");
        }
    }

    proptest! {
        /// Records split at arbitrary points come out whole and in order.
        #[test]
        fn any_split_reassembles(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..20),
            cuts in proptest::collection::vec(1usize..64, 1..50),
        ) {
            let messages: Vec<Message> = payloads
                .into_iter()
                .enumerate()
                .map(|(i, p)| if i % 3 == 0 {
                    Message::Text(String::from_utf8_lossy(&p).into_owned())
                } else {
                    Message::Binary(Bytes::from(p))
                })
                .collect();
            let wire: Vec<u8> = messages.iter().flat_map(|m| m.encode().to_vec()).collect();
            let mut reader = Reader::new(1 << 20);
            let mut out = Vec::new();
            let mut at = 0;
            let mut cut = cuts.iter().cycle();
            while at < wire.len() {
                let n = (*cut.next().unwrap()).min(wire.len() - at);
                reader.push(&wire[at..at + n]);
                at += n;
                while let Some(m) = reader.next_message().unwrap() {
                    out.push(m);
                }
            }
            prop_assert_eq!(out, messages);
        }
    }
}
