//! The home link: home-peer's own outbound connection to signal-api (a
//! WebSocket on `{signal}/link`, authenticated with the home token), over
//! which signal-api relays browsers' normal-path requests. This end serves
//! it with the bridge exactly as it serves a data channel, so relayed
//! requests get the same frames, flow control and limits, and no SSH
//! tunnel is needed.
//!
//! The link reconnects with exponential backoff (with jitter) whenever it
//! drops, pings every [`PING_EVERY`] and gives up on a link that has been
//! silent for [`LINK_SILENCE`]. A refused token is logged as such and
//! retried at the longest backoff, since it will not fix itself quickly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use beeline_bridge::{BridgeConfig, SocketChannel, SocketMessage, Upstream};
use futures::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// The largest message sent on the link (bridge frames are cut to fit).
pub const LINK_MESSAGE_SIZE: usize = 256 * 1024;

/// How often a quiet link is pinged.
pub const PING_EVERY: Duration = Duration::from_secs(15);

/// A link silent this long (not even a pong) is dropped and reopened.
pub const LINK_SILENCE: Duration = Duration::from_secs(45);

/// How the home link connects.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// `ws://…/webrtc/link` or `wss://…` (see [`link_url`]).
    pub url: String,
    /// The home token.
    pub token: String,
    /// The bridge settings for relayed requests. The link carries every
    /// relayed page of this home, so it usually allows more streams than
    /// one peer connection does.
    pub bridge: BridgeConfig,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// The loopback listener's URL (`http://127.0.0.1:<port>`), told to
    /// signal-api so it can hand pages a ticket for it; `None` when there
    /// is no listener.
    pub loopback_url: Option<String>,
    /// Where the link writes the home's name, as signal-api states it when
    /// the link opens (the loopback listener answers probes with it).
    pub home_name: Arc<std::sync::Mutex<Option<String>>>,
    /// Whether this home serves resumable sessions (`docs/protocol.md`
    /// §4.8: a page's frame connection on the link joined with its
    /// `resume` data channel); told to signal-api so it offers them.
    pub resumable: bool,
    /// Certificate authorities trusted for a `wss://` URL besides the
    /// public roots (the same set as the signaling client's).
    pub roots: beeline_signal_client::TrustedRoots,
}

/// The request header on the link's handshake that carries
/// [`LinkConfig::loopback_url`].
pub const LOOPBACK_URL_HEADER: &str = "x-beeline-loopback";

/// The request header on the link's handshake that says the home serves
/// resumable sessions ([`LinkConfig::resumable`]); its value is `1`.
pub const RESUMABLE_HEADER: &str = "x-beeline-resumable";

/// The response header on the link's handshake that names the home.
pub const HOME_NAME_HEADER: &str = "x-beeline-home";

/// The link URL for a signaling base URL: `http://h/webrtc` becomes
/// `ws://h/webrtc/link`, `https://` becomes `wss://`.
pub fn link_url(signal_url: &str) -> Result<String, LinkUrlError> {
    beeline_signal_client::websocket_url(signal_url, "link")
        .ok_or_else(|| LinkUrlError(signal_url.to_owned()))
}

/// A signaling URL that is neither `http://` nor `https://`.
#[derive(Debug, thiserror::Error)]
#[error("signaling URL {0:?} must start with http:// or https://")]
pub struct LinkUrlError(String);

/// The link's state, for logs, metrics and tests.
#[derive(Debug, Default)]
pub struct LinkStatus {
    connected: std::sync::atomic::AtomicBool,
    connects: AtomicU64,
    failures: AtomicU64,
}

impl LinkStatus {
    /// Whether the link's WebSocket is open now. signal-api routes over
    /// it once the bridge's `hello` is agreed, a round trip later; its own
    /// view is `beeline_signal_server::SignalServer::home_linked`.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Links opened since start.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Attempts that failed (refused, unreachable) since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// Keeps the home link up until `shutdown`, serving every relayed request
/// through `upstream`.
pub async fn run_link<U: Upstream>(
    config: LinkConfig,
    upstream: Arc<U>,
    status: Arc<LinkStatus>,
    shutdown: CancellationToken,
) {
    let mut backoff = config.backoff_initial;
    // Failures in a row: the first (signal-api starting up alongside) is
    // not worth a warning.
    let mut failed_in_a_row = 0u32;
    while !shutdown.is_cancelled() {
        let connected = tokio::select! {
            c = connect(&config) => c,
            _ = shutdown.cancelled() => break,
        };
        match connected {
            Ok(socket) => {
                backoff = config.backoff_initial;
                failed_in_a_row = 0;
                status.connects.fetch_add(1, Ordering::Relaxed);
                status.connected.store(true, Ordering::Relaxed);
                tracing::info!(url = %config.url, "home link up");
                let channel = Arc::new(link_channel(socket));
                let keepalive =
                    tokio::spawn(Arc::clone(&channel).keep_alive(PING_EVERY, LINK_SILENCE));
                tokio::select! {
                    _ = beeline_bridge::serve(Arc::clone(&channel), Arc::clone(&upstream), config.bridge.clone()) => {}
                    _ = shutdown.cancelled() => {}
                }
                keepalive.abort();
                channel.close().await;
                status.connected.store(false, Ordering::Relaxed);
                if shutdown.is_cancelled() {
                    break;
                }
                tracing::warn!("home link down; reconnecting");
            }
            Err(error) => {
                status.failures.fetch_add(1, Ordering::Relaxed);
                failed_in_a_row += 1;
                if error.refused() {
                    tracing::error!(%error, "home link refused: check the home token");
                    backoff = config.backoff_max;
                } else if failed_in_a_row == 1 {
                    tracing::debug!(%error, retry_in_ms = backoff.as_millis() as u64, "home link failed");
                } else {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "home link failed");
                }
            }
        }
        let pause = jitter(backoff);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.cancelled() => break,
        }
        backoff = (backoff * 2).min(config.backoff_max);
    }
    status.connected.store(false, Ordering::Relaxed);
}

