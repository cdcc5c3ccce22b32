//! Streaming reverse proxy for requests no signaling route matches.
//!
//! It stands in for the normal VPS → tunnel → home path: the request is
//! forwarded as it came (method, path and query, end-to-end headers, body as
//! a stream) and the upstream's answer is streamed back chunk by chunk, so
//! server-sent events keep flowing.
//!
//! What the home service is told follows the rules every path into it
//! shares (`beeline_frame::proxy`):
//!
//! - **Body length.** A body of known length is sent with that
//!   `Content-Length`, stated by the relay from the body it forwards; only a
//!   body of unknown length (chunked from the client) goes chunked.
//! - **Forwarding headers.** Every client-sent forwarding or identity header
//!   ([`ClientHeaderFilter`], plus [`SignalConfig::strip_request_headers`](crate::SignalConfig::strip_request_headers)),
//!   every copy in any spelling, is dropped; the relay then sets its own
//!   `X-Forwarded-For`, `-Proto` and `-Host` with true values.
//! - **Path prefix.** The request target is resolved on its own root
//!   ([`normalize_path`]) before it is put under the upstream's path, so
//!   `..` in any encoding cannot leave it; a refused target is a 400.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use axum::{
    body::{Body, HttpBody as _},
    extract::{ConnectInfo, Request, State},
    response::{IntoResponse as _, Response},
};
use beeline_frame::proxy::{join_prefix, normalize_path, ClientHeaderFilter};
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use reqwest::Url;

use crate::{
    config::SignalConfig,
    net::{forwarded_chain, trusted_proxy_says, IpNet},
    server::{ApiError, Shared},
};

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

/// The upstream a [`SignalServer`](crate::SignalServer) forwards to, and
/// what it tells that upstream.
#[derive(Debug)]
pub(crate) struct Relay {
    client: reqwest::Client,
    /// `scheme://host[:port]` of the upstream, without a path.
    origin: String,
    /// The upstream's path (at least `/`); every request goes below it.
    prefix: String,
    /// Client-sent headers that are never passed on.
    filter: ClientHeaderFilter,
    /// Proxies whose forwarding headers are believed.
    trusted_proxies: Vec<IpNet>,
}

impl Relay {
    /// A relay to `upstream` with the header rules of `config`.
    pub(crate) fn new(upstream: &str, config: &SignalConfig) -> Result<Self, RelayConfigError> {
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
        if let Some(name) = config
            .strip_request_headers
            .iter()
            .find(|name| HeaderName::from_bytes(name.trim().as_bytes()).is_err())
        {
            return Err(invalid(format!(
                "{name:?} (a header to strip) is not a header name"
            )));
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
        let prefix = url.path().to_owned();
        let mut origin = url;
        origin.set_path("");
        Ok(Self {
            client,
            origin: origin.as_str().trim_end_matches('/').to_owned(),
            prefix,
            filter: ClientHeaderFilter::new(&config.strip_request_headers),
            trusted_proxies: config.trusted_proxies.clone(),
        })
    }

    /// The forwarding headers the upstream is told, decided from the
    /// request as it arrived (before any header is dropped).
    fn forwarding(&self, peer: Option<IpAddr>, parts: &http::request::Parts) -> Forwarding {
        let headers = &parts.headers;
        let trusted = &self.trusted_proxies;
        let proxy_says =
            |name| peer.and_then(|peer| trusted_proxy_says(peer, headers, name, trusted));
        let chain = peer.map(|peer| {
            let hops: Vec<String> = forwarded_chain(peer, headers, trusted)
                .iter()
                .map(IpAddr::to_string)
                .collect();
            hops.join(", ")
        });
        // signal-api speaks plain HTTP; only a trusted proxy in front of it
        // can say the client used HTTPS.
        let https =
            proxy_says("x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https"));
        // The host the request was sent to. Proxies pass `Host` on as the
        // client gave it (nginx's `proxy_set_header Host $host`, Caddy and
        // Traefik by default); an `X-Forwarded-Host` even from a trusted
        // proxy may be the client's own copy passed through, so it is not
        // believed.
        let host = headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        Forwarding {
            chain: chain.and_then(|chain| HeaderValue::from_str(&chain).ok()),
            proto: HeaderValue::from_static(if https { "https" } else { "http" }),
            host,
        }
    }
}

/// The relay's own forwarding headers for one request.
struct Forwarding {
    /// `X-Forwarded-For`: the client first, then each trusted proxy. Unknown
    /// when the server is served without connect info.
    chain: Option<HeaderValue>,
    /// `X-Forwarded-Proto`.
    proto: HeaderValue,
    /// `X-Forwarded-Host`.
    host: Option<HeaderValue>,
}

