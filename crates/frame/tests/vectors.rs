//! Every golden vector in `tests/vectors/` decodes to its frame and the frame
//! re-encodes to the vector (binary byte for byte, JSON as a value).

use std::path::{Path, PathBuf};

use beeline_frame::{decode_binary, decode_text, Encoded, Frame, StreamId};
use serde_json::Value;

fn vectors(kind: &str) -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/vectors")
        .join(kind);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 10, "too few vectors in {}", dir.display());
    out
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The canonical JSON form of a frame (binary ids as numbers).
fn semantic(frame: &Frame) -> Value {
    if let Some(StreamId::Binary(n)) = frame.stream_id() {
        let mut v = semantic(&with_id(frame.clone(), StreamId::Text("\u{0}".into())));
        v["id"] = n.into();
        return v;
    }
    match frame.encode() {
        Encoded::Text(t) => serde_json::from_str(&t).unwrap(),
        Encoded::Binary(_) => unreachable!("text ids encode as text"),
    }
}

/// The frame a canonical JSON form describes.
fn from_semantic(v: &Value) -> Frame {
    let mut v = v.clone();
    let binary = v.get("id").and_then(Value::as_u64);
    if binary.is_some() {
        v["id"] = "\u{0}".into();
    }
    let frame = decode_text(v.to_string().as_bytes())
        .unwrap()
        .expect("known frame type");
    match binary {
        Some(n) => with_id(frame, StreamId::Binary(n as u32)),
        None => frame,
    }
}

fn with_id(frame: Frame, id: StreamId) -> Frame {
    match frame {
        Frame::Request { head, .. } => Frame::Request { id, head },
        Frame::Response { head, .. } => Frame::Response { id, head },
        Frame::Data { data, .. } => Frame::Data { id, data },
        Frame::End { .. } => Frame::End { id },
        Frame::Cancel { .. } => Frame::Cancel { id },
        Frame::Credit { bytes, .. } => Frame::Credit { id, bytes },
        Frame::Error { code, message, .. } => Frame::Error {
            id: Some(id),
            code,
            message,
        },
        other => other,
    }
}

#[test]
fn valid_vectors_decode_and_re_encode() {
    for (path, v) in vectors("valid") {
        let name = path.file_name().unwrap().to_string_lossy();
        let expected = &v["frame"];
        let frame = if let Some(text) = v.get("json").and_then(Value::as_str) {
            decode_text(text.as_bytes())
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .expect("known type")
        } else {
            let bytes = hex(v["binary_hex"].as_str().expect("json or binary_hex"));
            decode_binary(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        assert_eq!(&semantic(&frame), expected, "{name}: decoded frame differs");
        let rebuilt = from_semantic(expected);
        assert_eq!(
            rebuilt, frame,
            "{name}: frame from the canonical form differs"
        );
        match (rebuilt.encode(), v.get("binary_hex")) {
            (Encoded::Binary(b), Some(h)) => {
                assert_eq!(b.to_vec(), hex(h.as_str().unwrap()), "{name}: bytes")
            }
            (Encoded::Text(t), None) => {
                let ours: Value = serde_json::from_str(&t).unwrap();
                let theirs: Value =
                    serde_json::from_str(v["json"].as_str().unwrap().trim_end()).unwrap();
                // Unknown fields in the vector are ignored by decoders.
                let theirs = strip_unknown(theirs, &ours);
                assert_eq!(ours, theirs, "{name}: re-encoded JSON");
            }
            (e, _) => panic!("{name}: encoded as the wrong kind: {e:?}"),
        }
    }
}

fn strip_unknown(mut theirs: Value, ours: &Value) -> Value {
    if let (Some(t), Some(o)) = (theirs.as_object_mut(), ours.as_object()) {
        t.retain(|k, _| o.contains_key(k));
    }
    theirs
}

#[test]
fn invalid_vectors_are_errors_for_the_right_stream() {
    for (path, v) in vectors("invalid") {
        let name = path.file_name().unwrap().to_string_lossy();
        let expect = &v["expect"];
        let result = if let Some(text) = v.get("json").and_then(Value::as_str) {
            decode_text(text.as_bytes()).map(|f| f.expect("known type"))
        } else {
            decode_binary(&hex(v["binary_hex"].as_str().unwrap()))
        };
        match expect["code"].as_str().unwrap() {
            "bad_frame" => {
                let err = result.expect_err(&name);
                let id = match err.stream_id() {
                    None => Value::Null,
                    Some(StreamId::Text(s)) => s.into(),
                    Some(StreamId::Binary(n)) => n.into(),
                };
                assert_eq!(
                    id, expect["id"],
                    "{name}: error attributed to the wrong stream"
                );
            }
            // Well-formed frames that only the connection state can reject.
            "unknown_stream" => assert!(result.is_ok(), "{name}: should decode"),
            other => panic!("{name}: unexpected code {other}"),
        }
    }
}
