//! Two-peer harness shared by the transport's integration tests: a pair of
//! peers on loopback, signaling done in-process (descriptions handed over
//! directly, candidates trickled by two small tasks).

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use beeline_transport::{AddressFilter, DataChannel, Peer, PeerConfig, Stack};

/// The stack under test: `BEELINE_TEST_STACK` (`0.17` or `sansio`; `just
/// test` runs the suite once per stack), else the default.
pub fn stack() -> Stack {
    std::env::var("BEELINE_TEST_STACK")
        .ok()
        .map(|s| s.parse().expect("BEELINE_TEST_STACK is 0.17 or sansio"))
        .unwrap_or_default()
}

/// The value of the first `name` line (e.g. `a=ice-ufrag:`) of `sdp`.
pub fn sdp_attribute(sdp: &str, name: &str) -> String {
    sdp.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in the description"))
        .trim()
        .to_owned()
}

/// A peer that gathers and accepts candidates on loopback only.
pub fn loopback_config() -> PeerConfig {
    PeerConfig {
        stack: stack(),
        address_filter: AddressFilter::loopback(),
        ..Default::default()
    }
}

/// An offerer and an answerer, connected.
pub struct Pair {
    pub offerer: Arc<Peer>,
    pub answerer: Arc<Peer>,
    pub offer: String,
    pub answer: String,
    trickle: Vec<tokio::task::JoinHandle<()>>,
}

impl Pair {
    /// Offer/answer with default loopback configs, trickling whatever
    /// candidates were not embedded in the descriptions.
    pub async fn connect() -> Self {
        Self::connect_with(loopback_config(), loopback_config()).await
    }

    pub async fn connect_with(offer_config: PeerConfig, answer_config: PeerConfig) -> Self {
        let (offerer, offer) = Peer::offer(offer_config).await.expect("offer");
        let (answerer, answer) = Peer::answer(answer_config, &offer).await.expect("answer");
        offerer.apply_answer(&answer).expect("apply answer");
        let (offerer, answerer) = (Arc::new(offerer), Arc::new(answerer));
        let trickle = vec![trickle(&offerer, &answerer), trickle(&answerer, &offerer)];
        Self {
            offerer,
            answerer,
            offer,
            answer,
            trickle,
        }
    }

    /// Opens `label` on the offerer and accepts it on the answerer.
    pub async fn channel(&self, label: &str) -> (DataChannel, DataChannel) {
        let opened = within(10, self.offerer.open_channel(label))
            .await
            .expect("open channel");
        let accepted = within(10, self.answerer.accept_channel())
            .await
            .expect("a channel");
        assert_eq!(accepted.label(), label);
        (opened, accepted)
    }

    pub async fn close(self) {
        for t in &self.trickle {
            t.abort();
        }
        self.offerer.close().await;
        self.answerer.close().await;
    }
}

/// Forwards `from`'s trickled candidates to `to` until gathering ends.
/// (After an ICE restart, call it again for the restart's candidates.)
pub fn trickle(from: &Arc<Peer>, to: &Arc<Peer>) -> tokio::task::JoinHandle<()> {
    let (from, to) = (Arc::clone(from), Arc::clone(to));
    tokio::spawn(async move {
        while let Some(c) = from.next_local_candidate().await {
            let _ = to.add_remote_candidate(&c.candidate);
        }
    })
}

/// Awaits `f` for at most `secs` seconds.
pub async fn within<F: std::future::Future>(secs: u64, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("timed out")
}

/// Echoes every message on `channel` back, text as text, binary as binary,
/// until the channel closes.
pub fn echo(channel: DataChannel) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(m) = channel.recv().await {
            let sent = if m.is_text {
                channel
                    .send_text(std::str::from_utf8(&m.data).expect("utf-8"))
                    .await
            } else {
                channel.send_binary(m.data).await
            };
            if sent.is_err() {
                return;
            }
        }
    })
}

/// A deterministic payload, so corruption or reordering shows.
pub use beeline_test_support::xorshift32_bytes as pattern;

/// Sends `total` bytes in `chunk`-sized binary messages and 1,000 small text
/// messages through `channel`, whose far end echoes, and checks every echo
/// arrives intact and in order. Returns the seconds the bulk part took.
pub async fn echo_exchange(channel: Arc<DataChannel>, total: usize, chunk: usize) -> f64 {
    let chunks = total.div_ceil(chunk);
    let sender = {
        let channel = Arc::clone(&channel);
        tokio::spawn(async move {
            for i in 0..chunks {
                let len = chunk.min(total - i * chunk);
                channel
                    .send_binary(pattern(i as u32, len))
                    .await
                    .expect("send bulk");
            }
            for i in 0..1000 {
                channel
                    .send_text(&format!("small message {i}"))
                    .await
                    .expect("send small");
            }
        })
    };
    let started = Instant::now();
    let mut received = 0;
    for i in 0..chunks {
        let m = within(60, channel.recv()).await.expect("bulk echo");
        let len = chunk.min(total - i * chunk);
        assert!(!m.is_text, "bulk echo {i} came back as text");
        assert_eq!(m.data, pattern(i as u32, len), "bulk echo {i} differs");
        received += m.data.len();
    }
    let bulk_secs = started.elapsed().as_secs_f64();
    assert_eq!(received, total);
    for i in 0..1000 {
        let m = within(30, channel.recv()).await.expect("small echo");
        assert!(m.is_text);
        assert_eq!(
            m.data,
            format!("small message {i}").as_bytes(),
            "small echo {i} differs"
        );
    }
    sender.await.expect("sender");
    bulk_secs
}
