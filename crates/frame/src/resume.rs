//! Resumable frame streams (`docs/protocol.md` §4.8): the envelope that
//! lets one bridge connection move between carriers (the home link and a
//! data channel) with nothing lost, duplicated or reordered.
//!
//! Each bridge message sent on a resumable connection is numbered, per
//! direction, from 0; the receiver acknowledges with the next number it
//! expects. A sender keeps what is not acknowledged and sends it again on
//! the carrier it moves to; a receiver delivers in number order, drops
//! numbers it has delivered, and holds later ones until the gap fills.
//!
//! Every envelope is one binary message:
//!
//! | byte 0 | then |
//! |---|---|
//! | `0x01` data, binary message | sequence `u64` BE, the message |
//! | `0x02` data, text message | sequence `u64` BE, the message (UTF-8) |
//! | `0x03` ack | next expected sequence `u64` BE |

use bytes::{BufMut as _, Bytes, BytesMut};

/// The label of a page's resumable data channel (a carrier).
pub const RESUME_CHANNEL_LABEL: &str = "resume";

/// The reserved path on the home link where signal-api sends a page's
/// frame connection (`?session=<id>`, and `&resume=1` when the page had a
/// connection already). signal-api's relay refuses page requests under
/// `/.beeline/`.
pub const RESUME_PATH: &str = "/.beeline/resume";

/// The close code of a frame connection that asked to resume (`resume=1`)
/// a connection the home no longer has (home-peer restarted, or the
/// connection closed): the page's streams are gone.
pub const UNKNOWN_CONNECTION_CLOSE: u16 = 4410;

use crate::v2::Encoded;

const DATA_BINARY: u8 = 0x01;
const DATA_TEXT: u8 = 0x02;
const ACK: u8 = 0x03;

/// Bytes an envelope adds to a data message.
pub const DATA_OVERHEAD: usize = 9;

/// One envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// A numbered bridge message.
    Data {
        /// Its number in this direction.
        seq: u64,
        /// The bridge message.
        message: Encoded,
    },
    /// Everything below `next` arrived.
    Ack {
        /// The next number the receiver expects.
        next: u64,
    },
}

/// Why bytes are not an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Shorter than its kind needs.
    #[error("resumable envelope truncated ({0} bytes)")]
    Truncated(usize),
    /// An unknown first byte.
    #[error("unknown resumable envelope kind {0:#04x}")]
    UnknownKind(u8),
    /// A text message that is not UTF-8.
    #[error("resumable text message is not UTF-8")]
    NotUtf8,
    /// An ack with bytes after it.
    #[error("resumable ack has {0} trailing bytes")]
    Trailing(usize),
}

impl Envelope {
    /// The envelope as one binary message.
    pub fn encode(&self) -> Bytes {
        match self {
            Self::Data { seq, message } => {
                let (kind, body): (u8, &[u8]) = match message {
                    Encoded::Binary(b) => (DATA_BINARY, b),
                    Encoded::Text(t) => (DATA_TEXT, t.as_bytes()),
                };
                let mut out = BytesMut::with_capacity(DATA_OVERHEAD + body.len());
                out.put_u8(kind);
                out.put_u64(*seq);
                out.put_slice(body);
                out.freeze()
            }
            Self::Ack { next } => {
                let mut out = BytesMut::with_capacity(9);
                out.put_u8(ACK);
                out.put_u64(*next);
                out.freeze()
            }
        }
    }

    /// Reads one envelope.
    pub fn decode(bytes: &Bytes) -> Result<Self, EnvelopeError> {
        let kind = *bytes.first().ok_or(EnvelopeError::Truncated(0))?;
        if !matches!(kind, DATA_BINARY | DATA_TEXT | ACK) {
            return Err(EnvelopeError::UnknownKind(kind));
        }
        let number: [u8; 8] = bytes
            .get(1..9)
            .and_then(|b| b.try_into().ok())
            .ok_or(EnvelopeError::Truncated(bytes.len()))?;
        let number = u64::from_be_bytes(number);
        let rest = bytes.slice(9..);
        Ok(match kind {
            DATA_BINARY => Self::Data {
                seq: number,
                message: Encoded::Binary(rest),
            },
            DATA_TEXT => Self::Data {
                seq: number,
                message: Encoded::Text(
                    String::from_utf8(rest.to_vec()).map_err(|_| EnvelopeError::NotUtf8)?,
                ),
            },
            _ if !rest.is_empty() => return Err(EnvelopeError::Trailing(rest.len())),
            _ => Self::Ack { next: number },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        for envelope in [
            Envelope::Data {
                seq: 0,
                message: Encoded::Binary(Bytes::from_static(b"\x00\x01")),
            },
            Envelope::Data {
                seq: u64::MAX,
                message: Encoded::Text("{\"type\":\"hello\"}".into()),
            },
            Envelope::Data {
                seq: 7,
                message: Encoded::Binary(Bytes::new()),
            },
            Envelope::Ack { next: 12345 },
        ] {
            assert_eq!(Envelope::decode(&envelope.encode()).unwrap(), envelope);
        }
        assert_eq!(
            Envelope::Ack { next: 1 }.encode().as_ref(),
            &[3, 0, 0, 0, 0, 0, 0, 0, 1]
        );
    }

    #[test]
    fn bad_envelopes_are_errors() {
        let bad = |b: &'static [u8]| Envelope::decode(&Bytes::from_static(b)).unwrap_err();
        assert_eq!(bad(b""), EnvelopeError::Truncated(0));
        assert_eq!(bad(b"\x01\x00\x00"), EnvelopeError::Truncated(3));
        assert_eq!(
            bad(b"\x09\x00\x00\x00\x00\x00\x00\x00\x00"),
            EnvelopeError::UnknownKind(9)
        );
        assert_eq!(
            bad(b"\x02\x00\x00\x00\x00\x00\x00\x00\x00\xff"),
            EnvelopeError::NotUtf8
        );
        assert_eq!(
            bad(b"\x03\x00\x00\x00\x00\x00\x00\x00\x00x"),
            EnvelopeError::Trailing(1)
        );
    }
}
