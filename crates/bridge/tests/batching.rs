//! What the upstream has already produced leaves with the response head,
//! in one write of the channel (`Channel::send_many`): a small response is
//! one WebSocket write on the home link instead of three. A body still to
//! come never holds the head back, and a body over the window still waits
//! for credit.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use beeline_bridge::{
    serve, BridgeConfig, Channel, ChannelClosed, Client, ClientOptions, HttpUpstream, Received,
};
use beeline_frame::Encoded;
use bytes::Bytes;

mod common;
use common::{get_head, pipe, MemChannel};

/// The server's end of the pipe, noting how many messages each write held.
struct Writes {
    inner: MemChannel,
    sizes: Arc<Mutex<Vec<usize>>>,
}

impl Channel for Writes {
    async fn send(&self, message: Encoded) -> Result<(), ChannelClosed> {
        self.sizes.lock().unwrap().push(1);
        self.inner.send(message).await
    }

    async fn send_many(&self, messages: Vec<Encoded>) -> Result<(), ChannelClosed> {
        self.sizes.lock().unwrap().push(messages.len());
        for message in messages {
            self.inner.send(message).await?;
        }
        Ok(())
    }

    async fn recv(&self) -> Option<Received> {
        self.inner.recv().await
    }

    fn max_message_size(&self) -> usize {
        self.inner.max_message_size()
    }
}

async fn upstream() -> String {
    let app = Router::new()
        .route("/small", get(|| async { "hello" }))
        .route(
            "/later",
            get(|| async {
                let stream = futures::stream::once(async {
                    tokio::time::sleep(Duration::from_millis(2000)).await;
                    Ok::<_, std::io::Error>(Bytes::from_static(b"data: late\n\n"))
                });
                Body::from_stream(stream)
            }),
        )
        .route("/large", get(|| async { vec![5u8; 200 * 1024] }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn client(window: u32) -> (Client<MemChannel>, Arc<Mutex<Vec<usize>>>) {
    let (client, server) = pipe(64 * 1024);
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let server = Writes {
        inner: server,
        sizes: Arc::clone(&sizes),
    };
    let upstream = Arc::new(HttpUpstream::new(&upstream().await).unwrap());
    tokio::spawn(serve(Arc::new(server), upstream, BridgeConfig::default()));
    let client = Client::connect(
        Arc::new(client),
        ClientOptions {
            binary: true,
            window,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    (client, sizes)
}

#[tokio::test]
async fn a_small_response_is_one_write() {
    let (client, sizes) = client(256 * 1024).await;
    for _ in 0..3 {
        sizes.lock().unwrap().clear();
        let response = client.send(get_head("/small"), None).await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body.collect().await.unwrap(), b"hello");
        // Head, data and end, together.
        assert_eq!(*sizes.lock().unwrap(), [3]);
    }
}

#[tokio::test]
async fn a_body_still_to_come_does_not_hold_the_head_back() {
    let (client, _) = client(256 * 1024).await;
    let asked = Instant::now();
    let response = client.send(get_head("/later"), None).await.unwrap();
    let head_after = asked.elapsed();
    assert!(
        head_after < Duration::from_millis(1500),
        "the head came after {head_after:?}, with the body (2 s)"
    );
    assert_eq!(response.body.collect().await.unwrap(), b"data: late\n\n");
}

#[tokio::test]
async fn a_body_over_the_window_still_waits_for_credit() {
    // A 16 KiB window: 200 KiB can only arrive as the client grants more.
    let (client, sizes) = client(16 * 1024).await;
    sizes.lock().unwrap().clear();
    let response = client.send(get_head("/large"), None).await.unwrap();
    let body = response.body.collect().await.unwrap();
    assert_eq!(body.len(), 200 * 1024);
    assert!(body.iter().all(|&b| b == 5));
    let sizes = sizes.lock().unwrap();
    assert!(
        sizes.len() > 200 / 16,
        "{} writes for 200 KiB through a 16 KiB window: {sizes:?}",
        sizes.len()
    );
}
