//! One data channel: message-oriented, reliable and ordered, on whichever
//! [`crate::Stack`] its peer runs.

use bytes::Bytes;

#[cfg(feature = "stack-017")]
use crate::legacy;
use crate::{sansio, Error};

/// On the 0.17 stack, sending waits while more than this many bytes are
/// queued in SCTP, so a fast writer cannot grow the send queue without
/// bound (the sans-I/O stack's limit is its `SEND_QUEUE`).
#[cfg(feature = "stack-017")]
pub(crate) const HIGH_WATER: usize = 1024 * 1024;
/// A writer held back is woken once the queue drains below this.
pub(crate) const LOW_WATER: usize = 256 * 1024;

/// The largest message this side sends, whatever the peer accepts.
///
/// webrtc-sctp 0.17 appends a message larger than two thirds of its 128 KiB
/// pending queue chunk by chunk, waiting for queue space that only its write
/// loop frees; that loop is woken by appends, acks and timers, so on an idle
/// association the append never completes. Messages of at most 64 KiB take
/// the path that wakes the loop. 64 KiB is also the size every WebRTC stack
/// has always accepted, so both stacks keep to it.
pub const SEND_LIMIT: usize = 64 * 1024;

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The payload.
    pub data: Bytes,
    /// True for a text (string) message, false for binary.
    pub is_text: bool,
}

/// A data channel. Cheap to share behind an `Arc`: sends may come from many
/// tasks; receives are meant for one reader.
#[derive(Debug)]
pub struct DataChannel {
    imp: Imp,
}

#[derive(Debug)]
enum Imp {
    #[cfg(feature = "stack-017")]
    Legacy(legacy::channel::Channel),
    SansIo(sansio::Channel),
}

#[cfg(feature = "stack-017")]
impl From<legacy::channel::Channel> for DataChannel {
    fn from(c: legacy::channel::Channel) -> Self {
        Self {
            imp: Imp::Legacy(c),
        }
    }
}

impl From<sansio::Channel> for DataChannel {
    fn from(c: sansio::Channel) -> Self {
        Self {
            imp: Imp::SansIo(c),
        }
    }
}

impl DataChannel {
    /// The label the channel was opened with.
    pub fn label(&self) -> &str {
        match &self.imp {
            #[cfg(feature = "stack-017")]
            Imp::Legacy(c) => c.label(),
            Imp::SansIo(c) => c.label(),
        }
    }

    /// The largest message this channel sends: the remote peer's
    /// `a=max-message-size`, capped at [`SEND_LIMIT`].
    pub fn max_message_size(&self) -> usize {
        match &self.imp {
            #[cfg(feature = "stack-017")]
            Imp::Legacy(c) => c.max_message_size(),
            Imp::SansIo(c) => c.max_message_size(),
        }
    }

    /// Bytes queued for sending and not yet acknowledged.
    pub fn buffered_amount(&self) -> usize {
        match &self.imp {
            #[cfg(feature = "stack-017")]
            Imp::Legacy(c) => c.buffered_amount(),
            Imp::SansIo(c) => c.buffered_amount(),
        }
    }

    /// Sends a text message.
    pub async fn send_text(&self, text: &str) -> Result<(), Error> {
        match &self.imp {
            #[cfg(feature = "stack-017")]
            Imp::Legacy(c) => c.send_text(text).await,
            Imp::SansIo(c) => c.send(Bytes::copy_from_slice(text.as_bytes()), true).await,
        }
    }

    /// Sends a binary message.
    pub async fn send_binary(&self, data: Bytes) -> Result<(), Error> {
        match &self.imp {
            #[cfg(feature = "stack-017")]
            Imp::Legacy(c) => c.send_binary(data).await,
            Imp::SansIo(c) => c.send(data, false).await,
        }
    }

    /// Receives the next message; `None` when the channel or peer closed.
    pub async fn recv(&self) -> Option<Message> {
        match &self.imp {
            #[cfg(feature = "stack-017")]
            Imp::Legacy(c) => c.recv().await,
            Imp::SansIo(c) => c.recv().await,
        }
    }

    /// Closes this channel (resets its stream) without closing the peer.
    pub async fn close(&self) -> Result<(), Error> {
        match &self.imp {
            #[cfg(feature = "stack-017")]
            Imp::Legacy(c) => c.close().await,
            Imp::SansIo(c) => c.close(),
        }
    }
}
