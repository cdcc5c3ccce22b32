//! The normal path: requests no signaling route matches are relayed to the
//! home service, streamed both ways (server-sent events keep flowing).
//!
//! Where they go ([`Route`]):
//! - **`--relay-upstream`** ([`Relay`]): the operator's own tunnel to the
//!   home service, one upstream for every home;
//! - **the home link** (`home_link`): home-peer's own connection to
//!   signal-api, the default when no upstream is configured. Each request
//!   goes to one home, chosen by [`choose_home`]: the home of the signaling
//!   session the page names (`x-beeline-session` header or
//!   `__beeline_session` query parameter, both removed before forwarding),
//!   else the default home. A request is never sent over another home's
//!   link.
//!
//! What the home service is told follows the rules every path into it
//! shares (`beeline_frame::proxy`):
//!
//! - **Body length.** A body of known length is sent with that
//!   `Content-Length`, stated by the relay from the body it forwards; only a
//!   body of unknown length (chunked from the client) goes chunked.
//! - **Forwarding headers.** Every client-sent forwarding or identity header
//!   ([`ClientHeaderFilter`](beeline_frame::proxy::ClientHeaderFilter), plus
//!   [`SignalConfig::strip_request_headers`](crate::SignalConfig::strip_request_headers)),
//!   every copy in any spelling, is dropped; the relay then sets its own
//!   `X-Forwarded-For`, `-Proto` and `-Host` with true values.
//! - **Path prefix.** The request target is resolved on its own root
//!   ([`normalize_path`]) before it is put under the upstream's path, so
//!   `..` in any encoding cannot leave it; a refused target is a 400.

mod headers;
mod link;
mod upstream;
mod websocket;

use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
};

use axum::{
    body::HttpBody as _,
    extract::{ws::WebSocketUpgrade, ConnectInfo, FromRequestParts as _, Request, State},
    response::{IntoResponse as _, Response},
};
use beeline_frame::proxy::normalize_path;
use http::{header, HeaderName, StatusCode};

pub(crate) use upstream::Relay;
pub use upstream::RelayConfigError;

use crate::home_link::Link;
use crate::{errors::ApiError, state::Shared};

/// The header a page names its signaling session with on the normal path.
pub const SESSION_HEADER: &str = "x-beeline-session";

/// The query parameter a page names its session with where it cannot set a
/// header (a browser `WebSocket`).
pub const SESSION_PARAM: &str = "__beeline_session";

/// Where one relayed request goes.
enum Route<'a> {
    Upstream(&'a Relay),
    Link(Arc<Link>),
}

/// Fallback handler: relays the request to the upstream or over the home
/// link, or answers 404 when neither is configured.
pub(crate) async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    match relay(&shared, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn relay(shared: &Arc<Shared>, request: Request) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let upgrade = if websocket::is_upgrade(&parts.method, &parts.headers) {
        let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        Some(upgrade)
    } else {
        None
    };
    let protocols = websocket::requested_protocols(&parts.headers);
    let session = take_session_hint(&mut parts);
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let target = normalize_path(target).map_err(|error| {
        tracing::debug!(%error, method = %parts.method, target, "relay refused a request path");
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("request path refused: {error}"),
        )
    })?;
    if target.starts_with("/.beeline/") {
        // Reserved for what signal-api itself sends over a home link
        // (frames.rs); a page may not reach it through the relay.
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such endpoint"));
    }
    let route = route(shared, session.as_deref()).await?;
    shared
        .metrics
        .relay_requests
        .fetch_add(1, Ordering::Relaxed);

    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let forwarding = headers::Forwarding::of(peer, &parts, &shared.config().trusted_proxies);
    let mut request_headers = std::mem::take(&mut parts.headers);
    headers::strip_hop_by_hop(&mut request_headers);
    headers::strip_client_forwarding(&mut request_headers, shared.client_headers());
    // The length is stated again from the body itself.
    request_headers.remove(header::CONTENT_LENGTH);
    forwarding.apply(&mut request_headers);
    let length = body.size_hint().exact();

    if let Some(upgrade) = upgrade {
        return match route {
            Route::Upstream(relay) => {
                websocket::to_upstream(
                    relay.websocket_url(&target),
                    &request_headers,
                    protocols,
                    upgrade,
                )
                .await
            }
            Route::Link(link) => {
                websocket::over_link(link, target, &request_headers, protocols, upgrade).await
            }
        };
    }

    let sent = match route {
        Route::Upstream(relay) => {
            relay
                .send(parts.method, &target, request_headers, body, length)
                .await
        }
        Route::Link(link) => {
            link::send(&link, parts.method, target, request_headers, body, length).await
        }
    };
    let (status, mut response_headers, body) = sent.inspect_err(|_| {
        shared.metrics.relay_errors.fetch_add(1, Ordering::Relaxed);
    })?;
    headers::strip_hop_by_hop(&mut response_headers);
    headers::mark_cookie_changes(&mut response_headers);
    let mut reply = Response::new(body);
    *reply.status_mut() = status;
    *reply.headers_mut() = response_headers;
    Ok(reply)
}

