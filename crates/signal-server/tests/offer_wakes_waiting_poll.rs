//! A posted message reaches a poll that is already waiting within
//! milliseconds: waiters are woken in-process, not by a timer.

mod common;

use std::time::{Duration, Instant};

use beeline_signal_client::{SignalKind, SignalMessage};
use common::start;

const BUDGET: Duration = Duration::from_millis(50);

#[tokio::test]
async fn offer_reaches_a_waiting_home_poll_within_50ms() {
    let harness = start(|_| {}).await;
    let session = harness.browser().create_session().await.unwrap();

    let home = harness.home();
    let waiting = tokio::spawn(async move {
        let poll = home.poll(None, 0).await.unwrap();
        (poll, Instant::now())
    });
    harness.until_polls_waiting(1).await;

    let posted_at = Instant::now();
    let seq = harness
        .browser()
        .post(&SignalMessage::offer(&session.session_id, "v=0 offer"))
        .await
        .unwrap();
    let (poll, received_at) = waiting.await.unwrap();
    let latency = received_at - posted_at;

    assert!(
        latency < BUDGET,
        "offer took {latency:?} to reach the home poll"
    );
    assert_eq!(poll.messages.len(), 1);
    let offer = &poll.messages[0];
    assert_eq!(offer.kind, SignalKind::Offer);
    assert_eq!(offer.session_id, session.session_id);
    assert_eq!(offer.sdp.as_deref(), Some("v=0 offer"));
    assert_eq!(offer.seq, Some(seq));
    assert_eq!(poll.cursor, seq);
    assert_eq!(harness.metric("beeline_longpolls_waiting").await, 0);
    assert_eq!(
        harness
            .metric("beeline_signals_total{type=\"offer\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn answer_and_candidates_reach_a_waiting_browser_poll() {
    let harness = start(|_| {}).await;
    let session = harness.browser().create_session().await.unwrap();
    let id = session.session_id.clone();

    let browser = harness.browser();
    let waiting = tokio::spawn(async move {
        let poll = browser.poll(Some(&id), 0).await.unwrap();
        (poll, Instant::now())
    });
    harness.until_polls_waiting(1).await;

    // The browser's own messages must not wake it with its own data.
    harness
        .browser()
        .post(&SignalMessage::offer(&session.session_id, "v=0 offer"))
        .await
        .unwrap();

    let posted_at = Instant::now();
    let home = harness.home();
    let seq = home
        .post(&SignalMessage::answer(&session.session_id, "v=0 answer"))
        .await
        .unwrap();
    let (poll, received_at) = waiting.await.unwrap();
    assert!(
        received_at - posted_at < BUDGET,
        "answer took {:?}",
        received_at - posted_at
    );
    assert_eq!(poll.messages.len(), 1);
    assert_eq!(poll.messages[0].kind, SignalKind::Answer);
    assert_eq!(poll.messages[0].seq, Some(seq));

    let candidate = serde_json::json!({"candidate": "candidate:1 1 udp 2122260223 192.0.2.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0});
    home.post(&SignalMessage::candidate(
        &session.session_id,
        candidate.clone(),
    ))
    .await
    .unwrap();
    home.post(&SignalMessage::candidate(
        &session.session_id,
        serde_json::Value::Null,
    ))
    .await
    .unwrap();
    let poll = harness
        .browser()
        .poll(Some(&session.session_id), poll.cursor)
        .await
        .unwrap();
    assert_eq!(poll.messages.len(), 2);
    assert_eq!(poll.messages[0].candidate.as_ref(), Some(&candidate));
    assert_eq!(poll.messages[1].kind, SignalKind::Candidate);
}

#[tokio::test]
async fn explicit_null_candidate_is_relayed_as_null() {
    let harness = start(|_| {}).await;
    let session = harness.browser().create_session().await.unwrap();
    harness
        .home()
        .post(&SignalMessage::candidate(
            &session.session_id,
            serde_json::Value::Null,
        ))
        .await
        .unwrap();
    let raw: serde_json::Value =
        reqwest::get(harness.url(&format!("/webrtc/signal?session_id={}", session.session_id)))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let message = &raw["messages"][0];
    assert_eq!(message["type"], "candidate");
    assert!(message.as_object().unwrap().contains_key("candidate"));
    assert!(message["candidate"].is_null());
}
