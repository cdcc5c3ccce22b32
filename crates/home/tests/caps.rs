//! One page cannot take the home: its peer connection gets a bounded number
//! of `http` channels, and its requests share one limit across them, while
//! another page is served all along (issue 13).

use std::time::Duration;

use beeline_bridge::ClientError;
use beeline_home::HomeConfig;

mod common;
use common::{bridge_client, browser_connect, get_head, loopback_peer, world_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_and_requests_per_peer_are_capped() {
    let config = HomeConfig {
        peer: loopback_peer(),
        max_channels_per_peer: 2,
        max_streams_per_peer: 3,
        ..Default::default()
    };
    let world = world_with(config, true).await;
    let (peer, first) = browser_connect(&world.signal_url).await;
    let mut served = vec![bridge_client(first)
        .await
        .expect("the first channel is served")];
    let mut refused = 0;
    for _ in 0..4 {
        let channel = peer.open_channel("http").await.unwrap();
        match bridge_client(channel).await {
            Ok(c) => served.push(c),
            Err(_) => refused += 1,
        }
    }
    assert_eq!(
        (served.len(), refused),
        (2, 3),
        "two channels served, the rest closed"
    );

    // Four slow requests over the two channels: three run, one is refused.
    let mut running = Vec::new();
    let mut too_many = 0;
    for i in 0..4 {
        match served[i % 2].send(get_head("/hold"), None).await {
            Ok(r) => running.push(r),
            Err(ClientError::Stream { code, .. }) if code == "too_many_streams" => too_many += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!((running.len(), too_many), (3, 1));

    // Meanwhile another page is served.
    let (_other_peer, other) = browser_connect(&world.signal_url).await;
    let other = bridge_client(other).await.unwrap();
    let r = other.send(get_head("/headers"), None).await.unwrap();
    assert_eq!(r.status, 200);

    // A finished request gives its slot back.
    drop(running.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = served[0].send(get_head("/headers"), None).await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_beyond_the_cap_are_turned_down_with_bye() {
    let config = HomeConfig {
        peer: loopback_peer(),
        max_sessions: 1,
        ..Default::default()
    };
    let world = world_with(config, true).await;
    let (_peer, _channel) = browser_connect(&world.signal_url).await;
    // A second page's offer gets `bye` instead of an answer.
    let signal = beeline_signal_client::SignalClient::new(&world.signal_url).unwrap();
    let session = signal.create_session().await.unwrap().session_id;
    let (_p, offer) = beeline_transport::Peer::offer(loopback_peer())
        .await
        .unwrap();
    signal
        .post(&beeline_signal_client::SignalMessage::offer(
            session.clone(),
            offer,
        ))
        .await
        .unwrap();
    let mut kinds = Vec::new();
    for _ in 0..50 {
        let poll = signal.poll(Some(&session), 0).await.unwrap();
        kinds = poll.messages.iter().map(|m| m.kind).collect();
        if !kinds.is_empty() {
            break;
        }
    }
    assert_eq!(kinds, vec![beeline_signal_client::SignalKind::Bye]);
}
