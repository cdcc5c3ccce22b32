//! Reflection through ICE (issue 13, acceptance 3): a page's offer names a
//! thousand remote candidates, all pointing at addresses it does not own
//! (here: UDP sockets this test binds on loopback, so that every STUN
//! packet the home sends to them is counted). signal-api stops the flood of
//! candidate posts, the home uses at most `max_remote_candidates` of those
//! that arrive, and the connectivity checks it sends to them in the 8 s a
//! page waits stay under [`STUN_BOUND`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use beeline_home::HomeConfig;
use beeline_signal_client::{SignalClient, SignalError, SignalMessage};

mod common;
use common::{loopback_peer, world_with};

/// Trap sockets; each candidate points at one of them.
const TRAPS: usize = 50;

/// The documented bound on STUN packets to a page's candidates
/// (docs/transport.md): at most 32 candidates used, each pair with the one
/// loopback host candidate checked at most 1024 / 32 + 1 = 33 times.
const STUN_BOUND: u64 = 32 * 33;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_flood_makes_the_home_send_a_bounded_number_of_checks() {
    let config = HomeConfig {
        peer: loopback_peer(),
        ..Default::default()
    };
    let world = world_with(config, true).await;

    // The victims: UDP sockets that count what reaches them.
    let received = Arc::new(AtomicU64::new(0));
    let mut ports = Vec::new();
    for _ in 0..TRAPS {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        ports.push(socket.local_addr().unwrap().port());
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok(n) = socket.recv(&mut buf).await {
                // A STUN binding request: type 0x0001, magic cookie.
                if n >= 20 && buf[0..2] == [0, 1] && buf[4..8] == [0x21, 0x12, 0xa4, 0x42] {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }

    // A real offer (so the home answers and starts checking), then a
    // thousand candidates, as fast as signal-api takes them.
    let signal = SignalClient::new(&world.signal_url).unwrap();
    let session = signal.create_session().await.unwrap().session_id;
    let (_peer, offer) = beeline_transport::Peer::offer(loopback_peer())
        .await
        .unwrap();
    signal
        .post(&SignalMessage::offer(session.clone(), offer))
        .await
        .unwrap();
    let started = Instant::now();
    let (mut posted, mut refused) = (0, 0);
    for i in 0..1000 {
        let port = ports[i % TRAPS];
        let candidate = format!(
            "candidate:{i} 1 udp {} 127.0.0.1 {port} typ host",
            2_113_937_151u32 - i as u32
        );
        let init = serde_json::json!({"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0});
        match signal
            .post(&SignalMessage::candidate(session.clone(), init))
            .await
        {
            Ok(_) => posted += 1,
            Err(SignalError::Http { status: 429, .. }) => refused += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(refused > 0, "signal-api took every candidate");
    // The page's budget: 8 s from the offer.
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(started.elapsed())).await;
    let sent = received.load(Ordering::Relaxed);
    eprintln!(
        "candidate flood: {posted} candidates accepted by signal-api, {refused} refused; \
         the home sent {sent} STUN binding requests to them in 8 s (bound {STUN_BOUND})"
    );
    assert!(
        sent <= STUN_BOUND,
        "the home sent {sent} checks to a page's candidates (bound {STUN_BOUND})"
    );
}
