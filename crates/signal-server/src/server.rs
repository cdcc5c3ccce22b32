//! The HTTP surface: routes, handlers and the long-poll wait.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Bytes,
    extract::{
        rejection::BytesRejection, rejection::QueryRejection, ConnectInfo, DefaultBodyLimit,
        FromRequestParts, Query, Request, State,
    },
    http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Deserializer, Serialize};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{
    auth::{bearer_token, BrowserRequest, Identity},
    config::SignalConfig,
    cookies, home_link,
    limits::address_key,
    metrics::{Outcome, FALLBACK_REASONS},
    net::client_ip,
    store::{Access, MessageKind, NewMessage, Side, StoredMessage},
    turn::hex,
    wake::Topic,
};

pub use crate::errors::OpenError;
pub(crate) use crate::errors::{stored, ApiError};
pub(crate) use crate::state::Shared;
pub use crate::state::SignalServer;

/// The browser client served at `{base}/client.js`.
const CLIENT_JS: &str = include_str!("../assets/client.js");

/// Default largest request body the signaling endpoints accept
/// ([`Limits::max_body_bytes`](crate::Limits::max_body_bytes)).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Most messages one poll answer carries; the cursor lets the caller fetch
/// the rest at once.
const POLL_BATCH: usize = 100;

/// Longest free-text detail of a report that is logged.
const MAX_REPORT_DETAIL: usize = 200;

/// Longest setup time a report may claim.
const MAX_SETUP: Duration = Duration::from_secs(600);

impl SignalServer {
    /// The routes of the signaling contract, plus `/healthz`, `/metrics` and
    /// the relay (or a JSON 404) as fallback.
    ///
    /// The router owns its fallback, so mount it as a whole (serve it, nest
    /// it, or use it as another router's `fallback_service`) rather than
    /// merging it into a router that has a fallback of its own.
    pub fn router(&self) -> Router {
        let shared = &self.shared;
        let base = &shared.config.base_path;
        let mut signaling = Router::new()
            .route(&format!("{base}/session"), post(create_session))
            .route(
                &format!("{base}/signal"),
                post(post_signal).get(poll_signal),
            )
            .route(&format!("{base}/report"), post(report))
            .route(&format!("{base}/cookie"), post(cookie_exchange))
            // Set before the layers so that the CORS layer also wraps it and
            // answers preflights (OPTIONS) on these paths.
            .method_not_allowed_fallback(method_not_allowed)
            .layer(match shared.config.limits.max_body_bytes {
                // 0 turns the limit off, as for every limit.
                0 => DefaultBodyLimit::disable(),
                limit => DefaultBodyLimit::max(limit),
            })
            .layer(middleware::from_fn_with_state(
                shared.clone(),
                guard_request,
            ));
        if let Some(cors) = cors_layer(&shared.cors_allow) {
            signaling = signaling.layer(cors);
        }
        Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .route(&format!("{base}/client.js"), get(client_js))
            .route(&format!("{base}/link"), get(home_link::accept))
            .route(&format!("{base}/frames"), get(crate::frames::accept))
            .merge(signaling)
            .method_not_allowed_fallback(method_not_allowed)
            .fallback_service(self.relay.clone())
            .with_state(shared.clone())
    }
}

fn cors_layer(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins = origins.to_vec();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .allow_credentials(true)
            .max_age(Duration::from_secs(600)),
    )
}

/// Runs before anything reads the body: refuses foreign origins (so a page
/// elsewhere cannot ride a user's cookies) and bodies whose declared length
/// is over the limit (without reading them).
async fn guard_request(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        if !origin_allowed(origin, request.headers(), &shared.config.cors_origins) {
            let shown = String::from_utf8_lossy(origin.as_bytes()).into_owned();
            return ApiError::new(
                StatusCode::FORBIDDEN,
                format!("origin {shown} may not call the signaling endpoints; add it to the CORS allow-list"),
            )
            .into_response();
        }
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let limit = shared.config.limits.max_body_bytes;
    if limit != 0 && declared.is_some_and(|length| length > limit as u64) {
        shared.metrics.count_limit("body-size");
        return ApiError::body_too_large(limit).into_response();
    }
    next.run(request).await
}

