//! The client side of the protocol in Rust: `hello`, then requests with
//! streaming bodies both ways. Used by tests and benchmarks; the browser
//! client implements the same protocol in JavaScript.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beeline_frame::v2::{self, ErrorCode, Headers, Hello, RequestHead, StreamId};
use beeline_frame::{decode_binary, decode_text, Frame};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::credit::SendWindow;
use crate::upstream::BodyStream;
use crate::{Channel, ChannelClosed};

/// Why a request failed on the client side.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The home peer did not answer `hello` (it may speak only v1).
    #[error("no agree within {0:?}")]
    NoAgree(Duration),
    /// The channel closed.
    #[error("channel closed")]
    Closed,
    /// The home peer failed the stream.
    #[error("stream error {code}: {message}")]
    Stream {
        /// Error code from the `error` frame.
        code: String,
        /// Its message.
        message: String,
    },
    /// The home peer cancelled the stream.
    #[error("stream cancelled by the home peer")]
    Cancelled,
}

impl From<ChannelClosed> for ClientError {
    fn from(_: ChannelClosed) -> Self {
        Self::Closed
    }
}

/// [`ClientOptions::window`]'s default, in bytes.
pub const DEFAULT_WINDOW: u32 = 1024 * 1024;

/// How a [`Client`] negotiates.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Ask for binary framing (else v2 JSON).
    pub binary: bool,
    /// Window granted to the home peer per stream for response bodies:
    /// how much of one response may be on its way, or waiting unread here.
    /// The default, [`DEFAULT_WINDOW`] (1 MiB), kept a 100 MB download
    /// 25 % faster than 256 KiB did on loopback (docs/performance.md).
    /// A server relaying streams for many others may want less.
    pub window: u32,
    /// How long to wait for `agree`.
    pub hello_timeout: Duration,
    /// Ask for sealed cookie jars (`docs/cookies.md`), as a browser does.
    pub cookies: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            binary: true,
            window: DEFAULT_WINDOW,
            hello_timeout: Duration::from_secs(2),
            cookies: false,
        }
    }
}

struct Slot {
    frames: mpsc::UnboundedSender<Frame>,
    window: Arc<SendWindow>,
}

struct Inner<C> {
    channel: Arc<C>,
    binary: bool,
    credit: bool,
    window: u32,
    server_window: u32,
    next_id: AtomicU32,
    slots: Mutex<HashMap<StreamId, Slot>>,
    /// What the home peer agreed to.
    agree: v2::Agree,
    /// Cancelled when the channel has closed.
    closed: tokio_util::sync::CancellationToken,
}

/// Cancels a stream whose response head has not arrived when the request
/// future is dropped (the caller gave up), so the home peer drops the
/// upstream request too.
struct PendingGuard<C: Channel> {
    inner: Arc<Inner<C>>,
    id: Option<StreamId>,
    upload: Option<tokio::task::JoinHandle<()>>,
}

impl<C: Channel> Drop for PendingGuard<C> {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            upload.abort();
        }
        let Some(id) = self.id.take() else { return };
        self.inner.slots.lock().expect("not poisoned").remove(&id);
        let channel = Arc::clone(&self.inner.channel);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = channel.send(Frame::Cancel { id }.encode()).await;
            });
        }
    }
}

/// A protocol-v2 client on one channel.
pub struct Client<C> {
    inner: Arc<Inner<C>>,
    reader: tokio::task::JoinHandle<()>,
}

