//! An in-memory message pipe implementing the bridge's `Channel`, for tests.

#![allow(dead_code, unreachable_pub)]

use beeline_bridge::{Channel, ChannelClosed, Received};
use beeline_frame::Encoded;
use bytes::Bytes;
use tokio::sync::{mpsc, Mutex};

/// One end of an in-memory message pipe.
pub struct MemChannel {
    tx: mpsc::UnboundedSender<Received>,
    rx: Mutex<mpsc::UnboundedReceiver<Received>>,
    max: usize,
}

impl Channel for MemChannel {
    async fn send(&self, message: Encoded) -> Result<(), ChannelClosed> {
        assert!(
            message.len() <= self.max,
            "frame of {} bytes over the {} limit",
            message.len(),
            self.max
        );
        let received = match message {
            Encoded::Text(t) => Received {
                data: Bytes::from(t),
                binary: false,
            },
            Encoded::Binary(b) => Received {
                data: b,
                binary: true,
            },
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

impl MemChannel {
    pub async fn send_text(&self, text: String) -> Result<(), ChannelClosed> {
        self.send(Encoded::Text(text)).await
    }
}

pub fn pipe(max: usize) -> (MemChannel, MemChannel) {
    let (a_tx, b_rx) = mpsc::unbounded_channel();
    let (b_tx, a_rx) = mpsc::unbounded_channel();
    (
        MemChannel {
            tx: a_tx,
            rx: Mutex::new(a_rx),
            max,
        },
        MemChannel {
            tx: b_tx,
            rx: Mutex::new(b_rx),
            max,
        },
    )
}