/// Same origin (the `Origin` names the host the request was sent to) or
/// listed.
fn origin_allowed(origin: &HeaderValue, headers: &HeaderMap, listed: &[String]) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if listed
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some((_, authority)) = origin.split_once("://") else {
        return false;
    };
    let host_of = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
    };
    [host_of("x-forwarded-host"), host_of("host")]
        .into_iter()
        .flatten()
        .any(|host| host.eq_ignore_ascii_case(authority))
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// Sessions created at or after this instant are live.
/// The home of session `id` when `caller` may use it and it is live; 404
/// (410 when expired) otherwise, as for a poll.
pub(crate) async fn live_session_home(
    shared: &Arc<Shared>,
    caller: &Caller,
    id: &str,
) -> Result<Arc<str>, ApiError> {
    let session = stored(shared, shared.store.session(id)).await?;
    match session {
        Some(session) if caller.access().allows(&session) => {
            if session.created_ms < live_since_ms(&shared.config) {
                return Err(ApiError::expired_session(&shared.config));
            }
            shared
                .home_named(&session.home_id)
                .ok_or_else(ApiError::unknown_session)
        }
        _ => Err(ApiError::unknown_session()),
    }
}

pub(crate) fn live_since_ms(config: &SignalConfig) -> u64 {
    now_ms().saturating_sub(millis(config.session_ttl))
}

/// Who is calling.
#[derive(Debug, Clone)]
pub(crate) enum Who {
    /// A browser, as its [`BrowserAuth`](crate::BrowserAuth) identified it.
    Browser(Identity),
    /// The home peer with this name.
    Home(Arc<str>),
}

/// The authenticated caller of a signaling request and its address.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) who: Who,
    pub(crate) client_ip: Option<IpAddr>,
}

impl Caller {
    fn side(&self) -> Side {
        match self.who {
            Who::Browser(_) => Side::Browser,
            Who::Home(_) => Side::Home,
        }
    }

    fn access(&self) -> Access<'_> {
        match &self.who {
            Who::Browser(identity) => Access::Owner(identity.subject()),
            Who::Home(name) => Access::Home(name),
        }
    }

    /// The key per-identity limits count under. Anonymous browsers are
    /// counted per client address, so that one cannot starve the rest.
    fn limit_key(&self) -> String {
        match &self.who {
            Who::Home(name) => format!("home:{name}"),
            Who::Browser(identity) if identity.is_anonymous() => match self.client_ip {
                Some(ip) => format!("ip:{}", address_key(ip)),
                None => "anonymous".to_owned(),
            },
            Who::Browser(identity) => format!("user:{}", identity.subject()),
        }
    }

    /// For logs: the home's name or the browser identity's tag.
    fn log_tag(&self) -> String {
        match &self.who {
            Who::Home(name) => format!("home:{name}"),
            Who::Browser(identity) => identity.log_tag(),
        }
    }
}

/// A bearer token that matches a home is that home; anything else is a
/// browser, authenticated by the configured [`BrowserAuth`](crate::BrowserAuth).
impl FromRequestParts<Arc<Shared>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<Shared>) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        let client_ip =
            peer.map(|peer| client_ip(peer.ip(), &parts.headers, &shared.config.trusted_proxies));
        if let Some(home) = bearer_token(&parts.headers).and_then(|token| shared.homes.find(token))
        {
            return Ok(Self {
                who: Who::Home(home),
                client_ip,
            });
        }
        let request = BrowserRequest::new(&parts.headers, &parts.extensions, peer, client_ip);
        match shared.config.browser_auth.authenticate(&request) {
            Ok(identity) => Ok(Self {
                who: Who::Browser(identity),
                client_ip,
            }),
            Err(rejection) => {
                shared
                    .metrics
                    .auth_rejections
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(client = ?client_ip, reason = rejection.message(), "request refused: not authenticated");
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    rejection.message().to_owned(),
                ))
            }
        }
    }
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
        {
            let mut text = shared.metrics.render();
            shared.links.render(&mut text, shared.homes.names());
            text
        },
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
    home: String,
    ice_servers: Vec<IceServerOut>,
    ttl: u64,
    /// The browser's cookies, sealed for the home peer (`docs/cookies.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    cookie_jar: Option<String>,
    /// The home's loopback listener and a ticket for it (`docs/loopback.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    loopback: Option<crate::loopback::LoopbackOut>,
    /// The home takes this session's frame connection (`GET {base}/frames`,
    /// `docs/protocol.md` §4.8): its streams can move between the relay
    /// and the data channel. Absent when it does not.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    resume: bool,
    /// Where this server's normal path goes: `home-link` (through the
    /// home's link, so pages use the resumable connection by default) or
    /// `upstream` (`--relay-upstream`).
    normal_path: &'static str,
}

