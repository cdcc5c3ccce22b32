//! Flow-control windows (`docs/protocol.md` §4.5): plain bookkeeping plus an
//! async wait for the sending side.

use std::sync::Mutex;
use std::time::Duration;

use beeline_frame::v2::{self, ErrorCode, StreamId};
use beeline_frame::Frame;
use bytes::Bytes;
use tokio::sync::Notify;

use crate::{Channel, ChannelClosed};

/// The bytes one side may still send on one stream. `None` means unlimited
/// (the `credit` feature was not negotiated).
#[derive(Debug)]
pub(crate) struct SendWindow {
    available: Mutex<Option<u64>>,
    granted: Notify,
}

impl SendWindow {
    pub(crate) fn new(initial: Option<u64>) -> Self {
        Self {
            available: Mutex::new(initial),
            granted: Notify::new(),
        }
    }

    /// Adds a grant from the receiver.
    pub(crate) fn grant(&self, bytes: u32) {
        let mut a = self.available.lock().expect("not poisoned");
        if let Some(a) = a.as_mut() {
            *a = a.saturating_add(u64::from(bytes));
        }
        drop(a);
        self.granted.notify_waiters();
    }

    /// Takes `want` bytes if the window holds them all, without waiting.
    pub(crate) fn try_take_all(&self, want: usize) -> bool {
        let mut a = self.available.lock().expect("not poisoned");
        match a.as_mut() {
            None => true,
            Some(n) if *n >= want as u64 => {
                *n -= want as u64;
                true
            }
            Some(_) => false,
        }
    }

    /// Waits until some window is open and takes up to `want` bytes of it.
    pub(crate) async fn take(&self, want: usize) -> usize {
        loop {
            let notified = self.granted.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut a = self.available.lock().expect("not poisoned");
                match a.as_mut() {
                    None => return want,
                    Some(n) if *n > 0 => {
                        let take = (*n).min(want as u64);
                        *n -= take;
                        return take as usize;
                    }
                    Some(_) => {}
                }
            }
            notified.await;
        }
    }
}

/// Why [`send_data`] stopped.
pub(crate) enum SendDataError {
    /// No grant for this long: the stream fails with `flow_control`.
    NoCredit(Duration),
    /// The channel is gone.
    Closed,
}

impl From<ChannelClosed> for SendDataError {
    fn from(_: ChannelClosed) -> Self {
        Self::Closed
    }
}

impl SendDataError {
    /// The `flow_control` error to report, or `None` for a closed channel.
    pub(crate) fn report(&self) -> Option<(ErrorCode, String)> {
        match self {
            Self::NoCredit(waited) => Some((
                ErrorCode::FlowControl,
                format!("the client granted no credit for {} s", waited.as_secs()),
            )),
            Self::Closed => None,
        }
    }
}

/// Sends `bytes` on stream `id` in `data` frames that each fit one channel
/// message, within `window`, waiting for grants up to `credit_timeout` at a
/// time.
pub(crate) async fn send_data<C: Channel + ?Sized>(
    channel: &C,
    id: &StreamId,
    window: &SendWindow,
    credit_timeout: Duration,
    mut bytes: Bytes,
) -> Result<(), SendDataError> {
    let max = v2::max_data_payload(id, channel.max_message_size());
    while !bytes.is_empty() {
        let n = tokio::time::timeout(credit_timeout, window.take(bytes.len().min(max)))
            .await
            .map_err(|_| SendDataError::NoCredit(credit_timeout))?;
        let piece = bytes.split_to(n);
        channel
            .send(
                Frame::Data {
                    id: id.clone(),
                    data: piece,
                }
                .encode(),
            )
            .await?;
    }
    Ok(())
}

/// The bytes the other side may still send us on one stream; data beyond it
/// is a protocol error. Shared between the connection's reader (which
/// consumes) and the body consumer (which grants).
#[derive(Debug)]
pub(crate) struct RecvWindow {
    remaining: std::sync::atomic::AtomicU64,
    unlimited: bool,
}

impl RecvWindow {
    pub(crate) fn new(initial: Option<u64>) -> Self {
        Self {
            remaining: initial.unwrap_or(0).into(),
            unlimited: initial.is_none(),
        }
    }

    /// Accounts for `bytes` received; false if they exceed the window.
    pub(crate) fn consume(&self, bytes: usize) -> bool {
        use std::sync::atomic::Ordering;
        if self.unlimited {
            return true;
        }
        self.remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                r.checked_sub(bytes as u64)
            })
            .is_ok()
    }

    /// Accounts for a grant we sent.
    pub(crate) fn grant(&self, bytes: u32) {
        self.remaining
            .fetch_add(u64::from(bytes), std::sync::atomic::Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn take_waits_for_a_grant() {
        let w = Arc::new(SendWindow::new(Some(10)));
        assert_eq!(w.take(4).await, 4);
        assert_eq!(w.take(100).await, 6);
        let waiter = tokio::spawn({
            let w = Arc::clone(&w);
            async move { w.take(100).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "no window, must wait");
        w.grant(50);
        assert_eq!(waiter.await.unwrap(), 50);
    }

    #[tokio::test]
    async fn unlimited_never_waits() {
        assert_eq!(SendWindow::new(None).take(1 << 20).await, 1 << 20);
    }

    #[test]
    fn recv_window_rejects_overrun() {
        let w = RecvWindow::new(Some(10));
        assert!(w.consume(10));
        assert!(!w.consume(1));
        w.grant(5);
        assert!(w.consume(5));
        assert!(RecvWindow::new(None).consume(usize::MAX));
    }
}
