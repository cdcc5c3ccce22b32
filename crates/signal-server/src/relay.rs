//! Streaming reverse proxy for requests no signaling route matches.
//!
//! It stands in for the normal VPS → tunnel → home path: the request is
//! forwarded as it came (method, path and query, end-to-end headers, body as
//! a stream) and the upstream's answer is streamed back chunk by chunk, so
//! server-sent events keep flowing.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use axum::{
    body::{Body, HttpBody as _},
    extract::{Request, State},
    response::{IntoResponse as _, Response},
};
use http::{header, HeaderMap, HeaderName, StatusCode};
use reqwest::Url;

use crate::server::{ApiError, Shared};

/// How long connecting to the upstream may take. There is no overall
/// timeout: relayed responses may be long-lived event streams.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Headers that describe one connection rather than the message (RFC 9110
/// §7.6.1), so they are never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// The upstream a [`SignalServer`](crate::SignalServer) forwards to.
#[derive(Debug)]
pub(crate) struct Relay {
    client: reqwest::Client,
    /// The upstream base without a trailing `/`; the request's path and
    /// query are appended to it.
    base: String,
}

impl Relay {
    pub(crate) fn new(upstream: &str) -> Result<Self, RelayConfigError> {
        let invalid = |reason: String| RelayConfigError {
            upstream: upstream.to_owned(),
            reason,
        };
        let url = Url::parse(upstream).map_err(|e| invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("scheme must be http or https".to_owned()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("must not have a query or fragment".to_owned()));
        }
        let client = reqwest::Client::builder()
            // A proxy passes redirects on to its client; it never follows them.
            .redirect(reqwest::redirect::Policy::none())
            // The upstream is a fixed address; environment proxies must not
            // reroute it.
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            client,
            base: url.as_str().trim_end_matches('/').to_owned(),
        })
    }
}

/// The relay upstream given in the configuration is not a usable URL.
#[derive(Debug, thiserror::Error)]
#[error("invalid relay upstream {upstream:?}: {reason}")]
pub struct RelayConfigError {
    upstream: String,
    reason: String,
}

/// Fallback handler: forwards to the relay, or answers 404 without one.
pub(crate) async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let Some(relay) = &shared.relay else {
        return ApiError::new(StatusCode::NOT_FOUND, "no such endpoint").into_response();
    };
    shared
        .metrics
        .relay_requests
        .fetch_add(1, Ordering::Relaxed);

    let (parts, body) = request.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let url = format!("{}{}", relay.base, path_and_query);

    let mut headers = parts.headers;
    let original_host = headers.remove(header::HOST);
    strip_hop_by_hop(&mut headers);
    if let Some(host) = original_host {
        headers.entry("x-forwarded-host").or_insert(host);
    }

    let mut upstream = relay
        .client
        .request(parts.method.clone(), &url)
        .headers(headers);
    // A request without a body (most GETs) must stay without one: a streamed
    // body would otherwise be sent chunked, which some servers refuse for GET.
    if body.size_hint().exact() != Some(0) {
        upstream = upstream.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }

    let response = match upstream.send().await {
        Ok(response) => response,
        Err(error) => {
            shared.metrics.relay_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, method = %parts.method, path = parts.uri.path(), "relay upstream failed");
            return ApiError::new(StatusCode::BAD_GATEWAY, "relay upstream is unreachable")
                .into_response();
        }
    };

    let status = response.status();
    let mut headers = response.headers().clone();
    strip_hop_by_hop(&mut headers);
    let mut reply = Response::new(Body::from_stream(response.bytes_stream()));
    *reply.status_mut() = status;
    *reply.headers_mut() = headers;
    reply
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    // `Upgrade` only makes sense together with a connection takeover, which
    // this relay does not do.
    headers.remove(header::UPGRADE);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret-hop"),
        );
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn upstream_must_be_http() {
        assert!(Relay::new("ftp://127.0.0.1/").is_err());
        assert!(Relay::new("http://127.0.0.1:3000/").is_ok());
    }
}
