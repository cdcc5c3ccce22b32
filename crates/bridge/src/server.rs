//! The home side of one channel: decode frames, run one task per stream,
//! enforce limits and flow control (`docs/protocol.md`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use beeline_frame::v2::{self, Agree, ErrorCode, Headers, RequestHead, StreamId};
use beeline_frame::{decode_binary, decode_text, split_text, Frame, FrameError, ResponseFrame};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::credit::{RecvWindow, SendWindow};
use crate::upstream::{strip_hop_by_hop, BodyStream, UpstreamRequest};
use crate::websocket::WebSocketTask;
use crate::{BridgeConfig, BridgeError, Channel, ChannelClosed, Received, Upstream};

mod stream;

use stream::StreamTask;

/// Features this side supports (`docs/protocol.md` §3).
const FEATURES: [&str; 5] = ["binary", "cancel", "credit", "cookies", "websocket"];

/// How long a sealed cookie jar stays good (`docs/cookies.md`); client.js
/// refreshes its jar well before.
const JAR_MAX_AGE_SECS: u64 = 12 * 3600;

/// How many finished stream ids are remembered, so late frames for them are
/// ignored rather than reported as unknown.
const RECENTLY_CLOSED: usize = 1024;

/// Grants for request bodies are sent once this share of the window has
/// been consumed, not for every frame.
const GRANT_DIVISOR: u32 = 4;

