//! ICE restart from the browser (issue 12): a second offer of a session
//! with new ICE credentials is answered by the session's own peer
//! connection, under the same session, and the channel and its streams
//! carry on. A repeated offer (same credentials) gets no second answer.

mod common;

use std::time::{Duration, Instant};

use beeline_client::open_channel;
use beeline_signal_client::{SignalClient, SignalKind, SignalMessage};
use beeline_transport::PeerState;
use common::{bridge_client, get_head, loopback_peer, world_with};

/// Every answer posted for `session` so far.
async fn answers(signal: &SignalClient, session: &str) -> Vec<String> {
    let poll = signal.poll(Some(session), 0).await.unwrap();
    poll.messages
        .into_iter()
        .filter(|m| m.kind == SignalKind::Answer)
        .filter_map(|m| m.sdp)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_home_answers_an_ice_restart_and_the_channel_carries_on() {
    let config = beeline_home::HomeConfig {
        peer: loopback_peer(),
        ..Default::default()
    };
    let world = world_with(config, true).await;
    let signal = SignalClient::new(&world.signal_url).unwrap();
    let opened = open_channel(&signal, loopback_peer(), Duration::from_secs(15))
        .await
        .expect("the channel opens");
    let session = opened.session_id.clone();
    let peer = std::sync::Arc::clone(&opened.peer);
    let _trickle = &opened.times;
    let client = bridge_client(opened.channel).await.unwrap();

    // A stream that is running while the restart happens.
    let mut slow = client.send(get_head("/slow"), None).await.unwrap();
    let first = slow.body.next().await.unwrap().unwrap();
    assert_eq!(first.as_ref(), b"tick 0\n");

    assert_eq!(answers(&signal, &session).await.len(), 1);

    // The restart offer, posted twice (a retry): one answer.
    let restart = peer.restart_offer().await.unwrap();
    for _ in 0..2 {
        signal
            .post(&SignalMessage::offer(session.clone(), restart.clone()))
            .await
            .unwrap();
    }
    let started = Instant::now();
    let answer = loop {
        let all = answers(&signal, &session).await;
        if all.len() == 2 {
            break all[1].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no answer to the restart offer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(
        common::ice_ufrag(&answer),
        None,
        "the restart answer has ICE credentials"
    );
    peer.apply_answer(&answer).unwrap();
    // Candidates of the restarted home side reach us through the poll.
    let mut state = peer.state();
    let mut cursor = 0;
    let reconnected = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if *state.borrow_and_update() == PeerState::Connected {
                return;
            }
            tokio::select! {
                _ = state.changed() => {}
                poll = signal.poll(Some(&session), cursor) => {
                    let poll = poll.unwrap();
                    cursor = poll.cursor;
                    for m in poll.messages {
                        if let Some(c) = m.candidate.as_ref().and_then(|c| c["candidate"].as_str()) {
                            let _ = peer.add_remote_candidate(c);
                        }
                    }
                }
            }
        }
    })
    .await;
    assert!(reconnected.is_ok(), "connected again after the restart");

    // The stream that was running finishes, byte for byte, and the same
    // channel serves a new request.
    let mut rest = Vec::new();
    while let Some(piece) = slow.body.next().await {
        rest.extend_from_slice(&piece.unwrap());
    }
    let expected: String = (1..20).map(|i| format!("tick {i}\n")).collect();
    assert_eq!(String::from_utf8(rest).unwrap(), expected);
    let response = client.send(get_head("/headers"), None).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        answers(&signal, &session).await.len(),
        2,
        "one answer per offer with new credentials"
    );
}
