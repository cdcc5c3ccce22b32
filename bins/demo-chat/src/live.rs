//! The live part of the demo: WebSocket endpoints and a page where a person
//! can watch which path a live stream takes.
//!
//! - `GET /ws/echo`: echoes every text and binary message; a text message
//!   `close:<code>:<reason>` makes the server close with that code.
//!   Subprotocols `echo.v1` and `echo.v2` are offered.
//! - `GET /ws/tick?n=N&every_ms=M`: sends `tick <i>` for i in 0..N, M ms
//!   apart (N at most 100,000, M at least 1), then closes with 1000.
//! - `GET /live`: the page.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::Query;
use axum::response::{Html, Response};
use axum::routing::get;
use axum::Router;
use futures::{SinkExt as _, StreamExt as _};
use serde::Deserialize;

const LIVE_HTML: &str = include_str!("../assets/live.html");

/// Largest message echoed (and received).
const MAX_MESSAGE_BYTES: usize = 16 << 20;

pub(crate) fn router() -> Router {
    Router::new()
        .route("/live", get(|| async { Html(LIVE_HTML) }))
        .route("/ws/echo", get(echo_upgrade))
        .route("/ws/tick", get(tick_upgrade))
}

async fn echo_upgrade(ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .protocols(["echo.v1", "echo.v2"])
        .on_upgrade(echo)
}

async fn echo(socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    while let Some(Ok(message)) = rx.next().await {
        let reply = match message {
            Message::Text(text) if text.starts_with("close:") => {
                let mut parts = text.splitn(3, ':').skip(1);
                let code = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1000);
                let reason = parts.next().unwrap_or("").to_owned();
                let _ = tx
                    .send(Message::Close(Some(CloseFrame {
                        code,
                        reason: reason.into(),
                    })))
                    .await;
                // Read on until the client's answering close.
                continue;
            }
            Message::Close(_) => return,
            Message::Ping(_) | Message::Pong(_) => continue,
            other => other,
        };
        if tx.send(reply).await.is_err() {
            return;
        }
    }
}

#[derive(Deserialize)]
struct Tick {
    #[serde(default = "default_ticks")]
    n: u32,
    #[serde(default = "default_every")]
    every_ms: u64,
}

fn default_ticks() -> u32 {
    1_000_000
}

fn default_every() -> u64 {
    1000
}

async fn tick_upgrade(ws: WebSocketUpgrade, Query(tick): Query<Tick>) -> Response {
    let n = tick.n.min(1_000_000);
    let every = Duration::from_millis(tick.every_ms.max(1));
    ws.on_upgrade(move |socket| ticks(socket, n, every))
}

async fn ticks(socket: WebSocket, n: u32, every: Duration) {
    let (mut tx, mut rx) = socket.split();
    let sending = async {
        let mut interval = tokio::time::interval(every);
        for i in 0..n {
            interval.tick().await;
            if tx
                .send(Message::Text(format!("tick {i}").into()))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = tx
            .send(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: "done".into(),
            })))
            .await;
        // Wait for the answering close.
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    // A client's close ends the ticking.
    let watching = async {
        while let Some(Ok(message)) = rx.next().await {
            if matches!(message, Message::Close(_)) {
                return;
            }
        }
    };
    tokio::select! {
        _ = sending => {}
        _ = watching => {}
    }
}
