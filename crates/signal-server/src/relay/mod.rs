//! The normal path: requests no signaling route matches are relayed to the
//! home service, streamed both ways (server-sent events keep flowing).
//!
//! [`Relay`] is a `tower::Service` the router mounts as its fallback. It is
//! built from its own [`RelayConfig`], owns its HTTP client, and learns
//! where homes are only through the [`Homes`] it is given, so it imports
//! nothing from the server that mounts it (only the leaf `net` module).
//!
//! Where a request goes ([`Route`]):
//! - **`--relay-upstream`** (`upstream.rs`): the operator's own tunnel to
//!   the home service, one upstream for every home;
//! - **the home link** ([`HomeLink`]): home-peer's own connection to
//!   signal-api, the default when no upstream is configured. Each request
//!   goes to one home, chosen by [`Relay::choose_home`]: the home of the
//!   signaling session the page names (`x-beeline-session` header or
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
//!   ([`ClientHeaderFilter`], plus
//!   [`RelayConfig::strip_request_headers`]),
//!   every copy in any spelling, is dropped; the relay then sets its own
//!   `X-Forwarded-For`, `-Proto` and `-Host` with true values.
//! - **Path prefix.** The request target is resolved on its own root
//!   ([`normalize_path`]) before it is put under the upstream's path, so
//!   `..` in any encoding cannot leave it; a refused target is a 400.

mod error;
mod headers;
mod link;
mod upstream;
mod websocket;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use axum::{
    body::{Body, HttpBody as _},
    extract::{ws::WebSocketUpgrade, ConnectInfo, FromRequestParts as _},
    response::{IntoResponse as _, Response},
};
use beeline_bridge::{BodyStream, ClientError, ResponseHandle, Upgrade};
use beeline_frame::{
    proxy::{normalize_path, ClientHeaderFilter},
    v2::RequestHead,
};
use futures::future::BoxFuture;
use http::{header, HeaderName, Request};

pub(crate) use error::RelayError;
pub use upstream::RelayConfigError;
use upstream::Upstream;

use crate::net::IpNet;

/// The header a page names its signaling session with on the normal path.
pub const SESSION_HEADER: &str = "x-beeline-session";

/// The query parameter a page names its session with where it cannot set a
/// header (a browser `WebSocket`).
pub const SESSION_PARAM: &str = "__beeline_session";

/// What the relay is told by whoever builds it.
#[derive(Debug, Clone, Default)]
pub(crate) struct RelayConfig {
    /// The operator's upstream (`--relay-upstream`): every request goes
    /// there when set.
    pub(crate) upstream: Option<String>,
    /// Without an upstream, whether requests go over home links (else every
    /// request is a 404).
    pub(crate) home_link: bool,
    /// Request headers never passed on, on top of those no client may set.
    pub(crate) strip_request_headers: Vec<String>,
    /// Proxies whose forwarding headers are believed.
    pub(crate) trusted_proxies: Vec<IpNet>,
}

/// Where homes are, as the relay needs to know: the server that mounts the
/// relay implements it.
pub(crate) trait Homes: Send + Sync + 'static {
    /// The home of the signaling session `id` (even an expired one: it still
    /// says whose page this is), `None` when there is no such session.
    fn session_home<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<str>>, RelayError>>;

    /// The home of a request that names no session, when there is one.
    fn default_home(&self) -> Option<Arc<str>>;

    /// The link of `home`, when it is connected.
    fn link(&self, home: &str) -> Option<Arc<dyn HomeLink>>;
}

/// One home's connected link, as the relay uses it: bridge streams to the
/// home service.
pub(crate) trait HomeLink: Send + Sync + 'static {
    /// Sends one request; resolves when the response head arrives.
    fn send(
        &self,
        head: RequestHead,
        body: Option<BodyStream>,
    ) -> BoxFuture<'_, Result<ResponseHandle, ClientError>>;

    /// Opens a WebSocket stream; resolves once the home answered.
    fn websocket(&self, head: RequestHead) -> BoxFuture<'_, Result<Upgrade, ClientError>>;
}

/// No homes at all: a relay not (yet) given the server's.
struct NoHomes;

impl Homes for NoHomes {
    fn session_home<'a>(
        &'a self,
        _id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<str>>, RelayError>> {
        Box::pin(async { Ok(None) })
    }

