//! The home link: one WebSocket per home, opened by home-peer to
//! `GET {base}/link` with its home token, over which the relay sends
//! browsers' normal-path requests as bridge streams (`docs/protocol.md`).
//!
//! signal-api is the bridge *client* on the link and home-peer serves it, so
//! relayed requests get exactly what channel requests get: the same frames,
//! the same per-stream flow control (a page that stops reading stalls only
//! its own stream), the same limits at home. No SSH tunnel is needed.
//!
//! Invariants:
//! - a link belongs to the home whose token opened it, and the relay only
//!   sends a request over the link of the home it chose for that request
//!   (`Relay::choose_home`), so one home's browsers never reach another;
//! - a newer link of the same home replaces the older one (home-peer
//!   reconnected), which is closed;
//! - a link that carries nothing for [`LINK_SILENCE`] is dead: home-peer
//!   pings every [`PING_EVERY`], and signal-api pings too.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse as _, Response};
use beeline_bridge::{Client, ClientOptions, SocketChannel, SocketMessage};
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http::StatusCode;

use crate::server::{ApiError, Caller, Shared, Who};

/// The largest message either side sends on a link; bridge frames are cut
/// to fit, as they are for a data channel.
pub const LINK_MESSAGE_SIZE: usize = 256 * 1024;

/// How often each side pings an otherwise quiet link.
pub const PING_EVERY: Duration = Duration::from_secs(15);

/// A link silent for this long (not even a pong) is closed.
pub const LINK_SILENCE: Duration = Duration::from_secs(45);

/// The connected homes' links.
#[derive(Debug, Default)]
pub(crate) struct HomeLinks {
    links: Mutex<HashMap<Arc<str>, Arc<Link>>>,
    next_id: AtomicU64,
    /// Links accepted since start.
    pub(crate) accepted: AtomicU64,
    /// Link attempts refused (no home token).
    pub(crate) refused: AtomicU64,
}

/// One home's connected link.
pub(crate) struct Link {
    id: u64,
    client: Client<WsChannel>,
    channel: Arc<WsChannel>,
    /// home-peer's loopback listener, as it stated on opening the link.
    loopback_url: Option<String>,
    /// Where the link came from (the home's network).
    remote_ip: Option<std::net::IpAddr>,
    /// home-peer serves resumable sessions (`docs/protocol.md` §4.8).
    resumable: bool,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("id", &self.id).finish()
    }
}

impl Link {
    /// The bridge client that sends requests to this home.
    pub(crate) fn client(&self) -> &Client<WsChannel> {
        &self.client
    }

    /// The home's loopback listener URL and the address the link came
    /// from, when home-peer has a listener.
    pub(crate) fn loopback(&self) -> Option<(&str, Option<std::net::IpAddr>)> {
        Some((self.loopback_url.as_deref()?, self.remote_ip))
    }

    /// Whether home-peer takes pages' frame connections (`GET /frames`),
    /// as it stated on opening the link.
    pub(crate) fn resumable(&self) -> bool {
        self.resumable
    }
}

impl HomeLinks {
    /// The link of `home`, when it is connected.
    pub(crate) fn get(&self, home: &str) -> Option<Arc<Link>> {
        let links = self.links.lock().expect("not poisoned");
        links
            .get(home)
            .filter(|link| !link.client.is_closed())
            .cloned()
    }

    fn insert(&self, home: Arc<str>, link: Arc<Link>) {
        let old = self.links.lock().expect("not poisoned").insert(home, link);
        if let Some(old) = old {
            old.channel.shut();
        }
    }

    fn remove(&self, home: &str, id: u64) {
        let mut links = self.links.lock().expect("not poisoned");
        if links.get(home).is_some_and(|link| link.id == id) {
            links.remove(home);
        }
    }

    /// Closes every link (server shutdown).
    pub(crate) fn close_all(&self) {
        for link in self.links.lock().expect("not poisoned").values() {
            link.channel.shut();
        }
    }

