//! demo-chat: a stand-in for the service someone runs at home.
//!
//! It serves a chat page at `/` and streams a reply to `POST /v1/chat` as
//! server-sent events, one word per event, so the difference between the
//! relayed path and beeline's direct path is visible token by token. The
//! page loads beeline's browser client from `/webrtc/client.js`.
//!
//! With `--test-endpoints` it also serves the `/test/...` routes the browser
//! tests use (see `test_endpoints`); they are off by default.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use anyhow::Context as _;
use axum::{
    body::Body,
    http::{header, StatusCode},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use clap::Parser;
use futures::stream::{self, Stream, StreamExt as _};
use serde::Deserialize;

mod live;
mod test_endpoints;

/// The chat page, with its inline script.
const INDEX_HTML: &str = include_str!("../assets/index.html");

/// Longest message the demo accepts, in bytes.
const MAX_MESSAGE_BYTES: usize = 4096;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Demo home service for beeline: a chat page and a streaming SSE endpoint"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "BEELINE_DEMO_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,

    /// Pause between streamed tokens, in milliseconds.
    #[arg(long, env = "BEELINE_DEMO_TOKEN_DELAY_MS", default_value_t = 30)]
    token_delay_ms: u64,

    /// Also serve the `/test/...` endpoints the browser tests use (a slow
    /// response head, a stream that records client disconnects, large
    /// binary downloads, upload checksums, a header echo). Never in production.
    #[arg(long, env = "BEELINE_DEMO_TEST_ENDPOINTS")]
    test_endpoints: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!("listening on http://{addr}");

    let mut app = router(Duration::from_millis(args.token_delay_ms));
    if args.test_endpoints {
        tracing::warn!("serving the /test/ endpoints (--test-endpoints)");
        app = app.merge(test_endpoints::router());
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            // If the handler cannot be installed, run until killed.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await
        .context("serving HTTP")?;
    Ok(())
}

/// All of demo-chat's routes; `token_delay` spaces the streamed tokens.
fn router(token_delay: Duration) -> Router {
    Router::new()
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route("/healthz", get(|| async { "ok" }))
        .merge(live::router())
        .route(
            "/v1/chat",
            post(move |Json(request): Json<ChatRequest>| chat(request, token_delay)),
        )
}

#[derive(Deserialize)]
struct ChatRequest {
    message: String,
}

async fn chat(request: ChatRequest, token_delay: Duration) -> Response {
    let message = request.message.trim();
    if message.is_empty() {
        return chat_error(StatusCode::BAD_REQUEST, "message must not be empty");
    }
    if message.len() > MAX_MESSAGE_BYTES {
        return chat_error(StatusCode::PAYLOAD_TOO_LARGE, "message is too long");
    }
    let events = sse_events(reply_tokens(message), token_delay);
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(events),
    )
        .into_response()
}

fn chat_error(status: StatusCode, message: &str) -> Response {
    let body = format!("{{\"error\":{message:?}}}");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The words of the canned reply, one token each.
fn reply_tokens(message: &str) -> Vec<String> {
    format!(
        "You said: {message}. This reply comes from the demo home service one word at a time, \
         so you can watch each token arrive as soon as it is sent."
    )
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// One SSE event per token, `token_delay` apart, then `[DONE]`. Each event is
/// its own body chunk, so it is flushed to the client as soon as it is made.
fn sse_events(
    tokens: Vec<String>,
    token_delay: Duration,
) -> impl Stream<Item = Result<String, Infallible>> {
    let events = tokens
        .into_iter()
        .map(|token| format!("data: {token}\n\n"))
        .chain(std::iter::once("data: [DONE]\n\n".to_owned()));
    stream::iter(events.enumerate()).then(move |(index, event)| async move {
        if index > 0 && !token_delay.is_zero() {
            tokio::time::sleep(token_delay).await;
        }
        Ok(event)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    fn chat_request(body: &str) -> Request<Body> {
        Request::post("/v1/chat")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    #[tokio::test]
    async fn chat_streams_one_body_frame_per_token_and_ends_with_done() {
        let app = router(Duration::ZERO);
        let response = app
            .oneshot(chat_request(r#"{"message":"hello there"}"#))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );

        let mut body = response.into_body();
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            frames.push(String::from_utf8(data.to_vec()).unwrap());
        }
        assert_eq!(frames.first().unwrap(), "data: You\n\n");
        assert_eq!(frames.last().unwrap(), "data: [DONE]\n\n");
        assert!(frames.len() >= 20, "only {} events", frames.len());
        assert!(frames
            .iter()
            .all(|f| f.starts_with("data: ") && f.ends_with("\n\n")));
        let words: Vec<&str> = frames.iter().map(|f| f[6..f.len() - 2].trim()).collect();
        assert_eq!(&words[..4], &["You", "said:", "hello", "there."]);
    }

    #[tokio::test]
    async fn first_token_arrives_before_the_reply_ends() {
        let app = router(Duration::from_millis(20));
        let response = app
            .oneshot(chat_request(r#"{"message":"hi"}"#))
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let mut body = response.into_body();
        body.frame().await.unwrap().unwrap();
        let first = started.elapsed();
        while body.frame().await.is_some() {}
        let all = started.elapsed();
        // About 25 tokens 20 ms apart: the first must come long before the rest.
        assert!(
            all >= Duration::from_millis(400),
            "whole reply took only {all:?}"
        );
        assert!(first * 4 < all, "first token after {first:?} of {all:?}");
    }

    #[tokio::test]
    async fn empty_message_is_a_json_error() {
        let app = router(Duration::ZERO);
        let response = app
            .oneshot(chat_request(r#"{"message":"  "}"#))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"], "message must not be empty");
    }

    #[tokio::test]
    async fn test_endpoints_are_off_unless_asked_for() {
        for path in ["/test/bytes?size=10", "/test/disconnects", "/test/headers"] {
            let response = router(Duration::ZERO)
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
        let with_tests = router(Duration::ZERO).merge(test_endpoints::router());
        let response = with_tests
            .oneshot(
                Request::get("/test/bytes?size=10")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 10);
    }

    #[tokio::test]
    async fn page_loads_the_client_from_the_signal_base() {
        let app = router(Duration::ZERO);
        let response = app
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert!(html.contains("/client.js"));
        assert!(html.contains(r#"id="beeline-indicator""#));
    }
}