#[derive(Deserialize, Default)]
struct SessionRequest {
    #[serde(default)]
    home: Option<String>,
}

fn read_body(shared: &Shared, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        ApiError::rejected(
            shared,
            r.status(),
            "could not read request body",
            r.body_text(),
        )
    })
}

async fn create_session(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SessionCreated>, ApiError> {
    let Who::Browser(identity) = &caller.who else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a home peer cannot create sessions; sessions are created by browsers",
        ));
    };
    let body = read_body(&shared, body)?;
    let request: SessionRequest = if body.trim_ascii().is_empty() {
        SessionRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "session request must be empty or a JSON object like {{\"home\": \"name\"}}: {e}"
            ))
        })?
    };
    let home = match request.home {
        Some(name) => shared
            .homes
            .names()
            .find(|home| ***home == *name)
            .filter(|home| identity.may_use_home(home))
            .cloned()
            .ok_or_else(|| {
                ApiError::new(StatusCode::NOT_FOUND, format!("no home named {name:?}"))
            })?,
        None => shared
            .default_home
            .clone()
            .filter(|home| identity.may_use_home(home))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "name the home to reach: this server has several; send {\"home\": \"name\"}",
                )
            })?,
    };

    limit_session_rate(&shared, &caller)?;

    let session_id = hex(&rand::random::<[u8; 16]>());
    let now = now_ms();
    stored(
        &shared,
        shared
            .store
            .create_session(&session_id, &home, identity.subject(), now),
    )
    .await?;
    shared
        .metrics
        .sessions_created
        .fetch_add(1, Ordering::Relaxed);
    tracing::info!(home = &*home, user = caller.log_tag(), "session created");

    let config = &shared.config;
    let mut ice_servers = Vec::new();
    if !config.stun_urls.is_empty() {
        ice_servers.push(IceServerOut {
            urls: config.stun_urls.clone(),
            username: None,
            credential: None,
        });
    }
    if let (Some(secrets), false) = (&config.turn_secrets, config.turn_urls.is_empty()) {
        let creds = secrets.issue(config.credential_ttl, SystemTime::now());
        ice_servers.push(IceServerOut {
            urls: config.turn_urls.clone(),
            username: Some(creds.username),
            credential: Some(creds.credential),
        });
    }
    let cookie_jar = shared.cookie_keys.get(&home).map(|key| {
        key.seal_jar(
            &session_id,
            &cookies::cookie_header(&headers),
            cookies::now_secs(),
        )
    });
    let link = shared.links.get(&home);
    let loopback = shared.loopback_keys.offer(
        config.loopback,
        &home,
        link.as_deref().and_then(|link| link.loopback()),
        caller.client_ip,
        &session_id,
        config.session_ttl,
    );
    let resume = link.as_deref().is_some_and(|link| link.resumable());
    Ok(Json(SessionCreated {
        session_id,
        home: home.to_string(),
        ice_servers,
        ttl: config.credential_ttl.as_secs(),
        cookie_jar,
        loopback,
        resume,
        normal_path: if config.relay_upstream.is_some() {
            "upstream"
        } else {
            "home-link"
        },
    }))
}

#[derive(Deserialize)]
struct CookieRequest {
    session_id: String,
    /// `Set-Cookie` lines the home peer sealed; absent to refresh the jar.
    #[serde(default)]
    set_cookie: Option<String>,
}

#[derive(Serialize)]
struct CookieReply {
    cookie_jar: String,
}

