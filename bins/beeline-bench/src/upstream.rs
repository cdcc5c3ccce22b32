//! The home service the benchmarks call, under `/bench/`: a tiny response,
//! a timestamped SSE stream, a large download and an upload sink, plus the
//! page Chromium runs its measurements in. Every route allows any origin so
//! that Chromium can also call it directly as "plain HTTP".

use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Query;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures::StreamExt as _;
use serde::Deserialize;

/// Largest download `/bench/bytes` produces.
const MAX_BYTES: usize = 1 << 30;
/// Piece size of `/bench/bytes` (what an upstream typically writes at once).
const PIECE: usize = 64 * 1024;
/// Most events and widest spacing `/bench/sse` accepts.
const MAX_EVENTS: u32 = 10_000;
const MAX_INTERVAL_MS: u64 = 1_000;

/// Length of the repeating pattern bodies are made of.
pub(crate) const PATTERN_LEN: usize = 1 << 20;

/// Deterministic pseudo-random bytes (xorshift64); body byte `i` is
/// `pattern()[i % PATTERN_LEN]`, so both ends can check a transfer cheaply.
pub(crate) fn pattern() -> &'static Bytes {
    static PATTERN: OnceLock<Bytes> = OnceLock::new();
    PATTERN.get_or_init(|| {
        Bytes::from(beeline_test_support::xorshift64(
            0x9e37_79b9_7f4a_7c15,
            PATTERN_LEN,
        ))
    })
}

/// `len` bytes of the pattern starting at body offset `offset`, in pieces
/// of at most `piece` bytes (zero-copy slices of the pattern).
pub(crate) fn pattern_pieces(
    offset: usize,
    len: usize,
    piece: usize,
) -> impl Iterator<Item = Bytes> {
    let p = pattern();
    let mut at = offset;
    let end = offset + len;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let start = at % PATTERN_LEN;
        let n = piece.min(end - at).min(PATTERN_LEN - start);
        at += n;
        Some(p.slice(start..start + n))
    })
}

/// Checks `data` against the pattern at body offset `offset`.
pub(crate) fn matches_pattern(offset: usize, data: &[u8]) -> bool {
    let mut at = 0;
    pattern_pieces(offset, data.len(), PATTERN_LEN).all(|expected| {
        let ok = data[at..at + expected.len()] == expected[..];
        at += expected.len();
        ok
    })
}

/// Microseconds since the Unix epoch (the clock Chromium's
/// `performance.timeOrigin + performance.now()` also follows).
pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

const CORS: (header::HeaderName, &str) = (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*");

/// The page Chromium measures in. It only enables beeline; the measurement
/// code is injected by `tests/bench/chromium.mjs`.
const PAGE: &str = "<!doctype html><meta charset=utf-8><title>beeline bench</title>\
<script>window.__WEBRTC_ENABLED__ = true;</script><p>beeline bench</p>";

#[derive(Deserialize)]
struct BytesQuery {
    n: usize,
}

#[derive(Deserialize)]
struct SseQuery {
    n: u32,
    interval_ms: u64,
}

/// The routes.
pub(crate) fn router() -> Router {
    Router::new()
        .route(
            "/bench/page",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }),
        )
        .route(
            "/bench/small",
            get(|| async { ([CORS, (header::CACHE_CONTROL, "no-store")], "ok") }),
        )
        .route(
            "/bench/empty",
            get(|| async { ([CORS, (header::CACHE_CONTROL, "no-store")], "") }),
        )
        .route("/bench/bytes", get(bytes))
        .route("/bench/sink", post(sink))
        .route("/bench/sse", get(sse).post(sse))
        .route("/bench/ws", get(ws_echo))
}

/// Echoes every WebSocket message (the WebSocket round trip figures).
async fn ws_echo(ws: axum::extract::ws::WebSocketUpgrade) -> Response {
    use axum::extract::ws::Message;
    use futures::{SinkExt as _, StreamExt as _};
    ws.on_upgrade(|socket| async move {
        let (mut tx, mut rx) = socket.split();
        while let Some(Ok(message)) = rx.next().await {
            match message {
                Message::Close(_) => return,
                Message::Ping(_) | Message::Pong(_) => continue,
                other => {
                    if tx.send(other).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

async fn bytes(Query(q): Query<BytesQuery>) -> Response {
    let n = q.n.min(MAX_BYTES);
    let body = futures::stream::iter(pattern_pieces(0, n, PIECE).map(Ok::<_, Infallible>));
    (
        [
            CORS,
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

async fn sink(body: Body) -> Response {
    let mut stream = body.into_data_stream();
    let mut len = 0usize;
    let mut intact = true;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                [CORS],
                "body broke off",
            )
                .into_response();
        };
        intact &= matches_pattern(len, &chunk);
        len += chunk.len();
    }
    (
        [CORS],
        format!("{len} {}", if intact { "intact" } else { "corrupt" }),
    )
        .into_response()
}

/// `n` events `interval_ms` apart, each `data: <seq> <unix µs when written>`.
/// The timestamp is taken right before the event is handed to the server,
/// so the client's arrival time minus it is the delay the path added.
async fn sse(Query(q): Query<SseQuery>) -> Response {
    let n = q.n.min(MAX_EVENTS);
    let interval = Duration::from_millis(q.interval_ms.clamp(1, MAX_INTERVAL_MS));
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let events = futures::stream::unfold((0u32, ticks), move |(seq, mut ticks)| async move {
        if seq >= n {
            return None;
        }
        ticks.tick().await;
        let event = format!("data: {seq} {}\n\n", unix_micros());
        Some((Ok::<_, Infallible>(Bytes::from(event)), (seq + 1, ticks)))
    });
    (
        [
            CORS,
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(events),
    )
        .into_response()
}

/// Serves the routes on `listen` and prints `listening on http://ADDR`.
pub(crate) async fn run(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    use axum::serve::ListenerExt as _;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    // Like Go's net/http (the specification's home service), write small
    // events at once instead of letting Nagle hold them for an ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    eprintln!("listening on http://{addr}");
    axum::serve(listener, router()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_follow_the_pattern_across_the_wrap() {
        let offset = PATTERN_LEN - 10;
        let all: Vec<u8> = pattern_pieces(offset, 100, 7)
            .flat_map(|b| b.to_vec())
            .collect();
        assert_eq!(all.len(), 100);
        assert!(matches_pattern(offset, &all));
        assert!(!matches_pattern(offset + 1, &all));
    }
}
