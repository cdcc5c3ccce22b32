//! Errors: what [`SignalServer::open`](crate::SignalServer::open) refuses
//! ([`OpenError`]), and how a request fails ([`ApiError`], always answered
//! as `{"error": "..."}`), store failures included ([`stored`]: 404/410/429
//! for session errors, 503 with `Retry-After` while the database cannot be
//! reached, 500 otherwise).

use std::{borrow::Cow, error::Error as StdError, time::Duration};

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;

use crate::{
    config::SignalConfig,
    relay::{RelayConfigError, RelayError},
    state::Shared,
    store::StoreError,
};

/// Errors from [`SignalServer::open`](crate::SignalServer::open).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The base path is not of the form `/a/b`.
    #[error("invalid base path {0:?}: it must start with '/' and contain no '{{', '}}', '?', '#' or spaces")]
    InvalidBasePath(String),
    /// The homes are missing or misconfigured.
    #[error("invalid home configuration: {0}")]
    InvalidHomes(String),
    /// An ICE server URL has the wrong scheme or no host.
    #[error("invalid ICE server URL {0:?}: STUN URLs must start with stun: or stuns:, TURN URLs with turn: or turns:, followed by a host")]
    InvalidIceUrl(String),
    /// A CORS origin is not `scheme://host[:port]`.
    #[error(
        "invalid CORS origin {0:?}: expected scheme://host[:port], e.g. https://app.example.com"
    )]
    InvalidOrigin(String),
    /// The relay upstream is not a usable URL.
    #[error(transparent)]
    Relay(#[from] RelayConfigError),
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// [`SignalConfig::sweep_interval`] is zero.
    #[error("the sweep interval must be longer than zero (it is how often expired sessions are deleted)")]
    InvalidSweepInterval,
    /// [`SignalConfig::turn_urls`] are set but
    /// [`SignalConfig::turn_secrets`] is not: browsers would be handed TURN
    /// servers without credentials.
    #[error("TURN URLs are configured but no TURN secret (coturn's static-auth-secret) to sign their credentials")]
    TurnUrlsWithoutSecret,
}

/// Awaits a store call; store failures become logged 500s (503 with
/// `Retry-After` while the database cannot be reached), session errors
/// their documented statuses.
pub(crate) async fn stored<T>(
    shared: &Shared,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, ApiError> {
    match call.await {
        Ok(value) => Ok(value),
        Err(StoreError::UnknownSession) => Err(ApiError::unknown_session()),
        Err(StoreError::ExpiredSession) => Err(ApiError::expired_session(shared.config())),
        Err(StoreError::SessionFull { limit }) => {
            shared.metrics.count_limit("session-messages");
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("this session already holds its maximum of {limit} messages; start a new session"),
            ))
        }
        Err(error @ StoreError::Unavailable(_)) => {
            tracing::warn!(error = %error_chain(&error), "signaling store unavailable");
            Err(ApiError::unavailable())
        }
        Err(error) => {
            tracing::error!(error = %error_chain(&error), "signaling store failed");
            Err(ApiError::internal())
        }
    }
}

pub(crate) fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An error answered as `{"error": "..."}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: Cow<'static, str>,
    retry_after: Option<Duration>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 429 with `Retry-After` (whole seconds, rounded up).
    pub(crate) fn too_many(message: impl Into<Cow<'static, str>>, retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, message)
        }
    }

    pub(crate) fn unknown_session() -> Self {
        Self::new(StatusCode::NOT_FOUND, "unknown session")
    }

    pub(crate) fn expired_session(config: &SignalConfig) -> Self {
        Self::new(
            StatusCode::GONE,
            format!(
                "session expired: signaling sessions last {} s; create a new session",
                config.session_ttl.as_secs()
            ),
        )
    }

    pub(crate) fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {limit} bytes"),
        )
    }

    pub(crate) fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
    }

    /// 503 with `Retry-After`: the database cannot be reached right now.
    pub(crate) fn unavailable() -> Self {
        Self {
            retry_after: Some(Duration::from_secs(1)),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the signaling database is unavailable; retry shortly",
            )
        }
    }

    /// Maps an axum extractor rejection, keeping its status (400, 413, 415…).
    pub(crate) fn rejected(
        shared: &Shared,
        status: StatusCode,
        what: &str,
        detail: String,
    ) -> Self {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            shared.metrics.count_limit("body-size");
            Self::body_too_large(shared.config().limits.max_body_bytes)
        } else {
            Self::new(status, format!("{what}: {detail}"))
        }
    }
}

/// A failure to find a relayed request's home is answered as the server
/// answers it anywhere else.
impl From<ApiError> for RelayError {
    fn from(error: ApiError) -> Self {
        Self::Lookup {
            status: error.status,
            message: error.message,
            retry_after: error.retry_after,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: &self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}