impl<C> Drop for Client<C> {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A response whose head has arrived.
pub struct ResponseHandle {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: Headers,
    /// The body, as it arrives.
    pub body: ResponseBody,
}

/// A streaming response body. Reading grants flow-control window to the
/// home peer; dropping it before the end cancels the stream.
pub struct ResponseBody {
    frames: mpsc::UnboundedReceiver<Frame>,
    cancel: Option<Box<dyn FnOnce() + Send>>,
    grant: Box<dyn Fn(u32) + Send + Sync>,
    owed: u32,
    threshold: u32,
    finished: bool,
}

impl ResponseBody {
    /// The next piece of the body; `None` at the end.
    pub async fn next(&mut self) -> Option<Result<Bytes, ClientError>> {
        if self.finished {
            return None;
        }
        let outcome = match self.frames.recv().await {
            Some(Frame::Data { data, .. }) => {
                self.owed = self.owed.saturating_add(data.len() as u32);
                if self.owed >= self.threshold {
                    (self.grant)(self.owed);
                    self.owed = 0;
                }
                return Some(Ok(data));
            }
            Some(Frame::End { .. }) => None,
            Some(Frame::Error { code, message, .. }) => Some(Err(ClientError::Stream {
                code: code.as_str().to_owned(),
                message,
            })),
            Some(Frame::Cancel { .. }) => Some(Err(ClientError::Cancelled)),
            Some(_) => {
                return Some(Err(ClientError::Stream {
                    code: "bad_frame".into(),
                    message: "unexpected frame".into(),
                }))
            }
            None => Some(Err(ClientError::Closed)),
        };
        self.finished = true;
        self.cancel = None;
        outcome
    }

    /// The rest of the body as a stream of pieces (e.g. for an HTTP
    /// response body); dropping it before the end cancels the stream.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<Bytes, ClientError>> + Send {
        futures::stream::unfold(self, |mut body| async move {
            let piece = body.next().await?;
            Some((piece, body))
        })
    }

    /// Reads the whole body.
    pub async fn collect(mut self) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        while let Some(piece) = self.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            cancel();
        }
    }
}

impl<C: Channel> Client<C> {
    /// Negotiates version 2 on `channel`.
    pub async fn connect(channel: Arc<C>, options: ClientOptions) -> Result<Self, ClientError> {
        let mut features = vec!["cancel".to_owned(), "credit".to_owned()];
        if options.binary {
            features.insert(0, "binary".to_owned());
        }
        if options.cookies {
            features.push("cookies".to_owned());
        }
        features.push("websocket".to_owned());
        let hello = Hello {
            version: v2::VERSION,
            features,
            window: options.window,
        };
        channel.send(Frame::Hello(hello).encode()).await?;
        let agree = tokio::time::timeout(options.hello_timeout, async {
            while let Some(m) = channel.recv().await {
                if !m.binary {
                    if let Ok(Some(Frame::Agree(a))) = decode_text(&m.data) {
                        return Some(a);
                    }
                }
            }
            None
        })
        .await
        .map_err(|_| ClientError::NoAgree(options.hello_timeout))?
        .ok_or(ClientError::Closed)?;
        let has = |f: &str| agree.features.iter().any(|x| x == f);
        let inner = Arc::new(Inner {
            channel,
            binary: has("binary"),
            credit: has("credit"),
            window: options.window,
            server_window: agree.window,
            next_id: AtomicU32::new(1),
            slots: Mutex::new(HashMap::new()),
            agree,
            closed: tokio_util::sync::CancellationToken::new(),
        });
        let reader = tokio::spawn(read_loop(Arc::clone(&inner)));
        Ok(Self { inner, reader })
    }

    /// What the home peer agreed to: its limits (`max_streams`,
    /// `max_header_bytes`, `max_body_bytes`) and window.
    pub fn agree(&self) -> &v2::Agree {
        &self.inner.agree
    }

