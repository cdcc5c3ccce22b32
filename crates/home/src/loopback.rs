//! The loopback listener (`docs/loopback.md`): when the browser runs on the
//! home machine itself, a page reaches the home service through
//! `http://127.0.0.1:<port>` with no data channel and no far server.
//!
//! Every request runs through the same bridge a data channel's requests do
//! (a [`MemoryChannel`] pair per signaling session), so the header rules,
//! limits, sealed cookie jars, streaming and WebSockets are the channel's.
//!
//! Any page in the browser can send requests to a loopback port, so before
//! anything reaches the home service a request must pass, in order:
//! - **Host** names the loopback address itself (no DNS rebinding);
//! - **Origin**, when the browser sends one, is a configured page origin;
//! - **a ticket** ([`LoopbackKey`]) that only signal-api and this home can
//!   make, sent in the `x-beeline-ticket` header (a custom header, so a
//!   cross-origin `fetch` needs a preflight, which only the configured
//!   origins pass, and a form, an image or a `no-cors` fetch cannot send
//!   it). WebSocket handshakes cannot carry headers from a page, so they
//!   carry the ticket in the `__beeline_ticket` query parameter instead,
//!   and their `Origin` must be present and allowed.
//!
//! A refused request gets its status and an `x-beeline-error` code; the home
//! service never sees it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts as _, Request, State};
use axum::response::{IntoResponse as _, Response};
use beeline_bridge::{
    frame_headers, http_headers, BridgeConfig, BridgeError, Client, ClientError, ClientOptions,
    CookieKey, CookieSeal, MemoryChannel, Upgrade, Upstream,
};
use beeline_frame::v2::{ErrorCode, RequestHead};
use beeline_seal::{LoopbackKey, TicketError};
use futures::StreamExt as _;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use tokio_util::sync::CancellationToken;

/// The path a page probes before it uses the listener.
pub const PROBE_PATH: &str = "/.beeline/probe";
/// The request header that carries the ticket.
pub const TICKET_HEADER: &str = "x-beeline-ticket";
/// The query parameter that carries the ticket on a WebSocket handshake.
pub const TICKET_PARAM: &str = "__beeline_ticket";
/// The probe's answer: the home's name.
pub const HOME_HEADER: &str = "x-beeline-home";
/// The probe's answer: the ticket's proof.
pub const PROOF_HEADER: &str = "x-beeline-proof";
/// The request header that carries the session's sealed cookie jar.
pub(crate) const JAR_HEADER: &str = "x-beeline-cookie-jar";
/// Why the listener itself refused a request.
pub const ERROR_HEADER: &str = "x-beeline-error";

/// The largest frame on a session's in-process pipe.
const PIPE_MESSAGE_SIZE: usize = 256 * 1024;

/// The window of each stream on that pipe.
const PIPE_WINDOW: u32 = 256 * 1024;

/// How the loopback listener behaves.
#[derive(Debug, Clone)]
pub struct LoopbackConfig {
    /// Checks tickets and makes proofs; derived from the home token.
    pub key: LoopbackKey,
    /// The home's name as signal-api knows it, answered to a probe; `None`
    /// until it is known (signal-api says it when the home link opens).
    /// Until then probes are refused, so no page picks this listener.
    pub home: Arc<Mutex<Option<String>>>,
    /// Page origins (`scheme://host[:port]`) allowed to use the listener.
    pub origins: Vec<String>,
    /// Limits for each session's bridge (as for one peer connection).
    pub bridge: BridgeConfig,
    /// Requests in flight per session.
    pub max_streams_per_session: usize,
    /// Sessions served at once; a new one beyond it gets 503.
    pub max_sessions: usize,
    /// A session with no request for this long is let go.
    pub session_idle: Duration,
    /// Sealed cookie jars, as on the channel (`docs/cookies.md`).
    pub cookie_key: Option<CookieKey>,
}

/// Why the listener cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoopbackError {
    /// The address is not a loopback address.
    #[error(
        "the loopback listener only listens on loopback addresses (127.0.0.0/8, ::1), not {0}"
    )]
    NotLoopback(SocketAddr),
    /// The socket failed.
    #[error("loopback listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Binds `addr`, which must be a loopback address.