    /// Prometheus lines: one gauge per configured home, and the counters.
    pub(crate) fn render<'a>(&self, out: &mut String, homes: impl Iterator<Item = &'a Arc<str>>) {
        let _ = writeln!(
            out,
            "# HELP beeline_home_link_connected Whether the home's link (home-peer to signal-api) is up.\n# TYPE beeline_home_link_connected gauge"
        );
        for home in homes {
            let up = u8::from(self.get(home).is_some());
            let _ = writeln!(
                out,
                "beeline_home_link_connected{{home=\"{}\"}} {up}",
                home.replace(['\\', '"', '\n'], "_")
            );
        }
        let counters = [
            (
                "beeline_home_link_connects_total",
                "Home links accepted.",
                &self.accepted,
            ),
            (
                "beeline_home_link_refused_total",
                "Home link attempts refused for a missing or wrong home token.",
                &self.refused,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
    }
}

/// `GET {base}/link`: home-peer's link. Only a home token opens one; the
/// home it names is the only home the link serves.
pub(crate) async fn accept(
    State(shared): State<Arc<Shared>>,
    caller: Result<Caller, ApiError>,
    headers: http::HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let home = match caller.as_ref().map(|c| &c.who) {
        Ok(Who::Home(home)) => home.clone(),
        _ => {
            shared.links().refused.fetch_add(1, Ordering::Relaxed);
            let client = caller.as_ref().ok().and_then(|c| c.client_ip);
            tracing::warn!(client = ?client, "home link refused: no valid home token");
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "a home link needs a home token (Authorization: Bearer <home token>)",
            )
            .into_response();
        }
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let stated = headers
        .get(LOOPBACK_URL_HEADER)
        .and_then(|v| v.to_str().ok());
    let loopback_url = stated.and_then(crate::loopback::valid_listener_url);
    if let (Some(stated), None) = (stated, &loopback_url) {
        tracing::warn!(
            home = &*home,
            url = stated,
            "home link states a loopback listener that is not on loopback; ignored"
        );
    }
    let remote_ip = caller.ok().and_then(|c| c.client_ip);
    let resumable = headers
        .get(RESUMABLE_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1");
    let name = http::HeaderValue::from_str(&home).ok();
    let mut response = upgrade
        .max_message_size(2 * LINK_MESSAGE_SIZE)
        .read_buffer_size(beeline_bridge::WS_READ_BUFFER)
        .on_upgrade(move |socket| run(shared, home, socket, loopback_url, remote_ip, resumable));
    if let Some(name) = name {
        response.headers_mut().insert(HOME_NAME_HEADER, name);
    }
    response
}

/// The window signal-api grants a home per relayed response (256 KiB):
/// what one slow page's stream can hold in its memory.
const RELAY_WINDOW: u32 = 256 * 1024;

/// The request header in which home-peer states its loopback listener.
const LOOPBACK_URL_HEADER: &str = "x-beeline-loopback";
/// The request header in which home-peer says it serves resumable sessions.
const RESUMABLE_HEADER: &str = "x-beeline-resumable";
/// The response header that tells home-peer its home's name.
const HOME_NAME_HEADER: &str = "x-beeline-home";

async fn run(
    shared: Arc<Shared>,
    home: Arc<str>,
    socket: WebSocket,
    loopback_url: Option<String>,
    remote_ip: Option<std::net::IpAddr>,
    resumable: bool,
) {
    let channel = Arc::new(ws_channel(socket));
    let keepalive = tokio::spawn(Arc::clone(&channel).keep_alive(PING_EVERY, LINK_SILENCE));
    let options = ClientOptions {
        binary: true,
        // A relayed response waits here while its page reads slowly: a
        // public server holding streams for many pages keeps this small.
        window: RELAY_WINDOW,
        ..ClientOptions::default()
    };
    let client = match Client::connect(Arc::clone(&channel), options).await {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!(home = &*home, %error, "home link dropped before agreeing");
            keepalive.abort();
            return;
        }
    };
    let id = shared.links().next_id.fetch_add(1, Ordering::Relaxed);
    let link = Arc::new(Link {
        id,
        client,
        channel: Arc::clone(&channel),
        loopback_url,
        remote_ip,
        resumable,
    });
    shared.links().accepted.fetch_add(1, Ordering::Relaxed);
    shared.links().insert(home.clone(), Arc::clone(&link));
    tracing::info!(home = &*home, "home link up");
    let shutdown = shared.shutdown_token();
    tokio::select! {
        _ = link.client.closed() => {}
        _ = shutdown.cancelled() => channel.close().await,
    }
    keepalive.abort();
    shared.links().remove(&home, id);
    tracing::info!(home = &*home, "home link down");
}

/// A link's WebSocket as a bridge channel.
pub(crate) type WsChannel = SocketChannel<
    futures::sink::With<
        futures::stream::SplitSink<WebSocket, Message>,
        Message,
        SocketMessage,
        futures::future::Ready<Result<Message, axum::Error>>,
        fn(SocketMessage) -> futures::future::Ready<Result<Message, axum::Error>>,
    >,
    futures::stream::Map<
        futures::stream::SplitStream<WebSocket>,
        fn(Result<Message, axum::Error>) -> Result<SocketMessage, axum::Error>,
    >,
>;

fn to_socket(message: SocketMessage) -> futures::future::Ready<Result<Message, axum::Error>> {
    futures::future::ready(match message {
        SocketMessage::Text(text) => axum::extract::ws::Utf8Bytes::try_from(text)
            .map(Message::Text)
            .map_err(axum::Error::new),
        SocketMessage::Binary(data) => Ok(Message::Binary(data)),
        SocketMessage::Ping => Ok(Message::Ping(Bytes::from_static(b"beeline"))),
        SocketMessage::Other => Ok(Message::Pong(Bytes::new())),
        SocketMessage::Close => Ok(Message::Close(None)),
    })
}

fn from_socket(item: Result<Message, axum::Error>) -> Result<SocketMessage, axum::Error> {
    item.map(|message| match message {
        Message::Text(text) => SocketMessage::Text(text.into()),
        Message::Binary(data) => SocketMessage::Binary(data),
        Message::Ping(_) => SocketMessage::Ping,
        Message::Pong(_) => SocketMessage::Other,
        Message::Close(_) => SocketMessage::Close,
    })
}

fn ws_channel(socket: WebSocket) -> WsChannel {
    let (sink, stream) = socket.split();
    let to: fn(SocketMessage) -> futures::future::Ready<Result<Message, axum::Error>> = to_socket;
    let from: fn(Result<Message, axum::Error>) -> Result<SocketMessage, axum::Error> = from_socket;
    SocketChannel::new(sink.with(to), stream.map(from), LINK_MESSAGE_SIZE)
}
