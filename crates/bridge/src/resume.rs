//! A bridge connection that outlives its carriers (`docs/protocol.md`
//! §4.8): the page's streams move between the home link and the data
//! channel, both ways, with nothing lost, duplicated or reordered.
//!
//! [`ResumableChannel`] is a [`Channel`] for [`serve`](crate::serve) or a
//! [`Client`](crate::Client) that runs over whichever carrier (any other
//! `Channel`) was attached last. Every message is numbered
//! ([`beeline_frame::resume::Envelope`]) and kept until the other side
//! acknowledges it.
//!
//! The switch is stop-the-world: [`ResumableChannel::attach`] takes the one
//! writer lock, so no message is being written while the carrier changes;
//! it sends everything not yet acknowledged again on the new carrier, and
//! from then on writes only there. The receiving side reads every attached
//! carrier, delivers strictly in number order, drops numbers it already
//! delivered, and holds later numbers until the gap fills — the tail of
//! the old carrier, or its copy on the new one.
//!
//! Bounds: unacknowledged messages to [`ResumeConfig::max_unacked_bytes`]
//! (past it, sends wait for acknowledgements); messages held for a gap to
//! the same (past it, the connection closes: a gap that large is a broken
//! peer); with no carrier for [`ResumeConfig::linger`], the connection
//! closes.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use beeline_frame::resume::{Envelope, DATA_OVERHEAD};
use beeline_frame::Encoded;
use bytes::Bytes;
use tokio::sync::{mpsc, Mutex, Notify};
use tokio_util::sync::CancellationToken;

use crate::{Channel, ChannelClosed, Received};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A carrier as the resumable channel holds it.
trait Carrier: Send + Sync {
    fn send_bytes(&self, bytes: Bytes) -> BoxFuture<'_, Result<(), ChannelClosed>>;
    fn recv_message(&self) -> BoxFuture<'_, Option<Received>>;
}

impl<C: Channel> Carrier for C {
    fn send_bytes(&self, bytes: Bytes) -> BoxFuture<'_, Result<(), ChannelClosed>> {
        Box::pin(self.send(Encoded::Binary(bytes)))
    }

    fn recv_message(&self) -> BoxFuture<'_, Option<Received>> {
        Box::pin(self.recv())
    }
}

/// How a [`ResumableChannel`] behaves.
#[derive(Debug, Clone)]
pub struct ResumeConfig {
    /// The largest bridge message it carries; every carrier must take this
    /// plus the envelope's 9 bytes.
    pub max_message_size: usize,
    /// Bytes sent and not yet acknowledged; past it, sends wait. Also the
    /// most it holds waiting for a gap to fill.
    pub max_unacked_bytes: usize,
    /// With no carrier for this long, the connection closes.
    pub linger: Duration,
    /// An acknowledgement goes out after this many messages, or this long
    /// after the first one not yet acknowledged.
    pub ack_every: u64,
    /// See [`ack_every`](Self::ack_every).
    pub ack_delay: Duration,
}

impl Default for ResumeConfig {
    fn default() -> Self {
        Self {
            // A data channel's smallest usual limit, less the envelope.
            max_message_size: 64 * 1024 - DATA_OVERHEAD,
            max_unacked_bytes: 8 << 20,
            linger: Duration::from_secs(30),
            ack_every: 32,
            ack_delay: Duration::from_millis(10),
        }
    }
}

/// Why a [`ResumableChannel`] closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    /// The peer sent bytes that are not an envelope.
    #[error("resumable: {0}")]
    Envelope(#[from] beeline_frame::resume::EnvelopeError),
    /// More arrived ahead of a missing message than the bound allows.
    #[error("resumable: a sequence gap at {missing} held more than {limit} bytes")]
    Gap {
        /// The number that never came.
        missing: u64,
        /// The bound.
        limit: usize,
    },
    /// The peer acknowledged a number never sent.
    #[error("resumable: ack {acked} beyond the {sent} messages sent")]
    AckBeyond {
        /// What it acknowledged.
        acked: u64,
        /// What was sent.
        sent: u64,
    },
    /// No carrier came back within the linger time.
    #[error("resumable: no carrier for {0:?}")]
    NoCarrier(Duration),
    /// A carrier takes smaller messages than this connection sends.
    #[error("resumable: a carrier takes {carrier} bytes, {needed} are needed")]
    CarrierTooSmall {
        /// What the carrier takes.
        carrier: usize,
        /// What the envelope needs.
        needed: usize,
    },
    /// Closed by its owner.
    #[error("resumable: closed")]
    Closed,
}

