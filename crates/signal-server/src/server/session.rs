//! `POST {base}/session` (a session and its ICE servers) and
//! `POST {base}/cookie` (the cookie jar's exchange), with the limits on
//! how many sessions one caller may open.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Instant, SystemTime},
};

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};

use crate::{cookies, limits::address_key, store::Access, turn::hex};

use super::{now_ms, read_body, stored, ApiError, Caller, Shared, Who};

#[derive(Serialize)]
pub(super) struct IceServerOut {
    urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<String>,
}

#[derive(Serialize)]
pub(super) struct SessionCreated {
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
pub(super) struct SessionRequest {
    #[serde(default)]
    home: Option<String>,
}

pub(super) async fn create_session(
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
pub(super) struct CookieRequest {
    session_id: String,
    /// `Set-Cookie` lines the home peer sealed; absent to refresh the jar.
    #[serde(default)]
    set_cookie: Option<String>,
}

#[derive(Serialize)]
pub(super) struct CookieReply {
    cookie_jar: String,
}

/// `POST {base}/cookie`: sets the cookies a channel response carried
/// (sealed by the home peer) and answers the session's new jar.
pub(super) async fn cookie_exchange(
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
pub(super) fn limit_session_rate(shared: &Shared, caller: &Caller) -> Result<(), ApiError> {
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
pub(super) fn limit_live_sessions(
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
