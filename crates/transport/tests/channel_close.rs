//! Closing one data channel ends it on both sides and leaves the peer and
//! its other channels working.

mod common;

use beeline_transport::PeerState;
use common::{within, Pair};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_channel_keeps_the_peer() {
    let pair = Pair::connect().await;
    let (a_client, a_server) = pair.channel("a").await;
    let (b_client, b_server) = pair.channel("b").await;

    a_client.send_text("before close").await.unwrap();
    assert_eq!(
        &within(10, a_server.recv()).await.unwrap().data[..],
        b"before close"
    );

    // Close from the opener: the far end's reads end.
    a_client.close().await.unwrap();
    assert!(
        within(10, a_server.recv()).await.is_none(),
        "the closed channel still delivers"
    );
    assert!(
        a_client.send_text("after close").await.is_err(),
        "a closed channel still sends"
    );

    // The peer and the other channel carry on, both ways.
    assert_eq!(*pair.offerer.state().borrow(), PeerState::Connected);
    assert_eq!(*pair.answerer.state().borrow(), PeerState::Connected);
    b_client.send_text("b still works").await.unwrap();
    assert_eq!(
        &within(10, b_server.recv()).await.unwrap().data[..],
        b"b still works"
    );
    b_server.send_text("and back").await.unwrap();
    assert_eq!(
        &within(10, b_client.recv()).await.unwrap().data[..],
        b"and back"
    );

    // Close from the accepting side too, then open a new channel.
    b_server.close().await.unwrap();
    assert!(within(10, b_client.recv()).await.is_none());
    let (c_client, c_server) = pair.channel("c").await;
    c_server.send_text("new channel").await.unwrap();
    assert_eq!(
        &within(10, c_client.recv()).await.unwrap().data[..],
        b"new channel"
    );
    pair.close().await;
}