/// A bridge [`Channel`] whose carrier can change under it.
#[derive(Clone)]
pub struct ResumableChannel {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ResumableChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.state.lock().expect("not poisoned");
        f.debug_struct("ResumableChannel")
            .field("unacked", &state.unacked.len())
            .field("recv_next", &state.recv_next)
            .finish()
    }
}

struct Shared {
    config: ResumeConfig,
    /// The one writer: held while a message is numbered and written, and
    /// while the carrier changes.
    writer: Mutex<Writer>,
    state: StdMutex<State>,
    /// Acknowledgements came or a carrier was attached.
    progress: Notify,
    /// A message was delivered that is not acknowledged yet (shared with
    /// the acker task, which holds no strong reference).
    ack_due: Arc<Notify>,
    delivered: Mutex<mpsc::UnboundedReceiver<Received>>,
    deliver: mpsc::UnboundedSender<Received>,
    closed: CancellationToken,
    error: StdMutex<Option<ResumeError>>,
    next_carrier: AtomicU64,
    /// Messages numbered so far (the writer's `next_seq`, readable without
    /// its lock).
    sent: AtomicU64,
    /// Carriers switched to since start.
    switches: AtomicU64,
    /// The current write carrier's retirement, reachable without the writer
    /// lock.
    retiring: StdMutex<Option<CancellationToken>>,
}

struct Writer {
    next_seq: u64,
    carrier: Option<WriteCarrier>,
}

#[derive(Clone)]
struct WriteCarrier {
    id: u64,
    carrier: Arc<dyn Carrier>,
    /// Cancelled when the next carrier is attached: a send still waiting on
    /// this one gives up (its message goes again on the next).
    retired: CancellationToken,
}

struct State {
    unacked: VecDeque<(u64, Encoded)>,
    unacked_bytes: usize,
    recv_next: u64,
    ahead: BTreeMap<u64, Received>,
    ahead_bytes: usize,
    acked_sent: u64,
    /// The carrier unsequenced acks go on (the write carrier).
    current: Option<(u64, Arc<dyn Carrier>)>,
    /// Every carrier attached and not ended, oldest first.
    live: Vec<Attached>,
}

struct Attached {
    id: u64,
    carrier: Arc<dyn Carrier>,
    /// Cancelled when it is detached: its reader stops.
    gone: CancellationToken,
}

/// A carrier attached to a [`ResumableChannel`], for
/// [`detach`](ResumableChannel::detach).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CarrierId(u64);

