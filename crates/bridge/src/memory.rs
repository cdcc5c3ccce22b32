//! An in-process [`Channel`] pair: the bridge's client and server in one
//! program with no transport between them. home-peer's loopback listener
//! runs its requests through one, so they meet exactly the rules a data
//! channel's requests meet; tests use it too.

use beeline_frame::Encoded;
use bytes::Bytes;
use tokio::sync::{mpsc, Mutex};

use crate::{Channel, ChannelClosed, Received};

/// One end of an in-process message pipe ([`MemoryChannel::pair`]).
///
/// The queue is unbounded: what it holds is bounded by the bridge's own
/// flow control (a stream's window) and stream limits, as a data channel's
/// send buffer is.
#[derive(Debug)]
pub struct MemoryChannel {
    tx: mpsc::UnboundedSender<Received>,
    rx: Mutex<mpsc::UnboundedReceiver<Received>>,
    max: usize,
}

impl MemoryChannel {
    /// Two connected ends; each takes messages of up to `max_message_size`
    /// bytes.
    pub fn pair(max_message_size: usize) -> (Self, Self) {
        let (a_tx, b_rx) = mpsc::unbounded_channel();
        let (b_tx, a_rx) = mpsc::unbounded_channel();
        let end = |tx, rx| Self {
            tx,
            rx: Mutex::new(rx),
            max: max_message_size,
        };
        (end(a_tx, a_rx), end(b_tx, b_rx))
    }
}

impl Channel for MemoryChannel {
    async fn send(&self, message: Encoded) -> Result<(), ChannelClosed> {
        debug_assert!(
            message.len() <= self.max,
            "a frame of {} bytes over the {} limit",
            message.len(),
            self.max
        );
        let received = match message {
            Encoded::Text(text) => Received {
                data: Bytes::from(text),
                binary: false,
            },
            Encoded::Binary(data) => Received { data, binary: true },
        };
        self.tx.send(received).map_err(|_| ChannelClosed)
    }

    async fn recv(&self) -> Option<Received> {
        self.rx.lock().await.recv().await
    }

    fn max_message_size(&self) -> usize {
        self.max
    }
}
