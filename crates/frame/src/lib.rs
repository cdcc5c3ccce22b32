//! The frames that carry HTTP over a data channel. Pure data: no I/O, no
//! WebRTC, no HTTP client.
//!
//! Protocol v1 is the specification's format. Each channel message is one
//! JSON object (a trailing newline is allowed):
//!
//! - request, browser → home:
//!   `{"id": "...", "method": "POST", "path": "/v1/chat", "headers"?: {...}, "body"?: "<base64>"}`
//! - response, home → browser, zero or more
//!   `{"id": "...", "type": "chunk", "data": "<body text>"}` then
//!   `{"id": "...", "type": "done", "status": 200}`.
//!
//! Unknown fields are ignored, and so are frames of unknown `type`
//! ([`decode_response`] returns `Ok(None)` for them), so later versions can
//! add both without breaking v1 peers.
//!
//! Entry points: [`decode_request`] / [`Request::to_json`] on the request
//! side, [`ResponseFrame::to_json`] / [`decode_response`] on the response
//! side, and [`Utf8Chunker`] to cut a byte stream into `chunk` texts.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

mod chunker;
pub mod proxy;
pub mod resume;
pub mod v2;
pub mod ws;

pub use chunker::{split_text, Utf8Chunker};
pub use v2::{decode_binary, decode_text, Encoded, ErrorCode, Frame, StreamId};

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The message is not a JSON object.
    #[error("frame is not a JSON object: {0}")]
    NotJson(String),
    /// A required field is missing or has the wrong type.
    #[error("frame field `{field}` is missing or invalid")]
    BadField {
        /// The stream id, when the frame had a usable one, so the error can
        /// be reported on that stream.
        id: Option<StreamId>,
        /// The offending field.
        field: &'static str,
    },
    /// `body` is not valid base64.
    #[error("request body is not valid base64")]
    BadBody {
        /// The request id.
        id: String,
    },
    /// A binary message shorter than its 5-byte header.
    #[error("binary frame shorter than its 5-byte header")]
    Truncated,
    /// A binary frame of a type this version does not define.
    #[error("unknown binary frame type 0x{kind:02x}")]
    UnknownBinaryType {
        /// The stream id from the header.
        id: u32,
        /// The type byte.
        kind: u8,
    },
}

impl FrameError {
    /// The id of the stream the bad frame belongs to, if it could be told.
    pub fn stream_id(&self) -> Option<StreamId> {
        match self {
            Self::NotJson(_) | Self::Truncated => None,
            Self::BadField { id, .. } => id.clone(),
            Self::BadBody { id } => Some(StreamId::Text(id.clone())),
            Self::UnknownBinaryType { id, .. } => Some(StreamId::Binary(*id)),
        }
    }
}

/// An HTTP request carried in one frame (v1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Client-chosen id that the response frames repeat.
    pub id: String,
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Request headers (names as sent; HTTP treats them case-insensitively).
    pub headers: BTreeMap<String, String>,
    /// The decoded request body.
    pub body: Vec<u8>,
}

#[derive(Deserialize)]
struct RawRequest {
    id: Option<serde_json::Value>,
    method: Option<serde_json::Value>,
    path: Option<serde_json::Value>,
    #[serde(default)]
    headers: Option<serde_json::Value>,
    #[serde(default)]
    body: Option<serde_json::Value>,
    #[serde(default, rename = "type")]
    kind: Option<serde_json::Value>,
}