impl ResumableChannel {
    /// A connection with no carrier yet; sends wait for the first
    /// [`attach`](Self::attach).
    pub fn new(config: ResumeConfig) -> Self {
        let (deliver, delivered) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            config,
            writer: Mutex::new(Writer {
                next_seq: 0,
                carrier: None,
            }),
            state: StdMutex::new(State {
                unacked: VecDeque::new(),
                unacked_bytes: 0,
                recv_next: 0,
                ahead: BTreeMap::new(),
                ahead_bytes: 0,
                acked_sent: 0,
                current: None,
                live: Vec::new(),
            }),
            progress: Notify::new(),
            ack_due: Arc::new(Notify::new()),
            delivered: Mutex::new(delivered),
            deliver,
            closed: CancellationToken::new(),
            error: StdMutex::new(None),
            next_carrier: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            switches: AtomicU64::new(0),
            retiring: StdMutex::new(None),
        });
        tokio::spawn(acker(Arc::downgrade(&shared), Arc::clone(&shared.ack_due)));
        tokio::spawn(lingerer(Arc::downgrade(&shared)));
        Self { shared }
    }

    /// Moves the connection onto `carrier`: waits for the message being
    /// written, sends everything not yet acknowledged again on `carrier`,
    /// and from then on writes there only. The previous carrier is still
    /// read until it ends (so its tail is delivered), and writing moves back
    /// to it if this one ends or is [detached](Self::detach) first.
    pub async fn attach<C: Channel>(&self, carrier: C) -> Result<CarrierId, ResumeError> {
        let needed = self.shared.config.max_message_size + DATA_OVERHEAD;
        if carrier.max_message_size() < needed {
            return Err(ResumeError::CarrierTooSmall {
                carrier: carrier.max_message_size(),
                needed,
            });
        }
        if self.shared.closed.is_cancelled() {
            return Err(self.error());
        }
        let carrier: Arc<dyn Carrier> = Arc::new(carrier);
        let id = self.shared.next_carrier.fetch_add(1, Ordering::Relaxed);
        let gone = CancellationToken::new();
        self.shared
            .state
            .lock()
            .expect("not poisoned")
            .live
            .push(Attached {
                id,
                carrier: Arc::clone(&carrier),
                gone: gone.clone(),
            });
        tokio::spawn(read_carrier(
            Arc::downgrade(&self.shared),
            id,
            Arc::clone(&carrier),
            gone,
        ));
        if switch_to(&self.shared, id, carrier).await {
            Ok(CarrierId(id))
        } else {
            self.shared.forget(id).await;
            Err(ResumeError::Closed)
        }
    }

    /// Stops using a carrier (its path is known to be dead, e.g. ICE went
    /// `disconnected`): nothing more is read from or written to it, and
    /// writing moves to the newest carrier still attached, everything not
    /// yet acknowledged sent again there.
    pub async fn detach(&self, carrier: CarrierId) {
        self.shared.forget(carrier.0).await;
    }

    /// Closes the connection: the bridge on it sees the channel end.
    pub fn close(&self) {
        self.shared.fail(ResumeError::Closed);
    }

    /// Whether it has closed (by [`close`](Self::close) or an error).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Why it closed, once it has.
    pub fn error(&self) -> ResumeError {
        self.shared
            .error
            .lock()
            .expect("not poisoned")
            .clone()
            .unwrap_or(ResumeError::Closed)
    }

    /// Carriers attached since start.
    pub fn switches(&self) -> u64 {
        self.shared.switches.load(Ordering::Relaxed)
    }

    /// Messages sent and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.shared
            .state
            .lock()
            .expect("not poisoned")
            .unacked
            .len()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Wakes the helper tasks, which then find it gone.
        self.closed.cancel();
        self.ack_due.notify_one();
    }
}

impl Shared {
    /// Drops carrier `id`; if writing was on it, moves writing to the
    /// newest carrier still attached (or to none, until one is attached).
    async fn forget(self: &Arc<Self>, id: u64) {
        let next = {
            let mut state = self.state.lock().expect("not poisoned");
            if let Some(at) = state.live.iter().position(|a| a.id == id) {
                state.live.remove(at).gone.cancel();
            }
            if state.current.as_ref().is_some_and(|(c, _)| *c == id) {
                state.current = None;
                state.live.last().map(|a| (a.id, Arc::clone(&a.carrier)))
            } else {
                None
            }
        };
        {
            let mut writer = self.writer.lock().await;
            if writer.carrier.as_ref().is_some_and(|c| c.id == id) {
                writer.carrier = None;
            }
        }
        if let Some((next_id, carrier)) = next {
            if !switch_to(self, next_id, carrier).await {
                Box::pin(self.forget(next_id)).await;
            }
        }
        self.progress.notify_waiters();
    }

    fn fail(&self, error: ResumeError) {
        let mut slot = self.error.lock().expect("not poisoned");
        if slot.is_none() {
            if error != ResumeError::Closed {
                tracing::debug!(%error, "resumable connection closed");
            }
            *slot = Some(error);
        }
        drop(slot);
        self.closed.cancel();
        self.progress.notify_waiters();
    }