    fn default_home(&self) -> Option<Arc<str>> {
        None
    }

    fn link(&self, _home: &str) -> Option<Arc<dyn HomeLink>> {
        None
    }
}

/// Requests relayed and relays that failed, for the server's metrics.
#[derive(Debug, Default)]
pub(crate) struct RelayStats {
    /// Requests the relay sent on (to the upstream or over a link).
    pub(crate) requests: AtomicU64,
    /// Requests whose upstream or home link could not be reached.
    pub(crate) errors: AtomicU64,
}

/// The relay: a `tower::Service` that forwards each request to the upstream
/// or over its home's link and streams the answer back, or answers why not
/// (`{"error": "..."}`). Cheap to clone; clones share one client.
#[derive(Clone)]
pub(crate) struct Relay {
    inner: Arc<Inner>,
    homes: Arc<dyn Homes>,
}

struct Inner {
    config: RelayConfig,
    upstream: Option<Upstream>,
    /// Request headers no client may set for the home service to believe.
    client_headers: ClientHeaderFilter,
    stats: Arc<RelayStats>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.inner.config)
            .field("upstream", &self.inner.upstream)
            .finish_non_exhaustive()
    }
}

/// Where one relayed request goes.
enum Route<'a> {
    Upstream(&'a Upstream),
    Link(Arc<dyn HomeLink>),
}

impl Relay {
    /// A relay as `config` says, with its own HTTP client when it has an
    /// upstream, and no homes until [`Relay::with_homes`].
    pub(crate) fn new(config: RelayConfig) -> Result<Self, RelayConfigError> {
        let upstream = config
            .upstream
            .as_deref()
            .map(|upstream| Upstream::new(upstream, &config.strip_request_headers))
            .transpose()?;
        Ok(Self {
            inner: Arc::new(Inner {
                client_headers: ClientHeaderFilter::new(&config.strip_request_headers),
                upstream,
                config,
                stats: Arc::default(),
            }),
            homes: Arc::new(NoHomes),
        })
    }

    /// This relay, finding homes and their links in `homes`.
    pub(crate) fn with_homes(self, homes: Arc<dyn Homes>) -> Self {
        Self { homes, ..self }
    }

    /// Its counters.
    pub(crate) fn stats(&self) -> Arc<RelayStats> {
        Arc::clone(&self.inner.stats)
    }

