//! HTTP over a data channel, both ends.
//!
//! The home side, [`serve`], reads frames from a [`Channel`], calls an
//! [`Upstream`] for each request (an HTTP origin through [`HttpUpstream`], or
//! any `tower::Service` in-process through [`ServiceUpstream`]) and streams
//! each response back as soon as the upstream produces it. The client side,
//! [`Client`], sends `http`-shaped requests and returns streaming responses;
//! tests and benchmarks use it, and the browser client implements the same
//! protocol in JavaScript. The wire protocol is `docs/protocol.md`.
//!
//! Contract:
//! - A client that speaks only protocol v1 (the specification's frames) is
//!   served exactly as the specification says.
//! - A malformed frame never ends the channel: it gets an error for its
//!   stream when the stream can be told, a stream-less error otherwise, and
//!   every other stream continues.
//! - No message sent is larger than [`Channel::max_message_size`].
//! - With the `credit` feature, memory per stream is bounded by the window
//!   in each direction, and a reader that stops reading stalls only its own
//!   stream.
//! - When the channel ends, every upstream request still running is dropped,
//!   which closes its upstream connection.
//! - The bridge knows nothing of WebRTC: anything that moves whole messages
//!   can implement [`Channel`]. The one adapter for a transport data
//!   channel, [`DataChannelLink`], sits behind the `transport` feature (on
//!   by default).

#[cfg(feature = "axum")]
mod axum_ws;
mod client;
mod credit;
mod headers;
#[cfg(feature = "transport")]
mod link;
mod memory;
mod resume;
mod server;
mod socket;
mod upstream;
mod websocket;
mod ws_client;

use std::future::Future;
use std::time::Duration;

pub use beeline_frame::proxy::ClientHeaderFilter;
use beeline_frame::Encoded;
pub use beeline_seal::CookieKey;
use bytes::Bytes;

#[cfg(feature = "axum")]
pub use axum_ws::{finish_both, join_websocket};
pub use client::{
    Client, ClientError, ClientOptions, ResponseBody, ResponseHandle, DEFAULT_WINDOW,
};
pub use headers::{frame_headers, http_headers};
#[cfg(feature = "transport")]
pub use link::{DataChannelLink, LinkActivity};
pub use memory::MemoryChannel;
pub use resume::{CarrierId, ResumableChannel, ResumeConfig, ResumeError};
pub use server::serve;
pub use socket::{SocketChannel, SocketMessage};
pub use upstream::{
    BodyStream, HttpUpstream, ServiceBody, ServiceUpstream, Upstream, UpstreamRequest,
    UpstreamResponse,
};
pub use websocket::{MessageSink, MessageStream, WebSocketOpen};
pub use ws_client::{Upgrade, WsReceiver, WsSender};

/// Read buffer of every WebSocket beeline opens or accepts (the home link,
/// relayed and upstream sockets, frame connections). tungstenite's default,
/// 128 KiB, is allocated for each socket and zero-filled up to its size
/// before every read, even one that finds nothing. signal-api relaying 300
/// WebSockets to `--relay-upstream` (two sockets each) held 82 MB more with
/// the default and 12.5 MB with 16 KiB; small GETs over the home link no
/// slower (0.350–0.362 against 0.352–0.384 ms p50 in paired runs), 100 MB
/// over it as fast (docs/performance.md). A message larger than the buffer
/// is still read whole, in more reads.
pub const WS_READ_BUFFER: usize = 16 * 1024;

/// A message received from a [`Channel`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The message bytes.
    pub data: Bytes,
    /// True for a binary message, false for text.
    pub binary: bool,
}

/// A message channel the bridge runs over (a data channel, an in-memory pair
/// in tests, a relay connection).
pub trait Channel: Send + Sync + 'static {
    /// Sends one message. May wait while the channel's send buffer is full.
    fn send(&self, message: Encoded) -> impl Future<Output = Result<(), ChannelClosed>> + Send;
    /// Sends `messages` in order. A channel that writes to a socket
    /// overrides it to write them all at once (one system call, one wake-up
    /// of the reader), rather than one at a time.
    fn send_many(
        &self,
        messages: Vec<Encoded>,
    ) -> impl Future<Output = Result<(), ChannelClosed>> + Send {
        async move {
            for message in messages {
                self.send(message).await?;
            }
            Ok(())
        }
    }
    /// Receives the next message; `None` when the channel is closed.
    fn recv(&self) -> impl Future<Output = Option<Received>> + Send;
    /// The largest message the other side accepts.
    fn max_message_size(&self) -> usize;
}

