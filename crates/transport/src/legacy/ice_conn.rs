//! The ICE connection as DTLS sees it.
//!
//! `dtls` reads its transport in a loop that retries at once on any error.
//! Once the ICE agent is closed its `Conn` fails every read immediately, so a
//! DTLS reader still alive at that point would spin on a worker thread until
//! the DTLS connection is dropped. This wrapper parks the reader instead: after
//! the peer is closed (or the agent's connection fails) a read never returns,
//! and the reader task ends as soon as DTLS drops it.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use webrtc_util::Conn;

pub(crate) struct IceConn {
    inner: Arc<dyn Conn + Send + Sync>,
    closed: CancellationToken,
}

impl IceConn {
    pub(crate) fn new(inner: Arc<dyn Conn + Send + Sync>, closed: CancellationToken) -> Self {
        Self { inner, closed }
    }
}

#[async_trait]
impl Conn for IceConn {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        if !self.closed.is_cancelled() {
            tokio::select! {
                r = self.inner.recv(buf) => match r {
                    Ok(n) => return Ok(n),
                    Err(e) => tracing::debug!(error = %e, "ICE connection closed under DTLS"),
                },
                _ = self.closed.cancelled() => {}
            }
        }
        std::future::pending().await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let n = self.recv(buf).await?;
        let from = self
            .inner
            .remote_addr()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        Ok((n, from))
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        self.inner.send_to(buf, target).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr()
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.inner.close().await
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }
}
