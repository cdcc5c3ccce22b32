//! Where requests from the channel go: an HTTP origin reached by URL
//! ([`HttpUpstream`]), or any `tower::Service` served in-process
//! ([`ServiceUpstream`], e.g. an axum `Router`).

use std::future::Future;

use beeline_frame::proxy::{join_prefix, normalize_path, HOP_BY_HOP};
use beeline_frame::v2::{Headers, RequestHead};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use http_body_util::BodyExt;

use crate::BridgeError;

/// A request body still arriving from the channel.
pub type BodyStream = BoxStream<'static, Result<Bytes, BridgeError>>;

/// A request on its way upstream. The bridge has already applied the
/// reverse-proxy header rules (hop-by-hop headers dropped, `x-forwarded-*`
/// set), so implementations forward `head.headers` as they are.
pub struct UpstreamRequest {
    /// Method, path and headers.
    pub head: RequestHead,
    /// The body, or `None` when the request has none.
    pub body: Option<BodyStream>,
}

/// A response whose body is still arriving.
pub struct UpstreamResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response headers (hop-by-hop headers are dropped by the bridge).
    pub headers: Headers,
    /// The body, as it arrives.
    pub body: BodyStream,
}

/// Something that answers HTTP requests.
pub trait Upstream: Send + Sync + 'static {
    /// Sends `request` and resolves once the response head has arrived.
    /// Dropping the returned body abandons the request.
    fn call(
        &self,
        request: UpstreamRequest,
    ) -> impl Future<Output = Result<UpstreamResponse, BridgeError>> + Send;

    /// Opens a WebSocket for `request` (an upgrade request; its body is
    /// `None`), with messages up to `max_message_bytes`. The default
    /// carries none.
    fn websocket(
        &self,
        request: UpstreamRequest,
        max_message_bytes: u64,
    ) -> impl Future<Output = Result<crate::WebSocketOpen, BridgeError>> + Send {
        let _ = (request, max_message_bytes);
        async {
            Err(BridgeError::BadRequest(
                "this upstream does not carry WebSockets".into(),
            ))
        }
    }
}