/// Between 3/4 and 5/4 of `delay`, so that homes do not reconnect in step
/// after signal-api restarts.
fn jitter(delay: Duration) -> Duration {
    let spread = rand_fraction();
    delay.mul_f64(0.75 + spread / 2.0)
}

fn rand_fraction() -> f64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    // Each `RandomState` is freshly keyed by the standard library.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    (hasher.finish() % 10_000) as f64 / 10_000.0
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why opening the link failed.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("{0}")]
    WebSocket(#[from] tungstenite::Error),
    #[error("the home token is not a valid header value")]
    Token,
    #[error("the loopback URL is not a valid header value")]
    LoopbackUrl,
}

impl ConnectError {
    /// signal-api turned the token down (401/403).
    fn refused(&self) -> bool {
        matches!(self, Self::WebSocket(tungstenite::Error::Http(response))
            if matches!(response.status().as_u16(), 401 | 403))
            || matches!(self, Self::Token)
    }
}

async fn connect(config: &LinkConfig) -> Result<Socket, ConnectError> {
    let mut request = config.url.as_str().into_client_request()?;
    let bearer = format!("Bearer {}", config.token)
        .parse()
        .map_err(|_| ConnectError::Token)?;
    request.headers_mut().insert("authorization", bearer);
    if let Some(url) = &config.loopback_url {
        let value = url.parse().map_err(|_| ConnectError::LoopbackUrl)?;
        request.headers_mut().insert(LOOPBACK_URL_HEADER, value);
    }
    if config.resumable {
        request
            .headers_mut()
            .insert(RESUMABLE_HEADER, http::HeaderValue::from_static("1"));
    }
    let mut ws_config = tungstenite::protocol::WebSocketConfig::default();
    ws_config.max_message_size = Some(2 * LINK_MESSAGE_SIZE);
    ws_config.max_frame_size = Some(2 * LINK_MESSAGE_SIZE);
    ws_config.read_buffer_size = beeline_bridge::WS_READ_BUFFER;
    let connector = config
        .roots
        .tls_config()
        .map(tokio_tungstenite::Connector::Rustls);
    let connect =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(ws_config), true, connector);
    let (socket, response) = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| tungstenite::Error::Io(std::io::ErrorKind::TimedOut.into()))??;
    if let Some(name) = response
        .headers()
        .get(HOME_NAME_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        *config.home_name.lock().expect("not poisoned") = Some(name.to_owned());
    }
    Ok(socket)
}

/// The link's WebSocket as a bridge channel.
type LinkChannel = SocketChannel<
    futures::sink::With<
        futures::stream::SplitSink<Socket, Message>,
        Message,
        SocketMessage,
        futures::future::Ready<Result<Message, tungstenite::Error>>,
        fn(SocketMessage) -> futures::future::Ready<Result<Message, tungstenite::Error>>,
    >,
    futures::stream::Map<
        futures::stream::SplitStream<Socket>,
        fn(Result<Message, tungstenite::Error>) -> Result<SocketMessage, tungstenite::Error>,
    >,
>;

fn to_socket(
    message: SocketMessage,
) -> futures::future::Ready<Result<Message, tungstenite::Error>> {
    futures::future::ready(match message {
        SocketMessage::Text(text) => tungstenite::Utf8Bytes::try_from(text)
            .map(Message::Text)
            .map_err(|e| tungstenite::Error::Utf8(e.to_string())),
        SocketMessage::Binary(data) => Ok(Message::Binary(data)),
        SocketMessage::Ping => Ok(Message::Ping(bytes::Bytes::from_static(b"beeline"))),
        SocketMessage::Other => Ok(Message::Pong(bytes::Bytes::new())),
        SocketMessage::Close => Ok(Message::Close(None)),
    })
}

fn from_socket(
    item: Result<Message, tungstenite::Error>,
) -> Result<SocketMessage, tungstenite::Error> {
    item.map(|message| match message {
        Message::Text(text) => SocketMessage::Text(text.into()),
        Message::Binary(data) => SocketMessage::Binary(data),
        Message::Ping(_) => SocketMessage::Ping,
        Message::Pong(_) | Message::Frame(_) => SocketMessage::Other,
        Message::Close(_) => SocketMessage::Close,
    })
}

fn link_channel(socket: Socket) -> LinkChannel {
    let (sink, stream) = socket.split();
    let to: fn(SocketMessage) -> futures::future::Ready<Result<Message, tungstenite::Error>> =
        to_socket;
    let from: fn(Result<Message, tungstenite::Error>) -> Result<SocketMessage, tungstenite::Error> =
        from_socket;
    SocketChannel::new(sink.with(to), stream.map(from), LINK_MESSAGE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_urls_follow_the_signaling_url() {
        assert_eq!(
            link_url("http://127.0.0.1:8080/webrtc").unwrap(),
            "ws://127.0.0.1:8080/webrtc/link"
        );
        assert_eq!(
            link_url("https://vps.example/jarvis-api/webrtc/").unwrap(),
            "wss://vps.example/jarvis-api/webrtc/link"
        );
        assert!(link_url("ftp://x/webrtc").is_err());
    }

    #[test]
    fn jitter_stays_near_the_delay() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(1000));
            assert!(d >= Duration::from_millis(750) && d <= Duration::from_millis(1250));
        }
    }
}
