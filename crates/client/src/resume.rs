//! Resumable connections from Rust (`docs/protocol.md` §4.8), as
//! `client.js` makes them with `resume: true`: one bridge connection
//! (a [`beeline_bridge::ResumableChannel`]) that starts on the frame
//! connection through signal-api's home link and moves to a `resume` data
//! channel ([`open_channel_on`](crate::open_channel_on) with
//! [`RESUME_CHANNEL_LABEL`]) and back, streams in flight included.
//!
//! [`frame_connection`] opens the first carrier; attach it, then the
//! channel's [`DataChannelLink`](beeline_bridge::DataChannelLink), to the
//! resumable channel.

use beeline_bridge::{Channel, ChannelClosed, Received};
use beeline_frame::Encoded;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt as _, StreamExt as _};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};

use crate::{Error, TrustedRoots};

pub use beeline_frame::resume::{RESUME_CHANNEL_LABEL, UNKNOWN_CONNECTION_CLOSE};

/// The largest message a frame connection takes (signal-api's limit).
const MAX_MESSAGE: usize = 1 << 20;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The frame connection of a session: a WebSocket to `{base}/frames`
/// through signal-api and its home link, as a [`Channel`] carrying
/// envelopes (binary messages).
pub struct FrameConnection {
    sink: Mutex<SplitSink<Socket, tungstenite::Message>>,
    stream: Mutex<SplitStream<Socket>>,
}

impl std::fmt::Debug for FrameConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameConnection").finish_non_exhaustive()
    }
}

/// How [`frame_connection`] connects, besides where.
#[derive(Debug, Clone, Default)]
pub struct FrameOptions {
    /// The caller had a connection with this session already: the home
    /// then closes the socket with [`UNKNOWN_CONNECTION_CLOSE`] when it no
    /// longer has it, rather than starting a new one.
    pub resume: bool,
    /// The browser token, when signal-api wants one.
    pub bearer: Option<String>,
    /// Certificate authorities to trust for an `https://` signaling URL,
    /// besides the public roots (a private CA's signal-api).
    pub roots: TrustedRoots,
}

/// Opens the frame connection of `session_id` at the signaling base URL
/// `signal_url` (`http://host/webrtc` or `https://…`).
pub async fn frame_connection(
    signal_url: &str,
    session_id: &str,
    options: &FrameOptions,
) -> Result<FrameConnection, Error> {
    let frames = beeline_signal_client::websocket_url(signal_url, "frames").ok_or_else(|| {
        Error::Config(format!(
            "signaling URL {signal_url:?} must start with http:// or https://"
        ))
    })?;
    let mut url = format!("{frames}?session_id={session_id}");
    if options.resume {
        url.push_str("&resume=1");
    }
    let mut request = url
        .into_client_request()
        .map_err(|e| Error::Config(format!("frame connection URL: {e}")))?;
    if let Some(token) = &options.bearer {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Error::Config("the bearer token is not a valid header value".into()))?;
        request.headers_mut().insert("authorization", value);
    }
    let mut config = tungstenite::protocol::WebSocketConfig::default();
    config.max_message_size = Some(MAX_MESSAGE);
    config.max_frame_size = Some(MAX_MESSAGE);
    config.read_buffer_size = beeline_bridge::WS_READ_BUFFER;
    let connector = options
        .roots
        .tls_config()
        .map(tokio_tungstenite::Connector::Rustls);
    let (socket, _) =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector)
            .await
            .map_err(|e| Error::Refused(format!("frame connection: {e}")))?;
    let (sink, stream) = socket.split();
    Ok(FrameConnection {
        sink: Mutex::new(sink),
        stream: Mutex::new(stream),
    })
}

impl Channel for FrameConnection {
    async fn send(&self, message: Encoded) -> Result<(), ChannelClosed> {
        let Encoded::Binary(data) = message else {
            // Envelopes are binary; a resumable channel sends nothing else.
            return Err(ChannelClosed);
        };
        self.sink
            .lock()
            .await
            .send(tungstenite::Message::Binary(data))
            .await
            .map_err(|_| ChannelClosed)
    }

    async fn recv(&self) -> Option<Received> {
        let mut stream = self.stream.lock().await;
        loop {
            match stream.next().await? {
                Ok(tungstenite::Message::Binary(data)) => {
                    return Some(Received { data, binary: true })
                }
                Ok(tungstenite::Message::Close(frame)) => {
                    if let Some(frame) =
                        frame.filter(|f| u16::from(f.code) == UNKNOWN_CONNECTION_CLOSE)
                    {
                        tracing::debug!(reason = %frame.reason, "the home no longer has this resumable connection");
                    }
                    return None;
                }
                Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    fn max_message_size(&self) -> usize {
        MAX_MESSAGE
    }
}
