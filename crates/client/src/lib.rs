//! Call a beeline home service from Rust over the direct path.
//!
//! [`connect`] signs in to signal-api as a browser would, opens a data
//! channel to the home peer and keeps it open: when the path is lost it
//! dials again with exponential backoff. The [`HomeClient`] it returns takes
//! `http::Request`s and returns `http::Response`s with a streaming body, and
//! implements `tower::Service`, so hyper, axum and tower code can use it
//! directly:
//!
//! ```no_run
//! # async fn demo() -> Result<(), beeline_client::Error> {
//! use beeline_client::{connect, Auth, ClientConfig};
//! use http_body_util::{BodyExt as _, Empty};
//!
//! let home = connect("https://example.com/webrtc", Auth::Open, ClientConfig::default()).await?;
//! let request = http::Request::get("/v1/models").body(Empty::<bytes::Bytes>::new()).unwrap();
//! let response = home.send(request).await?;
//! let body = response.into_body().collect().await?.to_bytes();
//! # Ok(()) }
//! ```
//!
//! Contract:
//! - A request waits for a path while a connection attempt is under way, at
//!   most [`ClientConfig::setup_budget`]; then it takes the relay
//!   ([`ClientConfig::relay_url`]) if one is set, or fails with
//!   [`Error::Unavailable`]. No request waits longer than that for a path.
//! - A request in flight when the path is lost fails with
//!   [`Error::ChannelClosed`] (or its body ends with it); it is never
//!   replayed, since it may have reached the home service.
//! - A body of known length is sent with `content-length`; the home peer
//!   holds it to that length.
//! - Dropping a request's future or its response body cancels the stream,
//!   and the home peer drops the upstream request.
//! - At most the home's `max_streams` requests run at once on a channel;
//!   more wait for a slot.
//!
//! The one connection attempt underneath is [`dial`], usable on its own.

mod dial;
mod error;
mod link;
mod resume;
mod service;

use std::sync::Arc;
use std::time::Duration;

pub use beeline_bridge::ClientOptions;
use beeline_transport::PeerConfig;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use beeline_signal_client::{SignalClient, TrustedRoots};
pub use dial::{
    dial, open_channel, open_channel_on, Connection, OpenChannel, SetupTimes, HTTP_CHANNEL_LABEL,
};
pub use error::Error;
pub use resume::{
    frame_connection, FrameConnection, FrameOptions, RESUME_CHANNEL_LABEL, UNKNOWN_CONNECTION_CLOSE,
};
pub use service::{Body, HomeClient, PathState};

/// How the client proves itself to signal-api: the same ways a browser
/// does.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum Auth {
    /// No credential (signal-api's `open` browser auth).
    #[default]
    Open,
    /// A bearer token (signal-api's JWT browser auth).
    Bearer(String),
    /// A header set by a trusted proxy in front of signal-api.
    Header {
        /// Header name.
        name: String,
        /// Header value.
        value: String,
    },
}

/// How [`connect`] behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Transport settings (address filter, ICE servers; signal-api's TURN
    /// servers are added to these).
    pub peer: PeerConfig,
    /// Protocol options (binary framing, window).
    pub options: ClientOptions,
    /// How long one connection attempt, and a request waiting for a path,
    /// may take (the specification's 8 s).
    pub setup_budget: Duration,
    /// First retry delay after a failed attempt.
    pub backoff_initial: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
    /// The public URL of the normal path (e.g. `https://example.com`),
    /// taken when the direct path is not there.
    pub relay_url: Option<String>,
    /// The scheme to tell the home service the client addressed
    /// (`x-forwarded-proto`); by default the request URI's, else `https`.
    pub scheme: Option<String>,
    /// Certificate authorities trusted for `https://` signaling and relay
    /// URLs besides the public roots.
    pub roots: TrustedRoots,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            peer: PeerConfig::default(),
            options: ClientOptions::default(),
            setup_budget: Duration::from_secs(8),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            relay_url: None,
            scheme: None,
            roots: TrustedRoots::default(),
        }
    }
}

/// Starts a client for the home behind `signal_url` (the signaling base,
/// e.g. `https://example.com/webrtc`) and waits for the first connection
/// attempt to end, at most the setup budget. It fails only on unusable
/// settings: when the home cannot be reached, the client keeps trying in
/// the background and requests take the relay meanwhile.
pub async fn connect(
    signal_url: &str,
    auth: Auth,
    config: ClientConfig,
) -> Result<HomeClient, Error> {
    let mut signal = SignalClient::new(signal_url)?.with_roots(&config.roots)?;
    signal = match auth {
        Auth::Open => signal,
        Auth::Bearer(token) => signal.with_bearer(token),
        Auth::Header { name, value } => signal.with_header(&name, &value)?,
    };
    let relay = match &config.relay_url {
        Some(url) => {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| Error::Config(format!("relay URL {url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(Error::Config(format!("relay URL {url:?}: not http(s)")));
            }
            let http = config
                .roots
                .add_to_reqwest(reqwest::Client::builder())
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .connect_timeout(config.setup_budget)
                .build()
                .map_err(|e| Error::Config(e.to_string()))?;
            Some(service::Relay {
                http,
                base: url.trim_end_matches('/').to_owned(),
            })
        }
        None => None,
    };
    let (tx, rx) = watch::channel(link::LinkState::Connecting);
    let stop = CancellationToken::new();
    let client = HomeClient {
        inner: Arc::new(service::Inner {
            state: rx,
            setup_budget: config.setup_budget,
            scheme: config.scheme.clone(),
            relay,
            stop: stop.clone(),
        }),
    };
    let budget = config.setup_budget;
    tokio::spawn(link::supervise(signal, config, tx, stop));
    let mut state = client.inner.state.clone();
    let _ = tokio::time::timeout(
        budget,
        state.wait_for(|s| !matches!(s, link::LinkState::Connecting)),
    )
    .await;
    Ok(client)
}