pub async fn bind_loopback(addr: SocketAddr) -> Result<tokio::net::TcpListener, LoopbackError> {
    if !addr.ip().is_loopback() {
        return Err(LoopbackError::NotLoopback(addr));
    }
    Ok(tokio::net::TcpListener::bind(addr).await?)
}

/// Serves the loopback listener on `listener` until `shutdown`.
pub async fn serve_loopback<U: Upstream>(
    listener: tokio::net::TcpListener,
    upstream: Arc<U>,
    config: LoopbackConfig,
    shutdown: CancellationToken,
) -> Result<(), LoopbackError> {
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() {
        return Err(LoopbackError::NotLoopback(local));
    }
    let state = Arc::new(Listener {
        upstream,
        port: local.port(),
        sessions: Mutex::default(),
        config,
    });
    let sweeper = tokio::spawn(sweep(Arc::downgrade(&state)));
    let app = axum::Router::new()
        .fallback(handle::<U>)
        .with_state(Arc::clone(&state));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    sweeper.abort();
    served?;
    Ok(())
}

struct Listener<U> {
    upstream: Arc<U>,
    port: u16,
    sessions: Mutex<HashMap<String, Session>>,
    config: LoopbackConfig,
}

/// One signaling session's bridge: a client and the `serve` task behind it.
struct Session {
    client: Arc<Client<MemoryChannel>>,
    last_used: Instant,
    expires: u64,
    serving: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

async fn sweep<U: Upstream>(state: std::sync::Weak<Listener<U>>) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let Some(state) = state.upgrade() else { return };
        let now = unix_now();
        let idle = state.config.session_idle;
        state.sessions.lock().expect("not poisoned").retain(|_, s| {
            s.last_used.elapsed() < idle && s.expires >= now && !s.client.is_closed()
        });
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A refusal by the listener itself.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn into_response(self, cors: Option<&HeaderValue>) -> Response {
        tracing::debug!(code = self.code, message = %self.message, "loopback request refused");
        let mut response = (self.status, self.message).into_response();
        let headers = response.headers_mut();
        headers.insert(ERROR_HEADER, HeaderValue::from_static(self.code));
        if let Some(origin) = cors {
            allow_origin(headers, origin);
        }
        response
    }
}

fn allow_origin(headers: &mut HeaderMap, origin: &HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("*"),
    );
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

