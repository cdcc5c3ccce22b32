//! Endpoints the browser tests call through beeline, mounted only with
//! `--test-endpoints`: a response whose head comes well before its body, one
//! whose head comes late, a
//! slow stream that records whether its client disconnected, numbered
//! server-sent events, a large
//! deterministic binary download that reports how much of it was produced,
//! an upload checksum and a header echo.

use std::{
    collections::{BTreeMap, VecDeque},
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Query, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{any, get, post},
    Json, Router,
};
use futures::stream::{self, StreamExt as _};
use serde::{Deserialize, Serialize};

/// Largest body `/test/bytes` produces.
const MAX_BYTES: u64 = 1 << 30;
/// Size of each body piece `/test/bytes` yields.
const PIECE_BYTES: usize = 64 * 1024;
/// How many stream outcomes `/test/disconnects` remembers.
const MAX_REMEMBERED: usize = 1000;
/// Longest pause a test endpoint accepts.
const MAX_DELAY: Duration = Duration::from_secs(30);
/// Most ticks `/test/stream` sends.
const MAX_TICKS: u32 = 10_000;

/// How each `/test/stream` response ended, by the id the test gave it, and
/// how many bytes each `/test/bytes` download with an id has produced.
#[derive(Default, Serialize)]
struct StreamOutcomes {
    started: VecDeque<String>,
    completed: VecDeque<String>,
    disconnected: VecDeque<String>,
    produced: BTreeMap<String, u64>,
}

fn remember(list: &mut VecDeque<String>, id: String) {
    if list.len() == MAX_REMEMBERED {
        list.pop_front();
    }
    list.push_back(id);
}

type Outcomes = Arc<Mutex<StreamOutcomes>>;

/// The test routes, under `/test/`.
pub(crate) fn router() -> Router {
    let outcomes = Outcomes::default();
    Router::new()
        .route("/test/slow-head", get(slow_head))
        .route("/test/late-head", get(late_head))
        .route("/test/stream", get(slow_stream))
        .route("/test/events", get(numbered_events))
        .route("/test/disconnects", get(disconnects))
        .route("/test/produced", get(produced))
        .route("/test/bytes", get(bytes))
        .route("/test/upload", post(upload))
        .route("/test/headers", any(echo_headers))
        .with_state(outcomes)
}

fn clamp_delay(ms: Option<u64>, default_ms: u64) -> Duration {
    Duration::from_millis(ms.unwrap_or(default_ms)).min(MAX_DELAY)
}

#[derive(Deserialize)]
struct SlowHeadQuery {
    delay_ms: Option<u64>,
}

/// `GET /test/slow-head?delay_ms=1000`: answers 201 with its headers at
/// once, then sends the body after the pause.
async fn slow_head(Query(query): Query<SlowHeadQuery>) -> Response {
    let delay = clamp_delay(query.delay_ms, 1000);
    let body = stream::once(async move {
        tokio::time::sleep(delay).await;
        Ok::<_, Infallible>("the body, after the pause")
    });
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::HeaderName::from_static("x-test-head"), "early"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// `GET /test/late-head?delay_ms=3000`: says nothing at all for the pause,
/// then answers 200 (a head that comes late).
async fn late_head(Query(query): Query<SlowHeadQuery>) -> &'static str {
    tokio::time::sleep(clamp_delay(query.delay_ms, 3000)).await;
    "late"
}

#[derive(Deserialize)]
struct StreamQuery {
    id: String,
    interval_ms: Option<u64>,
    ticks: Option<u32>,
}

/// Records a stream's outcome when its body is dropped: completed if it sent
/// every tick, disconnected otherwise (the client went away).
struct OutcomeGuard {
    id: String,
    outcomes: Outcomes,
    completed: bool,
}

impl Drop for OutcomeGuard {
    fn drop(&mut self) {
        let mut outcomes = self.outcomes.lock().expect("not poisoned");
        let id = std::mem::take(&mut self.id);
        if self.completed {
            remember(&mut outcomes.completed, id);
        } else {
            tracing::info!(id = %id, "test stream: the client disconnected");
            remember(&mut outcomes.disconnected, id);
        }
    }
}

/// `GET /test/stream?id=X&interval_ms=50&ticks=600`: one line every
/// interval; `/test/disconnects` then says whether the client stayed.
async fn slow_stream(
    State(outcomes): State<Outcomes>,
    Query(query): Query<StreamQuery>,
) -> Response {
    let interval = clamp_delay(query.interval_ms, 50);
    let ticks = query.ticks.unwrap_or(600).min(MAX_TICKS);
    remember(
        &mut outcomes.lock().expect("not poisoned").started,
        query.id.clone(),
    );
    let guard = OutcomeGuard {
        id: query.id,
        outcomes,
        completed: false,
    };
    let body = stream::unfold((0u32, guard), move |(tick, mut guard)| async move {
        if tick == ticks {
            guard.completed = true;
            drop(guard);
            return None;
        }
        if tick > 0 {
            tokio::time::sleep(interval).await;
        }
        Some((
            Ok::<_, Infallible>(format!("tick {tick}\n")),
            (tick + 1, guard),
        ))
    });
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(body),
    )
        .into_response()
}

#[derive(Deserialize)]
struct EventsQuery {
    n: Option<u32>,
    interval_ms: Option<u64>,
}

/// Most events `/test/events` sends.
const MAX_EVENTS: u32 = 100_000;

