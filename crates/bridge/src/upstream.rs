//! Where requests from the channel go: an HTTP service reached by URL.

use std::future::Future;

use beeline_frame::Request;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::BridgeError;

/// A response whose body is still arriving.
pub struct UpstreamResponse {
    /// HTTP status code.
    pub status: u16,
    /// The body, as it arrives.
    pub body: BoxStream<'static, Result<Bytes, BridgeError>>,
}

/// Something that answers HTTP requests.
pub trait Upstream: Send + Sync + 'static {
    /// Sends `request` and resolves once the response head has arrived.
    fn call(&self, request: Request) -> impl Future<Output = Result<UpstreamResponse, BridgeError>> + Send;
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and ones the HTTP client sets itself.
const DROPPED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Reverse proxy to an HTTP origin such as `http://127.0.0.1:3000`.
#[derive(Debug, Clone)]
pub struct HttpUpstream {
    client: reqwest::Client,
    origin: reqwest::Url,
}

impl HttpUpstream {
    /// Proxies to `origin` (scheme, host and port; a path prefix is kept).
    pub fn new(origin: &str) -> Result<Self, BridgeError> {
        let origin = reqwest::Url::parse(origin).map_err(|e| BridgeError::InvalidUpstream(format!("{origin}: {e}")))?;
        if !matches!(origin.scheme(), "http" | "https") || origin.host().is_none() {
            return Err(BridgeError::InvalidUpstream(format!("{origin}: not an http(s) URL")));
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| BridgeError::InvalidUpstream(e.to_string()))?;
        Ok(Self { client, origin })
    }

    /// Builds the upstream URL for a request path, refusing anything that
    /// would leave the configured origin.
    fn url_for(&self, path: &str) -> Result<reqwest::Url, BridgeError> {
        if !path.starts_with('/') || path.starts_with("//") || path.contains(['\r', '\n', '#']) {
            return Err(BridgeError::BadRequest(format!("path must be an absolute path: {path:?}")));
        }
        let base = self.origin.as_str().trim_end_matches('/');
        let url = reqwest::Url::parse(&format!("{base}{path}"))
            .map_err(|e| BridgeError::BadRequest(format!("path {path:?}: {e}")))?;
        if url.origin() != self.origin.origin() {
            return Err(BridgeError::BadRequest(format!("path {path:?} leaves the upstream origin")));
        }
        Ok(url)
    }
}

impl Upstream for HttpUpstream {
    async fn call(&self, request: Request) -> Result<UpstreamResponse, BridgeError> {
        let url = self.url_for(&request.path)?;
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| BridgeError::BadRequest(format!("bad method {:?}", request.method)))?;
        let mut builder = self.client.request(method, url);
        for (name, value) in &request.headers {
            if DROPPED_HEADERS.iter().any(|d| name.eq_ignore_ascii_case(d)) {
                continue;
            }
            builder = builder.header(name.as_str(), value.as_str());
        }
        if !request.body.is_empty() {
            builder = builder.body(request.body);
        }
        let response = builder.send().await.map_err(|e| BridgeError::Upstream(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .bytes_stream()
            .map(|r| r.map_err(|e| BridgeError::Upstream(e.to_string())))
            .boxed();
        Ok(UpstreamResponse { status, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_escape_the_origin() {
        let u = HttpUpstream::new("http://127.0.0.1:3000").unwrap();
        assert_eq!(u.url_for("/v1/chat?x=1").unwrap().as_str(), "http://127.0.0.1:3000/v1/chat?x=1");
        for bad in ["v1", "//evil.example/x", "/x\r\nHost: evil", "@evil.example/"] {
            assert!(u.url_for(bad).is_err(), "{bad}");
        }
        let prefixed = HttpUpstream::new("http://127.0.0.1:3000/api/").unwrap();
        assert_eq!(prefixed.url_for("/x").unwrap().as_str(), "http://127.0.0.1:3000/api/x");
    }

    #[test]
    fn rejects_non_http_upstreams() {
        assert!(HttpUpstream::new("ftp://x").is_err());
        assert!(HttpUpstream::new("not a url").is_err());
    }
}
