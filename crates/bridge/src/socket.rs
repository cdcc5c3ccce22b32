//! [`SocketChannel`]: any message socket (a WebSocket from axum or
//! tokio-tungstenite, once mapped to [`SocketMessage`]) as a bridge
//! [`Channel`], with the liveness rules of a long-lived link: a ping every
//! `ping_every` and the channel closed after `silence` without hearing
//! anything. Used by both ends of the home link (signal-api and home-peer).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use beeline_frame::Encoded;
use bytes::Bytes;
use futures::{Sink, SinkExt as _, Stream, StreamExt as _};
use tokio_util::sync::CancellationToken;

use crate::{Channel, ChannelClosed, Received};

/// A socket message as the bridge needs it; each WebSocket library's own
/// message type maps to and from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketMessage {
    /// A text message (valid UTF-8).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping (sent for liveness; received ones are only heard).
    Ping,
    /// Anything else the socket delivers that only shows it is alive
    /// (pongs, raw frames).
    Other,
    /// The other side closed.
    Close,
}

/// A message socket as a [`Channel`].
pub struct SocketChannel<Si, St> {
    sink: tokio::sync::Mutex<Si>,
    stream: tokio::sync::Mutex<St>,
    closed: CancellationToken,
    origin: Instant,
    last_heard_ms: AtomicU64,
    max_message_size: usize,
}

impl<Si, St> std::fmt::Debug for SocketChannel<Si, St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketChannel")
            .field("closed", &self.closed.is_cancelled())
            .finish()
    }
}

impl<Si, St, E> SocketChannel<Si, St>
where
    Si: Sink<SocketMessage> + Unpin + Send + 'static,
    St: Stream<Item = Result<SocketMessage, E>> + Unpin + Send + 'static,
    E: Send + 'static,
{
    /// Wraps the two halves of a socket; no message sent is larger than
    /// `max_message_size`.
    pub fn new(sink: Si, stream: St, max_message_size: usize) -> Self {
        Self {
            sink: tokio::sync::Mutex::new(sink),
            stream: tokio::sync::Mutex::new(stream),
            closed: CancellationToken::new(),
            origin: Instant::now(),
            last_heard_ms: AtomicU64::new(0),
            max_message_size,
        }
    }

    /// Closes the channel: `recv` ends, sends fail, and the socket's sink
    /// is closed (within a second).
    pub async fn close(&self) {
        self.closed.cancel();
        let mut sink = self.sink.lock().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    }

    /// Marks the channel closed without waiting for the socket.
    pub fn shut(&self) {
        self.closed.cancel();
    }

    /// Resolves once the channel is closed.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// How long since anything arrived.
    pub fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_heard_ms.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }

    /// Pings every `every` and closes the channel once nothing has arrived
    /// for `silence`; returns when the channel is closed.
    pub async fn keep_alive(self: Arc<Self>, every: Duration, silence: Duration) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.closed.cancelled() => return,
            }
            if self.silent_for() > silence {
                tracing::warn!(
                    silent_ms = self.silent_for().as_millis() as u64,
                    "link silent; closing it"
                );
                self.closed.cancel();
                return;
            }
            if self.send_raw(SocketMessage::Ping).await.is_err() {
                return;
            }
        }
    }

    async fn send_raw(&self, message: SocketMessage) -> Result<(), ChannelClosed> {
        self.send_raw_many(std::iter::once(message)).await
    }

    /// Writes `messages` with one flush: on a WebSocket, one write.
    async fn send_raw_many(
        &self,
        messages: impl Iterator<Item = SocketMessage> + Send,
    ) -> Result<(), ChannelClosed> {
        if self.closed.is_cancelled() {
            return Err(ChannelClosed);
        }
        let mut sink = self.sink.lock().await;
        let written = async {
            for message in messages {
                sink.feed(message).await?;
            }
            sink.flush().await
        };
        tokio::select! {
            sent = written => sent.map_err(|_| ChannelClosed),
            _ = self.closed.cancelled() => Err(ChannelClosed),
        }
    }
}

fn to_socket_message(message: Encoded) -> SocketMessage {
    match message {
        Encoded::Text(text) => SocketMessage::Text(Bytes::from(text)),
        Encoded::Binary(bytes) => SocketMessage::Binary(bytes),
    }
}

