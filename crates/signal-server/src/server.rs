//! The HTTP surface: routes, handlers and the long-poll wait.

use std::{
    borrow::Cow,
    error::Error as StdError,
    sync::{atomic::Ordering, Arc, Weak},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Bytes,
    extract::{
        rejection::BytesRejection, rejection::QueryRejection, DefaultBodyLimit, Query, State,
    },
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Deserializer, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::{
    config::SignalConfig,
    metrics::Metrics,
    relay::{self, Relay, RelayConfigError},
    store::{MessageKind, NewMessage, SessionStore, Side, StoreError, StoredMessage},
    turn::{hex, turn_credentials},
};

/// The browser client served at `{base}/client.js`.
const CLIENT_JS: &str = include_str!("../assets/client.js");

/// Largest request body the signaling endpoints accept.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Most messages one poll answer carries; the cursor lets the caller fetch
/// the rest at once.
const POLL_BATCH: usize = 100;

/// Announcements a held poll may fall behind by before it re-reads the
/// store to catch up.
const WAKE_CAPACITY: usize = 1024;

/// The only home for now; the schema already records it per session.
const HOME_ID: &str = "home";

/// Errors from [`SignalServer::open`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The base path is not of the form `/a/b`.
    #[error("invalid base path {0:?}: it must start with '/' and contain no '{{', '}}', '?', '#' or spaces")]
    InvalidBasePath(String),
    /// The home token is empty, which would make every bearer match.
    #[error("the home token must not be empty")]
    EmptyHomeToken,
    /// The relay upstream is not a usable URL.
    #[error(transparent)]
    Relay(#[from] RelayConfigError),
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking task that opens the database did not finish.
    #[error("opening the signaling database was interrupted")]
    Interrupted(#[source] tokio::task::JoinError),
}

/// State shared by every handler of one server.
#[derive(Debug)]
pub(crate) struct Shared {
    config: SignalConfig,
    store: Arc<SessionStore>,
    pub(crate) metrics: Metrics,
    pub(crate) relay: Option<Relay>,
    /// Announces every committed message; held long-polls listen to it.
    committed: broadcast::Sender<Committed>,
    shutdown: CancellationToken,
}

/// A signaling server: configuration, store, wake-ups and metrics.
///
/// Cheap to clone; all clones share one state. Serve [`SignalServer::router`]
/// with axum and call [`SignalServer::shutdown`] before waiting for the
/// server to drain, so that held long-polls are answered at once.
#[derive(Debug, Clone)]
pub struct SignalServer {
    shared: Arc<Shared>,
}

impl SignalServer {
    /// Validates `config`, opens the SQLite store and starts the periodic
    /// sweep of expired rows. Must be called inside a Tokio runtime.
    pub async fn open(mut config: SignalConfig) -> Result<Self, OpenError> {
        config.base_path = normalize_base_path(&config.base_path)?;
        if config.home_token.is_empty() {
            return Err(OpenError::EmptyHomeToken);
        }
        if config.turn_secret.is_none() && !config.turn_urls.is_empty() {
            tracing::warn!(
                "TURN URLs are configured without a TURN secret; they will not be announced"
            );
        }
        let relay = config
            .relay_upstream
            .as_deref()
            .map(Relay::new)
            .transpose()?;
        let db_path = config.db_path.clone();
        let store = tokio::task::spawn_blocking(move || SessionStore::open(&db_path))
            .await
            .map_err(OpenError::Interrupted)??;
        let shared = Arc::new(Shared {
            config,
            store: Arc::new(store),
            metrics: Metrics::default(),
            relay,
            committed: broadcast::Sender::new(WAKE_CAPACITY),
            shutdown: CancellationToken::new(),
        });
        spawn_sweeper(&shared);
        Ok(Self { shared })
    }

    /// The routes of the signaling contract, plus `/healthz`, `/metrics` and
    /// the relay (or a JSON 404) as fallback.
    ///
    /// The router owns its fallback, so mount it as a whole (serve it, nest
    /// it, or use it as another router's `fallback_service`) rather than
    /// merging it into a router that has a fallback of its own.
    pub fn router(&self) -> Router {
        let base = &self.shared.config.base_path;
        let limit = DefaultBodyLimit::max(MAX_BODY_BYTES);
        Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .route(
                &format!("{base}/session"),
                post(create_session).layer(limit),
            )
            .route(
                &format!("{base}/signal"),
                post(post_signal).get(poll_signal).layer(limit),
            )
            .route(&format!("{base}/client.js"), get(client_js))
            .method_not_allowed_fallback(method_not_allowed)
            .fallback(relay::forward)
            .with_state(self.shared.clone())
    }

    /// The normalized base path the routes live under (e.g. `/webrtc`).
    pub fn base_path(&self) -> &str {
        &self.shared.config.base_path
    }

    /// Answers every held long-poll (empty) now and every later one at once,
    /// and stops the sweeper. Requests in flight otherwise complete normally.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// A token cancelled by [`SignalServer::shutdown`]; handy as the trigger
    /// of axum's graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }
}

fn normalize_base_path(raw: &str) -> Result<String, OpenError> {
    let trimmed = raw.trim_end_matches('/');
    let bad = |c: char| matches!(c, '{' | '}' | '?' | '#') || c.is_whitespace();
    if !(trimmed.is_empty() || trimmed.starts_with('/'))
        || trimmed.contains(bad)
        || trimmed.contains("//")
    {
        return Err(OpenError::InvalidBasePath(raw.to_owned()));
    }
    Ok(trimmed.to_owned())
}

/// Deletes expired rows every `sweep_interval` until shutdown or until the
/// server is dropped.
fn spawn_sweeper(shared: &Arc<Shared>) {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let stop = shared.shutdown.clone();
    let mut ticks = tokio::time::interval(shared.config.sweep_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let Some(shared) = weak.upgrade() else { break };
            let cutoff = live_since_ms(&shared.config);
            match run_blocking(&shared, move |store| store.sweep(cutoff)).await {
                Ok(swept) if swept.sessions + swept.messages > 0 => {
                    tracing::debug!(
                        sessions = swept.sessions,
                        messages = swept.messages,
                        "swept expired signaling rows"
                    );
                }
                Ok(_) => {}
                // Already logged by `run_blocking`; the next tick tries again.
                Err(_) => {}
            }
        }
    });
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Sessions created at or after this instant are live.
fn live_since_ms(config: &SignalConfig) -> u64 {
    let ttl = u64::try_from(config.session_ttl.as_millis()).unwrap_or(u64::MAX);
    now_ms().saturating_sub(ttl)
}

/// Runs a store operation on the blocking pool; store failures become
/// logged 500s, an unknown session a 404.
async fn run_blocking<T, F>(shared: &Shared, op: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&SessionStore) -> Result<T, StoreError> + Send + 'static,
{
    let store = shared.store.clone();
    match tokio::task::spawn_blocking(move || op(&store)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(StoreError::UnknownSession)) => Err(ApiError::unknown_session()),
        Ok(Err(error)) => {
            tracing::error!(error = %error_chain(&error), "signaling store failed");
            Err(ApiError::internal())
        }
        Err(error) => {
            tracing::error!(error = %error_chain(&error), "signaling store task failed");
            Err(ApiError::internal())
        }
    }
}

fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An error answered as `{"error": "..."}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: Cow<'static, str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn unknown_session() -> Self {
        Self::new(StatusCode::NOT_FOUND, "unknown or expired session")
    }

    fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
    }

    /// Maps an axum extractor rejection, keeping its status (400, 413, 415…).
    fn rejected(status: StatusCode, what: &str, detail: String) -> Self {
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("request body is larger than {MAX_BODY_BYTES} bytes")
        } else {
            format!("{what}: {detail}")
        };
        Self::new(status, message)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: &self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Who is calling, decided by the `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Browser,
    Home,
}

impl Caller {
    fn side(self) -> Side {
        match self {
            Caller::Browser => Side::Browser,
            Caller::Home => Side::Home,
        }
    }
}

/// A correct home bearer token means the home peer; a wrong one is refused.
/// No `Authorization` header, or another scheme (a browser may carry Basic
/// credentials for the site in front of us), means a browser.
fn caller(headers: &HeaderMap, home_token: &str) -> Result<Caller, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Caller::Browser);
    };
    let value = value.as_bytes();
    const SCHEME: &[u8] = b"bearer ";
    if value.len() < SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return Ok(Caller::Browser);
    }
    let presented = value[SCHEME.len()..].trim_ascii();
    if constant_time_eq(presented, home_token.as_bytes()) {
        Ok(Caller::Home)
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid bearer token",
        ))
    }
}

/// Compares without an early exit, so the time taken does not reveal how
/// much of the token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.metrics.render(),
    )
}

async fn client_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CLIENT_JS,
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

#[derive(Serialize)]
struct IceServerOut {
    urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<String>,
}

