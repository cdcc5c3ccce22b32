//! Protocol version 2: negotiated extensions, in JSON and binary framing.
//! See `docs/protocol.md` §3–§5.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{FrameError, Request};

/// The protocol version this crate speaks at most.
pub const VERSION: u32 = 2;

/// Header names and values; several values of one name are joined.
pub type Headers = BTreeMap<String, String>;

/// Identifies a stream: a string in JSON frames, a `u32` in binary frames.
/// The framing of a stream follows from the kind of its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamId {
    /// A JSON-framed stream.
    Text(String),
    /// A binary-framed stream.
    Binary(u32),
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(s) => f.write_str(s),
            Self::Binary(n) => write!(f, "#{n}"),
        }
    }
}

/// `hello`: the client asks for version 2 and features.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Highest version the client speaks.
    pub version: u32,
    /// Features the client would like.
    #[serde(default)]
    pub features: Vec<String>,
    /// Initial per-stream window the client grants for response bodies.
    #[serde(default)]
    pub window: u32,
}

/// `agree`: the home peer's answer to `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agree {
    /// The agreed version.
    pub version: u32,
    /// Features both sides support.
    #[serde(default)]
    pub features: Vec<String>,
    /// Initial per-stream window the home peer grants for request bodies.
    #[serde(default)]
    pub window: u32,
    /// Most streams in flight at once.
    #[serde(default)]
    pub max_streams: u32,
    /// Largest request head (header names + values + path), in bytes.
    #[serde(default)]
    pub max_header_bytes: u32,
    /// Largest request body, in bytes.
    #[serde(default)]
    pub max_body_bytes: u64,
    /// Largest WebSocket message the home peer accepts (with the
    /// `websocket` feature); 0 means [`crate::ws::DEFAULT_MAX_MESSAGE_BYTES`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_ws_message_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The head of a request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RequestHead {
    /// HTTP method.
    pub method: String,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Request headers.
    #[serde(default)]
    pub headers: Headers,
    /// The scheme of the URL the client addressed (`http` or `https`), told
    /// to the home service as `x-forwarded-proto`; absent means `https`
    /// (the channel itself is encrypted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// `"websocket"` asks the home peer to open a WebSocket to the home
    /// service; the stream then carries messages both ways (§4.7,
    /// [`crate::ws`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<String>,
    /// True when no body follows.
    #[serde(default, skip_serializing_if = "is_false")]
    pub end: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The head of a response.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResponseHead {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    #[serde(default)]
    pub headers: Headers,
}

/// Error codes of `error` frames (`docs/protocol.md` §4.6).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Malformed frame.
    BadFrame,
    /// A message above the receiver's max-message-size.
    FrameTooLarge,
    /// Data or end for a stream never opened.
    UnknownStream,
    /// More streams in flight than allowed.
    TooManyStreams,
    /// Request head too large.
    HeaderTooLarge,
    /// Request body too large.
    BodyTooLarge,
    /// Data beyond the granted window.
    FlowControl,
    /// No progress for the idle timeout.
    IdleTimeout,
    /// The upstream could not be reached.
    UpstreamUnavailable,
    /// The upstream broke off mid-response.
    UpstreamFailed,
    /// The request cannot be forwarded.
    BadRequest,
    /// The home peer is going away.
    ShuttingDown,
    /// A code this version does not know.
    Other(String),
}

impl ErrorCode {
    /// The code as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::BadFrame => "bad_frame",
            Self::FrameTooLarge => "frame_too_large",
            Self::UnknownStream => "unknown_stream",
            Self::TooManyStreams => "too_many_streams",
            Self::HeaderTooLarge => "header_too_large",
            Self::BodyTooLarge => "body_too_large",
            Self::FlowControl => "flow_control",
            Self::IdleTimeout => "idle_timeout",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamFailed => "upstream_failed",
            Self::BadRequest => "bad_request",
            Self::ShuttingDown => "shutting_down",
            Self::Other(s) => s,
        }
    }

    /// Parses a wire code.
    pub fn parse(s: &str) -> Self {
        match s {
            "bad_frame" => Self::BadFrame,
            "frame_too_large" => Self::FrameTooLarge,
            "unknown_stream" => Self::UnknownStream,
            "too_many_streams" => Self::TooManyStreams,
            "header_too_large" => Self::HeaderTooLarge,
            "body_too_large" => Self::BodyTooLarge,
            "flow_control" => Self::FlowControl,
            "idle_timeout" => Self::IdleTimeout,
            "upstream_unavailable" => Self::UpstreamUnavailable,
            "upstream_failed" => Self::UpstreamFailed,
            "bad_request" => Self::BadRequest,
            "shutting_down" => Self::ShuttingDown,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The HTTP status a v1 client is given for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::BadFrame | Self::BadRequest => 400,
            Self::FrameTooLarge | Self::BodyTooLarge => 413,
            Self::TooManyStreams => 429,
            Self::HeaderTooLarge => 431,
            Self::UpstreamUnavailable | Self::UpstreamFailed => 502,
            Self::ShuttingDown => 503,
            Self::IdleTimeout => 504,
            _ => 500,
        }
    }
}