    /// Relays `request`, or answers why it cannot be.
    pub(crate) async fn handle(&self, request: Request<Body>) -> Response {
        match self.relay(request).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        }
    }

    async fn relay(&self, request: Request<Body>) -> Result<Response, RelayError> {
        let (mut parts, body) = request.into_parts();
        let upgrade = if websocket::is_upgrade(&parts.method, &parts.headers) {
            let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
                .await
                .map_err(|rejection| RelayError::bad_request(rejection.body_text()))?;
            Some(upgrade)
        } else {
            None
        };
        let protocols = websocket::requested_protocols(&parts.headers);
        let session = take_session_hint(&mut parts);
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let target = normalize_path(target).map_err(|error| {
            tracing::debug!(%error, method = %parts.method, target, "relay refused a request path");
            RelayError::bad_request(format!("request path refused: {error}"))
        })?;
        if target.starts_with("/.beeline/") {
            // Reserved for what signal-api itself sends over a home link
            // (frames.rs); a page may not reach it through the relay.
            return Err(RelayError::NotFound);
        }
        let route = self.route(session.as_deref()).await?;
        let stats = &self.inner.stats;
        stats.requests.fetch_add(1, Ordering::Relaxed);

        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let forwarding = headers::Forwarding::of(peer, &parts, &self.inner.config.trusted_proxies);
        let mut request_headers = std::mem::take(&mut parts.headers);
        headers::strip_hop_by_hop(&mut request_headers);
        headers::strip_client_forwarding(&mut request_headers, &self.inner.client_headers);
        // The length is stated again from the body itself.
        request_headers.remove(header::CONTENT_LENGTH);
        forwarding.apply(&mut request_headers);
        let length = body.size_hint().exact();

        if let Some(upgrade) = upgrade {
            return match route {
                Route::Upstream(upstream) => {
                    websocket::to_upstream(
                        upstream.websocket_url(&target),
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
            Route::Upstream(upstream) => {
                upstream
                    .send(parts.method, &target, request_headers, body, length)
                    .await
            }
            Route::Link(link) => {
                link::send(&*link, parts.method, target, request_headers, body, length).await
            }
        };
        let (status, mut response_headers, body) = sent.inspect_err(|_| {
            stats.errors.fetch_add(1, Ordering::Relaxed);
        })?;
        headers::strip_hop_by_hop(&mut response_headers);
        headers::mark_cookie_changes(&mut response_headers);
        headers::ask_proxies_not_to_buffer(&mut response_headers);
        let mut reply = Response::new(body);
        *reply.status_mut() = status;
        *reply.headers_mut() = response_headers;
        Ok(reply)
    }

    async fn route(&self, session: Option<&str>) -> Result<Route<'_>, RelayError> {
        if let Some(upstream) = &self.inner.upstream {
            return Ok(Route::Upstream(upstream));
        }
        if !self.inner.config.home_link {
            return Err(RelayError::NotFound);
        }
        let home = self.choose_home(session).await?;
        match self.homes.link(&home) {
            Some(link) => Ok(Route::Link(link)),
            None => {
                self.inner.stats.errors.fetch_add(1, Ordering::Relaxed);
                Err(RelayError::NotConnected(home))
            }
        }
    }

    /// The home a relayed request goes to: the home of the session it names
    /// (even an expired one: it still says whose page this is), else the
    /// default home.
    async fn choose_home(&self, session: Option<&str>) -> Result<Arc<str>, RelayError> {
        let named = session.filter(|id| !id.is_empty() && id.len() <= 64);
        if let Some(id) = named {
            if let Some(home) = self.homes.session_home(id).await? {
                return Ok(home);
            }
        }
        self.homes.default_home().ok_or_else(|| {
            RelayError::bad_request(
                "this server has several homes: name the session (x-beeline-session) whose home the request is for",
            )
        })
    }
}

impl tower::Service<Request<Body>> for Relay {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let relay = self.clone();
        Box::pin(async move { Ok(relay.handle(request).await) })
    }
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

    /// Homes for the service tests: session `s1` is the attic's, the
    /// kitchen is the default, and no link is up.
    struct TwoHomes;

    impl Homes for TwoHomes {
        fn session_home<'a>(
            &'a self,
            id: &'a str,
        ) -> BoxFuture<'a, Result<Option<Arc<str>>, RelayError>> {
            Box::pin(async move { Ok((id == "s1").then(|| "attic".into())) })
        }

        fn default_home(&self) -> Option<Arc<str>> {
            Some("kitchen".into())
        }

        fn link(&self, _home: &str) -> Option<Arc<dyn HomeLink>> {
            None
        }
    }

    async fn answer(relay: &Relay, uri: &str, session: Option<&str>) -> (u16, String) {
        use tower::Service as _;
        let mut request = Request::builder().uri(uri);
        if let Some(session) = session {
            request = request.header(SESSION_HEADER, session);
        }
        let mut service = relay.clone();
        let response = service
            .call(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_service_answers_why_it_cannot_relay() {
        let off = Relay::new(RelayConfig::default()).unwrap();
        assert_eq!(
            answer(&off, "/x", None).await,
            (404, r#"{"error":"no such endpoint"}"#.to_owned())
        );

        let config = RelayConfig {
            home_link: true,
            ..RelayConfig::default()
        };
        let homeless = Relay::new(config.clone()).unwrap();
        assert_eq!(answer(&homeless, "/x", None).await.0, 400);

        let relay = Relay::new(config).unwrap().with_homes(Arc::new(TwoHomes));
        assert_eq!(answer(&relay, "/.beeline/resume", None).await.0, 404);
        assert_eq!(
            answer(&relay, "/x", Some("s1")).await,
            (
                502,
                r#"{"error":"home \"attic\" is not connected"}"#.to_owned()
            )
        );
        assert_eq!(
            answer(&relay, "/x?__beeline_session=nope", None).await,
            (
                502,
                r#"{"error":"home \"kitchen\" is not connected"}"#.to_owned()
            )
        );
        assert_eq!(relay.stats().errors.load(Ordering::Relaxed), 2);
        assert_eq!(relay.stats().requests.load(Ordering::Relaxed), 0);
    }
}