    fn on_ack(&self, next: u64, sent: u64) -> Result<(), ResumeError> {
        if next > sent {
            return Err(ResumeError::AckBeyond { acked: next, sent });
        }
        let mut state = self.state.lock().expect("not poisoned");
        while state.unacked.front().is_some_and(|(seq, _)| *seq < next) {
            let (_, message) = state.unacked.pop_front().expect("checked");
            state.unacked_bytes -= message.len();
        }
        drop(state);
        self.progress.notify_waiters();
        Ok(())
    }

    fn on_data(&self, seq: u64, message: Encoded) -> Result<(), ResumeError> {
        let received = match message {
            Encoded::Binary(data) => Received { data, binary: true },
            Encoded::Text(text) => Received {
                data: Bytes::from(text),
                binary: false,
            },
        };
        let mut state = self.state.lock().expect("not poisoned");
        if seq < state.recv_next || state.ahead.contains_key(&seq) {
            return Ok(()); // Sent again after a switch; already here.
        }
        if seq > state.recv_next {
            state.ahead_bytes += received.data.len();
            state.ahead.insert(seq, received);
            if state.ahead_bytes > self.config.max_unacked_bytes {
                return Err(ResumeError::Gap {
                    missing: state.recv_next,
                    limit: self.config.max_unacked_bytes,
                });
            }
            return Ok(());
        }
        let _ = self.deliver.send(received);
        state.recv_next += 1;
        loop {
            let next = state.recv_next;
            let Some(held) = state.ahead.remove(&next) else {
                break;
            };
            state.ahead_bytes -= held.data.len();
            let _ = self.deliver.send(held);
            state.recv_next += 1;
        }
        let owed = state.recv_next - state.acked_sent;
        drop(state);
        if owed >= self.config.ack_every {
            self.send_ack();
        } else {
            self.ack_due.notify_one();
        }
        Ok(())
    }

    /// Sends an acknowledgement on the current carrier, if one is owed.
    fn send_ack(&self) {
        let mut state = self.state.lock().expect("not poisoned");
        if state.recv_next == state.acked_sent {
            return;
        }
        let Some((_, carrier)) = state.current.clone() else {
            return;
        };
        let next = state.recv_next;
        state.acked_sent = next;
        drop(state);
        tokio::spawn(async move {
            let _ = carrier.send_bytes(Envelope::Ack { next }.encode()).await;
        });
    }
}

/// The stop-the-world switch of writing onto carrier `id`. False when the
/// carrier failed on the way (writing stays where it was).
async fn switch_to(shared: &Arc<Shared>, id: u64, carrier: Arc<dyn Carrier>) -> bool {
    // A send still waiting on the old carrier gives up its turn, so the
    // lock comes at once even when that carrier hangs.
    if let Some(old) = shared.retiring.lock().expect("not poisoned").take() {
        old.cancel();
    }
    let mut writer = shared.writer.lock().await;
    let (pending, recv_next) = {
        let state = shared.state.lock().expect("not poisoned");
        if !state.live.iter().any(|a| a.id == id) {
            return false;
        }
        let pending: Vec<(u64, Encoded)> = state.unacked.iter().cloned().collect();
        (pending, state.recv_next)
    };
    // What the other side has of ours may be behind what it has
    // acknowledged to us; tell it where we are first.
    let _ = carrier
        .send_bytes(Envelope::Ack { next: recv_next }.encode())
        .await;
    for (seq, message) in pending {
        if carrier
            .send_bytes(Envelope::Data { seq, message }.encode())
            .await
            .is_err()
        {
            return false;
        }
    }
    let retired = CancellationToken::new();
    *shared.retiring.lock().expect("not poisoned") = Some(retired.clone());
    writer.carrier = Some(WriteCarrier {
        id,
        carrier: Arc::clone(&carrier),
        retired,
    });
    shared.state.lock().expect("not poisoned").current = Some((id, carrier));
    shared.switches.fetch_add(1, Ordering::Relaxed);
    drop(writer);
    shared.progress.notify_waiters();
    true
}