async fn handle<U: Upstream>(State(state): State<Arc<Listener<U>>>, request: Request) -> Response {
    // The page's origin, when it is one we serve: the CORS headers of every
    // answer, refusals included, so the page can read why.
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed = origin
        .as_ref()
        .filter(|o| {
            o.to_str()
                .is_ok_and(|o| state.config.origins.iter().any(|a| a == o))
        })
        .cloned();
    match admit(&state, &request, origin.is_some(), allowed.is_some()) {
        Err(refusal) => refusal.into_response(allowed.as_ref()),
        Ok(Admitted::Preflight) => preflight(request.headers(), allowed.as_ref()),
        Ok(Admitted::Probe(ticket)) => {
            let home = state.config.home.lock().expect("not poisoned").clone();
            let Some(home) = home.and_then(|h| HeaderValue::from_str(&h).ok()) else {
                return Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    "the home does not know its name yet (its link to signal-api is not up)",
                )
                .into_response(allowed.as_ref());
            };
            let proof = state.config.key.proof(&ticket);
            let mut response = StatusCode::NO_CONTENT.into_response();
            let headers = response.headers_mut();
            headers.insert(HOME_HEADER, home);
            headers.insert(
                PROOF_HEADER,
                HeaderValue::from_str(&proof).expect("base64url is a header value"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Some(origin) = &allowed {
                allow_origin(headers, origin);
            }
            response
        }
        Ok(Admitted::Request { session, expires }) => {
            match forward(&state, request, session, expires).await {
                Ok(mut response) => {
                    if let Some(origin) = &allowed {
                        allow_origin(response.headers_mut(), origin);
                    }
                    response
                }
                Err(refusal) => refusal.into_response(allowed.as_ref()),
            }
        }
    }
}

enum Admitted {
    Preflight,
    Probe(String),
    Request { session: String, expires: u64 },
}

fn admit<U>(
    state: &Listener<U>,
    request: &Request,
    has_origin: bool,
    origin_allowed: bool,
) -> Result<Admitted, Refusal> {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !is_loopback_host(host, state.port) {
        return Err(Refusal::new(
            StatusCode::MISDIRECTED_REQUEST,
            "wrong_host",
            format!(
                "this listener answers to 127.0.0.1:{0}, localhost:{0} or [::1]:{0} only",
                state.port
            ),
        ));
    }
    if has_origin && !origin_allowed {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this page's origin may not use the home's loopback listener",
        ));
    }
    let websocket = is_websocket(request.method(), headers);
    if request.method() == Method::OPTIONS
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        // Only a configured origin gets here (a preflight always has one).
        return if origin_allowed {
            Ok(Admitted::Preflight)
        } else {
            Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "a preflight needs an allowed Origin",
            ))
        };
    }
    if websocket && !origin_allowed {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "a WebSocket handshake needs an allowed Origin",
        ));
    }
    let presented = if websocket {
        ticket_param(request.uri().query())
    } else {
        headers
            .get(TICKET_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let Some(presented) = presented else {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "ticket_missing",
            format!("a loopback request needs the session's ticket ({TICKET_HEADER})"),
        ));
    };
    let ticket = state
        .config
        .key
        .open(&presented, unix_now())
        .map_err(|error| match error {
            TicketError::Expired => {
                Refusal::new(StatusCode::FORBIDDEN, "ticket_expired", error.to_string())
            }
            _ => Refusal::new(StatusCode::FORBIDDEN, "ticket_invalid", error.to_string()),
        })?;
    if request.uri().path() == PROBE_PATH {
        return Ok(Admitted::Probe(presented));
    }
    Ok(Admitted::Request {
        session: ticket.session,
        expires: ticket.expires,
    })
}

/// Whether `host` (a Host header) names this listener by a loopback name.
fn is_loopback_host(host: &str, port: u16) -> bool {
    let Some((name, host_port)) = host.rsplit_once(':') else {
        return false;
    };
    host_port.parse() == Ok(port)
        && (name == "localhost"
            || name == "[::1]"
            || name
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback()))
}

fn is_websocket(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::GET
        && headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn ticket_param(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == TICKET_PARAM).then(|| percent_decode(value))
    })
}

/// The query without the ticket parameter.
fn without_ticket(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(n, _)| n) != TICKET_PARAM)
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn preflight(headers: &HeaderMap, origin: Option<&HeaderValue>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    if let Some(origin) = origin {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    if let Some(method) = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD) {
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, method.clone());
    }
    if let Some(asked) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    // Private Network Access / Local Network Access: a public page asking
    // to reach this private address.
    if headers.contains_key("access-control-request-private-network") {
        out.insert(
            "access-control-allow-private-network",
            HeaderValue::from_static("true"),
        );
    }
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    out.append(header::VARY, HeaderValue::from_static("origin"));
    response
}

/// The session's bridge client, started when its first request comes.
async fn session_client<U: Upstream>(
    state: &Listener<U>,
    session: &str,
    expires: u64,
) -> Result<Arc<Client<MemoryChannel>>, Refusal> {
    if let Some(client) = existing_session(state, session)? {
        return Ok(client);
    }
    let (near, far) = MemoryChannel::pair(PIPE_MESSAGE_SIZE);
    let mut bridge = state.config.bridge.clone();
    bridge.peer_streams = Some(Arc::new(tokio::sync::Semaphore::new(
        state.config.max_streams_per_session.max(1),
    )));
    bridge.peer_addr = Some("127.0.0.1".to_owned());
    bridge.trust_forwarded_headers = false;
    bridge.cookies = state.config.cookie_key.clone().map(|key| CookieSeal {
        key,
        session: session.to_owned(),
    });
    let serving = tokio::spawn(beeline_bridge::serve(
        Arc::new(far),
        Arc::clone(&state.upstream),
        bridge,
    ));
    let options = ClientOptions {
        binary: true,
        cookies: state.config.cookie_key.is_some(),
        // What a page that reads slowly can leave in home-peer's memory
        // per stream.
        window: PIPE_WINDOW,
        ..ClientOptions::default()
    };
    let client = match Client::connect(Arc::new(near), options).await {
        Ok(client) => Arc::new(client),
        Err(error) => {
            serving.abort();
            return Err(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "bridge_closed",
                format!("the session's bridge did not start: {error}"),
            ));
        }
    };
    let mut sessions = state.sessions.lock().expect("not poisoned");
    // Two first requests of one session raced: the first one in wins.
    if let Some(found) = sessions.get(session).filter(|s| !s.client.is_closed()) {
        serving.abort();
        return Ok(Arc::clone(&found.client));
    }
    sessions.insert(
        session.to_owned(),
        Session {
            client: Arc::clone(&client),
            last_used: Instant::now(),
            expires,
            serving,
        },
    );
    Ok(client)
}

