//! What the home service is told about a relayed request, and what a
//! client may not tell it (`beeline_frame::proxy` holds the shared rules).

use std::net::IpAddr;

use beeline_frame::proxy::ClientHeaderFilter;
use http::{header, HeaderMap, HeaderName, HeaderValue};

use crate::net::{forwarded_chain, trusted_proxy_says, IpNet};

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

/// nginx's per-response switch for buffering (`proxy_buffering`).
const ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// Set on a relayed response that set cookies.
const COOKIES_CHANGED: HeaderName = HeaderName::from_static("x-beeline-cookies-changed");

/// The relay's own forwarding headers for one request.
pub(super) struct Forwarding {
    /// `X-Forwarded-For`: the client first, then each trusted proxy. Unknown
    /// when the server is served without connect info.
    chain: Option<HeaderValue>,
    /// `X-Forwarded-Proto`.
    proto: HeaderValue,
    /// `X-Forwarded-Host`.
    host: Option<HeaderValue>,
}

impl Forwarding {
    /// The forwarding headers the home service is told, decided from the
    /// request as it arrived (before any header is dropped).
    pub(super) fn of(
        peer: Option<IpAddr>,
        parts: &http::request::Parts,
        trusted: &[IpNet],
    ) -> Self {
        let headers = &parts.headers;
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
        Self {
            chain: chain.and_then(|chain| HeaderValue::from_str(&chain).ok()),
            proto: HeaderValue::from_static(if https { "https" } else { "http" }),
            host,
        }
    }

    pub(super) fn apply(self, headers: &mut HeaderMap) {
        if let Some(chain) = self.chain {
            headers.insert(HeaderName::from_static("x-forwarded-for"), chain);
        }
        headers.insert(HeaderName::from_static("x-forwarded-proto"), self.proto);
        if let Some(host) = self.host {
            headers.insert(HeaderName::from_static("x-forwarded-host"), host);
        }
    }
}

/// Removes every copy of every header a client may not set for the home
/// service to believe. `HeaderMap` keys are lowercase, so each spelling a
/// client used is one more value under the same name, and `remove` drops
/// them all.
pub(super) fn strip_client_forwarding(headers: &mut HeaderMap, filter: &ClientHeaderFilter) {
    let forbidden: Vec<HeaderName> = headers
        .keys()
        .filter(|name| filter.forbids(name.as_str()))
        .cloned()
        .collect();
    for name in forbidden {
        headers.remove(name);
    }
}

/// Removes hop-by-hop headers, including any the `Connection` header names,
/// and `Upgrade` (a relayed WebSocket is a stream of its own, not a header).
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
    headers.remove(header::UPGRADE);
}

/// Asks a buffering proxy in front (nginx, which takes `X-Accel-Buffering`
/// from the server behind it and does not pass it on to the client) to pass
/// the relayed response on as it comes: server-sent events then arrive
/// event by event even where the proxy buffers by default, and a page that
/// reads slowly holds back its own stream (the home link's per-stream flow
/// control) instead of filling the proxy's disk. A value the home service
/// set is left as it is.
pub(super) fn ask_proxies_not_to_buffer(headers: &mut HeaderMap) {
    headers
        .entry(ACCEL_BUFFERING)
        .or_insert(HeaderValue::from_static("no"));
}

/// Marks a response that set cookies: the page's sealed cookie jar is stale
/// now (`docs/cookies.md`), and client.js refreshes it before its next
/// request on the channel. The `Server-Timing` copy is for a page's own
/// fetch or a navigation: resource timing exposes it, not headers.
pub(super) fn mark_cookie_changes(headers: &mut HeaderMap) {
    if headers.contains_key(header::SET_COOKIE) {
        headers.insert(COOKIES_CHANGED, HeaderValue::from_static("1"));
        headers.append(
            HeaderName::from_static("server-timing"),
            HeaderValue::from_static("beeline-cookies-changed"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_responses_ask_for_no_buffering_unless_the_home_said_otherwise() {
        let mut headers = HeaderMap::new();
        ask_proxies_not_to_buffer(&mut headers);
        assert_eq!(headers["x-accel-buffering"], "no");
        let mut headers = HeaderMap::new();
        headers.insert("x-accel-buffering", HeaderValue::from_static("yes"));
        ask_proxies_not_to_buffer(&mut headers);
        assert_eq!(headers.get_all("x-accel-buffering").iter().count(), 1);
        assert_eq!(headers["x-accel-buffering"], "yes");
    }

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
