//! One stream's response: the upstream call, then the head, body and end
//! frames on the channel, within the window the client grants.

use std::sync::Arc;

use beeline_frame::v2::{self, ErrorCode, RequestHead, ResponseHead, StreamId};
use beeline_frame::{Encoded, Frame, Utf8Chunker};
use bytes::Bytes;
use futures::{FutureExt as _, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{send_v1_done, send_v1_error, send_v1_text, take_all, unix_now, Dialect, Progress};
use crate::credit::{self, SendWindow};
use crate::upstream::{strip_hop_by_hop, BodyStream, UpstreamRequest};
use crate::{BridgeConfig, BridgeError, Channel, ChannelClosed, CookieSeal, Upstream};

/// Why a stream ended early.
pub(super) enum StreamFailure {
    /// The client cancelled or the connection is going away: say nothing.
    Quiet,
    /// The channel is gone.
    Closed,
    /// Report this to the client.
    Report(ErrorCode, String),
}

impl From<ChannelClosed> for StreamFailure {
    fn from(_: ChannelClosed) -> Self {
        Self::Closed
    }
}

/// Most frames [`StreamTask::take_ready`] puts in one write.
const MAX_BATCH: usize = 8;

/// What follows the frames [`StreamTask::take_ready`] gathered.
enum Ready {
    /// The body has more to come; read it as usual.
    Wait,
    /// A piece read but not sent (over one message, or over the window).
    Piece(Bytes),
    /// The frames end with the stream's end.
    Ended,
    /// The upstream's body failed.
    Failed(String),
}

pub(super) struct StreamTask<C, U> {
    /// This stream's slot in the peer connection's shared limit, if any.
    pub(super) _peer_slot: Option<tokio::sync::OwnedSemaphorePermit>,
    pub(super) id: StreamId,
    pub(super) dialect: Dialect,
    /// Seal the response's `Set-Cookie` lines (cookie jars negotiated).
    pub(super) cookies: Option<CookieSeal>,
    /// The body has a declared length within one window: read it whole
    /// before calling the upstream (`settle`).
    pub(super) settle_first: bool,
    pub(super) channel: Arc<C>,
    pub(super) upstream: Arc<U>,
    pub(super) config: Arc<BridgeConfig>,
    pub(super) send_window: Arc<SendWindow>,
    pub(super) cancel: CancellationToken,
    pub(super) progress: Arc<Progress>,
    pub(super) done: mpsc::UnboundedSender<StreamId>,
}

impl<C: Channel, U: Upstream> StreamTask<C, U> {
    pub(super) async fn run(self, head: RequestHead, body: Option<BodyStream>) {
        let started = std::time::Instant::now();
        let (method, path) = (head.method.clone(), head.path.clone());
        let mut head_sent = false;
        let outcome = tokio::select! {
            r = self.exchange(head, body, &mut head_sent) => r,
            _ = self.cancel.cancelled() => Err(StreamFailure::Quiet),
        };
        match outcome {
            Ok(status) => {
                tracing::debug!(id = %self.id, %method, %path, status, ms = started.elapsed().as_millis() as u64, "served")
            }
            Err(StreamFailure::Quiet) => tracing::debug!(id = %self.id, %path, "stream cancelled"),
            Err(StreamFailure::Closed) => {
                tracing::debug!(id = %self.id, %path, "channel closed mid-stream")
            }
            Err(StreamFailure::Report(code, message)) => {
                tracing::debug!(id = %self.id, %path, code = code.as_str(), %message, "stream failed");
                let _ = match (&self.id, self.dialect) {
                    (StreamId::Text(id), Dialect::V1) if head_sent => {
                        // v1 has already committed to a status; end with a
                        // gateway error so the client sees a failure.
                        send_v1_done(&*self.channel, id, code.http_status()).await
                    }
                    (StreamId::Text(id), Dialect::V1) => {
                        send_v1_error(&*self.channel, id, code, &message).await
                    }
                    _ => {
                        self.channel
                            .send(
                                Frame::Error {
                                    id: Some(self.id.clone()),
                                    code,
                                    message,
                                }
                                .encode(),
                            )
                            .await
                    }
                };
            }
        }
        let _ = self.done.send(self.id);
    }

    async fn exchange(
        &self,
        head: RequestHead,
        body: Option<BodyStream>,
        head_sent: &mut bool,
    ) -> Result<u16, StreamFailure> {
        let idle = self.config.idle_timeout;
        let body = match body {
            Some(body) if self.settle_first => Some(self.settle(body).await?),
            body => body,
        };
        let call = self.upstream.call(UpstreamRequest { head, body });
        tokio::pin!(call);
        // Wait for the head while the upload (if any) keeps making progress.
        let answered = loop {
            let wait = idle.saturating_sub(self.progress.idle_for());
            tokio::select! {
                r = &mut call => break Some(r),
                _ = tokio::time::sleep(wait) => {
                    if self.progress.idle_for() >= idle {
                        break None;
                    }
                }
            }
        };
        let response = match answered {
            None => {
                return Err(StreamFailure::Report(
                    ErrorCode::IdleTimeout,
                    "the upstream did not answer in time".into(),
                ))
            }
            Some(Err(BridgeError::BadRequest(m))) => {
                return Err(StreamFailure::Report(ErrorCode::BadRequest, m))
            }
            Some(Err(e)) => {
                return Err(StreamFailure::Report(
                    ErrorCode::UpstreamUnavailable,
                    e.to_string(),
                ))
            }
            Some(Ok(r)) => r,
        };
        let status = response.status;
        let mut body = response.body;
        let mut chunker = Utf8Chunker::new();
        if self.dialect == Dialect::V2 {
            let mut headers = response.headers;
            strip_hop_by_hop(&mut headers);
            if let Some(seal) = &self.cookies {
                // The page cannot store these itself; signal-api will.
                let lines: Vec<String> = take_all(&mut headers, "set-cookie")
                    .iter()
                    .flat_map(|v| v.split('\n'))
                    .map(str::to_owned)
                    .collect();
                if !lines.is_empty() {
                    let sealed = seal.key.seal_set_cookies(&seal.session, &lines, unix_now());
                    headers.insert("x-beeline-set-cookie".into(), sealed);
                }
            }
            let frame = Frame::Response {
                id: self.id.clone(),
                head: ResponseHead { status, headers },
            }
            .encode();
            // A head no channel message can hold is the upstream's fault:
            // say so, rather than let the channel refuse it silently.
            if frame.len() > self.channel.max_message_size() {
                return Err(StreamFailure::Report(
                    ErrorCode::UpstreamFailed,
                    format!(
                        "the upstream's response head ({} bytes) is larger than a channel message ({} bytes)",
                        frame.len(),
                        self.channel.max_message_size()
                    ),
                ));
            }
            // What the upstream has already produced leaves with the head:
            // a small response is one write, and one wake-up at the other
            // end, instead of three.
            let mut frames = vec![frame];
            let ready = self.take_ready(&mut body, &mut frames);
            self.channel.send_many(frames).await?;
            *head_sent = true;
            match ready {
                Ready::Wait => {}
                Ready::Piece(bytes) => self.send_data(bytes).await?,
                Ready::Ended => return Ok(status),
                Ready::Failed(message) => {
                    return Err(StreamFailure::Report(ErrorCode::UpstreamFailed, message))
                }
            }
        }
        *head_sent = true;
        loop {
            let next = match tokio::time::timeout(idle, body.next()).await {
                Err(_) => {
                    return Err(StreamFailure::Report(
                        ErrorCode::IdleTimeout,
                        "the upstream stalled".into(),
                    ))
                }
                Ok(next) => next,
            };
            match next {
                None => break,
                Some(Err(e)) => {
                    return Err(StreamFailure::Report(
                        ErrorCode::UpstreamFailed,
                        e.to_string(),
                    ))
                }
                Some(Ok(bytes)) => match (&self.id, self.dialect) {
                    (StreamId::Text(id), Dialect::V1) => {
                        send_v1_text(&*self.channel, id, &chunker.push(&bytes)).await?
                    }
                    _ => self.send_data(bytes).await?,
                },
            }
        }
        match (&self.id, self.dialect) {
            (StreamId::Text(id), Dialect::V1) => {
                send_v1_text(&*self.channel, id, &chunker.finish()).await?;
                send_v1_done(&*self.channel, id, status).await?;
            }
            _ => {
                self.send(Frame::End {
                    id: self.id.clone(),
                })
                .await?
            }
        }
        Ok(status)
    }

    /// Adds to `frames` what can follow them at once: the body pieces the
    /// upstream has already produced, each within the window and one
    /// message, and the end if the body has ended. Never waits.
    fn take_ready(&self, body: &mut BodyStream, frames: &mut Vec<Encoded>) -> Ready {
        let max = v2::max_data_payload(&self.id, self.channel.max_message_size());
        while frames.len() < MAX_BATCH {
            match body.next().now_or_never() {
                None => return Ready::Wait,
                Some(None) => {
                    frames.push(
                        Frame::End {
                            id: self.id.clone(),
                        }
                        .encode(),
                    );
                    return Ready::Ended;
                }
                Some(Some(Err(e))) => return Ready::Failed(e.to_string()),
                Some(Some(Ok(bytes))) if bytes.is_empty() => {}
                Some(Some(Ok(bytes))) => {
                    if bytes.len() > max || !self.send_window.try_take_all(bytes.len()) {
                        return Ready::Piece(bytes);
                    }
                    frames.push(
                        Frame::Data {
                            id: self.id.clone(),
                            data: bytes,
                        }
                        .encode(),
                    );
                }
            }
        }
        Ready::Wait
    }

    /// Reads a small request body of declared length to its end before the
    /// upstream is called, so a body that falls short of its
    /// `content-length` never reaches the upstream at all.
    async fn settle(&self, mut body: BodyStream) -> Result<BodyStream, StreamFailure> {
        let mut whole = bytes::BytesMut::new();
        loop {
            match tokio::time::timeout(self.config.idle_timeout, body.next()).await {
                Err(_) => {
                    return Err(StreamFailure::Report(
                        ErrorCode::IdleTimeout,
                        "the request body stalled".into(),
                    ))
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(StreamFailure::Report(ErrorCode::BadRequest, e.to_string()))
                }
                Ok(Some(Ok(piece))) => whole.extend_from_slice(&piece),
            }
        }
        let whole = whole.freeze();
        Ok(futures::stream::once(async move { Ok(whole) }).boxed())
    }

    /// Sends body bytes in frames that fit the channel, within the window
    /// the client granted.
    /// A client that grants no credit for `credit_timeout` fails the
    /// stream (`flow_control`), which drops the upstream request.
    async fn send_data(&self, bytes: Bytes) -> Result<(), StreamFailure> {
        let timeout = self.config.credit_timeout;
        credit::send_data(&*self.channel, &self.id, &self.send_window, timeout, bytes)
            .await
            .map_err(|e| match e.report() {
                Some((code, message)) => StreamFailure::Report(code, message),
                None => StreamFailure::Closed,
            })
    }

    async fn send(&self, frame: Frame) -> Result<(), ChannelClosed> {
        self.channel.send(frame.encode()).await
    }
}
