//! Property: every frame encodes to a message that decodes to the same frame.

use beeline_frame::v2::{ErrorCode, Headers, RequestHead, ResponseHead};
use beeline_frame::{decode_binary, decode_text, Encoded, Frame, ResponseFrame, StreamId};
use bytes::Bytes;
use proptest::prelude::*;

fn stream_id() -> impl Strategy<Value = StreamId> {
    prop_oneof![
        any::<u32>().prop_map(StreamId::Binary),
        "[a-zA-Z0-9_\\-\"\\\\é]{1,12}".prop_map(StreamId::Text)
    ]
}

fn headers() -> impl Strategy<Value = Headers> {
    proptest::collection::btree_map("[a-z\\-]{1,10}", "[ -~]{0,20}", 0..4)
}

fn frame() -> impl Strategy<Value = Frame> {
    let method = "(GET|POST|PUT|DELETE|PATCH|X-CUSTOM)";
    let path = "/[a-z0-9/?=&%]{0,20}";
    prop_oneof![
        (
            stream_id(),
            method,
            path,
            headers(),
            proptest::option::of("(http|https)"),
            proptest::option::of("websocket"),
            any::<bool>()
        )
            .prop_map(
                |(id, method, path, headers, scheme, upgrade, end)| Frame::Request {
                    id,
                    head: RequestHead {
                        method,
                        path,
                        headers,
                        scheme,
                        upgrade,
                        end
                    }
                }
            ),
        (stream_id(), 100u16..600, headers()).prop_map(|(id, status, headers)| Frame::Response {
            id,
            head: ResponseHead { status, headers }
        }),
        (stream_id(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(id, d)| {
            Frame::Data {
                id,
                data: Bytes::from(d),
            }
        }),
        stream_id().prop_map(|id| Frame::End { id }),
        stream_id().prop_map(|id| Frame::Cancel { id }),
        (stream_id(), any::<u32>()).prop_map(|(id, bytes)| Frame::Credit { id, bytes }),
        (proptest::option::of(stream_id()), "[a-z_]{1,16}", ".{0,40}").prop_map(
            |(id, code, message)| Frame::Error {
                id,
                code: ErrorCode::parse(&code),
                message
            }
        ),
        ("[a-z0-9\\-]{1,12}", ".{0,60}")
            .prop_map(|(id, data)| Frame::V1Response(ResponseFrame::Chunk { id, data })),
        ("[a-z0-9\\-]{1,12}", 100u16..600)
            .prop_map(|(id, status)| Frame::V1Response(ResponseFrame::Done { id, status })),
    ]
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(f in frame()) {
        let back = match f.encode() {
            Encoded::Text(t) => decode_text(t.as_bytes()).unwrap().unwrap(),
            Encoded::Binary(b) => decode_binary(&b).unwrap(),
        };
        prop_assert_eq!(back, f);
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_binary(&bytes);
        let _ = decode_text(&bytes);
    }
}
