//! A restarted home peer does not answer offers it already answered
//! (issue 13): signal-api stops handing out an offer once the home has
//! answered it, so a home that starts over from cursor 0 sees only new ones.

use std::sync::Arc;
use std::time::Duration;

use beeline_bridge::HttpUpstream;
use beeline_home::HomeConfig;
use beeline_signal_client::{SignalClient, SignalKind, SignalMessage};
use beeline_transport::Peer;
use tokio_util::sync::CancellationToken;

mod common;
use common::{loopback_peer, world_with, TOKEN};

fn start_home(signal_url: &str, upstream_url: &str) -> CancellationToken {
    let stop = CancellationToken::new();
    let config = HomeConfig {
        peer: loopback_peer(),
        ..Default::default()
    };
    tokio::spawn(beeline_home::run(
        SignalClient::new(signal_url).unwrap().with_bearer(TOKEN),
        Arc::new(HttpUpstream::new(upstream_url).unwrap()),
        config,
        stop.clone(),
    ));
    stop
}

async fn answers(browser: &SignalClient, session: &str) -> usize {
    let poll = tokio::time::timeout(Duration::from_secs(15), browser.poll(Some(session), 0))
        .await
        .expect("a poll answer")
        .unwrap();
    poll.messages
        .iter()
        .filter(|m| m.kind == SignalKind::Answer)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_home_answers_no_offer_twice() {
    let world = world_with(HomeConfig::default(), false).await;
    let first = start_home(&world.signal_url, &world.upstream_url);
    let browser = SignalClient::new(&world.signal_url).unwrap();
    let mut sessions = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..3 {
        let session = browser.create_session().await.unwrap().session_id;
        let (peer, offer) = Peer::offer(loopback_peer()).await.unwrap();
        browser
            .post(&SignalMessage::offer(session.clone(), offer))
            .await
            .unwrap();
        sessions.push(session);
        peers.push(peer);
    }
    for session in &sessions {
        let mut n = 0;
        for _ in 0..100 {
            n = answers(&browser, session).await;
            if n > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(n, 1, "the first home answers each offer");
    }

    // Restart: a new home loop starts from cursor 0.
    first.cancel();
    let second = start_home(&world.signal_url, &world.upstream_url);
    // A new offer after the restart is answered: the new home is working.
    let fresh = browser.create_session().await.unwrap().session_id;
    let (_peer, offer) = Peer::offer(loopback_peer()).await.unwrap();
    browser
        .post(&SignalMessage::offer(fresh.clone(), offer))
        .await
        .unwrap();
    let mut answered = 0;
    for _ in 0..200 {
        answered = answers(&browser, &fresh).await;
        if answered > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answered, 1, "the restarted home answers a new offer");
    // It has read past the old offers by now, and answered none of them.
    for session in &sessions {
        assert_eq!(
            answers(&browser, session).await,
            1,
            "{session} answered twice"
        );
    }
    second.cancel();
}