/// Every frame of protocol versions 1 and 2.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// v1 request (a JSON object without `type`).
    V1Request(Request),
    /// v1 response frame (`chunk` or `done`).
    V1Response(crate::ResponseFrame),
    /// Negotiation request.
    Hello(Hello),
    /// Negotiation answer.
    Agree(Agree),
    /// v2 request head.
    Request {
        /// Stream id.
        id: StreamId,
        /// The head.
        head: RequestHead,
    },
    /// v2 response head.
    Response {
        /// Stream id.
        id: StreamId,
        /// The head.
        head: ResponseHead,
    },
    /// A piece of a body.
    Data {
        /// Stream id.
        id: StreamId,
        /// Body bytes.
        data: Bytes,
    },
    /// End of a body.
    End {
        /// Stream id.
        id: StreamId,
    },
    /// Abandon a stream.
    Cancel {
        /// Stream id.
        id: StreamId,
    },
    /// A stream (or, without id, an unattributable frame) failed.
    Error {
        /// Stream id, when known.
        id: Option<StreamId>,
        /// What went wrong.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
    /// Flow-control window grant.
    Credit {
        /// Stream id.
        id: StreamId,
        /// Bytes granted.
        bytes: u32,
    },
}

/// An encoded frame, ready to send as one channel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// A text message (JSON).
    Text(String),
    /// A binary message.
    Binary(Bytes),
}

impl Encoded {
    /// Size of the message in bytes.
    pub fn len(&self) -> usize {
        match self {
            Self::Text(s) => s.len(),
            Self::Binary(b) => b.len(),
        }
    }

    /// True for an empty message (never produced by [`Frame::encode`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Binary frame types (`docs/protocol.md` §5).
mod kind {
    pub(super) const REQUEST: u8 = 0x01;
    pub(super) const RESPONSE: u8 = 0x02;
    pub(super) const DATA: u8 = 0x03;
    pub(super) const END: u8 = 0x04;
    pub(super) const CANCEL: u8 = 0x05;
    pub(super) const ERROR: u8 = 0x06;
    pub(super) const CREDIT: u8 = 0x07;
}

/// Bytes of the binary frame header.
pub const BINARY_HEADER_LEN: usize = 5;

#[derive(Serialize, Deserialize)]
struct ErrorBody {
    code: String,
    #[serde(default)]
    message: String,
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

impl Frame {
    /// The stream this frame belongs to, if any.
    pub fn stream_id(&self) -> Option<StreamId> {
        match self {
            Self::V1Request(r) => Some(StreamId::Text(r.id.clone())),
            Self::V1Response(r) => Some(StreamId::Text(r.id().to_owned())),
            Self::Hello(_) | Self::Agree(_) => None,
            Self::Request { id, .. }
            | Self::Response { id, .. }
            | Self::Data { id, .. }
            | Self::End { id }
            | Self::Cancel { id }
            | Self::Credit { id, .. } => Some(id.clone()),
            Self::Error { id, .. } => id.clone(),
        }
    }

    /// Encodes the frame. Frames of binary streams become binary messages;
    /// everything else is JSON text.
    pub fn encode(&self) -> Encoded {
        match self.stream_id() {
            Some(StreamId::Binary(n)) => Encoded::Binary(self.encode_binary(n)),
            _ => Encoded::Text(self.encode_json()),
        }
    }

