//! A TCP forwarder that delays every byte by a fixed time in each direction:
//! the stand-in for a long link when the kernel has no `sch_netem`.
//!
//! It models latency only (each read is delivered `delay` after it was read,
//! in order), not loss, bandwidth or TCP's reaction to a long RTT. That is
//! enough for the figures it serves: request round trips and first-token
//! times of small requests on warm connections.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Connections held at once; more are refused (the bench opens a handful).
const MAX_CONNECTIONS: usize = 256;

/// Accepts on `listen` and forwards to `to` with `delay` each way.
pub(crate) async fn run(listen: SocketAddr, to: SocketAddr, delay: Duration) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!(
        "listening on http://{} (delay {} ms each way to {to})",
        listener.local_addr()?,
        delay.as_millis()
    );
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (inbound, _) = listener.accept().await?;
        let Ok(permit) = std::sync::Arc::clone(&open).try_acquire_owned() else {
            continue;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(outbound) = TcpStream::connect(to).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            let up = tokio::spawn(pump(ri, wo, delay));
            pump(ro, wi, delay).await;
            let _ = up.await;
        });
    }
}

/// Copies `from` to `to`, each read delivered `delay` after it was read.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, data)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
