//! `POST {base}/signal` (an offer, answer or candidate) and
//! `GET {base}/signal` (the long poll that waits for them).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, rejection::QueryRejection, Query, State},
    http::StatusCode,
    Json,
};
use serde::{Deserialize, Deserializer, Serialize};

use crate::{
    store::{MessageKind, NewMessage, Side, StoredMessage},
    wake::Topic,
};

use super::{live_since_ms, now_ms, read_body, stored, ApiError, Caller, Shared, Who};

/// Most messages one poll answer carries; the cursor lets the caller fetch
/// the rest at once.
const POLL_BATCH: usize = 100;

/// `candidate` is kept as given, including an explicit `null` (end of
/// candidates), which plain `Option` would fold into "absent".
pub(super) fn present<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

#[derive(Deserialize)]
pub(super) struct PostedSignal {
    session_id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    sdp: Option<String>,
    #[serde(default, deserialize_with = "present")]
    candidate: Option<serde_json::Value>,
}

#[derive(Serialize)]
pub(super) struct Posted {
    seq: u64,
}

pub(super) async fn post_signal(
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
pub(super) struct PollParams {
    session_id: Option<String>,
    #[serde(default)]
    after: u64,
}

#[derive(Serialize)]
pub(super) struct OutMessage {
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
pub(super) struct PollAnswer {
    messages: Vec<OutMessage>,
    cursor: u64,
}

pub(super) async fn poll_signal(
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
pub(super) async fn wait_for_messages(
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
