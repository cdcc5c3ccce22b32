//! Two beeline peers on loopback: offer/answer, trickle, channels both ways.

mod common;

use std::time::Duration;

use beeline_transport::{Error, Peer, PeerState};
use bytes::Bytes;
use common::loopback_config;

/// Runs offer/answer between two peers, trickling whatever candidates were
/// not embedded in the descriptions.
async fn connect_pair() -> (Peer, Peer) {
    let (offerer, offer) = Peer::offer(loopback_config()).await.unwrap();
    let (answerer, answer) = Peer::answer(loopback_config(), &offer).await.unwrap();
    offerer.apply_answer(&answer).unwrap();
    (offerer, answerer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_opens_and_carries_messages_both_ways() {
    let (offerer, answerer) = connect_pair().await;
    assert_eq!(offerer.stack(), common::stack());
    assert!(offer_has_only_loopback_candidates(&offerer).await);

    let client = tokio::time::timeout(Duration::from_secs(10), offerer.open_channel("http"))
        .await
        .expect("channel opened in time")
        .unwrap();
    client.send_text("hello").await.unwrap();
    let server = tokio::time::timeout(Duration::from_secs(10), answerer.accept_channel())
        .await
        .expect("channel accepted in time")
        .expect("a channel");
    assert_eq!(server.label(), "http");

    let m = server.recv().await.unwrap();
    assert_eq!((&m.data[..], m.is_text), (&b"hello"[..], true));

    // Binary, empty, and a message at the peer's limit, answerer → offerer.
    server
        .send_binary(Bytes::from_static(&[0, 1, 2, 255]))
        .await
        .unwrap();
    server.send_binary(Bytes::new()).await.unwrap();
    let big = Bytes::from(vec![7u8; server.max_message_size()]);
    server.send_binary(big.clone()).await.unwrap();
    let m = client.recv().await.unwrap();
    assert_eq!((&m.data[..], m.is_text), (&[0u8, 1, 2, 255][..], false));
    let m = client.recv().await.unwrap();
    assert!(m.data.is_empty() && !m.is_text);
    assert_eq!(client.recv().await.unwrap().data, big);

    // One byte over the limit is refused locally, and the channel stays usable.
    let over = Bytes::from(vec![0u8; server.max_message_size() + 1]);
    assert!(matches!(
        server.send_binary(over).await,
        Err(Error::MessageTooLarge { .. })
    ));
    server.send_text("still here").await.unwrap();
    assert_eq!(&client.recv().await.unwrap().data[..], b"still here");

    let pair = answerer.selected_pair().expect("a selected pair");
    assert!(
        is_loopback(&pair.local_addr) && is_loopback(&pair.remote_addr),
        "{pair:?}"
    );
    offerer.close().await;
    assert_eq!(*offerer.state().borrow(), PeerState::Closed);
}

async fn offer_has_only_loopback_candidates(peer: &Peer) -> bool {
    peer.selected_pair()
        .is_none_or(|p| is_loopback(&p.local_addr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_channels_per_peer() {
    let (offerer, answerer) = connect_pair().await;
    let mut opened = Vec::new();
    for label in ["a", "b", "c"] {
        let ch = offerer.open_channel(label).await.unwrap();
        ch.send_text(label).await.unwrap();
        opened.push(ch);
    }
    for _ in 0..3 {
        let ch = answerer.accept_channel().await.unwrap();
        let m = ch.recv().await.unwrap();
        assert_eq!(ch.label().as_bytes(), &m.data[..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_fingerprint_is_refused() {
    let (offerer, offer) = Peer::offer(loopback_config()).await.unwrap();
    // Flip one hex digit of the offerer's fingerprint in transit.
    let line = offer
        .lines()
        .find(|l| l.starts_with("a=fingerprint:"))
        .unwrap();
    let last = line.chars().last().unwrap();
    let flipped = if last == '0' { '1' } else { '0' };
    let tampered_line = format!("{}{}", &line[..line.len() - 1], flipped);
    let tampered = offer.replace(line, &tampered_line);
    let (answerer, answer) = Peer::answer(loopback_config(), &tampered).await.unwrap();
    offerer.apply_answer(&answer).unwrap();

    let mut state = answerer.state();
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let s = *state.borrow_and_update();
            if matches!(
                s,
                PeerState::Failed | PeerState::Closed | PeerState::Connected
            ) {
                return s;
            }
            state.changed().await.unwrap();
        }
    })
    .await
    .expect("answerer settles");
    assert_eq!(outcome, PeerState::Failed);
    // The answerer is the DTLS client here: it checks the offerer's
    // certificate against the tampered fingerprint and says so.
    assert!(
        matches!(answerer.connected().await, Err(Error::FingerprintMismatch)),
        "{:?}",
        answerer.connected().await
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(2), answerer.accept_channel())
            .await
            .unwrap()
            .is_none()
    );
    // The offerer never gets a channel either.
    let opened = tokio::time::timeout(Duration::from_secs(10), offerer.open_channel("http"))
        .await
        .expect("settles");
    assert!(opened.is_err(), "a channel opened despite the mismatch");
}

#[tokio::test]
async fn broken_offers_are_errors_not_panics() {
    for sdp in [
        "",
        "v=0\r\n",
        "not sdp at all",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n",
    ] {
        assert!(
            Peer::answer(loopback_config(), sdp).await.is_err(),
            "accepted {sdp:?}"
        );
    }
}

/// `ip:port` on loopback, IPv4 or IPv6.
fn is_loopback(addr: &str) -> bool {
    addr.rsplit_once(':')
        .and_then(|(ip, _)| ip.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback())
}
