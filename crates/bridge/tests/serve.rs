//! The bridge over an in-memory channel against a real HTTP upstream.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::routing::{get, post};
use axum::Router;
mod common;

use beeline_bridge::Channel as _;
use beeline_bridge::{serve, BridgeConfig, HttpUpstream};
use beeline_frame::{decode_response, ResponseFrame};
use bytes::Bytes;
use common::{pipe, MemChannel, SendText as _};

async fn upstream() -> String {
    let app = Router::new()
        .route("/echo", post(|body: Bytes| async move { body }))
        .route(
            "/slow",
            get(|| async {
                let stream = futures::stream::unfold(0, |i| async move {
                    if i == 3 {
                        return None;
                    }
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    Some((
                        Ok::<_, std::io::Error>(Bytes::from(format!("data: {i}\n\n"))),
                        i + 1,
                    ))
                });
                Body::from_stream(stream)
            }),
        )
        .route("/big", get(|| async { "é".repeat(100_000) }))
        .route(
            "/teapot",
            get(|| async { (axum::http::StatusCode::IM_A_TEAPOT, "short and stout") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn start(max: usize, config: BridgeConfig) -> MemChannel {
    let (client, server) = pipe(max);
    let upstream = Arc::new(HttpUpstream::new(&upstream().await).unwrap());
    tokio::spawn(serve(Arc::new(server), upstream, config));
    client
}

/// Reads frames until `done` for `id`, returning (body, status, frames seen).
async fn read_response(client: &MemChannel, id: &str) -> (String, u16, usize) {
    let mut body = String::new();
    let mut frames = 0;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), client.recv())
            .await
            .unwrap()
            .unwrap();
        // A v1 client ignores frames of types it does not know (e.g. a
        // stream-less `error`).
        let Some(frame) = decode_response(&msg.data).unwrap() else {
            continue;
        };
        match frame {
            ResponseFrame::Chunk { id: i, data } if i == id => {
                body.push_str(&data);
                frames += 1;
            }
            ResponseFrame::Done { id: i, status } if i == id => return (body, status, frames),
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

#[tokio::test]
async fn streams_chunks_before_the_upstream_finishes() {
    let client = start(256 * 1024, BridgeConfig::default()).await;
    client
        .send_text(r#"{"id":"s","method":"GET","path":"/slow"}"#.into())
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_millis(250), client.recv()).await;
    let first = first
        .expect("first chunk arrives before the upstream's next write")
        .unwrap();
    assert_eq!(
        decode_response(&first.data).unwrap().unwrap(),
        ResponseFrame::Chunk {
            id: "s".into(),
            data: "data: 0\n\n".into()
        }
    );
    let (rest, status, _) = read_response(&client, "s").await;
    assert_eq!((rest.as_str(), status), ("data: 1\n\ndata: 2\n\n", 200));
}

#[tokio::test]
async fn echoes_body_and_status_and_keeps_frames_small() {
    let client = start(16 * 1024, BridgeConfig::default()).await;
    client
        .send_text(r#"{"id":"e","method":"POST","path":"/echo","body":"aGVsbG8gd29ybGQ="}"#.into())
        .await
        .unwrap();
    assert_eq!(
        read_response(&client, "e").await,
        ("hello world".into(), 200, 1)
    );
    client
        .send_text(r#"{"id":"t","method":"GET","path":"/teapot"}"#.into())
        .await
        .unwrap();
    let (body, status, _) = read_response(&client, "t").await;
    assert_eq!((body.as_str(), status), ("short and stout", 418));
    // 200 kB of two-byte characters through 16 KiB frames (MemChannel asserts the limit).
    client
        .send_text(r#"{"id":"b","method":"GET","path":"/big"}"#.into())
        .await
        .unwrap();
    let (body, status, frames) = read_response(&client, "b").await;
    assert_eq!((body, status), ("é".repeat(100_000), 200));
    assert!(frames > 10);
}

#[tokio::test]
async fn bad_frames_get_answers_and_the_channel_keeps_working() {
    let client = start(256 * 1024, BridgeConfig::default()).await;
    client.send_text("not json".into()).await.unwrap();
    client
        .send_text(r#"{"type":"future-frame","id":"z"}"#.into())
        .await
        .unwrap();
    client
        .send_text(r#"{"id":"p","method":"GET","path":"no-slash"}"#.into())
        .await
        .unwrap();
    let (body, status, _) = read_response(&client, "p").await;
    assert_eq!(status, 400);
    assert!(body.contains("path"), "{body}");
    client
        .send_text(r#"{"id":"x","method":"GET","path":"//evil.example/"}"#.into())
        .await
        .unwrap();
    assert_eq!(read_response(&client, "x").await.1, 400);
    client
        .send_text(r#"{"id":"ok","method":"POST","path":"/echo","body":"b2s="}"#.into())
        .await
        .unwrap();
    assert_eq!(read_response(&client, "ok").await, ("ok".into(), 200, 1));
}

#[tokio::test]
async fn excess_concurrent_streams_get_429() {
    let client = start(
        256 * 1024,
        BridgeConfig {
            max_concurrent_streams: 1,
            ..Default::default()
        },
    )
    .await;
    client
        .send_text(r#"{"id":"a","method":"GET","path":"/slow"}"#.into())
        .await
        .unwrap();
    client
        .send_text(r#"{"id":"b","method":"GET","path":"/slow"}"#.into())
        .await
        .unwrap();
    // "a" streams; "b" is refused at once, interleaved with a's frames.
    let mut b_status = None;
    let mut a_done = false;
    while b_status.is_none() || !a_done {
        let msg = client.recv().await.unwrap();
        match decode_response(&msg.data).unwrap().unwrap() {
            ResponseFrame::Done { id, status } if id == "b" => b_status = Some(status),
            ResponseFrame::Done { id, status } if id == "a" => {
                assert_eq!(status, 200);
                a_done = true;
            }
            _ => {}
        }
    }
    assert_eq!(b_status, Some(429));
}