/// `GET /test/events?n=N&interval_ms=M`: a server-sent event stream of N
/// numbered events (`id: i` and `data: i`, i from 0), M ms apart on a
/// steady clock (default 10), for tests that check every number arrives
/// once and in order.
async fn numbered_events(Query(query): Query<EventsQuery>) -> Response {
    let count = query.n.unwrap_or(100).min(MAX_EVENTS);
    let every = clamp_delay(query.interval_ms, 10).max(Duration::from_millis(1));
    let mut clock = tokio::time::interval(every);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let body = stream::unfold((0u32, clock), move |(i, mut clock)| async move {
        if i == count {
            return None;
        }
        clock.tick().await;
        Some((
            Ok::<_, Infallible>(format!("id: {i}\ndata: {i}\n\n")),
            (i + 1, clock),
        ))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// `GET /test/disconnects`: `{started, completed, disconnected}` stream ids.
async fn disconnects(State(outcomes): State<Outcomes>) -> Response {
    let outcomes = outcomes.lock().expect("not poisoned");
    Json(&*outcomes).into_response()
}

#[derive(Deserialize)]
struct ProducedQuery {
    id: String,
}

/// `GET /test/produced?id=X`: bytes `/test/bytes?id=X` has produced so far.
async fn produced(
    State(outcomes): State<Outcomes>,
    Query(query): Query<ProducedQuery>,
) -> Response {
    let outcomes = outcomes.lock().expect("not poisoned");
    match outcomes.produced.get(&query.id) {
        Some(n) => Json(*n).into_response(),
        None => (StatusCode::NOT_FOUND, "no download with that id").into_response(),
    }
}

#[derive(Deserialize)]
struct BytesQuery {
    size: u64,
    seed: Option<u32>,
    /// Records the bytes produced under this id, for `/test/produced`.
    id: Option<String>,
}

/// The deterministic byte stream of `/test/bytes`: xorshift32 words, little
/// endian. Every byte value occurs, so the body is not valid UTF-8.
struct ByteSource {
    state: u32,
    remaining: u64,
}

impl ByteSource {
    fn new(seed: u32, size: u64) -> Self {
        Self {
            state: seed.max(1),
            remaining: size,
        }
    }

    fn next_piece(&mut self) -> Option<Vec<u8>> {
        if self.remaining == 0 {
            return None;
        }
        let len = self.remaining.min(PIECE_BYTES as u64) as usize;
        let mut piece = Vec::with_capacity(len + 3);
        while piece.len() < len {
            let mut x = self.state;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.state = x;
            piece.extend_from_slice(&x.to_le_bytes());
        }
        piece.truncate(len);
        self.remaining -= len as u64;
        Some(piece)
    }
}

/// `GET /test/bytes?size=N&seed=S[&id=X]`: N pseudo-random bytes
/// (application/octet-stream). Each piece is made only when the connection
/// takes it, so with an id `/test/produced` shows how far the client read.
async fn bytes(State(outcomes): State<Outcomes>, Query(query): Query<BytesQuery>) -> Response {
    if query.size > MAX_BYTES {
        return (StatusCode::BAD_REQUEST, "size is above 1 GiB").into_response();
    }
    let mut source = ByteSource::new(query.seed.unwrap_or(1), query.size);
    let id = query.id;
    if let Some(id) = &id {
        let mut outcomes = outcomes.lock().expect("not poisoned");
        if outcomes.produced.len() >= MAX_REMEMBERED {
            outcomes.produced.clear();
        }
        outcomes.produced.insert(id.clone(), 0);
    }
    let body = stream::iter(std::iter::from_fn(move || {
        let piece = source.next_piece()?;
        if let Some(id) = &id {
            if let Some(n) = outcomes.lock().expect("not poisoned").produced.get_mut(id) {
                *n += piece.len() as u64;
            }
        }
        Some(Ok::<_, Infallible>(piece))
    }));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from(query.size)),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// What `/test/upload` received.
#[derive(Serialize)]
struct UploadSummary {
    bytes: u64,
    /// 32-bit FNV-1a of the body, as 8 hex digits.
    fnv1a32: String,
    content_type: Option<String>,
}

/// `POST /test/upload`: reads the whole body and answers its length and checksum.
async fn upload(headers: HeaderMap, body: Body) -> Response {
    let mut hash: u32 = 0x811c_9dc5;
    let mut total = 0u64;
    let mut data = body.into_data_stream();
    while let Some(piece) = data.next().await {
        let piece = match piece {
            Ok(piece) => piece,
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("reading the body: {e}")).into_response()
            }
        };
        for byte in piece.iter() {
            hash ^= u32::from(*byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        total += piece.len() as u64;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Json(UploadSummary {
        bytes: total,
        fnv1a32: format!("{hash:08x}"),
        content_type,
    })
    .into_response()
}

/// `ANY /test/headers`: the request's headers as a JSON object (several
/// values joined with `, `), with two `x-test-multi` and two `set-cookie`
/// response headers.
async fn echo_headers(headers: HeaderMap) -> Response {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        seen.entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let mut response = Json(seen).into_response();
    let h = response.headers_mut();
    h.append("x-test-multi", HeaderValue::from_static("one"));
    h.append("x-test-multi", HeaderValue::from_static("two"));
    h.append(header::SET_COOKIE, HeaderValue::from_static("a=1; Path=/"));
    h.append(header::SET_COOKIE, HeaderValue::from_static("b=2; Path=/"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_source_is_deterministic_and_exact() {
        let all = |seed, size| {
            let mut source = ByteSource::new(seed, size);
            std::iter::from_fn(|| source.next_piece())
                .flatten()
                .collect::<Vec<u8>>()
        };
        let a = all(7, 200_001);
        assert_eq!(a.len(), 200_001);
        assert_eq!(a, all(7, 200_001));
        assert_ne!(a, all(8, 200_001));
        assert!(
            std::str::from_utf8(&a).is_err(),
            "the body must not be valid UTF-8"
        );
    }
}