/// The session's client if it runs; an error if a new one would be one too
/// many.
fn existing_session<U>(
    state: &Listener<U>,
    session: &str,
) -> Result<Option<Arc<Client<MemoryChannel>>>, Refusal> {
    let mut sessions = state.sessions.lock().expect("not poisoned");
    if let Some(found) = sessions.get_mut(session) {
        if !found.client.is_closed() {
            found.last_used = Instant::now();
            return Ok(Some(Arc::clone(&found.client)));
        }
        sessions.remove(session);
    }
    if sessions.len() >= state.config.max_sessions {
        // Room goes to a newcomer only if someone has gone quiet.
        let idle = state.config.session_idle;
        sessions.retain(|_, s| s.last_used.elapsed() < idle && !s.client.is_closed());
        if sessions.len() >= state.config.max_sessions {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_sessions",
                "the home's loopback listener serves as many sessions as it may",
            ));
        }
    }
    Ok(None)
}

async fn forward<U: Upstream>(
    state: &Listener<U>,
    request: Request,
    session: String,
    expires: u64,
) -> Result<Response, Refusal> {
    let client = session_client(state, &session, expires).await?;
    let (mut parts, body) = request.into_parts();
    let websocket = is_websocket(&parts.method, &parts.headers);
    let target = match parts.uri.query() {
        Some(query) if websocket => {
            let rest = without_ticket(query);
            if rest.is_empty() {
                parts.uri.path().to_owned()
            } else {
                format!("{}?{rest}", parts.uri.path())
            }
        }
        Some(query) => format!("{}?{query}", parts.uri.path()),
        None => parts.uri.path().to_owned(),
    };
    let mut headers = parts.headers.clone();
    headers.remove(TICKET_HEADER);
    headers.remove(header::HOST);
    // The sealed cookie jar: client.js names it `x-beeline-cookie-jar` on
    // this path; the bridge reads it as a channel request carries it.
    if let Some(jar) = headers.remove(JAR_HEADER) {
        headers.insert("x-beeline-jar", jar);
    }
    if websocket {
        let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
            .await
            .map_err(|rejection| {
                Refusal::new(rejection.status(), "bad_request", rejection.body_text())
            })?;
        return websocket_over(client, target, &headers, upgrade).await;
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let has_body = length.map_or(headers.contains_key(header::TRANSFER_ENCODING), |n| n > 0);
    let head = RequestHead {
        method: parts.method.as_str().to_owned(),
        path: target,
        headers: frame_headers(&without_hop_by_hop(headers)),
        ..RequestHead::default()
    };
    let body = has_body.then(|| {
        body.into_data_stream()
            .map(|piece| piece.map_err(|e| BridgeError::BadRequest(format!("request body: {e}"))))
            .boxed()
    });
    let response = client.send(head, body).await.map_err(stream_refusal)?;
    let status = StatusCode::from_u16(response.status).map_err(|_| {
        Refusal::new(
            StatusCode::BAD_GATEWAY,
            "upstream_failed",
            "the home service answered with an invalid status",
        )
    })?;
    let mut reply = Response::new(Body::from_stream(
        response
            .body
            .into_stream()
            .map(|piece| piece.map_err(std::io::Error::other)),
    ));
    *reply.status_mut() = status;
    *reply.headers_mut() = http_headers(&response.headers);
    Ok(reply)
}

/// Drops the headers of this hop (the bridge drops them too; this keeps
/// `content-length` only where the bridge restates it).
fn without_hop_by_hop(mut headers: HeaderMap) -> HeaderMap {
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers
}

fn stream_refusal(error: ClientError) -> Refusal {
    match error {
        ClientError::Stream { code, message } => {
            let parsed = ErrorCode::parse(&code);
            let status =
                StatusCode::from_u16(parsed.http_status()).unwrap_or(StatusCode::BAD_GATEWAY);
            let code: &'static str = match parsed {
                ErrorCode::TooManyStreams => "too_many_streams",
                ErrorCode::BodyTooLarge => "body_too_large",
                ErrorCode::HeaderTooLarge => "header_too_large",
                ErrorCode::UpstreamUnavailable => "upstream_unavailable",
                ErrorCode::BadRequest => "bad_request",
                _ => "stream_failed",
            };
            Refusal::new(status, code, format!("{code}: {message}"))
        }
        other => Refusal::new(StatusCode::BAD_GATEWAY, "bridge_closed", other.to_string()),
    }
}