impl Forwarding {
    fn apply(self, headers: &mut HeaderMap) {
        if let Some(chain) = self.chain {
            headers.insert(HeaderName::from_static("x-forwarded-for"), chain);
        }
        headers.insert(HeaderName::from_static("x-forwarded-proto"), self.proto);
        if let Some(host) = self.host {
            headers.insert(HeaderName::from_static("x-forwarded-host"), host);
        }
    }
}

/// The relay upstream given in the configuration is not a usable URL.
#[derive(Debug, thiserror::Error)]
#[error("invalid relay upstream {upstream:?}: {reason}")]
pub struct RelayConfigError {
    upstream: String,
    reason: String,
}

/// Set on a relayed response that set cookies.
const COOKIES_CHANGED: HeaderName = HeaderName::from_static("x-beeline-cookies-changed");

/// Fallback handler: forwards to the relay, or answers 404 without one.
pub(crate) async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let Some(relay) = &shared.relay else {
        return ApiError::new(StatusCode::NOT_FOUND, "no such endpoint").into_response();
    };
    let (parts, body) = request.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let target = match normalize_path(target) {
        Ok(target) => target,
        Err(error) => {
            tracing::debug!(%error, method = %parts.method, target, "relay refused a request path");
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("request path refused: {error}"),
            )
            .into_response();
        }
    };
    shared
        .metrics
        .relay_requests
        .fetch_add(1, Ordering::Relaxed);
    let url = format!("{}{}", relay.origin, join_prefix(&relay.prefix, &target));

    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let forwarding = relay.forwarding(peer, &parts);
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    strip_client_forwarding(&mut headers, &relay.filter);
    // The upstream is addressed by its own name (reqwest sets `Host` from
    // the URL), and the length is stated below from the body itself.
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    forwarding.apply(&mut headers);

    // A request without a body (most GETs) must stay without one: a streamed
    // body would otherwise be sent chunked, which some servers refuse for GET.
    // A body of known length is sent with it: hyper keeps a `Content-Length`
    // it is given and only frames a body chunked when none is set.
    let length = body.size_hint().exact();
    if let Some(length) = length.filter(|&length| length > 0) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    let mut upstream = relay
        .client
        .request(parts.method.clone(), &url)
        .headers(headers);
    if length != Some(0) {
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
    if headers.contains_key(header::SET_COOKIE) {
        // The page's sealed cookie jar is stale now (docs/cookies.md):
        // client.js refreshes it before its next request on the channel.
        headers.insert(COOKIES_CHANGED, HeaderValue::from_static("1"));
        // The same, where a page's own fetch or a navigation shows it to
        // client.js: resource timing exposes Server-Timing, not headers.
        headers.append(
            HeaderName::from_static("server-timing"),
            HeaderValue::from_static("beeline-cookies-changed"),
        );
    }
    let mut reply = Response::new(Body::from_stream(response.bytes_stream()));
    *reply.status_mut() = status;
    *reply.headers_mut() = headers;
    reply
}

/// Removes every copy of every header a client may not set for the home
/// service to believe. `HeaderMap` keys are lowercase, so each spelling a
/// client used is one more value under the same name, and `remove` drops
/// them all.
fn strip_client_forwarding(headers: &mut HeaderMap, filter: &ClientHeaderFilter) {
    let forbidden: Vec<HeaderName> = headers
        .keys()
        .filter(|name| filter.forbids(name.as_str()))
        .cloned()
        .collect();
    for name in forbidden {
        headers.remove(name);
    }
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
        let config = SignalConfig::new("x.db", "token");
        assert!(Relay::new("ftp://127.0.0.1/", &config).is_err());
        assert!(Relay::new("http://127.0.0.1:3000/", &config).is_ok());
    }

    #[test]
    fn the_upstream_path_is_a_prefix() {
        let config = SignalConfig::new("x.db", "token");
        let relay = Relay::new("http://user@127.0.0.1:3000/api/v1", &config).unwrap();
        assert_eq!(relay.origin, "http://user@127.0.0.1:3000");
        assert_eq!(relay.prefix, "/api/v1");
        let relay = Relay::new("https://home.example", &config).unwrap();
        assert_eq!(relay.origin, "https://home.example");
        assert_eq!(relay.prefix, "/");
    }

    #[test]
    fn strip_names_must_be_header_names() {
        let mut config = SignalConfig::new("x.db", "token");
        config.strip_request_headers = vec!["X-Auth-Token".into(), "bad name".into()];
        let error = Relay::new("http://127.0.0.1:3000/", &config).unwrap_err();
        assert!(error.to_string().contains("bad name"), "{error}");
    }

    #[test]
    fn every_copy_of_a_forbidden_header_is_removed() {
        let filter = ClientHeaderFilter::new(["x-auth-token"]);
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-forwarded-proto", "https"),
            ("X-FORWARDED-PROTO", "https"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("X-Auth-Token", "t"),
            ("x-request-id", "kept"),
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        strip_client_forwarding(&mut headers, &filter);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers["x-request-id"], "kept");
    }
}
