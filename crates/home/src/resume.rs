//! Resumable sessions (`docs/protocol.md` §4.8): one bridge connection per
//! signaling session whose carriers are the page's frame connection over
//! the home link and its `resume` data channel, so its streams move between
//! the two with nothing lost, duplicated or reordered.
//!
//! The link's carrier arrives as a WebSocket stream to
//! `/.beeline/resume?session=<id>` ([`RESUME_PATH`]), which only
//! signal-api sends (its relay refuses `/.beeline/` paths from pages);
//! [`ResumeUpstream`] takes it out of the link's traffic. The channel's carrier is a data channel labelled
//! [`RESUME_CHANNEL_LABEL`] on the session's own peer connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use beeline_bridge::{
    BridgeConfig, BridgeError, CarrierId, Channel, ChannelClosed, CookieKey, CookieSeal,
    MessageSink, MessageStream, Received, ResumableChannel, ResumeConfig, ResumeError, Upstream,
    UpstreamRequest, UpstreamResponse, WebSocketOpen,
};
use beeline_frame::ws::Message;
use beeline_frame::Encoded;
use futures::{SinkExt as _, StreamExt as _};

pub use beeline_frame::resume::{RESUME_CHANNEL_LABEL, RESUME_PATH, UNKNOWN_CONNECTION_CLOSE};

/// The resumable sessions of this home.
pub struct ResumeSessions<U> {
    upstream: Arc<U>,
    bridge: BridgeConfig,
    cookie_key: Option<CookieKey>,
    max_sessions: usize,
    config: ResumeConfig,
    sessions: Mutex<HashMap<String, ResumableChannel>>,
}

impl<U> std::fmt::Debug for ResumeSessions<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumeSessions")
            .field(
                "sessions",
                &self.sessions.lock().expect("not poisoned").len(),
            )
            .finish()
    }
}

impl<U: Upstream> ResumeSessions<U> {
    /// Sessions served through `upstream` with `bridge` limits (streams
    /// per session come from its `max_concurrent_streams`), at most
    /// `max_sessions` at once.
    pub fn new(
        upstream: Arc<U>,
        bridge: BridgeConfig,
        cookie_key: Option<CookieKey>,
        max_sessions: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            upstream,
            bridge,
            cookie_key,
            max_sessions,
            config: ResumeConfig::default(),
            sessions: Mutex::default(),
        })
    }

    /// Resumable sessions being served.
    pub fn len(&self) -> usize {
        self.sessions.lock().expect("not poisoned").len()
    }

    /// Whether none is being served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `session` has a connection that is still open.
    pub fn has(&self, session: &str) -> bool {
        self.sessions
            .lock()
            .expect("not poisoned")
            .get(session)
            .is_some_and(|c| !c.is_closed())
    }

    /// Attaches `carrier` to `session`'s connection, starting the
    /// connection (and its bridge) on its first carrier.
    pub async fn attach<C: Channel>(
        self: &Arc<Self>,
        session: &str,
        carrier: C,
        peer_addr: Option<String>,
    ) -> Result<CarrierId, ResumeError> {
        let channel = {
            let mut sessions = self.sessions.lock().expect("not poisoned");
            sessions.retain(|_, c| !c.is_closed());
            match sessions.get(session) {
                Some(found) => found.clone(),
                None => {
                    if sessions.len() >= self.max_sessions {
                        return Err(ResumeError::Closed);
                    }
                    let channel = ResumableChannel::new(self.config.clone());
                    sessions.insert(session.to_owned(), channel.clone());
                    let mut bridge = self.bridge.clone();
                    // One connection: its own stream limit is the cap.
                    bridge.peer_streams = None;
                    bridge.trust_forwarded_headers = false;
                    bridge.peer_addr = peer_addr;
                    bridge.cookies = self.cookie_key.clone().map(|key| CookieSeal {
                        key,
                        session: session.to_owned(),
                    });
                    let this = Arc::clone(self);
                    let (id, served) = (session.to_owned(), channel.clone());
                    tokio::spawn(async move {
                        beeline_bridge::serve(
                            Arc::new(served.clone()),
                            Arc::clone(&this.upstream),
                            bridge,
                        )
                        .await;
                        served.close();
                        let mut sessions = this.sessions.lock().expect("not poisoned");
                        if sessions.get(&id).is_some_and(|c| c.is_closed()) {
                            sessions.remove(&id);
                        }
                    });
                    channel
                }
            }
        };
        channel.attach(carrier).await
    }

    /// Stops using a carrier of `session` whose path is known dead.
    pub async fn detach(&self, session: &str, carrier: CarrierId) {
        let channel = self
            .sessions
            .lock()
            .expect("not poisoned")
            .get(session)
            .cloned();
        if let Some(channel) = channel {
            channel.detach(carrier).await;
        }
    }
}

