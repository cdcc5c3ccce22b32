//! WebSocket streams (`docs/protocol.md` §4.7): the home side opens the
//! upstream WebSocket and carries messages both ways as records
//! ([`beeline_frame::ws`]) inside the stream's `data` frames, under the same
//! flow control as bodies.
//!
//! Close handling: a close from either end is passed on, then that
//! direction ends (`end`); the stream is over when both directions have
//! ended or [`CLOSE_GRACE`] after the first close. A malformed record or an
//! over-limit message from the client is answered with a close carrying
//! the matching code (1002, 1007, 1009), and the upstream is closed with it
//! too. An upstream that breaks off without a close fails the stream
//! (`upstream_failed`), which the page sees as close code 1006.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use beeline_frame::v2::{ErrorCode, Headers, ResponseHead, StreamId};
use beeline_frame::ws::{self, Message};
use beeline_frame::Frame;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Sink, SinkExt as _, StreamExt as _};
use tokio_util::sync::CancellationToken;

use crate::credit::{self, SendWindow};
use crate::upstream::{BodyStream, UpstreamResponse};
use crate::{BridgeError, Channel, ChannelClosed};

/// How long the second direction of a closing stream may take.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Messages to the upstream WebSocket.
pub type MessageSink = Pin<Box<dyn Sink<Message, Error = BridgeError> + Send>>;

/// Messages from the upstream WebSocket.
pub type MessageStream = BoxStream<'static, Result<Message, BridgeError>>;

/// What an [`Upstream`](crate::Upstream) made of a WebSocket request.
pub enum WebSocketOpen {
    /// The upstream accepted: messages flow both ways.
    Accepted {
        /// The subprotocol the upstream chose.
        protocol: Option<String>,
        /// Messages to the upstream.
        outgoing: MessageSink,
        /// Messages from the upstream.
        incoming: MessageStream,
    },
    /// The upstream answered the handshake with an HTTP response instead
    /// (a 403, a 404, ...), passed on to the client as it is.
    Refused(UpstreamResponse),
}

/// One WebSocket stream on the home side.
pub(crate) struct WebSocketTask<C> {
    pub(crate) id: StreamId,
    pub(crate) channel: Arc<C>,
    pub(crate) send_window: Arc<SendWindow>,
    pub(crate) cancel: CancellationToken,
    pub(crate) credit_timeout: Duration,
    pub(crate) max_message_bytes: u64,
}

impl<C: Channel> WebSocketTask<C> {
    /// Answers the client with what the upstream made of the request, then
    /// carries messages until both sides have closed.
    pub(crate) async fn run(
        self,
        opened: Result<WebSocketOpen, BridgeError>,
        from_client: BodyStream,
    ) {
        let result = match opened {
            Err(error) => {
                let (code, message) = match error {
                    BridgeError::BadRequest(m) => (ErrorCode::BadRequest, m),
                    other => (ErrorCode::UpstreamUnavailable, other.to_string()),
                };
                self.send(Frame::Error {
                    id: Some(self.id.clone()),
                    code,
                    message,
                })
                .await
                .map_err(Failure::from)
            }
            Ok(WebSocketOpen::Refused(response)) => self.refused(response).await,
            Ok(WebSocketOpen::Accepted {
                protocol,
                outgoing,
                incoming,
            }) => {
                let mut headers = Headers::new();
                if let Some(protocol) = protocol {
                    headers.insert("sec-websocket-protocol".into(), protocol);
                }
                match self
                    .send(Frame::Response {
                        id: self.id.clone(),
                        head: ResponseHead {
                            status: 101,
                            headers,
                        },
                    })
                    .await
                {
                    Ok(()) => self.pump(from_client, outgoing, incoming).await,
                    Err(closed) => Err(closed.into()),
                }
            }
        };
        if let Err(Failure::Report(code, message)) = result {
            let _ = self
                .send(Frame::Error {
                    id: Some(self.id.clone()),
                    code,
                    message,
                })
                .await;
        }
    }

    /// Passes an HTTP refusal on as an ordinary response.
    async fn refused(&self, response: UpstreamResponse) -> Result<(), Failure> {
        self.send(Frame::Response {
            id: self.id.clone(),
            head: ResponseHead {
                status: response.status,
                headers: response.headers,
            },
        })
        .await?;
        let mut body = response.body;
        while let Some(piece) = body.next().await {
            let piece =
                piece.map_err(|e| Failure::Report(ErrorCode::UpstreamFailed, e.to_string()))?;
            self.send_data(piece).await?;
        }
        self.send(Frame::End {
            id: self.id.clone(),
        })
        .await?;
        Ok(())
    }

