//! The HTTP surface: the routes and what guards them (origin, body size),
//! with one module per endpoint family: `session` (sessions and the cookie
//! jar), `signal` (posting and the long poll), `report` (outcomes), and
//! `caller` (who is asking).

mod caller;
mod report;
mod session;
mod signal;

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, DefaultBodyLimit, Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{config::SignalConfig, home_link};

pub use crate::errors::OpenError;
pub(crate) use crate::errors::{stored, ApiError};
pub(crate) use crate::state::Shared;
pub use crate::state::SignalServer;

pub(crate) use self::caller::{Caller, Who};
use self::{
    report::report,
    session::{cookie_exchange, create_session},
    signal::{poll_signal, post_signal},
};

/// The browser client served at `{base}/client.js`.
const CLIENT_JS: &str = include_str!("../../assets/client.js");

/// Default largest request body the signaling endpoints accept
/// ([`Limits::max_body_bytes`](crate::Limits::max_body_bytes)).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

impl SignalServer {
    /// The routes of the signaling contract, plus `/healthz`, `/metrics` and
    /// the relay (or a JSON 404) as fallback.
    ///
    /// The router owns its fallback, so mount it as a whole (serve it, nest
    /// it, or use it as another router's `fallback_service`) rather than
    /// merging it into a router that has a fallback of its own.
    pub fn router(&self) -> Router {
        let shared = &self.shared;
        let base = &shared.config.base_path;
        let mut signaling = Router::new()
            .route(&format!("{base}/session"), post(create_session))
            .route(
                &format!("{base}/signal"),
                post(post_signal).get(poll_signal),
            )
            .route(&format!("{base}/report"), post(report))
            .route(&format!("{base}/cookie"), post(cookie_exchange))
            // Set before the layers so that the CORS layer also wraps it and
            // answers preflights (OPTIONS) on these paths.
            .method_not_allowed_fallback(method_not_allowed)
            .layer(match shared.config.limits.max_body_bytes {
                // 0 turns the limit off, as for every limit.
                0 => DefaultBodyLimit::disable(),
                limit => DefaultBodyLimit::max(limit),
            })
            .layer(middleware::from_fn_with_state(
                shared.clone(),
                guard_request,
            ));
        if let Some(cors) = cors_layer(&shared.cors_allow) {
            signaling = signaling.layer(cors);
        }
        Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .route(&format!("{base}/client.js"), get(client_js))
            .route(&format!("{base}/link"), get(home_link::accept))
            .route(&format!("{base}/frames"), get(crate::frames::accept))
            .merge(signaling)
            .method_not_allowed_fallback(method_not_allowed)
            .fallback_service(self.relay.clone())
            .with_state(shared.clone())
    }
}

fn cors_layer(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins = origins.to_vec();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .allow_credentials(true)
            .max_age(Duration::from_secs(600)),
    )
}

/// Runs before anything reads the body: refuses foreign origins (so a page
/// elsewhere cannot ride a user's cookies) and bodies whose declared length
/// is over the limit (without reading them).
async fn guard_request(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        if !origin_allowed(origin, request.headers(), &shared.config.cors_origins) {
            let shown = String::from_utf8_lossy(origin.as_bytes()).into_owned();
            return ApiError::new(
                StatusCode::FORBIDDEN,
                format!("origin {shown} may not call the signaling endpoints; add it to the CORS allow-list"),
            )
            .into_response();
        }
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let limit = shared.config.limits.max_body_bytes;
    if limit != 0 && declared.is_some_and(|length| length > limit as u64) {
        shared.metrics.count_limit("body-size");
        return ApiError::body_too_large(limit).into_response();
    }
    next.run(request).await
}

/// Same origin (the `Origin` names the host the request was sent to) or
/// listed.
fn origin_allowed(origin: &HeaderValue, headers: &HeaderMap, listed: &[String]) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if listed
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some((_, authority)) = origin.split_once("://") else {
        return false;
    };
    let host_of = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
    };
    [host_of("x-forwarded-host"), host_of("host")]
        .into_iter()
        .flatten()
        .any(|host| host.eq_ignore_ascii_case(authority))
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// The home of session `id` when `caller` may use it and it is live; 404
/// (410 when expired) otherwise, as for a poll.
pub(crate) async fn live_session_home(
    shared: &Arc<Shared>,
    caller: &Caller,
    id: &str,
) -> Result<Arc<str>, ApiError> {
    let session = stored(shared, shared.store.session(id)).await?;
    match session {
        Some(session) if caller.access().allows(&session) => {
            if session.created_ms < live_since_ms(&shared.config) {
                return Err(ApiError::expired_session(&shared.config));
            }
            shared
                .home_named(&session.home_id)
                .ok_or_else(ApiError::unknown_session)
        }
        _ => Err(ApiError::unknown_session()),
    }
}

/// Sessions created at or after this instant are live.
pub(crate) fn live_since_ms(config: &SignalConfig) -> u64 {
    now_ms().saturating_sub(millis(config.session_ttl))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut text = shared.metrics.render();
            shared.links.render(&mut text, shared.homes.names());
            text
        },
    )
}

async fn client_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CLIENT_JS,
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

pub(super) fn read_body(
    shared: &Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        ApiError::rejected(
            shared,
            r.status(),
            "could not read request body",
            r.body_text(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_and_listed_origins_are_allowed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("example.com:8080"));
        let listed = vec!["https://app.example.com".to_owned()];
        let allowed = |origin: &'static str, headers: &HeaderMap| {
            origin_allowed(&HeaderValue::from_static(origin), headers, &listed)
        };
        assert!(allowed("http://example.com:8080", &headers));
        assert!(allowed("https://app.example.com", &headers));
        assert!(!allowed("https://evil.example", &headers));
        assert!(!allowed("null", &headers));
        headers.insert(
            "x-forwarded-host",
            HeaderValue::from_static("public.example"),
        );
        assert!(allowed("https://public.example", &headers));
    }
}
