//! A data channel whose SCTP stream lives in the connection's driver task.
//!
//! Sends go to the driver as commands (one hand-off per message, none per
//! packet); received messages come back on a bounded queue. What does not
//! fit in the queue stays in SCTP's reassembly queue, which shrinks the
//! receive window the remote peer sees: a slow reader slows its sender, and
//! no other channel.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Mutex, Notify};

use super::driver::Command;
use crate::channel::{Message, SEND_LIMIT};
use crate::Error;

/// Messages a channel's queue holds before the driver leaves the rest in SCTP.
pub(super) const QUEUE: usize = 128;

/// What a channel handle and the driver both see.
#[derive(Debug, Default)]
pub(super) struct ChannelShared {
    /// Bytes handed to the driver and not yet acknowledged by the peer.
    pub(super) buffered: AtomicUsize,
    /// Woken when `buffered` falls under the low-water mark.
    pub(super) drained: Notify,
    /// The driver stopped reading this stream because the queue was full.
    pub(super) blocked: AtomicBool,
    /// The channel is closed (either side) or the peer is gone.
    pub(super) closed: AtomicBool,
}

impl ChannelShared {
    /// Takes `n` released bytes off `buffered` (never below zero).
    pub(super) fn release(&self, n: usize) -> usize {
        let before = self
            .buffered
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some(b.saturating_sub(n))
            })
            .unwrap_or(0);
        before.saturating_sub(n)
    }
}

/// A data channel of the sans-I/O stack; see [`crate::DataChannel`].
pub(crate) struct Channel {
    pub(super) label: String,
    pub(super) stream_id: u16,
    pub(super) max_send: usize,
    pub(super) commands: mpsc::UnboundedSender<Command>,
    pub(super) incoming: Mutex<mpsc::Receiver<Message>>,
    pub(super) shared: Arc<ChannelShared>,
    /// Wakes the driver to read a stream it left blocked.
    pub(super) wake: Arc<Notify>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("label", &self.label)
            .field("stream_id", &self.stream_id)
            .finish()
    }
}

impl Channel {
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn max_message_size(&self) -> usize {
        self.max_send.min(SEND_LIMIT)
    }

    pub(crate) fn buffered_amount(&self) -> usize {
        self.shared.buffered.load(Ordering::Acquire)
    }

    pub(crate) async fn send(&self, data: Bytes, is_text: bool) -> Result<(), Error> {
        let max = self.max_message_size();
        if data.len() > max {
            return Err(Error::MessageTooLarge {
                size: data.len(),
                max,
            });
        }
        loop {
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            let drained = self.shared.drained.notified();
            if self.shared.buffered.load(Ordering::Acquire) <= super::SEND_QUEUE {
                break;
            }
            // A release between the check and the wait is caught by the
            // periodic re-check.
            let _ = tokio::time::timeout(Duration::from_millis(50), drained).await;
        }
        self.shared.buffered.fetch_add(data.len(), Ordering::AcqRel);
        self.commands
            .send(Command::Send {
                stream_id: self.stream_id,
                data,
                is_text,
            })
            .map_err(|_| Error::Closed)
    }

    pub(crate) async fn recv(&self) -> Option<Message> {
        let message = self.incoming.lock().await.recv().await;
        if self.shared.blocked.swap(false, Ordering::AcqRel) {
            self.wake.notify_one();
        }
        message
    }

    pub(crate) fn close(&self) -> Result<(), Error> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.shared.drained.notify_waiters();
        self.commands
            .send(Command::CloseChannel {
                stream_id: self.stream_id,
            })
            .map_err(|_| Error::Closed)
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        // A dropped handle frees its stream, as the 0.17 stack's does when
        // the last reference to its stream goes.
        let _ = self.close();
    }
}