async fn route<'a>(shared: &'a Arc<Shared>, session: Option<&str>) -> Result<Route<'a>, ApiError> {
    if let Some(relay) = shared.relay() {
        return Ok(Route::Upstream(relay));
    }
    if !shared.config().home_link {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such endpoint"));
    }
    let home = choose_home(shared, session).await?;
    match shared.links().get(&home) {
        Some(link) => Ok(Route::Link(link)),
        None => {
            shared.metrics.relay_errors.fetch_add(1, Ordering::Relaxed);
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("home {home:?} is not connected"),
            ))
        }
    }
}

/// The home a relayed request goes to: the home of the session it names
/// (even an expired one: it still says whose page this is), else the
/// default home.
pub(crate) async fn choose_home(
    shared: &Arc<Shared>,
    session: Option<&str>,
) -> Result<Arc<str>, ApiError> {
    if let Some(home) = session_home(shared, session).await? {
        return Ok(home);
    }
    shared.default_home().ok_or_else(|| {
        ApiError::bad_request(
            "this server has several homes: name the session (x-beeline-session) whose home the request is for",
        )
    })
}

async fn session_home(
    shared: &Arc<Shared>,
    session: Option<&str>,
) -> Result<Option<Arc<str>>, ApiError> {
    let Some(id) = session.filter(|id| !id.is_empty() && id.len() <= 64) else {
        return Ok(None);
    };
    let record = crate::errors::stored(shared, shared.store().session(id)).await?;
    Ok(record.and_then(|record| shared.home_named(&record.home_id)))
}

/// Removes the page's session hint from the request (header and query
/// parameter) and returns it.
fn take_session_hint(parts: &mut http::request::Parts) -> Option<String> {
    let name = HeaderName::from_static(SESSION_HEADER);
    let from_header = parts
        .headers
        .get(&name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    parts.headers.remove(&name);
    let mut from_query = None;
    if let Some(query) = parts.uri.query() {
        let prefix = format!("{SESSION_PARAM}=");
        if query.split('&').any(|pair| pair.starts_with(&prefix)) {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| match pair.strip_prefix(&prefix) {
                    Some(value) => {
                        from_query = Some(value.to_owned());
                        false
                    }
                    None => true,
                })
                .collect();
            let path = parts.uri.path();
            let target = if kept.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", kept.join("&"))
            };
            if let Ok(uri) = target.parse() {
                parts.uri = uri;
            }
        }
    }
    from_header.or(from_query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, session_header: Option<&str>) -> http::request::Parts {
        let mut builder = http::Request::builder().uri(uri);
        if let Some(value) = session_header {
            builder = builder.header(SESSION_HEADER, value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_session_hint_is_taken_out_of_the_request() {
        let mut p = parts("/ws?a=1&__beeline_session=abc&b=2", None);
        assert_eq!(take_session_hint(&mut p).as_deref(), Some("abc"));
        assert_eq!(p.uri.to_string(), "/ws?a=1&b=2");

        let mut p = parts("/ws?__beeline_session=abc", None);
        assert_eq!(take_session_hint(&mut p).as_deref(), Some("abc"));
        assert_eq!(p.uri.to_string(), "/ws");

        let mut p = parts("/api?x=1", Some("def"));
        assert_eq!(take_session_hint(&mut p).as_deref(), Some("def"));
        assert!(p.headers.get(SESSION_HEADER).is_none());
        assert_eq!(p.uri.to_string(), "/api?x=1");

        let mut p = parts("/plain", None);
        assert_eq!(take_session_hint(&mut p), None);
        assert_eq!(p.uri.to_string(), "/plain");
    }
}