/// A shared channel is a channel: its owner can keep a handle (to close
/// it, say) while a bridge or a resumable connection uses it.
impl<C: Channel> Channel for std::sync::Arc<C> {
    fn send(&self, message: Encoded) -> impl Future<Output = Result<(), ChannelClosed>> + Send {
        C::send(self, message)
    }

    fn send_many(
        &self,
        messages: Vec<Encoded>,
    ) -> impl Future<Output = Result<(), ChannelClosed>> + Send {
        C::send_many(self, messages)
    }

    fn recv(&self) -> impl Future<Output = Option<Received>> + Send {
        C::recv(self)
    }

    fn max_message_size(&self) -> usize {
        C::max_message_size(self)
    }
}

/// The channel is closed; nothing more can be sent.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("channel closed")]
pub struct ChannelClosed;

/// Errors from the upstream side of the bridge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The upstream could not be reached.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// The upstream failed mid-response.
    #[error("upstream: {0}")]
    Upstream(String),
    /// The request cannot be sent upstream as given.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The configured upstream URL is not usable.
    #[error("invalid upstream URL: {0}")]
    InvalidUpstream(String),
}

/// The key and session a channel's cookie jars are sealed with.
#[derive(Debug, Clone)]
pub struct CookieSeal {
    /// The key derived from the home token.
    pub key: beeline_seal::CookieKey,
    /// The signaling session the channel belongs to.
    pub session: String,
}

/// Limits and settings applied by [`serve`] to one channel.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Requests in flight at once; more get `too_many_streams` (429).
    pub max_concurrent_streams: usize,
    /// A limit shared by every channel of one peer connection (one permit
    /// per request in flight), so opening more channels buys no more
    /// requests; past it, `too_many_streams` too.
    pub peer_streams: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    /// Largest request head (path + header names and values); more gets
    /// `header_too_large` (431).
    pub max_header_bytes: usize,
    /// Largest request body; more gets `body_too_large` (413).
    pub max_body_bytes: u64,
    /// Initial flow-control window granted to the client per stream for
    /// request bodies.
    pub window: u32,
    /// A stream whose upstream makes no progress for this long fails with
    /// `idle_timeout`.
    pub idle_timeout: Duration,
    /// A stream whose client grants no flow-control credit for this long
    /// fails with `flow_control`, and its upstream request is dropped.
    pub credit_timeout: Duration,
    /// The remote peer's address, sent as `x-forwarded-for`.
    pub peer_addr: Option<String>,
    /// Sealed cookie jars for this channel's session (`docs/cookies.md`):
    /// when set and the client asks for the `cookies` feature, a request's
    /// `x-beeline-jar` becomes its `Cookie` header and a response's
    /// `Set-Cookie` lines travel sealed as `x-beeline-set-cookie`.
    pub cookies: Option<CookieSeal>,
    /// Request headers no client may set (forwarding and identity headers,
    /// plus the operator's own); every copy is dropped, in any spelling.
    pub client_headers: ClientHeaderFilter,
    /// The client is a trusted relay (signal-api over the home link) that
    /// has already dropped what browsers sent and states the true
    /// `x-forwarded-for`, `-host` and `-proto` itself: those three are kept
    /// as it gives them. Every other [`client_headers`](Self::client_headers)
    /// rule still applies. Never set it for a channel a browser speaks on.
    pub trust_forwarded_headers: bool,
    /// Largest WebSocket message either side may send on an upgrade
    /// stream; a larger one closes the socket with 1009.
    pub max_ws_message_bytes: u64,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 128,
            peer_streams: None,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1 << 30,
            window: 256 * 1024,
            idle_timeout: Duration::from_secs(300),
            credit_timeout: Duration::from_secs(60),
            peer_addr: None,
            client_headers: ClientHeaderFilter::default(),
            cookies: None,
            trust_forwarded_headers: false,
            max_ws_message_bytes: beeline_frame::ws::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}