async fn read_carrier(
    shared: std::sync::Weak<Shared>,
    id: u64,
    carrier: Arc<dyn Carrier>,
    gone: CancellationToken,
) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let closed = strong.closed.clone();
        drop(strong);
        let message = tokio::select! {
            m = carrier.recv_message() => m,
            _ = closed.cancelled() => return,
            _ = gone.cancelled() => return,
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Some(message) = message else {
            // The carrier ended: writing moves to another, if any.
            shared.forget(id).await;
            return;
        };
        let outcome = match Envelope::decode(&message.data) {
            Ok(Envelope::Ack { next }) => {
                let sent = shared.sent.load(Ordering::Acquire);
                shared.on_ack(next, sent)
            }
            Ok(Envelope::Data { seq, message }) => shared.on_data(seq, message),
            Err(error) => Err(error.into()),
        };
        if let Err(error) = outcome {
            shared.fail(error);
            return;
        }
    }
}

/// Sends the acknowledgements owed after a pause.
async fn acker(shared: std::sync::Weak<Shared>, due: Arc<Notify>) {
    loop {
        due.notified().await;
        let Some(delay) = shared.upgrade().map(|s| s.config.ack_delay) else {
            return;
        };
        tokio::time::sleep(delay).await;
        let Some(strong) = shared.upgrade() else {
            return;
        };
        if strong.closed.is_cancelled() {
            return;
        }
        strong.send_ack();
    }
}

/// Closes the connection when it has had no carrier for the linger time.
async fn lingerer(shared: std::sync::Weak<Shared>) {
    let mut detached_since: Option<tokio::time::Instant> = None;
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        if strong.closed.is_cancelled() {
            return;
        }
        let linger = strong.config.linger;
        let detached = strong.state.lock().expect("not poisoned").current.is_none();
        match (detached, detached_since) {
            (false, _) => detached_since = None,
            (true, None) => detached_since = Some(tokio::time::Instant::now()),
            (true, Some(since)) if since.elapsed() >= linger => {
                strong.fail(ResumeError::NoCarrier(linger));
                return;
            }
            (true, Some(_)) => {}
        }
        drop(strong);
        tokio::time::sleep((linger / 8).clamp(Duration::from_millis(10), Duration::from_secs(1)))
            .await;
    }
}

impl Channel for ResumableChannel {
    async fn send(&self, message: Encoded) -> Result<(), ChannelClosed> {
        let shared = &self.shared;
        loop {
            let progress = shared.progress.notified();
            if shared.closed.is_cancelled() {
                return Err(ChannelClosed);
            }
            let mut writer = shared.writer.lock().await;
            let room = {
                let state = shared.state.lock().expect("not poisoned");
                state.unacked.is_empty()
                    || state.unacked_bytes + message.len() <= shared.config.max_unacked_bytes
            };
            let Some(current) = writer.carrier.clone().filter(|_| room) else {
                drop(writer);
                tokio::select! {
                    _ = progress => continue,
                    _ = shared.closed.cancelled() => return Err(ChannelClosed),
                }
            };
            let seq = writer.next_seq;
            writer.next_seq += 1;
            {
                let mut state = shared.state.lock().expect("not poisoned");
                state.unacked_bytes += message.len();
                state.unacked.push_back((seq, message.clone()));
            }
            shared.sent.store(writer.next_seq, Ordering::Release);
            let envelope = Envelope::Data { seq, message }.encode();
            let sent = tokio::select! {
                sent = current.carrier.send_bytes(envelope) => sent.is_ok(),
                // A new carrier is being attached; it sends this again.
                _ = current.retired.cancelled() => true,
            };
            if !sent && writer.carrier.as_ref().is_some_and(|c| c.id == current.id) {
                // Kept unacknowledged: it goes again on the next carrier.
                writer.carrier = None;
            }
            return Ok(());
        }
    }

    async fn recv(&self) -> Option<Received> {
        let mut delivered = self.shared.delivered.lock().await;
        tokio::select! {
            biased;
            m = delivered.recv() => m,
            _ = self.shared.closed.cancelled() => delivered.try_recv().ok(),
        }
    }

    fn max_message_size(&self) -> usize {
        self.shared.config.max_message_size
    }
}
