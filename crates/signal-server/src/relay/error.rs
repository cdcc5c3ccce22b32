//! Why a request could not be relayed ([`RelayError`]), answered as
//! `{"error": "..."}` like every other error of the signaling server.

use std::{borrow::Cow, sync::Arc, time::Duration};

use axum::{
    response::{IntoResponse, Response},
    Json,
};
use http::{header, HeaderValue, StatusCode};

/// A relayed request that failed before the home service answered it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelayError {
    /// The request cannot be relayed as it is (400): a bad path or
    /// WebSocket handshake, or no home named where one is needed.
    #[error("{0}")]
    BadRequest(Cow<'static, str>),
    /// Nothing is relayed to: no upstream and no home links, or a path
    /// reserved for the server itself (404).
    #[error("no such endpoint")]
    NotFound,
    /// The request's home has no link up (502).
    #[error("home {0:?} is not connected")]
    NotConnected(Arc<str>),
    /// The home service, or the way to it, failed or refused before a
    /// response began: 502 for an unreachable upstream or a closed link,
    /// else the status the far end gave.
    #[error("{message}")]
    Far {
        /// The status the browser is given.
        status: StatusCode,
        /// What it is told.
        message: Cow<'static, str>,
    },
    /// Finding the request's home failed: the server's own answer (503
    /// with `Retry-After` while its database cannot be reached).
    #[error("{message}")]
    Lookup {
        /// The status the browser is given.
        status: StatusCode,
        /// What it is told.
        message: Cow<'static, str>,
        /// How long the browser should wait before trying again.
        retry_after: Option<Duration>,
    },
}

impl RelayError {
    /// A 400 with `message`.
    pub(crate) fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::BadRequest(message.into())
    }

    /// A failure on the far side answered with `status`.
    pub(crate) fn far(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self::Far {
            status,
            message: message.into(),
        }
    }

    /// A 502: the far side could not be reached or gave nothing usable.
    pub(crate) fn bad_gateway(message: impl Into<Cow<'static, str>>) -> Self {
        Self::far(StatusCode::BAD_GATEWAY, message)
    }

    /// The status the browser is given.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::NotConnected(_) => StatusCode::BAD_GATEWAY,
            Self::Far { status, .. } | Self::Lookup { status, .. } => *status,
        }
    }
}

impl IntoResponse for RelayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            Self::Lookup { retry_after, .. } => *retry_after,
            _ => None,
        };
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if let Some(wait) = retry_after {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_status_and_retry_after() {
        let cases = [
            (RelayError::bad_request("no"), 400),
            (RelayError::NotFound, 404),
            (RelayError::NotConnected("attic".into()), 502),
            (RelayError::far(StatusCode::GATEWAY_TIMEOUT, "slow"), 504),
            (RelayError::bad_gateway("down"), 502),
        ];
        for (error, status) in cases {
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status);
            assert!(response.headers().get(header::RETRY_AFTER).is_none());
        }
        let response = RelayError::Lookup {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "later".into(),
            retry_after: Some(Duration::from_millis(1500)),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }
}