impl<Si, St, E> Channel for SocketChannel<Si, St>
where
    Si: Sink<SocketMessage> + Unpin + Send + 'static,
    St: Stream<Item = Result<SocketMessage, E>> + Unpin + Send + 'static,
    E: Send + 'static,
{
    async fn send(&self, message: Encoded) -> Result<(), ChannelClosed> {
        self.send_raw(to_socket_message(message)).await
    }

    async fn send_many(&self, messages: Vec<Encoded>) -> Result<(), ChannelClosed> {
        self.send_raw_many(messages.into_iter().map(to_socket_message))
            .await
    }

    async fn recv(&self) -> Option<Received> {
        let mut stream = self.stream.lock().await;
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                _ = self.closed.cancelled() => None,
            };
            self.last_heard_ms
                .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
            return match next {
                Some(Ok(SocketMessage::Text(data))) => Some(Received {
                    data,
                    binary: false,
                }),
                Some(Ok(SocketMessage::Binary(data))) => Some(Received { data, binary: true }),
                Some(Ok(SocketMessage::Ping | SocketMessage::Other)) => continue,
                Some(Ok(SocketMessage::Close) | Err(_)) | None => {
                    self.closed.cancel();
                    None
                }
            };
        }
    }

    fn max_message_size(&self) -> usize {
        self.max_message_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that notes what was written and how often it was flushed.
    #[derive(Clone, Default)]
    struct Noting(Arc<std::sync::Mutex<(Vec<SocketMessage>, usize)>>);

    impl Sink<SocketMessage> for Noting {
        type Error = ();
        fn poll_ready(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), ()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn start_send(self: std::pin::Pin<&mut Self>, item: SocketMessage) -> Result<(), ()> {
            self.0.lock().unwrap().0.push(item);
            Ok(())
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), ()>> {
            self.0.lock().unwrap().1 += 1;
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), ()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn several_messages_go_out_in_order_with_one_flush() {
        let sink = Noting::default();
        let (_keep, stream) = futures::channel::mpsc::unbounded::<Result<SocketMessage, ()>>();
        let channel = SocketChannel::new(sink.clone(), stream, 1024);
        channel
            .send_many(vec![
                Encoded::Text("a".into()),
                Encoded::Binary(Bytes::from_static(b"b")),
                Encoded::Text("c".into()),
            ])
            .await
            .unwrap();
        let (written, flushes) = sink.0.lock().unwrap().clone();
        assert_eq!(
            written,
            [
                SocketMessage::Text(Bytes::from_static(b"a")),
                SocketMessage::Binary(Bytes::from_static(b"b")),
                SocketMessage::Text(Bytes::from_static(b"c")),
            ]
        );
        assert_eq!(flushes, 1);
        channel.send(Encoded::Text("d".into())).await.unwrap();
        assert_eq!(sink.0.lock().unwrap().1, 2, "a single send is flushed too");
        channel.shut();
        assert!(channel
            .send_many(vec![Encoded::Text("e".into())])
            .await
            .is_err());
    }

    #[tokio::test]
    async fn messages_pass_and_a_close_ends_the_channel() {
        let (to_channel, from_test) =
            futures::channel::mpsc::unbounded::<Result<SocketMessage, ()>>();
        let (to_test, mut sent) = futures::channel::mpsc::unbounded::<SocketMessage>();
        let channel = SocketChannel::new(to_test, from_test, 1024);
        to_channel.unbounded_send(Ok(SocketMessage::Other)).unwrap();
        to_channel
            .unbounded_send(Ok(SocketMessage::Binary(Bytes::from_static(b"x"))))
            .unwrap();
        let got = channel.recv().await.unwrap();
        assert_eq!((got.data.as_ref(), got.binary), (&b"x"[..], true));
        channel.send(Encoded::Text("hi".into())).await.unwrap();
        assert_eq!(
            sent.next().await,
            Some(SocketMessage::Text(Bytes::from_static(b"hi")))
        );
        to_channel.unbounded_send(Ok(SocketMessage::Close)).unwrap();
        assert!(channel.recv().await.is_none());
        assert!(channel.send(Encoded::Text("late".into())).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_socket_is_closed_after_pings() {
        let (_to_channel, from_test) =
            futures::channel::mpsc::unbounded::<Result<SocketMessage, ()>>();
        let (to_test, mut sent) = futures::channel::mpsc::unbounded::<SocketMessage>();
        let channel = Arc::new(SocketChannel::new(to_test, from_test, 1024));
        let alive = tokio::spawn(
            Arc::clone(&channel).keep_alive(Duration::from_secs(15), Duration::from_secs(45)),
        );
        alive.await.unwrap();
        let mut pings = 0;
        while let Ok(m) = sent.try_recv() {
            assert_eq!(m, SocketMessage::Ping);
            pings += 1;
        }
        assert_eq!(pings, 3, "pinged at 15, 30 and 45 s, closed at 60 s");
        assert!(channel.recv().await.is_none());
    }
}