/// `POST {base}/cookie`: sets the cookies a channel response carried
/// (sealed by the home peer) and answers the session's new jar.
async fn cookie_exchange(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Who::Browser(identity) = &caller.who else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cookies are exchanged by browsers",
        ));
    };
    let body = read_body(&shared, body)?;
    let request: CookieRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"session_id\": ..., \"set_cookie\"?: ...}}: {e}"
        ))
    })?;
    let session = stored(&shared, shared.store.session(&request.session_id))
        .await?
        .filter(|s| Access::Owner(identity.subject()).allows(s))
        .ok_or_else(ApiError::unknown_session)?;
    let key = shared
        .cookie_keys
        .get(&session.home_id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "cookie jars are off"))?;
    let (lines, jar) = cookies::exchange(
        key,
        &request.session_id,
        &cookies::cookie_header(&headers),
        request.set_cookie.as_deref(),
    )
    .map_err(|e| ApiError::bad_request(format!("set_cookie: {e}")))?;
    let mut response = Json(CookieReply { cookie_jar: jar }).into_response();
    let out = response.headers_mut();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for line in lines {
        match HeaderValue::from_str(&line) {
            Ok(v) => {
                out.append(header::SET_COOKIE, v);
            }
            Err(_) => tracing::debug!("dropping a Set-Cookie line that is not a header value"),
        }
    }
    Ok(response)
}

/// Sessions per client address, then per identity (anonymous browsers are
/// already counted by address). A refusal by the second gives back what the
/// first took.
fn limit_session_rate(shared: &Shared, caller: &Caller) -> Result<(), ApiError> {
    let now = Instant::now();
    let ip_key = caller.client_ip.map(address_key);
    if let Some(key) = &ip_key {
        if let Err(wait) = shared.sessions_per_ip.acquire(key, now) {
            shared.metrics.count_limit("ip-session-rate");
            return Err(ApiError::too_many(
                format!(
                    "too many sessions from this address (limit {} per minute); retry later",
                    shared.config.limits.sessions_per_ip_per_minute
                ),
                wait,
            ));
        }
    }
    if matches!(&caller.who, Who::Browser(identity) if !identity.is_anonymous()) {
        if let Err(wait) = shared
            .sessions_per_identity
            .acquire(&caller.limit_key(), now)
        {
            if let Some(key) = &ip_key {
                shared.sessions_per_ip.release(key);
            }
            shared.metrics.count_limit("identity-session-rate");
            return Err(ApiError::too_many(
                format!(
                    "too many sessions for this user (limit {} per minute); retry later",
                    shared.config.limits.sessions_per_identity_per_minute
                ),
                wait,
            ));
        }
    }
    limit_live_sessions(shared, caller, now, ip_key.as_deref())
}

/// At most so many live sessions per user and per address: each is a peer
/// connection the home may have to run.
fn limit_live_sessions(
    shared: &Shared,
    caller: &Caller,
    now: Instant,
    ip_key: Option<&str>,
) -> Result<(), ApiError> {
    let limits = &shared.config.limits;
    let named = matches!(&caller.who, Who::Browser(identity) if !identity.is_anonymous());
    if named {
        if let Err(wait) = shared.live_per_identity.admit(&caller.limit_key(), now) {
            shared.metrics.count_limit("identity-live-sessions");
            return Err(ApiError::too_many(
                format!(
                    "this user already has {} live sessions; retry when one expires",
                    limits.max_live_sessions_per_identity
                ),
                wait,
            ));
        }
    }
    if let Some(key) = ip_key {
        if let Err(wait) = shared.live_per_ip.admit(key, now) {
            shared.metrics.count_limit("ip-live-sessions");
            return Err(ApiError::too_many(
                format!(
                    "this address already has {} live sessions; retry when one expires",
                    limits.max_live_sessions_per_ip
                ),
                wait,
            ));
        }
    }
    Ok(())
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
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Posted>, ApiError> {
    let body = read_body(&shared, body)?;
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
    let max_sdp = shared.config.limits.max_sdp_bytes;
    if let Some(sdp) = &posted.sdp {
        if max_sdp != 0 && sdp.len() > max_sdp {
            shared.metrics.count_limit("sdp-size");
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the sdp is {} bytes; the limit is {max_sdp}", sdp.len()),
            ));
        }
    }
    let candidate_json = posted.candidate.as_ref().map(|value| value.to_string());
    let max_candidate = shared.config.limits.max_candidate_bytes;
    if let Some(json) = &candidate_json {
        if max_candidate != 0 && json.len() > max_candidate {
            shared.metrics.count_limit("candidate-size");
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the candidate is {} bytes; the limit is {max_candidate}",
                    json.len()
                ),
            ));
        }
    }
    let session: Arc<str> = posted.session_id.as_str().into();
    let side = caller.side();
    let rate_key = format!("{}:{}", side.as_str(), posted.session_id);
    if let Err(wait) = shared.posts_per_session.acquire(&rate_key, Instant::now()) {
        shared.metrics.count_limit("session-post-rate");
        return Err(ApiError::too_many(
            format!(
                "too many messages posted to this session (limit {} per minute); retry later",
                shared.config.limits.posts_per_session_per_minute
            ),
            wait,
        ));
    }
    if matches!(caller.who, Who::Browser(_)) {
        if let Err(wait) = shared
            .posts_per_identity
            .acquire(&caller.limit_key(), Instant::now())
        {
            shared.metrics.count_limit("identity-post-rate");
            return Err(ApiError::too_many(
                format!(
                    "too many messages posted by this user (limit {} per minute across its sessions); retry later",
                    shared.config.limits.posts_per_identity_per_minute
                ),
                wait,
            ));
        }
    }
    let live_since = live_since_ms(&shared.config);
    let max_messages = shared.config.limits.max_messages_per_session;
    let now = now_ms();
    let message = NewMessage {
        session_id: &posted.session_id,
        side,
        kind,
        sdp: posted.sdp.as_deref(),
        candidate_json: candidate_json.as_deref(),
    };
    let (seq, home) = stored(
        &shared,
        shared
            .store
            .append(&message, caller.access(), live_since, max_messages, now),
    )
    .await?;

    // The row is committed; wake the held polls it concerns.
    let at = Instant::now();
    shared.wakeups.announce(
        &Topic::Session {
            id: session,
            from: side,
        },
        at,
    );
    if side == Side::Browser {
        shared.wakeups.announce(&Topic::Home(home.into()), at);
    }
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