async fn websocket_over(
    client: Arc<Client<MemoryChannel>>,
    target: String,
    headers: &HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, Refusal> {
    let mut forwarded = HeaderMap::new();
    for (name, value) in headers {
        let keep =
            !name.as_str().starts_with("sec-websocket-") || name == header::SEC_WEBSOCKET_PROTOCOL;
        if keep && !matches!(name.as_str(), "connection" | "upgrade") {
            forwarded.append(name, value.clone());
        }
    }
    let head = RequestHead {
        method: "GET".into(),
        path: target,
        headers: frame_headers(&forwarded),
        ..RequestHead::default()
    };
    match client.websocket(head).await.map_err(stream_refusal)? {
        Upgrade::Refused(response) => {
            let mut reply = Response::new(Body::from_stream(
                response
                    .body
                    .into_stream()
                    .map(|piece| piece.map_err(std::io::Error::other)),
            ));
            *reply.status_mut() =
                StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY);
            *reply.headers_mut() = http_headers(&response.headers);
            Ok(reply)
        }
        Upgrade::Accepted {
            head,
            sender,
            receiver,
        } => {
            let upgrade = match head.headers.get("sec-websocket-protocol") {
                Some(chosen) => upgrade.protocols([chosen.clone()]),
                None => upgrade,
            };
            Ok(upgrade
                .read_buffer_size(beeline_bridge::WS_READ_BUFFER)
                .on_upgrade(move |socket| async move {
                    // Held so the session's bridge outlives the socket.
                    let _client = client;
                    beeline_bridge::join_websocket(socket, sender, receiver).await;
                }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_with_our_port_are_our_host() {
        assert!(is_loopback_host("127.0.0.1:33120", 33120));
        assert!(is_loopback_host("127.0.0.2:33120", 33120));
        assert!(is_loopback_host("localhost:33120", 33120));
        assert!(is_loopback_host("[::1]:33120", 33120));
        assert!(!is_loopback_host("127.0.0.1:80", 33120));
        assert!(!is_loopback_host("127.0.0.1", 33120));
        assert!(!is_loopback_host("evil.example:33120", 33120));
        assert!(!is_loopback_host("10.0.0.1:33120", 33120));
        assert!(!is_loopback_host("", 33120));
    }

    #[test]
    fn the_ticket_parameter_is_read_and_removed() {
        assert_eq!(
            ticket_param(Some("a=1&__beeline_ticket=v1.s.9.x%2By&b=2")).as_deref(),
            Some("v1.s.9.x+y")
        );
        assert_eq!(ticket_param(Some("a=1")), None);
        assert_eq!(ticket_param(None), None);
        assert_eq!(without_ticket("a=1&__beeline_ticket=t&b=2"), "a=1&b=2");
        assert_eq!(without_ticket("__beeline_ticket=t"), "");
    }

    #[test]
    fn percent_decoding_leaves_broken_escapes_alone() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%"), "%");
    }
}
