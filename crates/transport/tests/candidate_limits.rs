//! A peer takes a bounded number of remote candidates, and none outside
//! its address filter (issue 13: an offer cannot aim the home's
//! connectivity checks at a thousand addresses).

mod common;

use beeline_transport::{AddressFilter, Error, Peer, PeerConfig, DEFAULT_MAX_REMOTE_CANDIDATES};

fn config() -> PeerConfig {
    // TEST-NET-1: no interface here has it, so nothing is gathered and no
    // check leaves this machine; remote candidates in it pass the filter.
    let mut filter = AddressFilter::default();
    filter.allow_network("192.0.2.0/24").unwrap();
    PeerConfig {
        stack: common::stack(),
        address_filter: filter,
        gather_wait: std::time::Duration::ZERO,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_candidates_get_at_most_the_cap() {
    let (offerer, offer) = Peer::offer(config()).await.unwrap();
    let (answerer, _answer) = Peer::answer(config(), &offer).await.unwrap();
    let (mut taken, mut refused, mut outside) = (0, 0, 0);
    for i in 0..1000u32 {
        // Every other one is outside the filter: dropped without counting.
        let ip = if i % 2 == 0 {
            format!("192.0.2.{}", i % 250 + 1)
        } else {
            format!("198.51.100.{}", i % 250 + 1)
        };
        let candidate = format!(
            "candidate:{i} 1 udp 2113937151 {ip} {} typ host generation 0",
            10_000 + i
        );
        match answerer.add_remote_candidate(&candidate) {
            Ok(()) if ip.starts_with("198.51.100.") => outside += 1,
            Ok(()) => taken += 1,
            Err(Error::TooManyCandidates(max)) => {
                assert_eq!(max, DEFAULT_MAX_REMOTE_CANDIDATES);
                refused += 1;
            }
            Err(other) => panic!("candidate {i}: {other}"),
        }
    }
    assert_eq!(taken, DEFAULT_MAX_REMOTE_CANDIDATES);
    assert_eq!(outside, 500);
    assert_eq!(refused, 500 - DEFAULT_MAX_REMOTE_CANDIDATES);
    answerer.close().await;
    offerer.close().await;
}
