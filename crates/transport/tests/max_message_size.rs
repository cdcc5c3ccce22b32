//! `a=max-message-size` is advertised from the config and honoured in both
//! directions.

mod common;

use beeline_transport::{Error, PeerConfig, SEND_LIMIT};
use bytes::Bytes;
use common::{loopback_config, within, Pair};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_side_sends_at_most_what_the_other_advertises() {
    let small = PeerConfig {
        max_message_size: 1000,
        ..loopback_config()
    };
    let large = PeerConfig {
        max_message_size: 1024 * 1024,
        ..loopback_config()
    };
    let pair = Pair::connect_with(large, small).await;
    assert!(
        pair.offer.contains("a=max-message-size:1048576"),
        "{}",
        pair.offer
    );
    assert!(
        pair.answer.contains("a=max-message-size:1000"),
        "{}",
        pair.answer
    );

    let (to_small, at_small) = pair.channel("limits").await;
    // The offerer may send the answerer at most 1000 bytes.
    assert_eq!(to_small.max_message_size(), 1000);
    to_small
        .send_binary(Bytes::from(vec![1u8; 1000]))
        .await
        .unwrap();
    assert!(matches!(
        to_small.send_binary(Bytes::from(vec![1u8; 1001])).await,
        Err(Error::MessageTooLarge {
            size: 1001,
            max: 1000
        })
    ));
    assert_eq!(within(10, at_small.recv()).await.unwrap().data.len(), 1000);

    // The offerer accepts a mebibyte; what the answerer sends is capped at
    // SEND_LIMIT (a webrtc-sctp stall, see its doc), and a message that
    // large arrives whole.
    assert_eq!(at_small.max_message_size(), SEND_LIMIT);
    let big = common::pattern(7, SEND_LIMIT);
    at_small.send_binary(big.clone()).await.unwrap();
    assert_eq!(within(20, to_small.recv()).await.unwrap().data, big);
    assert!(matches!(
        at_small
            .send_binary(Bytes::from(vec![0u8; SEND_LIMIT + 1]))
            .await,
        Err(Error::MessageTooLarge { .. })
    ));
    pair.close().await;
}