    async fn pump(
        &self,
        mut from_client: BodyStream,
        mut outgoing: MessageSink,
        mut incoming: MessageStream,
    ) -> Result<(), Failure> {
        // The code of a close the client sent, once it has (0: none yet).
        let client_close = std::sync::atomic::AtomicU32::new(0);
        // Client → upstream.
        let up = async {
            let mut reader = ws::Reader::new(self.max_message_bytes);
            loop {
                loop {
                    match reader.next_message() {
                        Ok(Some(message)) => {
                            if let Message::Close(close) = &message {
                                let code =
                                    close.as_ref().map_or(ws::close_code::NORMAL, |c| c.code);
                                client_close
                                    .store(u32::from(code), std::sync::atomic::Ordering::Relaxed);
                            }
                            let closing = matches!(message, Message::Close(_));
                            if outgoing.send(message).await.is_err() || closing {
                                return Ok(());
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            // Tell both ends why, then stop this direction.
                            let close = Message::close(error.close_code(), error.to_string());
                            let _ = outgoing.send(close.clone()).await;
                            self.send_data(close.encode()).await?;
                            self.send(Frame::End {
                                id: self.id.clone(),
                            })
                            .await?;
                            return Err(Failure::Closed);
                        }
                    }
                }
                match from_client.next().await {
                    Some(Ok(bytes)) => reader.push(&bytes),
                    // The client ended its direction (or broke it off).
                    Some(Err(_)) | None => {
                        let _ = outgoing.close().await;
                        return Ok(());
                    }
                }
            }
        };
        // Upstream → client.
        let down = async {
            // An upstream that drops the connection after the client's close
            // instead of answering it: the close handshake is finished for
            // it, with the client's code.
            let answered = || async {
                let code = client_close.load(std::sync::atomic::Ordering::Relaxed);
                if code == 0 {
                    return None;
                }
                let close =
                    Message::close(u16::try_from(code).unwrap_or(ws::close_code::NORMAL), "");
                Some(
                    async {
                        self.send_data(close.encode()).await?;
                        self.send(Frame::End {
                            id: self.id.clone(),
                        })
                        .await?;
                        Ok::<(), Failure>(())
                    }
                    .await,
                )
            };
            while let Some(message) = incoming.next().await {
                let message = match message {
                    Ok(message) => message,
                    Err(error) => {
                        if let Some(done) = answered().await {
                            return done;
                        }
                        return Err(Failure::Report(
                            ErrorCode::UpstreamFailed,
                            error.to_string(),
                        ));
                    }
                };
                let closing = matches!(message, Message::Close(_));
                self.send_data(message.encode()).await?;
                if closing {
                    self.send(Frame::End {
                        id: self.id.clone(),
                    })
                    .await?;
                    return Ok(());
                }
            }
            if let Some(done) = answered().await {
                return done;
            }
            Err(Failure::Report(
                ErrorCode::UpstreamFailed,
                "the home service's WebSocket ended without a close".into(),
            ))
        };
        let (up, down) = (std::pin::pin!(up), std::pin::pin!(down));
        let cancelled = self.cancel.cancelled();
        tokio::select! {
            _ = cancelled => Ok(()),
            both = async {
                match futures::future::select(up, down).await {
                    futures::future::Either::Left((up_done, down)) => {
                        if matches!(up_done, Err(Failure::Closed)) {
                            return Ok(());
                        }
                        up_done?;
                        tokio::time::timeout(CLOSE_GRACE, down).await.unwrap_or(Ok(()))
                    }
                    futures::future::Either::Right((down_done, up)) => {
                        down_done?;
                        match tokio::time::timeout(CLOSE_GRACE, up).await {
                            Ok(Err(Failure::Report(code, m))) => Err(Failure::Report(code, m)),
                            _ => Ok(()),
                        }
                    }
                }
            } => both,
        }
    }

    /// Sends record bytes in frames that fit the channel, within the window
    /// the client granted (`credit_timeout` without a grant fails the
    /// stream).
    async fn send_data(&self, bytes: Bytes) -> Result<(), Failure> {
        let timeout = self.credit_timeout;
        credit::send_data(&*self.channel, &self.id, &self.send_window, timeout, bytes)
            .await
            .map_err(|e| match e.report() {
                Some((code, message)) => Failure::Report(code, message),
                None => Failure::from(ChannelClosed),
            })
    }

    async fn send(&self, frame: Frame) -> Result<(), ChannelClosed> {
        self.channel.send(frame.encode()).await
    }
}

/// Why a WebSocket stream stopped early.
enum Failure {
    /// Report this error on the stream.
    Report(ErrorCode, String),
    /// Nothing more to say: the channel is gone or a close was sent.
    Closed,
}

impl From<ChannelClosed> for Failure {
    fn from(_: ChannelClosed) -> Self {
        Self::Closed
    }
}

/// Opens a WebSocket to `url` (`ws://` or `wss://`) with the request's
/// headers, as [`HttpUpstream`](crate::HttpUpstream) does for an upgrade
/// request.
pub(crate) async fn connect(
    url: &str,
    headers: &Headers,
    max_message_bytes: u64,
) -> Result<WebSocketOpen, BridgeError> {
    use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};
    let mut request = url
        .into_client_request()
        .map_err(|e| BridgeError::BadRequest(format!("WebSocket URL {url}: {e}")))?;
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        // The handshake's own headers are tungstenite's to write.
        if matches!(
            lower.as_str(),
            "host"
                | "upgrade"
                | "connection"
                | "content-length"
                | "sec-websocket-key"
                | "sec-websocket-version"
                | "sec-websocket-extensions"
        ) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            request.headers_mut().append(name, value);
        }
    }
    let mut config = tungstenite::protocol::WebSocketConfig::default();
    config.max_message_size = Some(usize::try_from(max_message_bytes).unwrap_or(usize::MAX));
    config.read_buffer_size = crate::WS_READ_BUFFER;
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    let (socket, response) = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(connected)) => connected,
        Ok(Err(tungstenite::Error::Http(refusal))) => {
            let (parts, body) = refusal.into_parts();
            let body = Bytes::from(body.unwrap_or_default());
            return Ok(WebSocketOpen::Refused(UpstreamResponse {
                status: parts.status.as_u16(),
                headers: crate::headers::frame_headers(&parts.headers),
                body: futures::stream::once(async move { Ok(body) }).boxed(),
            }));
        }
        Ok(Err(error)) => return Err(BridgeError::Unavailable(error.to_string())),
        Err(_) => {
            return Err(BridgeError::Unavailable(
                "the WebSocket handshake took over 10 s".into(),
            ))
        }
    };
    let protocol = response
        .headers()
        .get(http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (sink, stream) = socket.split();
    let outgoing = sink
        .sink_map_err(|e| BridgeError::Upstream(e.to_string()))
        .with(|message: Message| futures::future::ready(Ok(to_tungstenite(message))));
    let incoming = stream.filter_map(|item| {
        futures::future::ready(match item {
            Ok(message) => from_tungstenite(message).map(Ok),
            Err(e) => Some(Err(BridgeError::Upstream(e.to_string()))),
        })
    });
    Ok(WebSocketOpen::Accepted {
        protocol,
        outgoing: Box::pin(outgoing),
        incoming: incoming.boxed(),
    })
}

fn to_tungstenite(message: Message) -> tokio_tungstenite::tungstenite::Message {
    use tokio_tungstenite::tungstenite::{protocol::CloseFrame, Message as T};
    match message {
        Message::Text(text) => T::Text(text.into()),
        Message::Binary(data) => T::Binary(data),
        Message::Ping(data) => T::Ping(data),
        Message::Pong(data) => T::Pong(data),
        Message::Close(None) => T::Close(None),
        Message::Close(Some(close)) => T::Close(Some(CloseFrame {
            code: close.code.into(),
            reason: close.reason.into(),
        })),
    }
}

fn from_tungstenite(message: tokio_tungstenite::tungstenite::Message) -> Option<Message> {
    use tokio_tungstenite::tungstenite::Message as T;
    Some(match message {
        T::Text(text) => Message::Text(text.as_str().to_owned()),
        T::Binary(data) => Message::Binary(data),
        T::Ping(data) => Message::Ping(data),
        T::Pong(data) => Message::Pong(data),
        T::Close(None) => Message::Close(None),
        T::Close(Some(frame)) => Message::close(u16::from(frame.code), frame.reason.as_str()),
        T::Frame(_) => return None,
    })
}
