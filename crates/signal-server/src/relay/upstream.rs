//! The relay to `--relay-upstream`: the operator's own tunnel to the home
//! service, reached over HTTP with reqwest.

use std::time::Duration;

use axum::body::Body;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use reqwest::Url;

use super::RelayError;

/// How long connecting to the upstream may take. There is no overall
/// timeout: relayed responses may be long-lived event streams.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The upstream the relay forwards to, with the HTTP client it owns.
#[derive(Debug)]
pub(super) struct Upstream {
    client: reqwest::Client,
    /// `scheme://host[:port]` of the upstream, without a path.
    origin: String,
    /// The upstream's path (at least `/`); every request goes below it.
    prefix: String,
}

impl Upstream {
    /// The upstream at `upstream`, checked along with the names of the
    /// headers the relay strips.
    pub(super) fn new(
        upstream: &str,
        strip_request_headers: &[String],
    ) -> Result<Self, RelayConfigError> {
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
        if let Some(name) = strip_request_headers
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
        })
    }

    /// Sends one request (headers already prepared by the relay) to
    /// `target` below the upstream's path, and streams the answer back.
    pub(super) async fn send(
        &self,
        method: Method,
        target: &str,
        mut headers: HeaderMap,
        body: Body,
        length: Option<u64>,
    ) -> Result<(StatusCode, HeaderMap, Body), RelayError> {
        let url = format!(
            "{}{}",
            self.origin,
            beeline_frame::proxy::join_prefix(&self.prefix, target)
        );
        // The upstream is addressed by its own name (reqwest sets `Host`
        // from the URL).
        headers.remove(header::HOST);
        // A request without a body (most GETs) must stay without one: a
        // streamed body would otherwise be sent chunked, which some servers
        // refuse for GET. A body of known length is sent with it: hyper
        // keeps a `Content-Length` it is given and only frames a body
        // chunked when none is set.
        if let Some(length) = length.filter(|&length| length > 0) {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        let mut upstream = self.client.request(method.clone(), &url).headers(headers);
        if length != Some(0) {
            upstream = upstream.body(reqwest::Body::wrap_stream(body.into_data_stream()));
        }
        let response = upstream.send().await.map_err(|error| {
            tracing::warn!(%error, %method, "relay upstream failed");
            RelayError::bad_gateway("relay upstream is unreachable")
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        Ok((status, headers, Body::from_stream(response.bytes_stream())))
    }

    /// The upstream's WebSocket URL for `target` (`ws://` for an `http://`
    /// upstream, `wss://` for `https://`).
    pub(super) fn websocket_url(&self, target: &str) -> String {
        let origin = match self.origin.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}"),
            None => format!("ws://{}", self.origin.trim_start_matches("http://")),
        };
        format!(
            "{origin}{}",
            beeline_frame::proxy::join_prefix(&self.prefix, target)
        )
    }
}

/// The relay upstream given in the configuration is not a usable URL.
#[derive(Debug, thiserror::Error)]
#[error("invalid relay upstream {upstream:?}: {reason}")]
pub struct RelayConfigError {
    upstream: String,
    reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_must_be_http() {
        assert!(Upstream::new("ftp://127.0.0.1/", &[]).is_err());
        assert!(Upstream::new("http://127.0.0.1:3000/", &[]).is_ok());
    }

    #[test]
    fn the_upstream_path_is_a_prefix() {
        let upstream = Upstream::new("http://user@127.0.0.1:3000/api/v1", &[]).unwrap();
        assert_eq!(upstream.origin, "http://user@127.0.0.1:3000");
        assert_eq!(upstream.prefix, "/api/v1");
        let upstream = Upstream::new("https://home.example", &[]).unwrap();
        assert_eq!(upstream.origin, "https://home.example");
        assert_eq!(upstream.prefix, "/");
    }

    #[test]
    fn strip_names_must_be_header_names() {
        let strip = ["X-Auth-Token".to_owned(), "bad name".to_owned()];
        let error = Upstream::new("http://127.0.0.1:3000/", &strip).unwrap_err();
        assert!(error.to_string().contains("bad name"), "{error}");
    }
}
