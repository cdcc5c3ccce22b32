//! HTTP over a data channel: the home side of beeline.
//!
//! [`serve`] reads request frames from a [`Channel`], calls an [`Upstream`]
//! for each, and streams the response back as `chunk` frames followed by a
//! `done` frame, as soon as the upstream produces bytes. Many requests run at
//! once, told apart by their `id`.
//!
//! Contract:
//! - A malformed frame never ends the channel: when its stream id can be told
//!   it is answered on that stream (`chunk` with the reason, `done` 400);
//!   otherwise it is logged and dropped. Unknown frame types are ignored.
//! - No frame sent is larger than [`Channel::max_message_size`].
//! - When the channel ends, every upstream request still running is dropped,
//!   which closes its upstream connection.
//! - The bridge knows nothing of WebRTC: anything that moves whole messages
//!   can implement [`Channel`].

mod upstream;

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use beeline_frame::{decode_request, split_text, FrameError, Request, ResponseFrame, Utf8Chunker};
use bytes::Bytes;
use futures::StreamExt;
use tokio::task::JoinSet;

pub use upstream::{HttpUpstream, Upstream, UpstreamResponse};

/// A message channel the bridge runs over (a data channel, an in-memory pair
/// in tests, a relay connection).
pub trait Channel: Send + Sync + 'static {
    /// Sends one text message.
    fn send_text(&self, text: String) -> impl Future<Output = Result<(), ChannelClosed>> + Send;
    /// Receives the next message; `None` when the channel is closed.
    fn recv(&self) -> impl Future<Output = Option<Bytes>> + Send;
    /// The largest message the other side accepts.
    fn max_message_size(&self) -> usize;
}

/// The channel is closed; nothing more can be sent.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("channel closed")]
pub struct ChannelClosed;

/// Errors from the upstream side of the bridge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The upstream could not be reached or failed mid-response.
    #[error("upstream: {0}")]
    Upstream(String),
    /// The request cannot be sent upstream as given.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The configured upstream URL is not usable.
    #[error("invalid upstream URL: {0}")]
    InvalidUpstream(String),
}

/// Limits applied by [`serve`].
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Requests in flight at once on one channel; more are answered with 503.
    pub max_concurrent_streams: usize,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self { max_concurrent_streams: 128 }
    }
}

/// Serves every request arriving on `channel` by calling `upstream`, until
/// the channel closes.
pub async fn serve<C: Channel, U: Upstream>(channel: Arc<C>, upstream: Arc<U>, config: BridgeConfig) {
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut tasks = JoinSet::new();
    while let Some(message) = channel.recv().await {
        // Reap finished streams so the set does not grow.
        while tasks.try_join_next().is_some() {}
        let request = match decode_request(&message) {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            Err(e) => {
                reject(&*channel, &e).await;
                continue;
            }
        };
        let admitted = {
            let mut ids = in_flight.lock().expect("not poisoned");
            if ids.contains(&request.id) {
                tracing::debug!(id = %request.id, "ignoring a request whose id is already in flight");
                continue;
            }
            ids.len() < config.max_concurrent_streams && ids.insert(request.id.clone())
        };
        if !admitted {
            let limit = config.max_concurrent_streams;
            let text = format!("too many concurrent requests on this channel (limit {limit})");
            let _ = send_error(&*channel, &request.id, 503, &text).await;
            continue;
        }
        let (channel, upstream, in_flight) = (Arc::clone(&channel), Arc::clone(&upstream), Arc::clone(&in_flight));
        tasks.spawn(async move {
            let id = request.id.clone();
            if let Err(ChannelClosed) = handle(&*channel, &*upstream, request).await {
                tracing::debug!(%id, "channel closed while streaming a response");
            }
            in_flight.lock().expect("not poisoned").remove(&id);
        });
    }
    // Dropping the tasks drops their upstream responses and connections.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

async fn reject<C: Channel>(channel: &C, error: &FrameError) {
    match error.stream_id() {
        Some(beeline_frame::StreamId::Text(id)) => {
            let _ = send_error(channel, &id, 400, &format!("bad request frame: {error}")).await;
        }
        _ => tracing::debug!(%error, "dropping a frame whose stream cannot be told"),
    }
}

async fn send_error<C: Channel>(channel: &C, id: &str, status: u16, text: &str) -> Result<(), ChannelClosed> {
    send_text_chunks(channel, id, text).await?;
    channel.send_text(ResponseFrame::Done { id: id.to_owned(), status }.to_json()).await
}

async fn handle<C: Channel, U: Upstream>(channel: &C, upstream: &U, request: Request) -> Result<(), ChannelClosed> {
    let id = request.id.clone();
    let started = std::time::Instant::now();
    let (method, path) = (request.method.clone(), request.path.clone());
    let response = match upstream.call(request).await {
        Ok(r) => r,
        Err(e) => {
            let status = if matches!(e, BridgeError::BadRequest(_)) { 400 } else { 502 };
            tracing::debug!(%id, error = %e, "upstream call failed");
            return send_error(channel, &id, status, &e.to_string()).await;
        }
    };
    let status = response.status;
    let mut body = response.body;
    let mut chunker = Utf8Chunker::new();
    while let Some(piece) = body.next().await {
        match piece {
            Ok(bytes) => send_text_chunks(channel, &id, &chunker.push(&bytes)).await?,
            Err(e) => {
                // v1 cannot signal an error after the status; end the body
                // and report a gateway error so the client sees a failure.
                tracing::debug!(%id, error = %e, "upstream body failed");
                send_text_chunks(channel, &id, &chunker.finish()).await?;
                return channel.send_text(ResponseFrame::Done { id, status: 502 }.to_json()).await;
            }
        }
    }
    send_text_chunks(channel, &id, &chunker.finish()).await?;
    tracing::debug!(%id, %method, %path, status, elapsed_ms = started.elapsed().as_millis() as u64, "served over channel");
    channel.send_text(ResponseFrame::Done { id, status }.to_json()).await
}

/// Sends `text` as `chunk` frames, each within the channel's message size.
async fn send_text_chunks<C: Channel>(channel: &C, id: &str, text: &str) -> Result<(), ChannelClosed> {
    if text.is_empty() {
        return Ok(());
    }
    // Worst case JSON escaping is 6 bytes per input byte (\u00XX).
    let room = channel.max_message_size().saturating_sub(ResponseFrame::chunk_len(id, ""));
    let max_piece = (room / 6).clamp(1, 16 * 1024);
    for piece in split_text(text, max_piece) {
        let frame = ResponseFrame::Chunk { id: id.to_owned(), data: piece.to_owned() };
        channel.send_text(frame.to_json()).await?;
    }
    Ok(())
}