/// The home link's upstream: a page's frame connection (a WebSocket
/// stream to [`RESUME_PATH`]) joins its resumable session; everything else
/// goes to the home service.
pub struct ResumeUpstream<U> {
    inner: Arc<U>,
    sessions: Arc<ResumeSessions<U>>,
}

impl<U> ResumeUpstream<U> {
    /// `inner` for the home service, `sessions` for frame connections.
    pub fn new(inner: Arc<U>, sessions: Arc<ResumeSessions<U>>) -> Self {
        Self { inner, sessions }
    }
}

impl<U: Upstream> Upstream for ResumeUpstream<U> {
    async fn call(&self, request: UpstreamRequest) -> Result<UpstreamResponse, BridgeError> {
        if is_resume_path(&request.head.path) {
            return Err(BridgeError::BadRequest(
                "the resume path takes WebSockets only".into(),
            ));
        }
        self.inner.call(request).await
    }

    async fn websocket(
        &self,
        request: UpstreamRequest,
        max_message_bytes: u64,
    ) -> Result<WebSocketOpen, BridgeError> {
        if !is_resume_path(&request.head.path) {
            return self.inner.websocket(request, max_message_bytes).await;
        }
        let query = request
            .head
            .path
            .split_once('?')
            .map_or("", |(_, query)| query);
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        };
        let session = param("session")
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| BridgeError::BadRequest("the resume path names no session".into()))?
            .to_owned();
        if param("resume") == Some("1") && !self.sessions.has(&session) {
            // The page had a connection here that this home no longer has:
            // a close it can read, so it gives up on it at once.
            tracing::debug!(session = %session.get(..8).unwrap_or(&session), "asked to resume an unknown connection");
            let close = Message::Close(Some(beeline_frame::ws::Close {
                code: UNKNOWN_CONNECTION_CLOSE,
                reason: "no such resumable connection (home-peer restarted?)".into(),
            }));
            let outgoing: MessageSink =
                Box::pin(futures::sink::drain().sink_map_err(|e| match e {}));
            let incoming: MessageStream = futures::stream::iter([Ok(close)]).boxed();
            return Ok(WebSocketOpen::Accepted {
                protocol: None,
                outgoing,
                incoming,
            });
        }
        let (carrier, outgoing, incoming) = socket_carrier();
        self.sessions
            .attach(&session, carrier, None)
            .await
            .map_err(|e| BridgeError::Unavailable(e.to_string()))?;
        Ok(WebSocketOpen::Accepted {
            protocol: None,
            outgoing,
            incoming,
        })
    }
}

fn is_resume_path(path: &str) -> bool {
    path == RESUME_PATH || path.starts_with(&format!("{RESUME_PATH}?"))
}

/// A carrier made of a WebSocket stream's two directions: envelopes are
/// binary messages.
struct SocketCarrier {
    to_page: futures::channel::mpsc::UnboundedSender<Message>,
    from_page: tokio::sync::Mutex<futures::channel::mpsc::UnboundedReceiver<Message>>,
}

fn socket_carrier() -> (SocketCarrier, MessageSink, MessageStream) {
    let (to_page, incoming) = futures::channel::mpsc::unbounded::<Message>();
    let (outgoing, from_page) = futures::channel::mpsc::unbounded::<Message>();
    let outgoing: MessageSink = Box::pin(
        outgoing.sink_map_err(|_| BridgeError::Upstream("the resumable session ended".into())),
    );
    let incoming: MessageStream = incoming.map(Ok).boxed();
    (
        SocketCarrier {
            to_page,
            from_page: tokio::sync::Mutex::new(from_page),
        },
        outgoing,
        incoming,
    )
}

impl Channel for SocketCarrier {
    async fn send(&self, message: Encoded) -> Result<(), ChannelClosed> {
        let message = match message {
            Encoded::Binary(data) => Message::Binary(data),
            Encoded::Text(text) => Message::Text(text),
        };
        self.to_page
            .unbounded_send(message)
            .map_err(|_| ChannelClosed)
    }

    async fn recv(&self) -> Option<Received> {
        let mut from_page = self.from_page.lock().await;
        loop {
            match from_page.next().await? {
                Message::Binary(data) => return Some(Received { data, binary: true }),
                // The page closed its frame connection.
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    fn max_message_size(&self) -> usize {
        1 << 20
    }
}
