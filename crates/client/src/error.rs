//! What can go wrong, and the HTTP status a proxy answers for it.

use std::time::Duration;

use beeline_bridge::ClientError;
use beeline_frame::ErrorCode;

/// Errors from connecting to the home peer or sending a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The signaling server could not be used.
    #[error("signaling: {0}")]
    Signaling(#[from] beeline_signal_client::SignalError),
    /// The WebRTC transport failed.
    #[error("transport: {0}")]
    Transport(#[from] beeline_transport::Error),
    /// No channel opened within the setup budget.
    #[error("no channel within {0:?}")]
    SetupTimeout(Duration),
    /// The home peer turned the connection down.
    #[error("refused: {0}")]
    Refused(String),
    /// There is no channel, none opened within the setup budget, and no
    /// relay is configured.
    #[error("the home service is unreachable: {0}")]
    Unavailable(String),
    /// The channel closed while the request was in flight.
    #[error("the channel closed while the request was in flight")]
    ChannelClosed,
    /// The home peer failed the stream (`error` frame).
    #[error("the home peer failed the request ({code}): {message}")]
    Stream {
        /// The protocol error code, e.g. `body_too_large`.
        code: String,
        /// The home peer's explanation.
        message: String,
    },
    /// The request cannot be sent as given.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The request body failed while it was being read.
    #[error("request body: {0}")]
    Body(String),
    /// The relay (the normal path) failed.
    #[error("relay: {0}")]
    Relay(String),
    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl From<ClientError> for Error {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Closed => Self::ChannelClosed,
            ClientError::Stream { code, message } => Self::Stream { code, message },
            ClientError::Cancelled => Self::Stream {
                code: "cancel".into(),
                message: "the home peer cancelled the request".into(),
            },
            ClientError::NoAgree(d) => Self::Refused(format!("no agree within {d:?}")),
            other => Self::Refused(other.to_string()),
        }
    }
}

impl Error {
    /// The status an HTTP proxy answers with for this error: the protocol's
    /// own mapping for stream errors (413, 431, 429, 400, 502, 504, ...),
    /// 502 when the home cannot be reached, 400 for a bad request.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Stream { code, .. } => ErrorCode::parse(code).http_status(),
            Self::InvalidRequest(_) | Self::Body(_) => 400,
            _ => 502,
        }
    }

    /// A short machine-readable name, as in the proxy's JSON errors.
    pub fn code(&self) -> &str {
        match self {
            Self::Stream { code, .. } => code,
            Self::Signaling(_) => "signaling",
            Self::Transport(_) => "transport",
            Self::SetupTimeout(_) => "setup_timeout",
            Self::Refused(_) => "refused",
            Self::Unavailable(_) => "unavailable",
            Self::ChannelClosed => "channel_closed",
            Self::InvalidRequest(_) => "bad_request",
            Self::Body(_) => "bad_request",
            Self::Relay(_) => "relay",
            Self::Config(_) => "config",
        }
    }
}