    fn encode_binary(&self, id: u32) -> Bytes {
        let json = |v: &dyn erased::Ser| v.to_vec();
        let (kind, payload): (u8, Bytes) = match self {
            Self::Request { head, .. } => (kind::REQUEST, json(head).into()),
            Self::Response { head, .. } => (kind::RESPONSE, json(head).into()),
            Self::Data { data, .. } => (kind::DATA, data.clone()),
            Self::End { .. } => (kind::END, Bytes::new()),
            Self::Cancel { .. } => (kind::CANCEL, Bytes::new()),
            Self::Error { code, message, .. } => (
                kind::ERROR,
                json(&ErrorBody {
                    code: code.as_str().to_owned(),
                    message: message.clone(),
                })
                .into(),
            ),
            Self::Credit { bytes, .. } => {
                (kind::CREDIT, Bytes::copy_from_slice(&bytes.to_be_bytes()))
            }
            // Only stream frames carry binary ids.
            _ => unreachable!("frame without a binary stream id"),
        };
        let mut out = BytesMut::with_capacity(BINARY_HEADER_LEN + payload.len());
        out.put_u8(kind);
        out.put_u32(id);
        out.extend_from_slice(&payload);
        out.freeze()
    }

    fn encode_json(&self) -> String {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_owned(), v);
        };
        let id_value = |id: &StreamId| match id {
            StreamId::Text(s) => Value::String(s.clone()),
            // Not reachable through `encode`; kept total for direct callers.
            StreamId::Binary(n) => Value::from(*n),
        };
        match self {
            Self::V1Request(r) => return r.to_json(),
            Self::V1Response(r) => return r.to_json(),
            Self::Data { id, data } => return data_json(&id_value(id), data),
            Self::Hello(h) => {
                put("type", "hello".into());
                merge(&mut m, h);
            }
            Self::Agree(a) => {
                put("type", "agree".into());
                merge(&mut m, a);
            }
            Self::Request { id, head } => {
                put("type", "request".into());
                put("id", id_value(id));
                merge(&mut m, head);
            }
            Self::Response { id, head } => {
                put("type", "response".into());
                put("id", id_value(id));
                merge(&mut m, head);
            }
            Self::End { id } => {
                put("type", "end".into());
                put("id", id_value(id));
            }
            Self::Cancel { id } => {
                put("type", "cancel".into());
                put("id", id_value(id));
            }
            Self::Error { id, code, message } => {
                put("type", "error".into());
                if let Some(id) = id {
                    put("id", id_value(id));
                }
                put("code", code.as_str().into());
                put("message", message.clone().into());
            }
            Self::Credit { id, bytes } => {
                put("type", "credit".into());
                put("id", id_value(id));
                put("bytes", (*bytes).into());
            }
        }
        Value::Object(m).to_string()
    }
}

