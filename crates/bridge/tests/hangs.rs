//! Streams never hang silently (issue 13): a response head too large for a
//! channel message, and a client that never grants credit, both end with an
//! error frame within the documented time, and the upstream request is
//! dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use beeline_bridge::{serve, BridgeConfig, Client, ClientError, ClientOptions, HttpUpstream};
use bytes::Bytes;

mod common;
use common::{get_head, pipe};

/// Set when the endless body is dropped, i.e. the upstream request ended.
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

async fn upstream(dropped: Arc<AtomicBool>) -> String {
    let app = Router::new()
        .route(
            "/big-head",
            get(|| async { ([("x-big", "a".repeat(100 * 1024))], "body") }),
        )
        .route(
            "/endless",
            get(move || {
                let guard = Dropped(Arc::clone(&dropped));
                async move {
                    let stream = futures::stream::unfold(guard, |guard| async move {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        Some((
                            Ok::<_, std::io::Error>(Bytes::from(vec![7u8; 16 * 1024])),
                            guard,
                        ))
                    });
                    Body::from_stream(stream)
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn client(
    config: BridgeConfig,
    window: u32,
    dropped: Arc<AtomicBool>,
) -> Client<common::MemChannel> {
    let (client, server) = pipe(64 * 1024);
    let upstream = Arc::new(HttpUpstream::new(&upstream(dropped).await).unwrap());
    tokio::spawn(serve(Arc::new(server), upstream, config));
    Client::connect(
        Arc::new(client),
        ClientOptions {
            window,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_response_head_too_large_for_a_message_is_an_error_frame() {
    let client = client(BridgeConfig::default(), 256 * 1024, Arc::default()).await;
    let started = Instant::now();
    match client.send(get_head("/big-head"), None).await {
        Err(ClientError::Stream { code, message }) => {
            assert_eq!(code, "upstream_failed");
            assert!(
                message.contains("larger than a channel message"),
                "{message}"
            );
        }
        Err(other) => panic!("{other}"),
        Ok(r) => panic!("a 100 KiB head arrived as {}", r.status),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // The channel still serves.
    let r = client.send(get_head("/endless"), None).await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_client_that_grants_no_credit_gets_an_error_and_the_upstream_is_dropped() {
    let dropped = Arc::new(AtomicBool::new(false));
    let config = BridgeConfig {
        credit_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let client = client(config, 64 * 1024, Arc::clone(&dropped)).await;
    let started = Instant::now();
    let mut response = client.send(get_head("/endless"), None).await.unwrap();
    // Read nothing for a while: no credit goes back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut outcome = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match response.body.next().await {
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                outcome = Some(e);
                break;
            }
            None => break,
        }
    }
    match outcome {
        Some(ClientError::Stream { code, .. }) => assert_eq!(code, "flow_control"),
        other => panic!("expected a flow_control error, got {other:?}"),
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dropped.load(Ordering::SeqCst) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        dropped.load(Ordering::SeqCst),
        "the upstream request still runs"
    );
    assert!(started.elapsed() < Duration::from_secs(8));
}
