//! [`HomeClient`]: `http::Request` in, streaming `http::Response` out, over
//! the direct path when it is open, else after waiting for it up to the
//! setup budget, else through the relay (the normal path) when one is
//! configured.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use beeline_bridge::{BodyStream, BridgeError, ResponseHandle};
use beeline_frame::proxy::HOP_BY_HOP;
use beeline_frame::v2::{Headers, RequestHead};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::link::{LinkState, Live};
use crate::Error;

/// The body of a response from the home service, streamed as it arrives.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Error>;

/// Which path a request can take right now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathState {
    /// The direct path is open.
    Direct,
    /// A connection attempt is under way.
    Connecting,
    /// The last attempt failed, for this reason; requests take the relay
    /// when one is configured.
    Down(String),
}

/// A client for the home service. Cheap to clone; every clone shares one
/// connection, kept up in the background. The last clone dropped stops it.
#[derive(Clone)]
pub struct HomeClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) state: watch::Receiver<LinkState>,
    pub(crate) setup_budget: Duration,
    pub(crate) scheme: Option<String>,
    pub(crate) relay: Option<Relay>,
    pub(crate) stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for HomeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HomeClient")
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

/// The normal path: the public URL requests are sent to when the channel
/// is not there.
pub(crate) struct Relay {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
}

/// Never forwarded by the client: the hop-by-hop headers, and `expect`,
/// which whoever reads the request answers locally.
fn hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name) || name == "expect"
}

impl HomeClient {
    /// Which path a request would take now.
    pub fn path(&self) -> PathState {
        match &*self.inner.state.borrow() {
            LinkState::Up(_) => PathState::Direct,
            LinkState::Connecting => PathState::Connecting,
            LinkState::Down(why) => PathState::Down(why.clone()),
        }
    }

    /// Waits until the direct path is open, at most `timeout`; true if it is.
    pub async fn wait_direct(&self, timeout: Duration) -> bool {
        let mut state = self.inner.state.clone();
        tokio::time::timeout(timeout, state.wait_for(|s| matches!(s, LinkState::Up(_))))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Sends `request` to the home service.
    pub async fn send<B>(&self, request: http::Request<B>) -> Result<http::Response<Body>, Error>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::fmt::Display,
    {
        // A request that can be sent again (idempotent, no body) and whose
        // channel turned out to be dead before it was answered is sent once
        // more on the next path, as HTTP clients do on a dead connection.
        let retry = idempotent(request.method()) && request.body().is_end_stream();
        let (parts, body) = request.into_parts();
        let copy = retry.then(|| parts.clone());
        let request = http::Request::from_parts(parts, body);
        let first = match self.live().await {
            Ok(live) => self.send_direct(live, request).await,
            Err(why) => return self.fallback(request, why).await,
        };
        match (first, copy) {
            (Err(Error::ChannelClosed), Some(parts)) => {
                tracing::debug!(path = %parts.uri, "channel died before the answer; sending again");
                let request = http::Request::from_parts(parts, empty_request());
                match self.live().await {
                    Ok(live) => self.send_direct(live, request).await,
                    Err(why) => self.fallback(request, why).await,
                }
            }
            (outcome, _) => outcome,
        }
    }

    async fn fallback<B>(
        &self,
        request: http::Request<B>,
        why: String,
    ) -> Result<http::Response<Body>, Error>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::fmt::Display,
    {
        match &self.inner.relay {
            Some(relay) => {
                tracing::debug!(%why, "taking the relay");
                relay.send(request).await
            }
            None => Err(Error::Unavailable(why)),
        }
    }

    /// The open path, waiting while a connection attempt is under way, up
    /// to the setup budget. A link that is down (its last attempt failed)
    /// answers at once: waiting would only delay the relay or the error.
    async fn live(&self) -> Result<Arc<Live>, String> {
        let mut state = self.inner.state.clone();
        let deadline = tokio::time::Instant::now() + self.inner.setup_budget;
        loop {
            let current = state.borrow_and_update().clone();
            match current {
                LinkState::Up(live) if !live.conn.client.is_closed() => return Ok(live),
                LinkState::Down(why) => return Err(why),
                _ => {}
            }
            match tokio::time::timeout_at(deadline, state.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("the client has stopped".into()),
                Err(_) => {
                    return Err(format!(
                        "no direct path within the {:?} setup budget",
                        self.inner.setup_budget
                    ))
                }
            }
        }
    }

    async fn send_direct<B>(
        &self,
        live: Arc<Live>,
        request: http::Request<B>,
    ) -> Result<http::Response<Body>, Error>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::fmt::Display,
    {
        let slot = Arc::clone(&live.slots)
            .acquire_owned()
            .await
            .map_err(|_| Error::ChannelClosed)?;
        let (parts, body) = request.into_parts();
        let (head, body) = to_head(&parts, body, self.inner.scheme.as_deref())?;
        let max_header = live.conn.client.agree().max_header_bytes as usize;
        let head_size = head.path.len()
            + head
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if max_header > 0 && head_size > max_header {
            return Err(Error::Stream {
                code: "header_too_large".into(),
                message: format!("request head larger than {max_header} bytes"),
            });
        }
        let response = live.conn.client.send(head, body).await?;
        Ok(from_handle(response, (live, slot)))
    }
}

/// The protocol's request head for an HTTP request, and its body. A body
/// of known length declares it (`content-length`); one of unknown length
/// is streamed without.
fn to_head<B>(
    parts: &http::request::Parts,
    body: B,
    scheme: Option<&str>,
) -> Result<(RequestHead, Option<BodyStream>), Error>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let mut headers = Headers::new();
    for (name, value) in &parts.headers {
        let name = name.as_str();
        if hop_by_hop(name) || name == "content-length" {
            continue;
        }
        let value = value
            .to_str()
            .map_err(|_| Error::InvalidRequest(format!("header {name} is not visible ASCII")))?;
        let sep = if name == "cookie" { "; " } else { ", " };
        headers
            .entry(name.to_owned())
            .and_modify(|v| {
                v.push_str(sep);
                v.push_str(value);
            })
            .or_insert_with(|| value.to_owned());
    }
    let hint = body.size_hint().exact();
    let body = if body.is_end_stream() || hint == Some(0) {
        None
    } else {
        if let Some(n) = hint {
            headers.insert("content-length".into(), n.to_string());
        }
        let stream = http_body_util::BodyDataStream::new(body)
            .map(|r| r.map_err(|e| BridgeError::BadRequest(format!("request body: {e}"))))
            .boxed();
        Some(stream)
    };
    let scheme = scheme
        .map(str::to_owned)
        .or_else(|| parts.uri.scheme_str().map(str::to_owned));
    let head = RequestHead {
        method: parts.method.as_str().to_owned(),
        path,
        headers,
        scheme,
        ..Default::default()
    };
    Ok((head, body))
}

