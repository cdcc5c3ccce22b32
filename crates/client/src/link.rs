//! Keeps one direct path up: dials, watches for its loss, and dials again
//! with exponential backoff. Requests read the current state from a
//! `watch` channel, so none ever waits on a lock held across I/O.

use std::sync::Arc;

use beeline_signal_client::SignalClient;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::dial::{dial, short, Connection};
use crate::ClientConfig;

/// An open direct path and the request slots it has left.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) conn: Connection,
    /// One permit per stream the home peer agreed to run at once; a
    /// request holds one until its response ends, so the 129th request
    /// waits for a slot instead of being refused.
    pub(crate) slots: Arc<Semaphore>,
}

/// Where the link stands.
#[derive(Debug, Clone)]
pub(crate) enum LinkState {
    /// A connection attempt is under way (at start, or after a loss).
    Connecting,
    /// The direct path is open.
    Up(Arc<Live>),
    /// The last attempt failed; the next one starts after a backoff.
    Down(String),
}

/// Runs until `stop` is cancelled.
pub(crate) async fn supervise(
    signal: SignalClient,
    config: ClientConfig,
    state: watch::Sender<LinkState>,
    stop: CancellationToken,
) {
    let mut backoff = config.backoff_initial;
    loop {
        state.send_replace(LinkState::Connecting);
        let attempt = dial(
            &signal,
            config.peer.clone(),
            config.options.clone(),
            config.setup_budget,
        );
        let outcome = tokio::select! {
            r = attempt => r,
            _ = stop.cancelled() => break,
        };
        match outcome {
            Ok(conn) => {
                backoff = config.backoff_initial;
                let pair = conn.peer().selected_pair();
                tracing::info!(
                    session = %short(conn.session_id()),
                    setup_ms = conn.times.agree_ms as u64,
                    pair = %pair.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
                    "direct path open"
                );
                let slots = Arc::new(Semaphore::new(
                    (conn.client.agree().max_streams as usize).max(1),
                ));
                let live = Arc::new(Live { conn, slots });
                state.send_replace(LinkState::Up(Arc::clone(&live)));
                tokio::select! {
                    _ = live.conn.lost() => {}
                    _ = stop.cancelled() => {
                        state.send_replace(LinkState::Down("client stopped".into()));
                        close_now(live);
                        break;
                    }
                }
                tracing::warn!(session = %short(live.conn.session_id()), "direct path lost; reconnecting");
                state.send_replace(LinkState::Connecting);
                close_now(live);
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "no direct path");
                state.send_replace(LinkState::Down(error.to_string()));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => break,
                }
                backoff = (backoff * 2).min(config.backoff_max);
            }
        }
    }
}

/// Closes a lost or abandoned connection at once, so requests still on it
/// fail now rather than when the transport gives up, and says `bye` so the
/// home peer frees the session.
fn close_now(live: Arc<Live>) {
    tokio::spawn(async move {
        live.slots.close();
        live.conn.peer().close().await;
        // When a request still holds it, its peer is closed anyway.
        if let Ok(live) = Arc::try_unwrap(live) {
            live.conn.close().await;
        }
    });
}
