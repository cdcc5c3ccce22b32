//! The relay forwards unmatched requests to the upstream and streams the
//! answer back chunk by chunk, counting exactly the requests it forwards.

mod common;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::IntoResponse,
    routing::{any, get},
    Router,
};
use common::{expect_error, start};

/// How long the upstream pauses between its two event-stream chunks.
const PAUSE: Duration = Duration::from_millis(300);

#[derive(Clone, Default)]
struct Upstream {
    second_chunk_written: Arc<AtomicBool>,
}

async fn events(State(upstream): State<Upstream>) -> impl IntoResponse {
    let flag = upstream.second_chunk_written.clone();
    let chunks = futures::stream::unfold(0u8, move |step| {
        let flag = flag.clone();
        async move {
            match step {
                0 => Some((
                    Ok::<_, Infallible>(Bytes::from_static(b"data: first\n\n")),
                    1,
                )),
                1 => {
                    tokio::time::sleep(PAUSE).await;
                    flag.store(true, Ordering::SeqCst);
                    Some((Ok(Bytes::from_static(b"data: second\n\n")), 2))
                }
                _ => None,
            }
        }
    });
    (
        [("content-type", "text/event-stream"), ("x-upstream", "yes")],
        Body::from_stream(chunks),
    )
}

async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    axum::Json(serde_json::json!({
        "method": method.as_str(),
        "uri": uri.to_string(),
        "body": String::from_utf8_lossy(&body),
        "content_length": header("content-length"),
        "transfer_encoding": header("transfer-encoding"),
        "x_custom": header("x-custom"),
        "x_forwarded_host": header("x-forwarded-host"),
        "keep_alive": header("keep-alive"),
    }))
}

async fn redirect() -> impl IntoResponse {
    (StatusCode::FOUND, [("location", "/elsewhere")])
}

async fn start_upstream() -> (SocketAddr, Upstream) {
    let state = Upstream::default();
    let app = Router::new()
        .route("/events", get(events))
        .route("/redirect", get(redirect))
        .route("/echo/{*rest}", any(echo))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, state)
}

#[tokio::test]
async fn event_stream_flows_chunk_by_chunk() {
    let (upstream_addr, upstream) = start_upstream().await;
    let harness =
        start(|config| config.relay_upstream = Some(format!("http://{upstream_addr}"))).await;

    let started = Instant::now();
    let mut response = reqwest::get(harness.url("/events")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-upstream"], "yes");

    let first = response.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: first\n\n");
    assert!(
        !upstream.second_chunk_written.load(Ordering::SeqCst),
        "first chunk only arrived after the upstream wrote the second ({:?})",
        started.elapsed()
    );
    assert!(started.elapsed() < PAUSE);

    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"data: second\n\n");
    assert!(upstream.second_chunk_written.load(Ordering::SeqCst));
    assert_eq!(harness.metric("beeline_relay_requests_total").await, 1);
}

#[tokio::test]
async fn requests_are_forwarded_faithfully_and_counted_exactly() {
    let (upstream_addr, _) = start_upstream().await;
    let harness = start(|config| {
        config.relay_upstream = Some(format!("http://{upstream_addr}/"));
    })
    .await;
    let http = reqwest::Client::new();

    let reply: serde_json::Value = http
        .post(harness.url("/echo/a/b?x=1&y=two"))
        .header("x-custom", "kept")
        .header("connection", "keep-alive")
        .header("keep-alive", "timeout=5")
        .body("hello upstream")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["method"], "POST");
    assert_eq!(reply["uri"], "/echo/a/b?x=1&y=two");
    assert_eq!(reply["body"], "hello upstream");
    assert_eq!(reply["content_length"], "14");
    assert_eq!(reply["x_custom"], "kept");
    assert_eq!(reply["x_forwarded_host"], harness.addr.to_string());
    assert!(
        reply["keep_alive"].is_null(),
        "hop-by-hop header forwarded: {reply}"
    );

    let reply: serde_json::Value = http
        .get(harness.url("/echo/plain"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["method"], "GET");
    assert_eq!(reply["body"], "");
    assert!(
        reply["transfer_encoding"].is_null(),
        "GET was sent with a body: {reply}"
    );

    // Redirects go back to the client rather than being followed.
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_follow
        .get(harness.url("/redirect"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "/elsewhere");

    // Signaling, health and metrics requests are served here, not relayed.
    harness.browser().create_session().await.unwrap();
    http.get(harness.url("/healthz")).send().await.unwrap();
    http.get(harness.url("/webrtc/client.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(harness.metric("beeline_relay_requests_total").await, 3);
    assert_eq!(harness.metric("beeline_relay_requests_total").await, 3);
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    // A port that was just free: nothing listens there any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = listener.local_addr().unwrap();
    drop(listener);

    let harness = start(|config| config.relay_upstream = Some(format!("http://{dead}"))).await;
    let response = reqwest::get(harness.url("/anything")).await.unwrap();
    expect_error(response, 502).await;
    assert_eq!(harness.metric("beeline_relay_requests_total").await, 1);
    assert_eq!(harness.metric("beeline_relay_errors_total").await, 1);
}
