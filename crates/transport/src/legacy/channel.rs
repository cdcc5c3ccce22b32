//! A data channel on the webrtc-sctp 0.17 stack.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{Mutex, Notify};
use webrtc_data::data_channel::DataChannel as RawChannel;
use webrtc_sctp::chunk::chunk_payload_data::PayloadProtocolIdentifier;
use webrtc_sctp::stream::Stream;

use crate::channel::{Message, HIGH_WATER, LOW_WATER, SEND_LIMIT};
use crate::Error;

/// A data channel of the 0.17 stack; see [`crate::DataChannel`].
pub(crate) struct Channel {
    raw: RawChannel,
    stream: Arc<Stream>,
    label: String,
    max_send: usize,
    read_buf: Mutex<Vec<u8>>,
    drained: Arc<Notify>,
    /// One message enters SCTP at a time. webrtc-sctp 0.17 stalls when many
    /// tasks append large messages at once (its pending queue holds 128 KiB
    /// and the writers wait for permits that only its write loop returns),
    /// so concurrent senders queue here instead.
    write_lock: Mutex<()>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("label", &self.label)
            .field("stream_id", &self.stream.stream_identifier())
            .finish()
    }
}

impl Channel {
    /// `max_send` is the remote peer's `a=max-message-size`, `max_recv` ours.
    pub(crate) fn new(
        raw: RawChannel,
        stream: Arc<Stream>,
        label: String,
        max_send: usize,
        max_recv: usize,
    ) -> Self {
        let drained = Arc::new(Notify::new());
        let notify = Arc::clone(&drained);
        stream.set_buffered_amount_low_threshold(LOW_WATER);
        stream.on_buffered_amount_low(Box::new(move || {
            notify.notify_waiters();
            Box::pin(async {})
        }));
        Self {
            raw,
            stream,
            label,
            max_send: max_send.min(SEND_LIMIT),
            // Messages up to our advertised limit fit; larger ones are a
            // protocol violation by the remote peer and close the channel.
            read_buf: Mutex::new(vec![0; max_recv]),
            drained,
            write_lock: Mutex::new(()),
        }
    }

    /// The label the channel was opened with.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// The largest message this channel sends: the remote peer's
    /// `a=max-message-size`, capped at [`SEND_LIMIT`].
    pub(crate) fn max_message_size(&self) -> usize {
        self.max_send
    }

    /// Bytes queued for sending and not yet acknowledged.
    pub(crate) fn buffered_amount(&self) -> usize {
        self.stream.buffered_amount()
    }

    /// Sends a text message.
    pub(crate) async fn send_text(&self, text: &str) -> Result<(), Error> {
        self.send(Bytes::copy_from_slice(text.as_bytes()), true)
            .await
    }

    /// Sends a binary message.
    pub(crate) async fn send_binary(&self, data: Bytes) -> Result<(), Error> {
        self.send(data, false).await
    }

    async fn send(&self, data: Bytes, is_text: bool) -> Result<(), Error> {
        if data.len() > self.max_send {
            return Err(Error::MessageTooLarge {
                size: data.len(),
                max: self.max_send,
            });
        }
        let _writer = self.write_lock.lock().await;
        loop {
            let drained = self.drained.notified();
            if self.stream.buffered_amount() <= HIGH_WATER {
                break;
            }
            // The low-water callback can be missed if the queue drains
            // between the check and the wait; re-check periodically.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(50), drained).await;
        }
        self.raw.write_data_channel(&data, is_text).await?;
        Ok(())
    }

    /// Receives the next message; `None` when the channel or peer closed.
    pub(crate) async fn recv(&self) -> Option<Message> {
        let mut buf = self.read_buf.lock().await;
        loop {
            let (n, ppi) = match self.stream.read_sctp(&mut buf).await {
                Ok(r) => r,
                Err(webrtc_sctp::Error::ErrShortBuffer { .. }) => {
                    tracing::warn!(
                        label = %self.label,
                        max = buf.len(),
                        "the remote peer sent a message over our max-message-size; closing the channel"
                    );
                    let _ = self.raw.close().await;
                    return None;
                }
                Err(e) => {
                    tracing::debug!(label = %self.label, error = %e, "data channel read failed");
                    return None;
                }
            };
            let is_text = match ppi {
                PayloadProtocolIdentifier::String => true,
                PayloadProtocolIdentifier::StringEmpty => {
                    return Some(Message {
                        data: Bytes::new(),
                        is_text: true,
                    })
                }
                PayloadProtocolIdentifier::Binary => false,
                PayloadProtocolIdentifier::BinaryEmpty => {
                    return Some(Message {
                        data: Bytes::new(),
                        is_text: false,
                    })
                }
                // The ack for a channel we opened; nothing to do for a
                // reliable ordered channel.
                PayloadProtocolIdentifier::Dcep => continue,
                // A reset stream reads as (0, Unknown).
                PayloadProtocolIdentifier::Unknown => return None,
            };
            return Some(Message {
                data: Bytes::copy_from_slice(&buf[..n]),
                is_text,
            });
        }
    }

    /// Closes this channel (resets its stream) without closing the peer.
    pub(crate) async fn close(&self) -> Result<(), Error> {
        self.raw.close().await?;
        Ok(())
    }
}
