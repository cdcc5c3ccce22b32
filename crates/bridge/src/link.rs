//! The adapter from a [`beeline_transport::DataChannel`] to the bridge's
//! [`Channel`] (feature `transport`, on by default): what a Rust program
//! uses to serve a `Router` over a data channel, or to send requests over
//! one with [`Client`](crate::Client).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use beeline_frame::Encoded;
use beeline_transport::DataChannel;

use crate::{Channel, ChannelClosed, Received};

/// When a connection last carried a message, and how many it received.
/// One can be shared by every channel of a peer connection
/// ([`DataChannelLink::sharing`]), so idleness is judged per connection.
#[derive(Debug)]
pub struct LinkActivity {
    origin: Instant,
    last_ms: AtomicU64,
    received: AtomicU64,
}

impl Default for LinkActivity {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            received: AtomicU64::new(0),
        }
    }
}

impl LinkActivity {
    fn touch(&self) {
        self.last_ms
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long since a message last went either way.
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }

    /// Messages received.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// A transport [`DataChannel`] as the bridge sees it (a [`Channel`]), on
/// either end: [`serve`](crate::serve) through it at home, or send through
/// it with a [`Client`](crate::Client). It notes when it last carried a
/// message.
#[derive(Debug)]
pub struct DataChannelLink {
    inner: DataChannel,
    activity: Arc<LinkActivity>,
}

impl DataChannelLink {
    /// Wraps `channel`.
    pub fn new(channel: DataChannel) -> Self {
        Self::sharing(channel, Arc::default())
    }

    /// Wraps `channel`, counting its traffic in `activity`.
    pub fn sharing(channel: DataChannel, activity: Arc<LinkActivity>) -> Self {
        Self {
            inner: channel,
            activity,
        }
    }

    /// Messages received through this link (and any sharing its activity).
    pub fn messages_received(&self) -> u64 {
        self.activity.received()
    }

    /// How long since a message last went either way.
    pub fn idle_for(&self) -> Duration {
        self.activity.idle_for()
    }

    /// The data channel underneath.
    pub fn channel(&self) -> &DataChannel {
        &self.inner
    }
}

impl Channel for DataChannelLink {
    async fn send(&self, message: Encoded) -> Result<(), ChannelClosed> {
        self.activity.touch();
        let sent = match message {
            Encoded::Text(text) => self.inner.send_text(&text).await,
            Encoded::Binary(bytes) => self.inner.send_binary(bytes).await,
        };
        sent.map_err(|_| ChannelClosed)
    }

    async fn recv(&self) -> Option<Received> {
        let message = self.inner.recv().await?;
        self.activity.touch();
        self.activity.received.fetch_add(1, Ordering::Relaxed);
        Some(Received {
            data: message.data,
            binary: !message.is_text,
        })
    }

    fn max_message_size(&self) -> usize {
        self.inner.max_message_size()
    }
}
