//! Protocol v2 over a real data channel: heads before bodies, headers both
//! ways, cancel, flow control with a stalled reader, and the golden invalid
//! frames.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use beeline_bridge::DataChannelLink;
use beeline_bridge::{BodyStream, Client, ClientError, ClientOptions};
use beeline_frame::v2::RequestHead;
use beeline_frame::{decode_binary, decode_response, decode_text, Frame, ResponseFrame};
use bytes::Bytes;
use common::{browser_connect, pattern, sha256_hex, world};
use futures::StreamExt as _;

fn get(path: &str) -> RequestHead {
    RequestHead {
        method: "GET".into(),
        path: path.into(),
        ..Default::default()
    }
}

/// Sends a request and returns the whole response body.
async fn fetch(
    client: &Client<DataChannelLink>,
    head: RequestHead,
    body: Option<BodyStream>,
) -> Vec<u8> {
    let response = client.send(head, body).await.expect("response head");
    response.body.collect().await.expect("response body")
}

async fn client(
    binary: bool,
) -> (
    common::World,
    Client<DataChannelLink>,
    Arc<beeline_transport::Peer>,
) {
    let world = world().await;
    let (peer, channel) = browser_connect(&world.signal_url).await;
    let options = ClientOptions {
        binary,
        ..Default::default()
    };
    let client = Client::connect(Arc::new(DataChannelLink::new(channel)), options)
        .await
        .expect("agree");
    (world, client, peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_head_arrives_before_the_body() {
    for binary in [true, false] {
        let (world, client, _peer) = client(binary).await;
        let started = std::time::Instant::now();
        let response = client.send(get("/slow"), None).await.unwrap();
        let head_at = started.elapsed();
        assert_eq!(response.status, 200);
        assert_eq!(
            response.headers.get("x-slow").map(String::as_str),
            Some("yes")
        );
        // The body takes 2 s; the head must not wait for it.
        assert!(
            head_at < Duration::from_millis(1000),
            "head after {head_at:?}"
        );
        let body = response.body.collect().await.unwrap();
        assert!(String::from_utf8(body).unwrap().ends_with("tick 19\n"));
        assert_eq!(world.disconnects.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_and_binary_bodies() {
    let (_world, client, _peer) = client(true).await;
    let mut head = get("/headers");
    head.headers.insert("x-custom".into(), "42".into());
    head.headers
        .insert("connection".into(), "close, x-drop-me".into());
    head.headers.insert("x-drop-me".into(), "secret".into());
    head.headers.insert("host".into(), "example.com".into());
    let text = String::from_utf8(fetch(&client, head, None).await).unwrap();
    assert!(text.contains("x-custom: 42"), "{text}");
    assert!(text.contains("x-forwarded-host: example.com"), "{text}");
    assert!(text.contains("x-forwarded-proto: https"), "{text}");
    // The browser's address as the home peer sees it (loopback, v4 or v6).
    assert!(
        text.contains("x-forwarded-for: 127.0.0.1") || text.contains("x-forwarded-for: ::1"),
        "{text}"
    );
    assert!(!text.contains("x-drop-me"), "{text}");

    // Binary-safe, byte-identical upload and download (1 MiB each).
    let data = pattern(7, 1 << 20);
    let body = futures::stream::iter(
        data.chunks(100_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    )
    .boxed();
    let head = RequestHead {
        method: "POST".into(),
        path: "/sha256".into(),
        ..Default::default()
    };
    let answer = String::from_utf8(fetch(&client, head, Some(body)).await).unwrap();
    assert_eq!(answer, format!("{} {}", data.len(), sha256_hex(&data)));
    let down = fetch(&client, get(&format!("/bytes?n={}&seed=3", 1 << 20)), None).await;
    assert_eq!(sha256_hex(&down), sha256_hex(&pattern(3, 1 << 20)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_drops_the_upstream_request() {
    let (world, client, _peer) = client(true).await;
    let mut response = client.send(get("/slow"), None).await.unwrap();
    assert!(response.body.next().await.unwrap().is_ok());
    drop(response); // sends `cancel`
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while world.disconnects.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstream never saw the disconnect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The channel still serves.
    let ok = fetch(&client, get("/bytes?n=10"), None).await;
    assert_eq!(ok, pattern(0, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_stalls_only_its_own_stream() {
    let (_world, client, _peer) = client(true).await;
    let client = Arc::new(client);
    const SIZE: usize = 1 << 20;
    // The stalled stream: far more than one window (256 KiB).
    let stalled = client
        .send(get(&format!("/bytes?n={}&seed=99", 4 * SIZE)), None)
        .await
        .unwrap();
    let mut others = tokio::task::JoinSet::new();
    for i in 0..99u64 {
        let client = Arc::clone(&client);
        others.spawn(async move {
            let r = client
                .send(get(&format!("/bytes?n={SIZE}&seed={i}")), None)
                .await?;
            let body = r.body.collect().await?;
            Ok::<_, ClientError>((i, body))
        });
    }
    let all = tokio::time::timeout(Duration::from_secs(120), async {
        let mut n = 0;
        while let Some(r) = others.join_next().await {
            let (i, body) = r.unwrap().unwrap();
            assert_eq!(
                sha256_hex(&body),
                sha256_hex(&pattern(i, SIZE)),
                "stream {i}"
            );
            n += 1;
        }
        n
    })
    .await
    .expect("the other 99 streams complete while one reader is stalled");
    assert_eq!(all, 99);
    // The stalled reader resumes and gets everything.
    let body = tokio::time::timeout(Duration::from_secs(60), stalled.body.collect())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sha256_hex(&body), sha256_hex(&pattern(99, 4 * SIZE)));
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_golden_invalid_frame_gets_its_error_and_the_channel_keeps_serving() {
    let world = world().await;
    let (_peer, channel) = browser_connect(&world.signal_url).await;
    channel.send_text(r#"{"type":"hello","version":2,"features":["binary","cancel","credit"],"window":262144}"#).await.unwrap();
    let agree = channel.recv().await.unwrap();
    assert!(matches!(
        decode_text(&agree.data),
        Ok(Some(Frame::Agree(_)))
    ));

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10);
    for (n, path) in files.iter().enumerate() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        if let Some(text) = v["json"].as_str() {
            channel.send_text(text).await.unwrap();
        } else {
            channel
                .send_binary(Bytes::from(hex(v["binary_hex"].as_str().unwrap())))
                .await
                .unwrap();
        }
        let expect = &v["expect"];
        let reply = tokio::time::timeout(Duration::from_secs(5), channel.recv())
            .await
            .expect(&name)
            .unwrap();
        if let Some(status) = expect.get("v1_status").and_then(|s| s.as_u64()) {
            // v1: reason as chunk(s), then done with the status.
            let id = expect["id"].as_str().unwrap();
            let mut frame = decode_response(&reply.data).unwrap().unwrap();
            while let ResponseFrame::Chunk { .. } = frame {
                frame = decode_response(&channel.recv().await.unwrap().data)
                    .unwrap()
                    .unwrap();
            }
            assert_eq!(
                frame,
                ResponseFrame::Done {
                    id: id.into(),
                    status: status as u16
                },
                "{name}"
            );
        } else {
            let frame = if !reply.is_text {
                decode_binary(&reply.data).unwrap()
            } else {
                decode_text(&reply.data).unwrap().unwrap()
            };
            let Frame::Error { id, code, .. } = frame else {
                panic!("{name}: expected an error frame, got {frame:?}")
            };
            assert_eq!(code.as_str(), expect["code"].as_str().unwrap(), "{name}");
            let id = match id {
                None => serde_json::Value::Null,
                Some(beeline_frame::StreamId::Text(s)) => s.into(),
                Some(beeline_frame::StreamId::Binary(n)) => n.into(),
            };
            assert_eq!(id, expect["id"], "{name}");
        }
        // The same channel still serves a good (v1) request.
        let good = format!(r#"{{"id":"good-{n}","method":"GET","path":"/bytes?n=5"}}"#);
        channel.send_text(&good).await.unwrap();
        let mut body = String::new();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), channel.recv())
                .await
                .expect("good reply")
                .unwrap();
            match decode_response(&m.data).unwrap() {
                Some(ResponseFrame::Chunk { data, .. }) => body.push_str(&data),
                Some(ResponseFrame::Done { status, .. }) => {
                    assert_eq!(status, 200, "{name}");
                    break;
                }
                None => panic!("{name}: unexpected extra frame"),
            }
        }
        assert_eq!(
            body.as_bytes(),
            String::from_utf8_lossy(&pattern(0, 5)).as_bytes(),
            "{name}"
        );
    }
}