/// An `http::Response` whose body streams from the channel; `hold` lives
/// as long as the body (the connection and the request's slot).
fn from_handle<H: Send + 'static>(response: ResponseHandle, hold: H) -> http::Response<Body> {
    let mut builder = http::Response::builder().status(response.status);
    for (name, value) in &response.headers {
        // Set-Cookie is carried one per line (docs/protocol.md §4.3).
        let values: Vec<&str> = if name.eq_ignore_ascii_case("set-cookie") {
            value.split('\n').collect()
        } else {
            vec![value.as_str()]
        };
        for v in values {
            match (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(v),
            ) {
                (Ok(n), Ok(v)) => builder = builder.header(n, v),
                _ => tracing::debug!(%name, "dropping a response header that is not valid HTTP"),
            }
        }
    }
    let frames = futures::stream::unfold(
        (response.body, Some(hold)),
        |(mut body, mut hold)| async move {
            match body.next().await {
                Some(Ok(bytes)) => Some((Ok(http_body::Frame::data(bytes)), (body, hold))),
                Some(Err(e)) => {
                    hold.take();
                    Some((Err(Error::from(e)), (body, None)))
                }
                None => {
                    hold.take();
                    None
                }
            }
        },
    );
    let body = http_body_util::StreamBody::new(frames).boxed_unsync();
    builder
        .body(body)
        .unwrap_or_else(|_| http::Response::new(empty()))
}

/// Methods a client may send again when the connection died before the
/// answer (RFC 9110 §9.2.2).
fn idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::TRACE
            | http::Method::PUT
            | http::Method::DELETE
    )
}

/// A request body that has ended (the retried request had none).
fn empty_request() -> http_body_util::Empty<Bytes> {
    http_body_util::Empty::new()
}

fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

impl Relay {
    async fn send<B>(&self, request: http::Request<B>) -> Result<http::Response<Body>, Error>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::fmt::Display,
    {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let url = format!("{}{path}", self.base);
        let mut headers = parts.headers.clone();
        for name in HOP_BY_HOP.iter().chain(&["expect", "host"]) {
            headers.remove(*name);
        }
        let mut builder = self
            .http
            .request(parts.method.clone(), &url)
            .headers(headers);
        if !body.is_end_stream() {
            let stream = http_body_util::BodyDataStream::new(body)
                .map(|r| r.map_err(|e| std::io::Error::other(e.to_string())));
            builder = builder.body(reqwest::Body::wrap_stream(stream));
        }
        let response = builder
            .send()
            .await
            .map_err(|e| Error::Relay(e.to_string()))?;
        let mut out = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            if !hop_by_hop(name.as_str()) {
                out = out.header(name, value);
            }
        }
        let frames = response.bytes_stream().map(|r| {
            r.map(http_body::Frame::data)
                .map_err(|e| Error::Relay(e.to_string()))
        });
        let body = http_body_util::StreamBody::new(frames).boxed_unsync();
        out.body(body).map_err(|e| Error::Relay(e.to_string()))
    }
}

impl<B> tower::Service<http::Request<B>> for HomeClient
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    type Response = http::Response<Body>;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Requests wait for a path (or a stream slot) inside `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let client = self.clone();
        Box::pin(async move { client.send(request).await })
    }
}
