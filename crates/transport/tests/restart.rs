//! ICE restart: fresh credentials and candidates, the same DTLS/SCTP
//! session, channels kept. (The dead-path case, with packets really
//! dropped, runs in a network namespace: tests/nat/run.sh.)

mod common;

use beeline_transport::PeerState;
use common::{within, Pair};

fn ufrag(sdp: &str) -> String {
    common::sdp_attribute(sdp, "a=ice-ufrag:")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_renews_credentials_and_keeps_channels() {
    let pair = Pair::connect().await;
    let (client, server) = pair.channel("kept").await;
    client.send_text("before").await.unwrap();
    assert_eq!(
        &within(10, server.recv()).await.unwrap().data[..],
        b"before"
    );

    let restart_offer = within(15, pair.offerer.restart_offer()).await.unwrap();
    assert_ne!(
        ufrag(&restart_offer),
        ufrag(&pair.offer),
        "the restart reused the ufrag"
    );
    // Sent while the path is being replaced: delivered once it is back.
    client.send_text("during").await.unwrap();
    let restart_answer = within(15, pair.answerer.apply_restart_offer(&restart_offer))
        .await
        .unwrap();
    assert_ne!(ufrag(&restart_answer), ufrag(&pair.answer));
    pair.offerer.apply_answer(&restart_answer).unwrap();
    let _trickling = [
        common::trickle(&pair.offerer, &pair.answerer),
        common::trickle(&pair.answerer, &pair.offerer),
    ];

    let mut state = pair.offerer.state();
    within(10, state.wait_for(|s| *s == PeerState::Connected))
        .await
        .unwrap();
    assert_eq!(
        &within(15, server.recv()).await.unwrap().data[..],
        b"during"
    );
    server.send_text("after").await.unwrap();
    assert_eq!(&within(15, client.recv()).await.unwrap().data[..], b"after");
    assert!(pair.offerer.selected_pair().is_some());

    // Restart is an offerer/answerer operation each.
    assert!(pair.answerer.restart_offer().await.is_err());
    assert!(pair
        .offerer
        .apply_restart_offer(&restart_offer)
        .await
        .is_err());
    pair.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_offer_with_a_new_fingerprint_is_refused() {
    let pair = Pair::connect().await;
    let _ = pair.channel("x").await;
    let restart_offer = within(15, pair.offerer.restart_offer()).await.unwrap();
    let line = restart_offer
        .lines()
        .find(|l| l.starts_with("a=fingerprint:"))
        .unwrap();
    // A different last byte, whatever it was.
    let last = if line.ends_with("00") { "01" } else { "00" };
    let tampered = restart_offer.replace(line, &format!("{}{last}", &line[..line.len() - 2]));
    assert!(pair.answerer.apply_restart_offer(&tampered).await.is_err());
    pair.close().await;
}