/// Decodes a request frame. `Ok(None)` for a frame of a type this version
/// does not know (it carries a `type` field), which callers ignore.
pub fn decode_request(message: &[u8]) -> Result<Option<Request>, FrameError> {
    let raw: RawRequest = serde_json::from_slice(trim_newline(message))
        .map_err(|e| FrameError::NotJson(e.to_string()))?;
    if raw.kind.is_some() {
        return Ok(None);
    }
    let id = match raw.id {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s,
        _ => {
            return Err(FrameError::BadField {
                id: None,
                field: "id",
            })
        }
    };
    let bad = |field| FrameError::BadField {
        id: Some(StreamId::Text(id.clone())),
        field,
    };
    let method = match raw.method {
        Some(serde_json::Value::String(s)) if is_token(&s) => s,
        _ => return Err(bad("method")),
    };
    let path = match raw.path {
        Some(serde_json::Value::String(s)) if s.starts_with('/') => s,
        _ => return Err(bad("path")),
    };
    let mut headers = BTreeMap::new();
    match raw.headers {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(map)) => {
            for (k, v) in map {
                match v {
                    serde_json::Value::String(v) => {
                        headers.insert(k, v);
                    }
                    _ => return Err(bad("headers")),
                }
            }
        }
        Some(_) => return Err(bad("headers")),
    }
    let body = match raw.body {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::String(s)) => base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| FrameError::BadBody { id: id.clone() })?,
        Some(_) => return Err(bad("body")),
    };
    Ok(Some(Request {
        id,
        method,
        path,
        headers,
        body,
    }))
}

/// An HTTP method is a token (RFC 9110): no spaces or separators.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(crate) fn trim_newline(message: &[u8]) -> &[u8] {
    let mut m = message;
    while let [rest @ .., b'\n' | b'\r'] = m {
        m = rest;
    }
    m
}

#[derive(Serialize)]
struct RawRequestOut<'a> {
    id: &'a str,
    method: &'a str,
    path: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
}

impl Request {
    /// Encodes the request as a v1 frame.
    pub fn to_json(&self) -> String {
        let body = (!self.body.is_empty())
            .then(|| base64::engine::general_purpose::STANDARD.encode(&self.body));
        serde_json::to_string(&RawRequestOut {
            id: &self.id,
            method: &self.method,
            path: &self.path,
            headers: &self.headers,
            body,
        })
        .expect("serialising plain strings cannot fail")
    }
}

/// A response frame (v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ResponseFrame {
    /// A piece of the response body, as text.
    Chunk {
        /// The request id.
        id: String,
        /// Body text.
        data: String,
    },
    /// The end of the response.
    Done {
        /// The request id.
        id: String,
        /// The HTTP status code.
        status: u16,
    },
}

impl ResponseFrame {
    /// The request id this frame answers.
    pub fn id(&self) -> &str {
        match self {
            Self::Chunk { id, .. } | Self::Done { id, .. } => id,
        }
    }

    /// Encodes the frame as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("serialising plain strings cannot fail")
    }

    /// The encoded size of a `chunk` frame for `id` carrying `data`, without
    /// building it, so callers can keep frames under a message-size limit.
    pub fn chunk_len(id: &str, data: &str) -> usize {
        const OVERHEAD: usize = r#"{"type":"chunk","id":"","data":""}"#.len();
        OVERHEAD + json_escaped_len(id) + json_escaped_len(data)
    }
}

fn json_escaped_len(s: &str) -> usize {
    s.chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum()
}

