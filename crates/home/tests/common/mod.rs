//! Shared harness: signal-server, an upstream with test routes and the home
//! loop in this process, and a Rust "browser" that connects through them
//! over a real data channel on loopback.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Query;
use axum::routing::{get, post};
use axum::Router;
use beeline_bridge::HttpUpstream;
use beeline_home::HomeConfig;
use beeline_signal_client::SignalClient;
use beeline_signal_server::{SignalConfig, SignalServer};
use bytes::Bytes;
use futures::StreamExt as _;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "test-home-token";

/// The SSE body the chat route streams for a message: one event per word.
pub fn sse_reply(message: &str) -> Vec<String> {
    message
        .split(' ')
        .map(|w| format!("data: {w}\n\n"))
        .chain(["data: [DONE]\n\n".to_owned()])
        .collect()
}

// The pattern generator and the connect step live in beeline-test-support;
// the names below are the ones these tests were written with.
#[allow(unused_imports)]
pub use beeline_test_support::{
    browser_connect, loopback_peer, sha256_hex, xorshift64 as pattern,
    xorshift64_chunks as pattern_chunks, xorshift64_sha256 as pattern_sha256,
};

#[derive(serde::Deserialize)]
struct BytesQuery {
    n: usize,
    #[serde(default)]
    seed: u64,
}

/// The upstream the home peer proxies to.
pub fn upstream_router(disconnects: Arc<std::sync::atomic::AtomicUsize>) -> Router {
    Router::new()
        .route(
            "/v1/chat",
            post(|body: Bytes| async move {
                let message: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let text = message["message"].as_str().unwrap_or("empty").to_owned();
                let stream = futures::stream::iter(sse_reply(&text)).then(|e| async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok::<_, std::io::Error>(Bytes::from(e))
                });
                (
                    [("content-type", "text/event-stream")],
                    Body::from_stream(stream),
                )
            }),
        )
        .route(
            "/bytes",
            get(|Query(q): Query<BytesQuery>| async move {
                let chunks = pattern_chunks(q.seed, q.n, 64 * 1024)
                    .map(|c| Ok::<_, std::io::Error>(Bytes::from(c)));
                let stream = futures::stream::iter(chunks);
                (
                    [
                        ("content-type", "application/octet-stream"),
                        ("x-test", "bytes"),
                    ],
                    Body::from_stream(stream),
                )
            }),
        )
        .route(
            "/sha256",
            post(|body: Body| async move {
                let mut hasher = Sha256::new();
                let mut len = 0usize;
                let mut stream = body.into_data_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| e.to_string())?;
                    len += chunk.len();
                    hasher.update(&chunk);
                }
                let hex: String = hasher
                    .finalize()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                Ok::<_, String>(format!("{len} {hex}"))
            }),
        )
        .route("/headers", get(echo_headers))
        .route(
            "/hold",
            // Headers now, a body that never ends: a stream that stays
            // open however slowly the test runs.
            get(|| async {
                (
                    [("content-type", "text/plain")],
                    Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>()),
                )
            }),
        )
        .route(
            "/slow",
            get(move || {
                let disconnects = Arc::clone(&disconnects);
                async move {
                    // Headers now, body later; counts clients that leave early.
                    struct Guard(Arc<std::sync::atomic::AtomicUsize>, bool);
                    impl Drop for Guard {
                        fn drop(&mut self) {
                            if !self.1 {
                                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                        }
                    }
                    let stream = futures::stream::unfold(
                        (0, Guard(disconnects, false)),
                        |(i, mut guard)| async move {
                            if i == 20 {
                                guard.1 = true;
                                drop(guard);
                                return None;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            Some((
                                Ok::<_, std::io::Error>(Bytes::from(format!("tick {i}\n"))),
                                (i + 1, guard),
                            ))
                        },
                    );
                    (
                        [("content-type", "text/plain"), ("x-slow", "yes")],
                        Body::from_stream(stream),
                    )
                }
            }),
        )
}

/// The `a=ice-ufrag` of a description.
pub fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
}

/// signal-api on a fresh loopback port, with connect info as the binary
/// serves it (client addresses matter to the link and loopback offers);
/// returns its origin.
pub async fn serve_signal(server: &SignalServer) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    serve_signal_on(server, listener);
    origin
}

/// [`serve_signal`] on a listener of the caller's (an address it reuses).
pub fn serve_signal_on(server: &SignalServer, listener: tokio::net::TcpListener) {
    let app = server
        .router()
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let stop = server.shutdown_token();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .unwrap()
    });
}

/// The home link to the signal-api at `origin`, quick to reconnect.
pub fn link_config(origin: &str, token: &str) -> beeline_home::LinkConfig {
    beeline_home::LinkConfig {
        url: beeline_home::link_url(&format!("{origin}/webrtc")).unwrap(),
        token: token.to_owned(),
        bridge: beeline_bridge::BridgeConfig {
            trust_forwarded_headers: true,
            ..beeline_bridge::BridgeConfig::default()
        },
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(800),
        loopback_url: None,
        home_name: Default::default(),
        resumable: true,
        roots: Default::default(),
    }
}

/// The request's headers, one `name: value` line each, sorted.
pub async fn echo_headers(headers: axum::http::HeaderMap) -> String {
    let mut out: Vec<String> = headers
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
        .collect();
    out.sort();
    out.join("\n")
}

/// Waits until `done`, failing the test after `limit`.
pub async fn wait_for(mut done: impl FnMut() -> bool, limit: Duration) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "condition not met in {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A GET head with no body.
pub fn get_head(path: &str) -> beeline_frame::v2::RequestHead {
    beeline_frame::v2::RequestHead {
        method: "GET".into(),
        path: path.into(),
        ..Default::default()
    }
}

/// A protocol-v2 client on an open `http` channel (`hello` within 2 s).
pub async fn bridge_client(
    channel: beeline_transport::DataChannel,
) -> Result<beeline_bridge::Client<beeline_bridge::DataChannelLink>, beeline_bridge::ClientError> {
    beeline_bridge::Client::connect(
        Arc::new(beeline_bridge::DataChannelLink::new(channel)),
        beeline_bridge::ClientOptions {
            hello_timeout: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await
}

pub async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

pub struct World {
    pub signal_url: String,
    pub upstream_url: String,
    pub disconnects: Arc<std::sync::atomic::AtomicUsize>,
    _db: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Signal server + upstream + (unless `with_home` is false) the home loop.
pub async fn world_with(config: HomeConfig, with_home: bool) -> World {
    let db = tempfile::tempdir().unwrap();
    let server = SignalServer::open(SignalConfig::new(db.path().join("signal.db"), TOKEN))
        .await
        .unwrap();
    let signal_url = format!("{}/webrtc", serve(server.router()).await);
    let disconnects = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let upstream_url = serve(upstream_router(Arc::clone(&disconnects))).await;
    let shutdown = CancellationToken::new();
    if with_home {
        let upstream = Arc::new(HttpUpstream::new(&upstream_url).unwrap());
        let home_signal = SignalClient::new(&signal_url).unwrap().with_bearer(TOKEN);
        tokio::spawn(beeline_home::run(
            home_signal,
            upstream,
            config,
            shutdown.clone(),
        ));
    }
    World {
        signal_url,
        upstream_url,
        disconnects,
        _db: db,
        shutdown,
    }
}

pub async fn world() -> World {
    world_with(
        HomeConfig {
            peer: loopback_peer(),
            ..Default::default()
        },
        true,
    )
    .await
}