async fn poll_signal(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    params: Result<Query<PollParams>, QueryRejection>,
) -> Result<Json<PollAnswer>, ApiError> {
    let Query(params) = params
        .map_err(|r| ApiError::rejected(&shared, r.status(), "invalid query", r.body_text()))?;
    let after = params.after;

    let topic = match (params.session_id, &caller.who) {
        (None, Who::Browser(_)) => {
            return Err(ApiError::bad_request("session_id is required"));
        }
        (None, Who::Home(name)) => Topic::Home(name.clone()),
        (Some(id), _) => {
            let session = stored(&shared, shared.store.session(&id)).await?;
            match session {
                Some(session) if caller.access().allows(&session) => {
                    if session.created_ms < live_since_ms(&shared.config) {
                        return Err(ApiError::expired_session(&shared.config));
                    }
                }
                _ => return Err(ApiError::unknown_session()),
            }
            Topic::Session {
                id: id.into(),
                from: caller.side().other(),
            }
        }
    };

    // A home's cursor from before the database was recreated would wait for
    // ever: answer at once with this store's, which it takes as its next.
    // (A browser's session is gone with the old database anyway.)
    let highest = match &topic {
        Topic::Home(_) => stored(&shared, shared.store.highest_seq()).await?,
        _ => u64::MAX,
    };
    if after > highest {
        tracing::warn!(
            after,
            highest,
            "a poll's cursor is ahead of the store (recreated?); sending it back"
        );
        return Ok(Json(PollAnswer {
            messages: Vec::new(),
            cursor: highest,
        }));
    }

    let Some(_slot) = shared.polls.acquire(&caller.limit_key()) else {
        shared.metrics.count_limit("concurrent-polls");
        return Err(ApiError::too_many(
            format!(
                "too many long-polls held at once for this caller (limit {}); wait for one to finish",
                shared.config.limits.max_polls_per_identity
            ),
            Duration::from_secs(1),
        ));
    };
    let messages = wait_for_messages(&shared, topic, after).await?;
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
    topic: Topic,
    after: u64,
) -> Result<Vec<StoredMessage>, ApiError> {
    let deadline = tokio::time::Instant::now() + shared.config.long_poll_timeout;
    // Subscribing before the first read means a message committed between
    // the read and the wait still wakes us: no lost wake-ups.
    let mut subscription = shared.wakeups.subscribe(topic.clone());
    let mut woken_at: Option<Instant> = None;
    let mut waiting = None;
    loop {
        let live_since = live_since_ms(&shared.config);
        let read = match &topic {
            Topic::Session { id, from } => shared
                .store
                .session_messages(id, *from, after, live_since, POLL_BATCH),
            Topic::Home(home) => shared
                .store
                .home_messages(home, after, live_since, POLL_BATCH),
        };
        let found = stored(shared, read).await?;
        if !found.is_empty() {
            if let Some(at) = woken_at {
                shared.metrics.observe_wake(at.elapsed());
            }
            return Ok(found);
        }
        if shared.shutdown.is_cancelled() {
            return Ok(found);
        }
        waiting.get_or_insert_with(|| shared.metrics.waiting_poll());
        tokio::select! {
            announced = subscription.announced() => match announced {
                Some(at) => woken_at = Some(at),
                // The topic's sender is gone, which cannot happen while we
                // are subscribed; answer rather than spin.
                None => return Ok(Vec::new()),
            },
            _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
            _ = shared.shutdown.cancelled() => return Ok(Vec::new()),
        }
    }
}