#[derive(Serialize)]
struct SessionCreated {
    session_id: String,
    ice_servers: Vec<IceServerOut>,
    ttl: u64,
}

async fn create_session(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SessionCreated>, ApiError> {
    if caller(&headers, &shared.config.home_token)? == Caller::Home {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the home peer cannot create sessions; sessions are created by browsers",
        ));
    }
    let body = body.map_err(|r| {
        ApiError::rejected(r.status(), "could not read request body", r.body_text())
    })?;
    if !body.trim_ascii().is_empty() {
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body).map_err(
            |e| {
                ApiError::bad_request(format!(
                    "session request must be empty or a JSON object: {e}"
                ))
            },
        )?;
    }

    let session_id = hex(&rand::random::<[u8; 16]>());
    let id = session_id.clone();
    let now = now_ms();
    run_blocking(&shared, move |store| {
        store.create_session(&id, HOME_ID, now)
    })
    .await?;
    shared
        .metrics
        .sessions_created
        .fetch_add(1, Ordering::Relaxed);
    tracing::debug!("session created");

    let config = &shared.config;
    let mut ice_servers = Vec::new();
    if !config.stun_urls.is_empty() {
        ice_servers.push(IceServerOut {
            urls: config.stun_urls.clone(),
            username: None,
            credential: None,
        });
    }
    if let (Some(secret), false) = (&config.turn_secret, config.turn_urls.is_empty()) {
        let creds = turn_credentials(secret, config.credential_ttl, SystemTime::now());
        ice_servers.push(IceServerOut {
            urls: config.turn_urls.clone(),
            username: Some(creds.username),
            credential: Some(creds.credential),
        });
    }
    Ok(Json(SessionCreated {
        session_id,
        ice_servers,
        ttl: config.credential_ttl.as_secs(),
    }))
}

/// `candidate` is kept as given, including an explicit `null` (end of
/// candidates), which plain `Option` would fold into "absent".
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct PostedSignal {
    session_id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    sdp: Option<String>,
    #[serde(default, deserialize_with = "present")]
    candidate: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Posted {
    seq: u64,
}

async fn post_signal(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Posted>, ApiError> {
    let side = caller(&headers, &shared.config.home_token)?.side();
    let body = body.map_err(|r| {
        ApiError::rejected(r.status(), "could not read request body", r.body_text())
    })?;
    let posted: PostedSignal = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid signal message: {e}")))?;
    let kind = MessageKind::parse(&posted.kind).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown message type {:?}; expected offer, answer, candidate or bye",
            posted.kind
        ))
    })?;
    if matches!(kind, MessageKind::Offer | MessageKind::Answer) && posted.sdp.is_none() {
        return Err(ApiError::bad_request(format!(
            "an {} needs an \"sdp\" string",
            kind.as_str()
        )));
    }
    let candidate_json = posted.candidate.as_ref().map(|value| value.to_string());
    let announced: Arc<str> = posted.session_id.as_str().into();

    let live_since = live_since_ms(&shared.config);
    let now = now_ms();
    let seq = run_blocking(&shared, move |store| {
        store.append(
            &NewMessage {
                session_id: &posted.session_id,
                side,
                kind,
                sdp: posted.sdp.as_deref(),
                candidate_json: candidate_json.as_deref(),
            },
            live_since,
            now,
        )
    })
    .await?;

    // The row is committed; wake the held polls it concerns. An error only
    // means nobody is waiting.
    let _ = shared.committed.send(Committed {
        session_id: announced,
        side,
    });
    shared.metrics.count_signal(kind);
    tracing::debug!(
        seq,
        side = side.as_str(),
        kind = kind.as_str(),
        "signal stored"
    );
    Ok(Json(Posted { seq }))
}

#[derive(Deserialize)]
struct PollParams {
    session_id: Option<String>,
    #[serde(default)]
    after: u64,
}

#[derive(Serialize)]
struct OutMessage {
    session_id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sdp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate: Option<serde_json::Value>,
    seq: u64,
}

impl From<StoredMessage> for OutMessage {
    fn from(msg: StoredMessage) -> Self {
        Self {
            candidate: msg
                .candidate_json
                .and_then(|text| serde_json::from_str(&text).ok()),
            session_id: msg.session_id,
            kind: msg.kind.as_str(),
            sdp: msg.sdp,
            seq: msg.seq,
        }
    }
}

#[derive(Serialize)]
struct PollAnswer {
    messages: Vec<OutMessage>,
    cursor: u64,
}

/// Announcement of a committed message.
#[derive(Debug, Clone)]
struct Committed {
    session_id: Arc<str>,
    side: Side,
}