    /// Whether the channel has closed (no request can be sent any more).
    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }

    /// Resolves once the channel has closed.
    pub async fn closed(&self) {
        self.inner.closed.cancelled().await
    }

    /// Sends a request; resolves when the response head arrives. Dropping
    /// the future before then cancels the stream.
    pub async fn send(
        &self,
        mut head: RequestHead,
        body: Option<BodyStream>,
    ) -> Result<ResponseHandle, ClientError> {
        let inner = &self.inner;
        let n = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let id = if inner.binary {
            StreamId::Binary(n)
        } else {
            StreamId::Text(format!("c{n}"))
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let window = Arc::new(SendWindow::new(
            inner.credit.then_some(u64::from(inner.server_window)),
        ));
        inner.slots.lock().expect("not poisoned").insert(
            id.clone(),
            Slot {
                frames: tx,
                window: Arc::clone(&window),
            },
        );
        head.end = body.is_none();
        let mut guard = PendingGuard {
            inner: Arc::clone(inner),
            id: Some(id.clone()),
            upload: None,
        };
        inner
            .channel
            .send(
                Frame::Request {
                    id: id.clone(),
                    head,
                }
                .encode(),
            )
            .await?;

        guard.upload = body.map(|body| {
            let (inner, id) = (Arc::clone(inner), id.clone());
            tokio::spawn(async move {
                let _ = upload(&inner, &id, body, &window).await;
            })
        });

        let first = rx.recv().await;
        // From here the stream is settled one way or the other.
        guard.id = None;
        let upload = guard.upload.take();
        match first {
            Some(Frame::Response { head, .. }) => {
                let cancel_inner = Arc::clone(inner);
                let cancel_id = id.clone();
                let grant_inner = Arc::clone(inner);
                let grant_id = id.clone();
                let credit = inner.credit;
                Ok(ResponseHandle {
                    status: head.status,
                    headers: head.headers,
                    body: ResponseBody {
                        frames: rx,
                        cancel: Some(Box::new(move || {
                            if let Some(upload) = upload {
                                upload.abort();
                            }
                            cancel_inner
                                .slots
                                .lock()
                                .expect("not poisoned")
                                .remove(&cancel_id);
                            let channel = Arc::clone(&cancel_inner.channel);
                            tokio::spawn(async move {
                                let _ =
                                    channel.send(Frame::Cancel { id: cancel_id }.encode()).await;
                            });
                        })),
                        grant: Box::new(move |bytes| {
                            if !credit {
                                return;
                            }
                            let channel = Arc::clone(&grant_inner.channel);
                            let id = grant_id.clone();
                            tokio::spawn(async move {
                                let _ = channel.send(Frame::Credit { id, bytes }.encode()).await;
                            });
                        }),
                        owed: 0,
                        threshold: (inner.window / 4).max(1),
                        finished: false,
                    },
                })
            }
            other => {
                inner.slots.lock().expect("not poisoned").remove(&id);
                Err(match other {
                    Some(Frame::Error { code, message, .. }) => ClientError::Stream {
                        code: code.as_str().to_owned(),
                        message,
                    },
                    Some(Frame::Cancel { .. }) => ClientError::Cancelled,
                    Some(_) => ClientError::Stream {
                        code: ErrorCode::BadFrame.as_str().into(),
                        message: "unexpected frame".into(),
                    },
                    None => ClientError::Closed,
                })
            }
        }
    }
}

async fn upload<C: Channel>(
    inner: &Inner<C>,
    id: &StreamId,
    mut body: BodyStream,
    window: &SendWindow,
) -> Result<(), ClientError> {
    let max = v2::max_data_payload(id, inner.channel.max_message_size());
    while let Some(piece) = body.next().await {
        let mut piece = piece.map_err(|e| ClientError::Stream {
            code: "body".into(),
            message: e.to_string(),
        })?;
        while !piece.is_empty() {
            let n = window.take(piece.len().min(max)).await;
            let data = piece.split_to(n);
            inner
                .channel
                .send(
                    Frame::Data {
                        id: id.clone(),
                        data,
                    }
                    .encode(),
                )
                .await?;
        }
    }
    inner
        .channel
        .send(Frame::End { id: id.clone() }.encode())
        .await?;
    Ok(())
}

async fn read_loop<C: Channel>(inner: Arc<Inner<C>>) {
    while let Some(message) = inner.channel.recv().await {
        let frame = if message.binary {
            decode_binary(&message.data).ok()
        } else {
            decode_text(&message.data).ok().flatten()
        };
        let Some(frame) = frame else { continue };
        let Some(id) = frame.stream_id() else {
            continue;
        };
        let mut slots = inner.slots.lock().expect("not poisoned");
        match frame {
            Frame::Credit { bytes, .. } => {
                if let Some(slot) = slots.get(&id) {
                    slot.window.grant(bytes);
                }
            }
            frame => {
                let last = matches!(
                    frame,
                    Frame::End { .. } | Frame::Error { .. } | Frame::Cancel { .. }
                );
                if let Some(slot) = slots.get(&id) {
                    let _ = slot.frames.send(frame);
                }
                if last {
                    slots.remove(&id);
                }
            }
        }
    }
    // The channel is gone: every open stream sees `Closed`.
    inner.slots.lock().expect("not poisoned").clear();
    inner.closed.cancel();
}