/// A browser's once-per-page-load connection outcome.
#[derive(Deserialize)]
struct Report {
    outcome: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    setup_ms: Option<f64>,
    #[serde(default)]
    session_id: Option<String>,
}

async fn report(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    if matches!(caller.who, Who::Home(_)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "outcome reports come from browsers",
        ));
    }
    if let Some(ip) = caller.client_ip {
        if let Err(wait) = shared
            .reports_per_ip
            .acquire(&address_key(ip), Instant::now())
        {
            shared.metrics.count_limit("ip-session-rate");
            return Err(ApiError::too_many(
                "too many reports from this address",
                wait,
            ));
        }
    }
    let body = read_body(&shared, body)?;
    // Any content type: `navigator.sendBeacon` sends text/plain.
    let report: Report = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid report: {e}; expected {{\"outcome\": \"direct\"|\"relay-candidate\"|\"fallback\", \"reason\"?, \"detail\"?, \"setup_ms\"?, \"session_id\"?}}"
        ))
    })?;
    let outcome = Outcome::parse(&report.outcome).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown outcome {:?}; expected direct, relay-candidate or fallback",
            report.outcome
        ))
    })?;
    let setup = match report.setup_ms {
        Some(ms) if ms.is_finite() && ms >= 0.0 && ms <= MAX_SETUP.as_secs_f64() * 1000.0 => {
            Some(Duration::from_secs_f64(ms / 1000.0))
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "setup_ms must be a number of milliseconds between 0 and 600000",
            ))
        }
        None => None,
    };
    let reason = (outcome == Outcome::Fallback).then(|| {
        let given = report
            .reason
            .as_deref()
            .unwrap_or("other")
            .to_ascii_lowercase();
        FALLBACK_REASONS
            .iter()
            .find(|known| **known == given)
            .copied()
            .unwrap_or("other")
    });
    shared.metrics.count_outcome(outcome, reason, setup);
    let detail: Option<String> = report.detail.map(|text| {
        text.chars()
            .filter(|c| !c.is_control())
            .take(MAX_REPORT_DETAIL)
            .collect()
    });
    let session = report
        .session_id
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    tracing::info!(
        outcome = outcome.as_str(),
        reason = reason.unwrap_or(""),
        setup_ms = setup.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        detail = detail.as_deref().unwrap_or(""),
        // In `open` mode the id is the session's only credential: log
        // enough to tell sessions apart, never the whole of it.
        session = session.as_deref().map_or("", |id| &id[..8]),
        user = caller.log_tag(),
        "connection outcome reported"
    );
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_and_listed_origins_are_allowed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("example.com:8080"));
        let listed = vec!["https://app.example.com".to_owned()];
        let allowed = |origin: &'static str, headers: &HeaderMap| {
            origin_allowed(&HeaderValue::from_static(origin), headers, &listed)
        };
        assert!(allowed("http://example.com:8080", &headers));
        assert!(allowed("https://app.example.com", &headers));
        assert!(!allowed("https://evil.example", &headers));
        assert!(!allowed("null", &headers));
        headers.insert(
            "x-forwarded-host",
            HeaderValue::from_static("public.example"),
        );
        assert!(allowed("https://public.example", &headers));
    }
}