/// Decodes a response frame. `Ok(None)` for frames of unknown type.
pub fn decode_response(message: &[u8]) -> Result<Option<ResponseFrame>, FrameError> {
    let value: serde_json::Value = serde_json::from_slice(trim_newline(message))
        .map_err(|e| FrameError::NotJson(e.to_string()))?;
    let kind = value
        .get("type")
        .and_then(|t| t.as_str())
        .map(str::to_owned);
    let kind = kind.as_deref();
    if !matches!(kind, Some("chunk" | "done")) {
        if value.is_object() {
            return Ok(None);
        }
        return Err(FrameError::NotJson("not an object".into()));
    }
    let id = value
        .get("id")
        .and_then(|v| v.as_str())
        .map(|s| StreamId::Text(s.to_owned()));
    serde_json::from_value(value)
        .map(Some)
        .map_err(|_| FrameError::BadField {
            id,
            field: if kind == Some("chunk") {
                "data"
            } else {
                "status"
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_specification_request() {
        let r = decode_request(
            br#"{"id": "req-uuid", "method": "POST", "path": "/v1/chat", "body": "aGVsbG8="}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.id, "req-uuid");
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/chat");
        assert_eq!(r.body, b"hello");
        assert!(r.headers.is_empty());
    }

    #[test]
    fn ignores_unknown_fields_and_trailing_newline() {
        let r =
            decode_request(b"{\"id\":\"1\",\"method\":\"GET\",\"path\":\"/\",\"future\":[1,2]}\n")
                .unwrap()
                .unwrap();
        assert_eq!(r.method, "GET");
        assert!(r.body.is_empty());
    }

    #[test]
    fn frames_with_a_type_are_not_requests() {
        assert_eq!(
            decode_request(br#"{"type":"hello","id":"x"}"#).unwrap(),
            None
        );
    }

    #[test]
    fn bad_requests_say_which_stream() {
        let e = decode_request(br#"{"id":"7","method":"GET","path":"v1"}"#).unwrap_err();
        assert_eq!(e.stream_id(), Some(StreamId::Text("7".into())));
        let e =
            decode_request(br#"{"id":"8","method":"GET","path":"/","body":"***"}"#).unwrap_err();
        assert_eq!(e, FrameError::BadBody { id: "8".into() });
        let e = decode_request(br#"{"method":"GET","path":"/"}"#).unwrap_err();
        assert_eq!(e.stream_id(), None);
        let e = decode_request(br#"{"id":"9","method":"G ET","path":"/"}"#).unwrap_err();
        assert_eq!(e.stream_id(), Some(StreamId::Text("9".into())));
        let e = decode_request(br#"{"id":"9","method":"GET","path":"/","headers":{"a":1}}"#)
            .unwrap_err();
        assert_eq!(e.stream_id(), Some(StreamId::Text("9".into())));
        assert!(matches!(
            decode_request(b"[1,2]"),
            Err(FrameError::NotJson(_))
        ));
        assert!(matches!(
            decode_request(b"\xff\xfe"),
            Err(FrameError::NotJson(_))
        ));
    }

    #[test]
    fn request_round_trip() {
        let mut headers = BTreeMap::new();
        headers.insert("content-type".into(), "application/json".into());
        let r = Request {
            id: "a".into(),
            method: "PUT".into(),
            path: "/x?y=1".into(),
            headers,
            body: vec![0, 255, 10],
        };
        assert_eq!(decode_request(r.to_json().as_bytes()).unwrap().unwrap(), r);
    }

    #[test]
    fn response_frames_match_the_specification() {
        let c = ResponseFrame::Chunk {
            id: "req-uuid".into(),
            data: "data: hi\n\n".into(),
        };
        let v: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": "req-uuid", "type": "chunk", "data": "data: hi\n\n"})
        );
        let d = ResponseFrame::Done {
            id: "req-uuid".into(),
            status: 200,
        };
        let v: serde_json::Value = serde_json::from_str(&d.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": "req-uuid", "type": "done", "status": 200})
        );
        assert_eq!(decode_response(d.to_json().as_bytes()).unwrap(), Some(d));
        assert_eq!(
            decode_response(br#"{"id":"1","type":"head","status":200}"#).unwrap(),
            None
        );
        assert!(decode_response(br#"{"id":"1","type":"done","status":"x"}"#).is_err());
    }

    #[test]
    fn chunk_len_is_exact() {
        for data in ["", "plain", "quote\" back\\ nl\n tab\t ctl\u{1} é ☃"] {
            let frame = ResponseFrame::Chunk {
                id: "i\"d".into(),
                data: data.into(),
            };
            assert_eq!(
                ResponseFrame::chunk_len("i\"d", data),
                frame.to_json().len(),
                "{data:?}"
            );
        }
    }
}
