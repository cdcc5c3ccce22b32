//! Full gathering (every candidate inside the description, no trickle) and
//! trickle only (no candidate inside the description) both connect.

mod common;

use std::time::Duration;

use beeline_transport::{Peer, PeerConfig};
use common::{loopback_config, within, Pair};

fn candidates_in(sdp: &str) -> usize {
    sdp.lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_gather_connects_without_trickle() {
    let config = PeerConfig {
        gather_wait: Duration::from_secs(5),
        ..loopback_config()
    };
    let (offerer, offer) = Peer::offer(config.clone()).await.unwrap();
    assert!(
        offer.contains("a=end-of-candidates"),
        "gathering did not finish:\n{offer}"
    );
    assert!(candidates_in(&offer) > 0, "{offer}");
    let (answerer, answer) = Peer::answer(config, &offer).await.unwrap();
    assert!(answer.contains("a=end-of-candidates"), "{answer}");
    offerer.apply_answer(&answer).unwrap();
    // Nothing is trickled: the descriptions carry everything.
    assert!(offerer.next_local_candidate().await.is_none());
    assert!(answerer.next_local_candidate().await.is_none());

    let ch = within(10, offerer.open_channel("full")).await.unwrap();
    ch.send_text("over a fully gathered pair").await.unwrap();
    let accepted = within(10, answerer.accept_channel()).await.unwrap();
    assert_eq!(
        &within(10, accepted.recv()).await.unwrap().data[..],
        b"over a fully gathered pair"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickle_only_connects() {
    let config = PeerConfig {
        gather_wait: Duration::ZERO,
        ..loopback_config()
    };
    let pair = Pair::connect_with(config.clone(), config).await;
    assert_eq!(candidates_in(&pair.offer), 0, "{}", pair.offer);
    assert_eq!(candidates_in(&pair.answer), 0, "{}", pair.answer);
    assert!(!pair.offer.contains("a=end-of-candidates"));

    let (client, server) = pair.channel("trickled").await;
    client.send_text("over trickled candidates").await.unwrap();
    assert_eq!(
        &within(10, server.recv()).await.unwrap().data[..],
        b"over trickled candidates"
    );
    pair.close().await;
}