/// Serves every request arriving on `channel` by calling `upstream`, until
/// the channel closes. Requests still running then are dropped, which closes
/// their upstream connections.
pub async fn serve<C: Channel, U: Upstream>(
    channel: Arc<C>,
    upstream: Arc<U>,
    config: BridgeConfig,
) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut conn = Connection {
        channel,
        upstream,
        config: Arc::new(config),
        negotiated: None,
        streams: HashMap::new(),
        recently_closed: VecDeque::new(),
        recently_closed_set: HashSet::new(),
        done_tx,
        tasks: JoinSet::new(),
    };
    loop {
        tokio::select! {
            message = conn.channel.recv() => match message {
                Some(m) => {
                    if conn.on_message(m).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            Some(id) = done_rx.recv() => conn.forget(id),
        }
        while conn.tasks.try_join_next().is_some() {}
    }
    for (_, stream) in conn.streams.drain() {
        stream.cancel.cancel();
    }
    conn.tasks.abort_all();
    while conn.tasks.join_next().await.is_some() {}
}

/// What `hello`/`agree` settled.
#[derive(Debug, Clone, Copy)]
struct Negotiated {
    credit: bool,
    /// Sealed cookie jars (`docs/cookies.md`): asked for by the client and
    /// configured here.
    cookies: bool,
    /// The client's window for response bodies.
    client_window: u32,
    /// WebSocket upgrade streams (§4.7).
    websocket: bool,
}

struct Connection<C, U> {
    channel: Arc<C>,
    upstream: Arc<U>,
    config: Arc<BridgeConfig>,
    negotiated: Option<Negotiated>,
    streams: HashMap<StreamId, StreamEntry>,
    recently_closed: VecDeque<StreamId>,
    recently_closed_set: HashSet<StreamId>,
    done_tx: mpsc::UnboundedSender<StreamId>,
    tasks: JoinSet<()>,
}

struct StreamEntry {
    cancel: CancellationToken,
    send_window: Arc<SendWindow>,
    upload: Option<Upload>,
}

/// Upload frames buffered per stream before the connection's reader waits.
/// With credit a well-behaved client never fills it; without credit, waiting
/// here pushes back on the whole channel, which bounds memory either way.
const UPLOAD_QUEUE: usize = 64;

struct Upload {
    tx: mpsc::Sender<Result<Bytes, BridgeError>>,
    window: Arc<RecvWindow>,
    received: u64,
    /// The length the client declared, which the body must meet exactly.
    expected: Option<u64>,
    /// A WebSocket stream's messages: long-lived, so no body limit.
    duplex: bool,
}

/// When a stream last made progress; an upload counts, so a slow upstream
/// that is still reading a large body does not time out.
#[derive(Debug)]
struct Progress {
    origin: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn new() -> Self {
        Self {
            origin: std::time::Instant::now(),
            last_ms: 0.into(),
        }
    }

    fn touch(&self) {
        self.last_ms.store(
            self.origin.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn idle_for(&self) -> std::time::Duration {
        let last = std::time::Duration::from_millis(
            self.last_ms.load(std::sync::atomic::Ordering::Relaxed),
        );
        self.origin.elapsed().saturating_sub(last)
    }
}

/// Whether a stream speaks v1 (spec frames) or v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    V1,
    V2,
}

impl<C: Channel, U: Upstream> Connection<C, U> {
    async fn send(&self, frame: Frame) -> Result<(), ChannelClosed> {
        self.channel.send(frame.encode()).await
    }

    async fn on_message(&mut self, message: Received) -> Result<(), ChannelClosed> {
        let decoded = if message.binary {
            decode_binary(&message.data).map(Some)
        } else {
            decode_text(&message.data)
        };
        let frame = match decoded {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(error) => return self.on_bad_frame(&message, &error).await,
        };
        match frame {
            Frame::Hello(hello) => self.on_hello(hello).await,
            Frame::V1Request(r) => {
                let head = RequestHead {
                    method: r.method,
                    path: r.path,
                    headers: r.headers,
                    scheme: None,
                    upgrade: None,
                    end: r.body.is_empty(),
                };
                let body = (!r.body.is_empty()).then(|| Bytes::from(r.body));
                self.open_stream(StreamId::Text(r.id), head, Dialect::V1, body)
                    .await
            }
            Frame::Request { id, head } => self.open_stream(id, head, Dialect::V2, None).await,
            Frame::Data { id, data } => self.on_data(id, data).await,
            Frame::End { id } => {
                let Some(stream) = self.streams.get_mut(&id) else {
                    return self.on_unknown_stream(id).await;
                };
                let short = stream.upload.as_ref().and_then(|u| {
                    u.expected
                        .filter(|&n| n != u.received)
                        .map(|n| (u.received, n))
                });
                match short {
                    Some((got, n)) => {
                        let m = format!("request body ended after {got} of {n} bytes");
                        self.fail_stream(id, ErrorCode::BadRequest, m).await
                    }
                    None => {
                        stream.upload = None;
                        Ok(())
                    }
                }
            }
            Frame::Cancel { id } | Frame::Error { id: Some(id), .. } => {
                if let Some(s) = self.streams.remove(&id) {
                    tracing::debug!(%id, "stream cancelled by the client");
                    s.cancel.cancel();
                    self.remember_closed(id);
                }
                Ok(())
            }
            Frame::Credit { id, bytes } => {
                if let Some(s) = self.streams.get(&id) {
                    s.send_window.grant(bytes);
                }
                Ok(())
            }
            Frame::Error {
                id: None,
                code,
                message,
            } => {
                tracing::debug!(code = code.as_str(), %message, "client reported an error");
                Ok(())
            }
            other => {
                let error = Frame::Error {
                    id: other.stream_id(),
                    code: ErrorCode::BadFrame,
                    message: "frame type not expected from a client".into(),
                };
                self.send(error).await
            }
        }
    }

    async fn on_hello(&mut self, hello: v2::Hello) -> Result<(), ChannelClosed> {
        if self.negotiated.is_some() {
            let e = Frame::Error {
                id: None,
                code: ErrorCode::BadFrame,
                message: "hello sent twice".into(),
            };
            return self.send(e).await;
        }
        let features: Vec<String> = hello
            .features
            .iter()
            .filter(|f| FEATURES.contains(&f.as_str()))
            .filter(|f| *f != "cookies" || self.config.cookies.is_some())
            .cloned()
            .collect();
        let credit = features.iter().any(|f| f == "credit");
        self.negotiated = Some(Negotiated {
            credit,
            cookies: features.iter().any(|f| f == "cookies"),
            client_window: hello.window,
            websocket: features.iter().any(|f| f == "websocket"),
        });
        let agree = Agree {
            version: hello.version.min(v2::VERSION),
            features,
            window: self.config.window,
            max_streams: self.config.max_concurrent_streams as u32,
            max_header_bytes: self.config.max_header_bytes as u32,
            max_body_bytes: self.config.max_body_bytes,
            max_ws_message_bytes: self.config.max_ws_message_bytes,
        };
        self.send(Frame::Agree(agree)).await
    }

    async fn on_bad_frame(
        &mut self,
        message: &Received,
        error: &FrameError,
    ) -> Result<(), ChannelClosed> {
        tracing::debug!(%error, "bad frame");
        let id = error.stream_id();
        // A v1 request (no `type`) is answered the v1 way, so a client that
        // speaks only the specification's format sees a 400.
        let untyped_json = !message.binary
            && serde_json::from_slice::<serde_json::Value>(&message.data)
                .ok()
                .is_some_and(|v| v.get("type").is_none());
        match id {
            Some(StreamId::Text(id)) if untyped_json => {
                send_v1_error(&*self.channel, &id, ErrorCode::BadFrame, &error.to_string()).await
            }
            id => {
                if let Some(id) = &id {
                    if let Some(s) = self.streams.remove(id) {
                        s.cancel.cancel();
                        self.remember_closed(id.clone());
                    }
                }
                self.send(Frame::Error {
                    id,
                    code: ErrorCode::BadFrame,
                    message: error.to_string(),
                })
                .await
            }
        }
    }

    async fn on_unknown_stream(&mut self, id: StreamId) -> Result<(), ChannelClosed> {
        if self.recently_closed_set.contains(&id) {
            return Ok(());
        }
        let e = Frame::Error {
            id: Some(id),
            code: ErrorCode::UnknownStream,
            message: "no such stream".into(),
        };
        self.send(e).await
    }

    /// Fails a stream that has an entry: tells the client, cancels the task.
    async fn fail_stream(
        &mut self,
        id: StreamId,
        code: ErrorCode,
        message: String,
    ) -> Result<(), ChannelClosed> {
        if let Some(s) = self.streams.remove(&id) {
            s.cancel.cancel();
            if let Some(upload) = s.upload {
                let _ = upload
                    .tx
                    .try_send(Err(BridgeError::BadRequest(message.clone())));
            }
        }
        self.remember_closed(id.clone());
        self.send(Frame::Error {
            id: Some(id),
            code,
            message,
        })
        .await
    }

    async fn on_data(&mut self, id: StreamId, data: Bytes) -> Result<(), ChannelClosed> {
        let max_body = self.config.max_body_bytes;
        let Some(stream) = self.streams.get_mut(&id) else {
            return self.on_unknown_stream(id).await;
        };
        let Some(upload) = stream.upload.as_mut() else {
            return self
                .fail_stream(
                    id,
                    ErrorCode::BadFrame,
                    "data after the end of the request body".into(),
                )
                .await;
        };
        upload.received += data.len() as u64;
        if !upload.duplex && upload.received > max_body {
            let msg = format!("request body larger than {max_body} bytes");
            return self.fail_stream(id, ErrorCode::BodyTooLarge, msg).await;
        }
        if let Some(n) = upload.expected.filter(|&n| upload.received > n) {
            let msg = format!("request body longer than its content-length {n}");
            return self.fail_stream(id, ErrorCode::BadRequest, msg).await;
        }
        if !upload.window.consume(data.len()) {
            return self
                .fail_stream(
                    id,
                    ErrorCode::FlowControl,
                    "data beyond the granted window".into(),
                )
                .await;
        }
        if data.is_empty() {
            return Ok(());
        }
        let tx = upload.tx.clone();
        let cancel = stream.cancel.clone();
        let sent = tokio::select! {
            r = tx.send(Ok(data)) => r.is_ok(),
            _ = cancel.cancelled() => false,
        };
        if !sent {
            // The upstream stopped reading the body; the stream task reports
            // the outcome.
            if let Some(stream) = self.streams.get_mut(&id) {
                stream.upload = None;
            }
        }
        Ok(())
    }

    async fn open_stream(
        &mut self,
        id: StreamId,
        mut head: RequestHead,
        dialect: Dialect,
        inline_body: Option<Bytes>,
    ) -> Result<(), ChannelClosed> {
        if self.streams.contains_key(&id) {
            let e = Frame::Error {
                id: Some(id),
                code: ErrorCode::BadFrame,
                message: "stream id already in use".into(),
            };
            return self.send(e).await;
        }
        // A slot among all the streams of the peer connection, when its
        // channels share a limit; held by the stream task until it ends.
        let peer_slot = self
            .config
            .peer_streams
            .as_ref()
            .and_then(|limit| Arc::clone(limit).try_acquire_owned().ok());
        let peer_full = self.config.peer_streams.is_some() && peer_slot.is_none();
        let admitted = if self.streams.len() >= self.config.max_concurrent_streams || peer_full {
            Err((
                ErrorCode::TooManyStreams,
                format!(
                    "more than {} concurrent requests on this channel or connection",
                    self.config.max_concurrent_streams
                ),
            ))
        } else if head_size(&head) > self.config.max_header_bytes {
            Err((
                ErrorCode::HeaderTooLarge,
                format!(
                    "request head larger than {} bytes",
                    self.config.max_header_bytes
                ),
            ))
        } else {
            body_length(
                &head,
                dialect,
                inline_body.as_ref(),
                self.config.max_body_bytes,
            )
        };
        let expected = match admitted {
            Ok(expected) => expected,
            Err((code, message)) => {
                return match (dialect, &id) {
                    (Dialect::V1, StreamId::Text(text)) => {
                        send_v1_error(&*self.channel, text, code, &message).await
                    }
                    _ => {
                        self.send(Frame::Error {
                            id: Some(id),
                            code,
                            message,
                        })
                        .await
                    }
                };
            }
        };
        if let Err(message) = self.check_upgrade(&head, dialect) {
            return self
                .send(Frame::Error {
                    id: Some(id),
                    code: ErrorCode::BadRequest,
                    message,
                })
                .await;
        }
        let jar = match self.open_jar(dialect, &mut head.headers) {
            Ok(jar) => jar,
            Err(message) => {
                return self
                    .send(Frame::Error {
                        id: Some(id),
                        code: ErrorCode::BadRequest,
                        message,
                    })
                    .await
            }
        };
        self.forwarded_headers(&mut head, expected);
        if let Some(jar) = jar.filter(|j| !j.is_empty()) {
            let cookie = match take_all(&mut head.headers, "cookie").as_slice() {
                [] => jar,
                own => format!("{}; {jar}", own.join("; ")),
            };
            head.headers.insert("cookie".into(), cookie);
        }

        let negotiated = self.negotiated;
        let credit = dialect == Dialect::V2 && negotiated.is_some_and(|n| n.credit);
        let send_window = Arc::new(SendWindow::new(
            credit.then(|| u64::from(negotiated.map_or(0, |n| n.client_window))),
        ));
        let cancel = CancellationToken::new();
        let progress = Arc::new(Progress::new());
        let head_end = head.end;
        let (body, upload) = match (dialect, head.end, inline_body) {
            (_, _, Some(inline)) => (
                Some(futures::stream::once(async move { Ok(inline) }).boxed()),
                None,
            ),
            (Dialect::V2, false, None) => {
                let (tx, rx) = mpsc::channel(UPLOAD_QUEUE);
                let window = Arc::new(RecvWindow::new(
                    credit.then_some(u64::from(self.config.window)),
                ));
                let grants = Grants {
                    channel: Arc::clone(&self.channel),
                    id: id.clone(),
                    window: Arc::clone(&window),
                    credit,
                    initial: self.config.window,
                };
                let body = granting_body(rx, grants, Arc::clone(&progress), expected);
                (
                    Some(body),
                    Some(Upload {
                        tx,
                        window,
                        received: 0,
                        expected,
                        duplex: head.upgrade.is_some(),
                    }),
                )
            }
            _ => (None, None),
        };
        self.streams.insert(
            id.clone(),
            StreamEntry {
                cancel: cancel.clone(),
                send_window: Arc::clone(&send_window),
                upload,
            },
        );

        if head.upgrade.is_some() {
            let socket = WebSocketTask {
                id: id.clone(),
                channel: Arc::clone(&self.channel),
                send_window,
                cancel,
                credit_timeout: self.config.credit_timeout,
                max_message_bytes: self.config.max_ws_message_bytes,
            };
            let (upstream, done, limit) = (
                Arc::clone(&self.upstream),
                self.done_tx.clone(),
                self.config.max_ws_message_bytes,
            );
            let from_client = body.unwrap_or_else(|| futures::stream::empty().boxed());
            self.tasks.spawn(async move {
                let _peer_slot = peer_slot;
                let request = UpstreamRequest { head, body: None };
                let opened = tokio::select! {
                    opened = upstream.websocket(request, limit) => Some(opened),
                    _ = socket.cancel.cancelled() => None,
                };
                if let Some(opened) = opened {
                    socket.run(opened, from_client).await;
                }
                let _ = done.send(id);
            });
            return Ok(());
        }
        let task = StreamTask {
            _peer_slot: peer_slot,
            cookies: self
                .config
                .cookies
                .clone()
                .filter(|_| dialect == Dialect::V2 && negotiated.is_some_and(|n| n.cookies)),
            settle_first: dialect == Dialect::V2
                && !head_end
                && expected.is_some_and(|n| n <= u64::from(self.config.window)),
            id,
            dialect,
            channel: Arc::clone(&self.channel),
            upstream: Arc::clone(&self.upstream),
            config: Arc::clone(&self.config),
            send_window,
            cancel,
            progress,
            done: self.done_tx.clone(),
        };
        self.tasks.spawn(task.run(head, body));
        Ok(())
    }

    /// An upgrade must be a v2 `GET` for a WebSocket, on a channel that
    /// negotiated the `websocket` feature, with no body of its own.
    fn check_upgrade(&self, head: &RequestHead, dialect: Dialect) -> Result<(), String> {
        let Some(upgrade) = head.upgrade.as_deref() else {
            return Ok(());
        };
        if !upgrade.eq_ignore_ascii_case("websocket") {
            return Err(format!("cannot upgrade to {upgrade:?}; only websocket"));
        }
        if dialect != Dialect::V2 || !self.negotiated.is_some_and(|n| n.websocket) {
            return Err("a WebSocket needs the websocket feature (hello)".into());
        }
        if !head.method.eq_ignore_ascii_case("GET") || head.end {
            return Err("a WebSocket is opened with GET and end: false".into());
        }
        Ok(())
    }

    /// The `Cookie` header a v2 request's sealed jar (`x-beeline-jar`)
    /// holds, when cookie jars were negotiated; the jar header itself is
    /// always removed.
    fn open_jar(&self, dialect: Dialect, headers: &mut Headers) -> Result<Option<String>, String> {
        let sealed = take_all(headers, "x-beeline-jar");
        let (Some(seal), Some(sealed), Dialect::V2) = (
            self.config
                .cookies
                .as_ref()
                .filter(|_| self.negotiated.is_some_and(|n| n.cookies)),
            sealed.first(),
            dialect,
        ) else {
            return Ok(None);
        };
        seal.key
            .open_jar(&seal.session, sealed, unix_now(), JAR_MAX_AGE_SECS)
            .map(Some)
            .map_err(|e| format!("cookie jar: {e}"))
    }

    /// Applies the reverse-proxy header rules of `docs/protocol.md` §4.2:
    /// hop-by-hop headers and every client-sent copy of a forwarding or
    /// identity header go, in any spelling; the home's own
    /// `x-forwarded-for` (the peer's address), `-host` (the client's `host`)
    /// and `-proto` (the scheme the client addressed) take their place, and
    /// `content-length` states the body length when it is known.
    fn forwarded_headers(&self, head: &mut RequestHead, length: Option<u64>) {
        let headers = &mut head.headers;
        strip_hop_by_hop(headers);
        let host = take_all(headers, "host").into_iter().next();
        take_all(headers, "content-length");
        let filter = &self.config.client_headers;
        if self.config.trust_forwarded_headers {
            // A trusted relay (the home link) has stated them itself.
            const STATED: [&str; 3] = ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"];
            headers.retain(|name, _| {
                STATED.iter().any(|s| name.eq_ignore_ascii_case(s)) || !filter.forbids(name)
            });
        } else {
            headers.retain(|name, _| !filter.forbids(name));
            if let Some(peer) = &self.config.peer_addr {
                headers.insert("x-forwarded-for".into(), peer.clone());
            }
            if let Some(host) = host {
                headers.insert("x-forwarded-host".into(), host);
            }
            let proto = match head.scheme.as_deref() {
                Some(s) if s.eq_ignore_ascii_case("http") => "http",
                _ => "https",
            };
            headers.insert("x-forwarded-proto".into(), proto.into());
        }
        if let Some(length) = length {
            headers.insert("content-length".into(), length.to_string());
        }
    }

    fn forget(&mut self, id: StreamId) {
        if self.streams.remove(&id).is_some() {
            self.remember_closed(id);
        }
    }

    fn remember_closed(&mut self, id: StreamId) {
        if self.recently_closed_set.insert(id.clone()) {
            self.recently_closed.push_back(id);
            if self.recently_closed.len() > RECENTLY_CLOSED {
                if let Some(old) = self.recently_closed.pop_front() {
                    self.recently_closed_set.remove(&old);
                }
            }
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Removes every copy of a header, whatever its case; returns their values.
fn take_all(headers: &mut Headers, name: &str) -> Vec<String> {
    let keys: Vec<String> = headers
        .keys()
        .filter(|k| k.eq_ignore_ascii_case(name))
        .cloned()
        .collect();
    keys.iter().filter_map(|k| headers.remove(k)).collect()
}

/// Methods whose requests carry a body as a rule, so an empty one is
/// stated as `content-length: 0` rather than left unsaid.
const BODY_METHODS: [&str; 3] = ["POST", "PUT", "PATCH"];

/// The request body's length when it is known: a v1 body is complete in
/// its frame; a v2 client may declare one with `content-length`, which the
/// bridge then holds it to. An unknown length (`Ok(None)`) is sent chunked.
fn body_length(
    head: &RequestHead,
    dialect: Dialect,
    inline: Option<&Bytes>,
    max_body: u64,
) -> Result<Option<u64>, (ErrorCode, String)> {
    let bad = |m: String| (ErrorCode::BadRequest, m);
    if let Some(inline) = inline {
        return Ok(Some(inline.len() as u64));
    }
    let mut declared: Option<u64> = None;
    if dialect == Dialect::V2 {
        for (_, value) in head
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        {
            let value = value.trim();
            let n = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| bad(format!("content-length {value:?} is not a length")))?;
            if declared.is_some_and(|d| d != n) {
                return Err(bad("conflicting content-length headers".into()));
            }
            declared = Some(n);
        }
    }
    if head.end {
        return match declared {
            Some(n) if n > 0 => Err(bad(format!(
                "content-length {n} declared for a request without a body"
            ))),
            Some(_) => Ok(Some(0)),
            None if BODY_METHODS.contains(&head.method.to_ascii_uppercase().as_str()) => {
                Ok(Some(0))
            }
            None => Ok(None),
        };
    }
    match declared {
        Some(n) if n > max_body => Err((
            ErrorCode::BodyTooLarge,
            format!("request body larger than {max_body} bytes"),
        )),
        other => Ok(other),
    }
}

/// The size counted against `max_header_bytes`: path plus names and values.
fn head_size(head: &RequestHead) -> usize {
    head.path.len()
        + head
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

/// Where and how a request body's consumption is granted back.
struct Grants<C> {
    channel: Arc<C>,
    id: StreamId,
    window: Arc<RecvWindow>,
    credit: bool,
    /// The initial window; grants go out per quarter of it.
    initial: u32,
}

/// The request body as the upstream reads it; grants window back to the
/// client as it is consumed (batched to a quarter of the window).
fn granting_body<C: Channel>(
    rx: mpsc::Receiver<Result<Bytes, BridgeError>>,
    grants: Grants<C>,
    progress: Arc<Progress>,
    expected: Option<u64>,
) -> BodyStream {
    let Grants {
        channel,
        id,
        window,
        credit,
        initial,
    } = grants;
    let threshold = (initial / GRANT_DIVISOR).max(1);
    let state = (rx, 0u32, 0u64, false);
    futures::stream::unfold(state, move |(mut rx, mut owed, mut total, failed)| {
        let (channel, id, window, progress) = (
            Arc::clone(&channel),
            id.clone(),
            Arc::clone(&window),
            Arc::clone(&progress),
        );
        async move {
            if failed {
                return None;
            }
            let Some(item) = rx.recv().await else {
                // The body ended: a declared length must have been met, or
                // the upstream sees an error rather than a short body.
                return match expected {
                    Some(n) if n != total => {
                        let m = format!("request body ended after {total} of {n} bytes");
                        Some((Err(BridgeError::BadRequest(m)), (rx, owed, total, true)))
                    }
                    _ => None,
                };
            };
            progress.touch();
            if let Ok(bytes) = &item {
                total += bytes.len() as u64;
                if let Some(n) = expected.filter(|&n| total > n) {
                    let m = format!("request body longer than its content-length {n}");
                    return Some((Err(BridgeError::BadRequest(m)), (rx, owed, total, true)));
                }
                owed = owed.saturating_add(bytes.len() as u32);
                if credit && owed >= threshold {
                    window.grant(owed);
                    let _ = channel
                        .send(Frame::Credit { id, bytes: owed }.encode())
                        .await;
                    owed = 0;
                }
            }
            let failed = item.is_err();
            Some((item, (rx, owed, total, failed)))
        }
    })
    .boxed()
}

/// Reports an error to a v1 stream: the reason as body text, then `done`.
async fn send_v1_error<C: Channel + ?Sized>(
    channel: &C,
    id: &str,
    code: ErrorCode,
    message: &str,
) -> Result<(), ChannelClosed> {
    send_v1_text(channel, id, message).await?;
    send_v1_done(channel, id, code.http_status()).await
}

/// Ends a v1 stream with `done` and its status.
async fn send_v1_done<C: Channel + ?Sized>(
    channel: &C,
    id: &str,
    status: u16,
) -> Result<(), ChannelClosed> {
    let done = Frame::V1Response(ResponseFrame::Done {
        id: id.to_owned(),
        status,
    });
    channel.send(done.encode()).await
}

/// Sends text as v1 `chunk` frames, each within the channel's message size.
async fn send_v1_text<C: Channel + ?Sized>(
    channel: &C,
    id: &str,
    text: &str,
) -> Result<(), ChannelClosed> {
    if text.is_empty() {
        return Ok(());
    }
    // Worst-case JSON escaping is 6 bytes per input byte (\u00XX).
    let room = channel
        .max_message_size()
        .saturating_sub(ResponseFrame::chunk_len(id, ""));
    let max_piece = (room / 6).clamp(1, 16 * 1024);
    for piece in split_text(text, max_piece) {
        channel
            .send(
                Frame::V1Response(ResponseFrame::Chunk {
                    id: id.to_owned(),
                    data: piece.to_owned(),
                })
                .encode(),
            )
            .await?;
    }
    Ok(())
}