/// `{"type":"data","id":…,"data":"<base64>"}` written directly: the bulk
/// of the message is base64, which never needs JSON escaping, so it is not
/// built as a `Value` and scanned again.
fn data_json(id: &Value, data: &[u8]) -> String {
    let id = id.to_string();
    let mut out = String::with_capacity(32 + id.len() + data.len().div_ceil(3) * 4);
    out.push_str(r#"{"type":"data","id":"#);
    out.push_str(&id);
    out.push_str(r#","data":""#);
    b64().encode_string(data, &mut out);
    out.push_str(r#""}"#);
    out
}

fn merge<T: Serialize>(m: &mut Map<String, Value>, v: &T) {
    if let Ok(Value::Object(fields)) = serde_json::to_value(v) {
        m.extend(fields);
    }
}

/// Serialising through a trait object keeps `encode_binary` short.
mod erased {
    pub(super) trait Ser {
        fn to_vec(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_vec(&self) -> Vec<u8> {
            serde_json::to_vec(self).expect("plain data serialises")
        }
    }
}

/// Decodes a text (JSON) message. `Ok(None)` for a frame of unknown type.
pub fn decode_text(message: &[u8]) -> Result<Option<Frame>, FrameError> {
    let value: Value = serde_json::from_slice(crate::trim_newline(message))
        .map_err(|e| FrameError::NotJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(FrameError::NotJson("not a JSON object".into()));
    };
    let Some(kind) = obj.get("type") else {
        let bytes = Value::Object(obj).to_string();
        return crate::decode_request(bytes.as_bytes()).map(|r| r.map(Frame::V1Request));
    };
    let Some(kind) = kind.as_str() else {
        return Err(FrameError::BadField {
            id: text_id(&obj),
            field: "type",
        });
    };
    let id = text_id(&obj);
    let need_id = || {
        id.clone().ok_or(FrameError::BadField {
            id: None,
            field: "id",
        })
    };
    let bad = |field: &'static str| FrameError::BadField {
        id: id.clone(),
        field,
    };
    let frame = match kind {
        "chunk" | "done" => {
            return crate::decode_response(message).map(|r| r.map(Frame::V1Response))
        }
        "hello" => Frame::Hello(
            serde_json::from_value(Value::Object(obj.clone())).map_err(|_| bad("hello"))?,
        ),
        "agree" => Frame::Agree(
            serde_json::from_value(Value::Object(obj.clone())).map_err(|_| bad("agree"))?,
        ),
        "request" => {
            let id = need_id()?;
            let head: RequestHead =
                serde_json::from_value(Value::Object(obj.clone())).map_err(|_| bad("request"))?;
            check_request_head(&head).map_err(bad)?;
            Frame::Request { id, head }
        }
        "response" => {
            let id = need_id()?;
            let head: ResponseHead =
                serde_json::from_value(Value::Object(obj.clone())).map_err(|_| bad("response"))?;
            Frame::Response { id, head }
        }
        "data" => {
            let id = need_id()?;
            let data = obj
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("data"))?;
            let data = b64().decode(data).map_err(|_| bad("data"))?;
            Frame::Data {
                id,
                data: data.into(),
            }
        }
        "end" => Frame::End { id: need_id()? },
        "cancel" => Frame::Cancel { id: need_id()? },
        "credit" => {
            let id = need_id()?;
            let bytes = obj
                .get("bytes")
                .and_then(Value::as_u64)
                .and_then(|b| u32::try_from(b).ok());
            Frame::Credit {
                id,
                bytes: bytes.ok_or_else(|| bad("bytes"))?,
            }
        }
        "error" => {
            let body: ErrorBody =
                serde_json::from_value(Value::Object(obj.clone())).map_err(|_| bad("code"))?;
            Frame::Error {
                id,
                code: ErrorCode::parse(&body.code),
                message: body.message,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(frame))
}

fn text_id(obj: &Map<String, Value>) -> Option<StreamId> {
    match obj.get("id") {
        Some(Value::String(s)) if !s.is_empty() => Some(StreamId::Text(s.clone())),
        _ => None,
    }
}

fn check_request_head(head: &RequestHead) -> Result<(), &'static str> {
    if !crate::is_token(&head.method) {
        return Err("method");
    }
    if !head.path.starts_with('/') {
        return Err("path");
    }
    Ok(())
}

/// Decodes a binary message.
pub fn decode_binary(message: &[u8]) -> Result<Frame, FrameError> {
    if message.len() < BINARY_HEADER_LEN {
        return Err(FrameError::Truncated);
    }
    let kind = message[0];
    let n = u32::from_be_bytes([message[1], message[2], message[3], message[4]]);
    let id = StreamId::Binary(n);
    let payload = &message[BINARY_HEADER_LEN..];
    let bad = |field: &'static str| FrameError::BadField {
        id: Some(StreamId::Binary(n)),
        field,
    };
    let empty = |field| {
        if payload.is_empty() {
            Ok(())
        } else {
            Err(bad(field))
        }
    };
    Ok(match kind {
        kind::REQUEST => {
            let head: RequestHead = serde_json::from_slice(payload).map_err(|_| bad("request"))?;
            check_request_head(&head).map_err(bad)?;
            Frame::Request { id, head }
        }
        kind::RESPONSE => Frame::Response {
            id,
            head: serde_json::from_slice(payload).map_err(|_| bad("response"))?,
        },
        kind::DATA => Frame::Data {
            id,
            data: Bytes::copy_from_slice(payload),
        },
        kind::END => {
            empty("end")?;
            Frame::End { id }
        }
        kind::CANCEL => {
            empty("cancel")?;
            Frame::Cancel { id }
        }
        kind::ERROR => {
            let body: ErrorBody = serde_json::from_slice(payload).map_err(|_| bad("error"))?;
            Frame::Error {
                id: Some(id),
                code: ErrorCode::parse(&body.code),
                message: body.message,
            }
        }
        kind::CREDIT => {
            let bytes: [u8; 4] = payload.try_into().map_err(|_| bad("credit"))?;
            Frame::Credit {
                id,
                bytes: u32::from_be_bytes(bytes),
            }
        }
        other => return Err(FrameError::UnknownBinaryType { id: n, kind: other }),
    })
}

/// The largest body slice that fits one `data` frame of `id` in a message
/// of at most `max_message` bytes.
pub fn max_data_payload(id: &StreamId, max_message: usize) -> usize {
    match id {
        StreamId::Binary(_) => max_message.saturating_sub(BINARY_HEADER_LEN),
        StreamId::Text(s) => {
            // {"type":"data","id":"<id>","data":"<base64>"}; ids are escaped
            // at most 6x; base64 is 4/3 of the input.
            let overhead = r#"{"type":"data","id":"","data":""}"#.len() + 6 * s.len();
            max_message.saturating_sub(overhead) / 4 * 3
        }
    }
    .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_frames() -> Vec<Frame> {
        let mut headers = Headers::new();
        headers.insert("content-type".into(), "text/plain".into());
        let mut frames = Vec::new();
        for id in [StreamId::Text("s-1".into()), StreamId::Binary(7)] {
            frames.extend([
                Frame::Request {
                    id: id.clone(),
                    head: RequestHead {
                        method: "PUT".into(),
                        path: "/x?y".into(),
                        headers: headers.clone(),
                        scheme: Some("http".into()),
                        upgrade: None,
                        end: false,
                    },
                },
                Frame::Request {
                    id: id.clone(),
                    head: RequestHead {
                        method: "GET".into(),
                        path: "/".into(),
                        headers: Headers::new(),
                        scheme: None,
                        upgrade: Some("websocket".into()),
                        end: true,
                    },
                },
                Frame::Response {
                    id: id.clone(),
                    head: ResponseHead {
                        status: 206,
                        headers: headers.clone(),
                    },
                },
                Frame::Data {
                    id: id.clone(),
                    data: Bytes::from_static(&[0, 1, 2, 255]),
                },
                Frame::Data {
                    id: id.clone(),
                    data: Bytes::new(),
                },
                Frame::End { id: id.clone() },
                Frame::Cancel { id: id.clone() },
                Frame::Error {
                    id: Some(id.clone()),
                    code: ErrorCode::BodyTooLarge,
                    message: "too big".into(),
                },
                Frame::Credit {
                    id: id.clone(),
                    bytes: 65536,
                },
            ]);
        }
        frames.push(Frame::Error {
            id: None,
            code: ErrorCode::BadFrame,
            message: "x".into(),
        });
        frames.push(Frame::Hello(Hello {
            version: 2,
            features: vec!["binary".into()],
            window: 1024,
        }));
        frames
    }

    fn decode(e: &Encoded) -> Frame {
        match e {
            Encoded::Text(t) => decode_text(t.as_bytes()).unwrap().unwrap(),
            Encoded::Binary(b) => decode_binary(b).unwrap(),
        }
    }

    #[test]
    fn every_frame_round_trips() {
        for f in sample_frames() {
            assert_eq!(decode(&f.encode()), f, "{f:?}");
        }
    }

    #[test]
    fn binary_ids_give_binary_messages() {
        let e = Frame::End {
            id: StreamId::Binary(0x01020304),
        }
        .encode();
        assert_eq!(e, Encoded::Binary(Bytes::from_static(&[4, 1, 2, 3, 4])));
        let e = Frame::Credit {
            id: StreamId::Binary(1),
            bytes: 258,
        }
        .encode();
        assert_eq!(
            e,
            Encoded::Binary(Bytes::from_static(&[7, 0, 0, 0, 1, 0, 0, 1, 2]))
        );
    }

    #[test]
    fn bad_binary_frames() {
        assert_eq!(decode_binary(&[1, 0, 0]), Err(FrameError::Truncated));
        assert_eq!(
            decode_binary(&[0x42, 0, 0, 0, 9]),
            Err(FrameError::UnknownBinaryType { id: 9, kind: 0x42 })
        );
        let e = decode_binary(&[kind::REQUEST, 0, 0, 0, 3, b'{']).unwrap_err();
        assert_eq!(e.stream_id(), Some(StreamId::Binary(3)));
        assert!(decode_binary(&[kind::CREDIT, 0, 0, 0, 3, 1]).is_err());
        assert!(decode_binary(&[kind::END, 0, 0, 0, 3, 1]).is_err());
    }

    #[test]
    fn data_payload_fits_the_message() {
        for max in [64, 1000, 65536, 262144] {
            for id in [
                StreamId::Binary(1),
                StreamId::Text("a-\"quoted\"-id".into()),
            ] {
                let n = max_data_payload(&id, max);
                let f = Frame::Data {
                    id: id.clone(),
                    data: Bytes::from(vec![0xff; n]),
                };
                assert!(
                    f.encode().len() <= max,
                    "{id:?} {max}: {}",
                    f.encode().len()
                );
            }
        }
    }
}