/// Drops hop-by-hop headers, including any the `connection` header names.
/// `content-length` is not one: the bridge checks a request's and states it
/// again (`server.rs`), and a response's is passed on.
pub(crate) fn strip_hop_by_hop(headers: &mut Headers) {
    let named: Vec<String> = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .map(|(_, v)| {
            v.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default();
    headers.retain(|k, _| {
        let k = k.to_ascii_lowercase();
        !HOP_BY_HOP.contains(&k.as_str()) && !named.contains(&k)
    });
}

/// Reverse proxy to an HTTP origin such as `http://127.0.0.1:3000`.
#[derive(Debug, Clone)]
pub struct HttpUpstream {
    client: reqwest::Client,
    origin: reqwest::Url,
}

impl HttpUpstream {
    /// Proxies to `origin` (scheme, host and port; a path prefix is kept).
    pub fn new(origin: &str) -> Result<Self, BridgeError> {
        let origin = reqwest::Url::parse(origin)
            .map_err(|e| BridgeError::InvalidUpstream(format!("{origin}: {e}")))?;
        if !matches!(origin.scheme(), "http" | "https") || origin.host().is_none() {
            return Err(BridgeError::InvalidUpstream(format!(
                "{origin}: not an http(s) URL"
            )));
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BridgeError::InvalidUpstream(e.to_string()))?;
        Ok(Self { client, origin })
    }

    /// Builds the upstream URL for a request path: the path is resolved on
    /// its own root first, so with an upstream of `http://h/api/` nothing
    /// (`/../admin`, `/%2e%2e/admin`) can leave `/api/`.
    fn url_for(&self, path: &str) -> Result<reqwest::Url, BridgeError> {
        let normalized = normalize_path(path)
            .map_err(|e| BridgeError::BadRequest(format!("path {path:?}: {e}")))?;
        let prefix = self.origin.path();
        let joined = join_prefix(prefix, &normalized);
        let mut url = self.origin.clone();
        let (p, q) = match joined.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (joined.as_str(), None),
        };
        url.set_path(p);
        url.set_query(q);
        if url.origin() != self.origin.origin()
            || !url.path().starts_with(prefix.trim_end_matches('/'))
        {
            return Err(BridgeError::BadRequest(format!(
                "path {path:?} leaves the upstream prefix"
            )));
        }
        Ok(url)
    }
}

impl Upstream for HttpUpstream {
    async fn call(&self, request: UpstreamRequest) -> Result<UpstreamResponse, BridgeError> {
        let head = request.head;
        let url = self.url_for(&head.path)?;
        let method = reqwest::Method::from_bytes(head.method.as_bytes())
            .map_err(|_| BridgeError::BadRequest(format!("bad method {:?}", head.method)))?;
        let mut builder = self.client.request(method, url);
        for (name, value) in &head.headers {
            // reqwest sets Host from the URL.
            if !name.eq_ignore_ascii_case("host") {
                builder = builder.header(name.as_str(), value.as_str());
            }
        }
        if let Some(body) = request.body {
            builder = builder.body(reqwest::Body::wrap_stream(body));
        }
        let response = builder
            .send()
            .await
            .map_err(|e| BridgeError::Unavailable(e.to_string()))?;
        let status = response.status().as_u16();
        let headers = crate::headers::frame_headers(response.headers());
        let body = response
            .bytes_stream()
            .map(|r| r.map_err(|e| BridgeError::Upstream(e.to_string())))
            .boxed();
        Ok(UpstreamResponse {
            status,
            headers,
            body,
        })
    }

    /// A WebSocket to the same path: `ws://` for an `http://` upstream,
    /// `wss://` for `https://`, with the request's (already forwarded)
    /// headers and subprotocols.
    async fn websocket(
        &self,
        request: UpstreamRequest,
        max_message_bytes: u64,
    ) -> Result<crate::WebSocketOpen, BridgeError> {
        let head = request.head;
        let mut url = self.url_for(&head.path)?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .map_err(|()| BridgeError::InvalidUpstream(format!("{url}: no WebSocket scheme")))?;
        crate::websocket::connect(url.as_str(), &head.headers, max_message_bytes).await
    }
}

/// The request body type handed to a [`ServiceUpstream`]'s service.
pub type ServiceBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BridgeError>;

/// Serves requests with any `tower::Service` in-process — e.g. an axum
/// `Router` — without a loopback TCP hop.
#[derive(Debug, Clone)]
pub struct ServiceUpstream<S> {
    service: S,
}

impl<S> ServiceUpstream<S> {
    /// Wraps `service`.
    pub fn new(service: S) -> Self {
        Self { service }
    }
}

impl<S, B> Upstream for ServiceUpstream<S>
where
    S: tower::Service<http::Request<ServiceBody>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
    S::Error: std::fmt::Display + Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display + Send,
{
    async fn call(&self, request: UpstreamRequest) -> Result<UpstreamResponse, BridgeError> {
        use tower::ServiceExt as _;
        let head = request.head;
        let path = normalize_path(&head.path)
            .map_err(|e| BridgeError::BadRequest(format!("path {:?}: {e}", head.path)))?;
        let mut builder = http::Request::builder()
            .method(head.method.as_str())
            .uri(path.as_str());
        for (name, value) in &head.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let body: ServiceBody = match request.body {
            Some(stream) => {
                let frames = stream.map(|r| r.map(http_body::Frame::data));
                http_body_util::StreamBody::new(frames).boxed_unsync()
            }
            None => http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        };
        let request = builder
            .body(body)
            .map_err(|e| BridgeError::BadRequest(e.to_string()))?;
        let response = self
            .service
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| BridgeError::Unavailable(e.to_string()))?;
        let status = response.status().as_u16();
        let headers = crate::headers::frame_headers(response.headers());
        let body = http_body_util::BodyStream::new(response.into_body())
            .filter_map(|frame| async move {
                match frame {
                    Ok(f) => f.into_data().ok().map(Ok),
                    Err(e) => Some(Err(BridgeError::Upstream(e.to_string()))),
                }
            })
            .boxed();
        Ok(UpstreamResponse {
            status,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_escape_the_origin() {
        let u = HttpUpstream::new("http://127.0.0.1:3000").unwrap();
        assert_eq!(
            u.url_for("/v1/chat?x=1").unwrap().as_str(),
            "http://127.0.0.1:3000/v1/chat?x=1"
        );
        for bad in [
            "v1",
            "//evil.example/x",
            "/x\r\nHost: evil",
            "@evil.example/",
        ] {
            assert!(u.url_for(bad).is_err(), "{bad}");
        }
        let prefixed = HttpUpstream::new("http://127.0.0.1:3000/api/").unwrap();
        assert_eq!(
            prefixed.url_for("/x").unwrap().as_str(),
            "http://127.0.0.1:3000/api/x"
        );
        assert_eq!(
            prefixed.url_for("/a/../x?q=../y").unwrap().as_str(),
            "http://127.0.0.1:3000/api/x?q=../y"
        );
        for escape in [
            "/../admin",
            "/%2e%2e/admin",
            "/%2E%2e/admin",
            "/x/..%2f..%2fadmin",
        ] {
            assert!(prefixed.url_for(escape).is_err(), "{escape}");
        }
    }

    #[test]
    fn rejects_non_http_upstreams() {
        assert!(HttpUpstream::new("ftp://x").is_err());
        assert!(HttpUpstream::new("not a url").is_err());
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = Headers::new();
        for (k, v) in [
            ("Connection", "close, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "5"),
            ("accept", "*/*"),
            ("Transfer-Encoding", "chunked"),
        ] {
            h.insert(k.into(), v.into());
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), vec!["accept"]);
    }

    #[test]
    fn repeated_headers_are_joined() {
        let mut map = http::HeaderMap::new();
        map.append("vary", "a".parse().unwrap());
        map.append("vary", "b".parse().unwrap());
        map.append("set-cookie", "x=1".parse().unwrap());
        map.append("set-cookie", "y=2".parse().unwrap());
        let h = crate::headers::frame_headers(&map);
        assert_eq!(h["vary"], "a, b");
        assert_eq!(h["set-cookie"], "x=1\ny=2");
    }
}