/// Which messages a poll waits for.
#[derive(Clone)]
enum PollTarget {
    /// Messages written by `from` in one session.
    Session { id: Arc<str>, from: Side },
    /// Browser messages of every session addressed to the home.
    Home,
}

impl PollTarget {
    /// Whether `event` may add to this poll's answer.
    fn wants(&self, event: &Committed) -> bool {
        match self {
            PollTarget::Session { id, from } => *from == event.side && *id == event.session_id,
            // Sessions are all addressed to the one home for now.
            PollTarget::Home => event.side == Side::Browser,
        }
    }
}

async fn poll_signal(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    params: Result<Query<PollParams>, QueryRejection>,
) -> Result<Json<PollAnswer>, ApiError> {
    let who = caller(&headers, &shared.config.home_token)?;
    let Query(params) =
        params.map_err(|r| ApiError::rejected(r.status(), "invalid query", r.body_text()))?;
    let after = params.after;

    let target = match params.session_id {
        None if who == Caller::Browser => {
            return Err(ApiError::bad_request("session_id is required"));
        }
        None => PollTarget::Home,
        Some(id) => {
            let lookup = id.clone();
            let live_since = live_since_ms(&shared.config);
            let home = run_blocking(&shared, move |store| {
                store.session_home(&lookup, live_since)
            })
            .await?;
            match home {
                Some(home) if who == Caller::Browser || home == HOME_ID => {}
                _ => return Err(ApiError::unknown_session()),
            }
            PollTarget::Session {
                id: id.into(),
                from: who.side().other(),
            }
        }
    };

    let messages = wait_for_messages(&shared, target, after).await?;
    let cursor = messages.last().map_or(after, |msg| msg.seq);
    Ok(Json(PollAnswer {
        messages: messages.into_iter().map(OutMessage::from).collect(),
        cursor,
    }))
}

/// Returns matching messages as soon as there are any, or an empty list
/// once the hold time passes or the server shuts down.
async fn wait_for_messages(
    shared: &Arc<Shared>,
    target: PollTarget,
    after: u64,
) -> Result<Vec<StoredMessage>, ApiError> {
    let deadline = tokio::time::Instant::now() + shared.config.long_poll_timeout;
    // Subscribing before the first read means a message committed between
    // the read and the wait still wakes us: no lost wake-ups.
    let mut wake = shared.committed.subscribe();
    let mut waiting = None;
    loop {
        let target_now = target.clone();
        let live_since = live_since_ms(&shared.config);
        let found = run_blocking(shared, move |store| match &target_now {
            PollTarget::Session { id, from } => {
                store.session_messages(id, *from, after, live_since, POLL_BATCH)
            }
            PollTarget::Home => store.home_messages(HOME_ID, after, live_since, POLL_BATCH),
        })
        .await?;
        if !found.is_empty() || shared.shutdown.is_cancelled() {
            return Ok(found);
        }
        if waiting.is_none() {
            waiting = Some(shared.metrics.waiting_poll());
        }
        // Sleep until a message for this poll is committed, then read again.
        loop {
            tokio::select! {
                event = wake.recv() => match event {
                    Ok(event) if target.wants(&event) => break,
                    Ok(_) => {}
                    // Some announcements were missed; the store knows.
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return Ok(Vec::new()),
                },
                _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
                _ = shared.shutdown.cancelled() => return Ok(Vec::new()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_path_is_normalized_and_validated() {
        assert_eq!(normalize_base_path("/webrtc/").unwrap(), "/webrtc");
        assert_eq!(
            normalize_base_path("/jarvis-api/webrtc").unwrap(),
            "/jarvis-api/webrtc"
        );
        assert_eq!(normalize_base_path("/").unwrap(), "");
        assert!(normalize_base_path("webrtc").is_err());
        assert!(normalize_base_path("/a/{id}").is_err());
        assert!(normalize_base_path("/a//b").is_err());
    }

    #[test]
    fn bearer_decides_the_side() {
        let mut headers = HeaderMap::new();
        assert_eq!(caller(&headers, "tok").unwrap(), Caller::Browser);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok"),
        );
        assert_eq!(caller(&headers, "tok").unwrap(), Caller::Home);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  tok "),
        );
        assert_eq!(caller(&headers, "tok").unwrap(), Caller::Home);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer to"));
        assert_eq!(
            caller(&headers, "tok").unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwdw=="),
        );
        assert_eq!(caller(&headers, "tok").unwrap(), Caller::Browser);
    }
}
