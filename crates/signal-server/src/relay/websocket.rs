//! Relaying a browser's WebSocket on the normal path: to `--relay-upstream`
//! as a plain WebSocket proxy, or over the home link as a duplex bridge
//! stream (`docs/protocol.md`, WebSocket streams).
//!
//! The upstream side is opened first, so a refusal (404, 401, an
//! unreachable home) reaches the browser as that HTTP status rather than as
//! an accepted socket that closes at once. Message boundaries, text and
//! binary, and close codes and reasons are kept both ways; pings from the
//! upstream are answered by the WebSocket library on each hop.

use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures::{SinkExt as _, StreamExt as _};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::{
    self, client::IntoClientRequest as _, protocol::frame::coding::CloseCode,
};

use super::{HomeLink, RelayError};

/// Largest message relayed; more closes the socket with 1009.
pub(super) const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Whether a request asks for a WebSocket.
pub(super) fn is_upgrade(method: &http::Method, headers: &HeaderMap) -> bool {
    method == http::Method::GET
        && headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The subprotocols the browser asked for, in its order.
pub(super) fn requested_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Headers the relay sends to the upstream with a WebSocket handshake: the
/// prepared request headers minus those the handshake itself owns.
fn handshake_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    for name in [
        header::HOST,
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_EXTENSIONS,
        header::SEC_WEBSOCKET_PROTOCOL,
        header::CONTENT_LENGTH,
    ] {
        out.remove(name);
    }
    out
}

/// Opens `url` on the upstream and, once it accepted, the browser's socket;
/// then carries messages both ways until either side closes.
pub(super) async fn to_upstream(
    url: String,
    headers: &HeaderMap,
    protocols: Vec<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, RelayError> {
    let mut request = url.as_str().into_client_request().map_err(|error| {
        RelayError::bad_gateway(format!("relay upstream WebSocket URL: {error}"))
    })?;
    request.headers_mut().extend(handshake_headers(headers));
    if !protocols.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&protocols.join(", ")) {
            request
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
    }
    let mut config = tungstenite::protocol::WebSocketConfig::default();
    config.max_message_size = Some(MAX_MESSAGE_BYTES);
    config.read_buffer_size = beeline_bridge::WS_READ_BUFFER;
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), false);
    let (upstream, response) =
        match tokio::time::timeout(std::time::Duration::from_secs(10), connect).await {
            Ok(Ok(connected)) => connected,
            Ok(Err(tungstenite::Error::Http(refusal))) => {
                let status = refusal.status();
                return Err(RelayError::far(
                    StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
                    format!("the home service refused the WebSocket ({status})"),
                ));
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "relay upstream WebSocket failed");
                return Err(RelayError::bad_gateway("relay upstream is unreachable"));
            }
            Err(_) => {
                return Err(RelayError::far(
                    StatusCode::GATEWAY_TIMEOUT,
                    "relay upstream did not answer the WebSocket handshake",
                ))
            }
        };
    let chosen = response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(accept(upgrade, chosen).on_upgrade(move |browser| pump_upstream(browser, upstream)))
}

/// The browser's upgrade, answering with the subprotocol the far end chose.
pub(super) fn accept(upgrade: WebSocketUpgrade, chosen: Option<String>) -> WebSocketUpgrade {
    let upgrade = upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .read_buffer_size(beeline_bridge::WS_READ_BUFFER);
    match chosen {
        Some(protocol) => upgrade.protocols([protocol]),
        None => upgrade,
    }
}

type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn pump_upstream(browser: WebSocket, upstream: Upstream) {
    let (mut to_browser, mut from_browser) = browser.split();
    let (mut to_upstream, mut from_upstream) = upstream.split();
    let up = async {
        while let Some(Ok(message)) = from_browser.next().await {
            let closing = matches!(message, ws::Message::Close(_));
            if to_upstream.send(to_tungstenite(message)).await.is_err() || closing {
                break;
            }
        }
        let _ = to_upstream.close().await;
    };
    let down = async {
        while let Some(Ok(message)) = from_upstream.next().await {
            let Some(message) = from_tungstenite(message) else {
                continue;
            };
            let closing = matches!(message, ws::Message::Close(_));
            if to_browser.send(message).await.is_err() || closing {
                break;
            }
        }
        let _ = to_browser.close().await;
    };
    beeline_bridge::finish_both(up, down).await;
}

fn to_tungstenite(message: ws::Message) -> tungstenite::Message {
    match message {
        ws::Message::Text(text) => tungstenite::Message::Text(text.as_str().into()),
        ws::Message::Binary(data) => tungstenite::Message::Binary(data),
        ws::Message::Ping(data) => tungstenite::Message::Ping(data),
        ws::Message::Pong(data) => tungstenite::Message::Pong(data),
        ws::Message::Close(frame) => {
            tungstenite::Message::Close(frame.map(|frame| tungstenite::protocol::CloseFrame {
                code: CloseCode::from(frame.code),
                reason: frame.reason.as_str().into(),
            }))
        }
    }
}

fn from_tungstenite(message: tungstenite::Message) -> Option<ws::Message> {
    Some(match message {
        tungstenite::Message::Text(text) => ws::Message::Text(text.as_str().into()),
        tungstenite::Message::Binary(data) => ws::Message::Binary(data),
        tungstenite::Message::Ping(data) => ws::Message::Ping(data),
        tungstenite::Message::Pong(data) => ws::Message::Pong(data),
        tungstenite::Message::Close(frame) => {
            ws::Message::Close(frame.map(|frame| ws::CloseFrame {
                code: u16::from(frame.code),
                reason: frame.reason.as_str().into(),
            }))
        }
        tungstenite::Message::Frame(_) => return None,
    })
}

/// Opens a WebSocket stream to the home over its link and, once the home
/// service accepted it, the browser's socket; then carries messages both
/// ways as the stream's records.
pub(super) async fn over_link(
    link: std::sync::Arc<dyn HomeLink>,
    target: String,
    headers: &HeaderMap,
    protocols: Vec<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, RelayError> {
    use beeline_bridge::Upgrade;
    let mut head_headers = beeline_bridge::frame_headers(&handshake_headers(headers));
    if !protocols.is_empty() {
        head_headers.insert("sec-websocket-protocol".into(), protocols.join(", "));
    }
    let head = beeline_frame::v2::RequestHead {
        method: "GET".into(),
        path: target,
        headers: head_headers,
        ..Default::default()
    };
    let opened = link.websocket(head).await.map_err(|error| {
        tracing::debug!(%error, "WebSocket over the home link failed");
        super::link::link_error(&error)
    })?;
    match opened {
        Upgrade::Refused(response) => {
            let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut reply = Response::new(super::link::body_of(response.body));
            *reply.status_mut() = status;
            *reply.headers_mut() = beeline_bridge::http_headers(&response.headers);
            Ok(reply)
        }
        Upgrade::Accepted {
            head,
            sender,
            receiver,
        } => {
            let chosen = head.headers.get("sec-websocket-protocol").cloned();
            Ok(accept(upgrade, chosen)
                .on_upgrade(move |browser| pump_link(browser, link, sender, receiver)))
        }
    }
}

async fn pump_link(
    browser: WebSocket,
    link: std::sync::Arc<dyn HomeLink>,
    sender: beeline_bridge::WsSender,
    receiver: beeline_bridge::WsReceiver,
) {
    // Held so the link outlives the socket's own use of it.
    let _link = link;
    beeline_bridge::join_websocket(browser, sender, receiver).await;
}
