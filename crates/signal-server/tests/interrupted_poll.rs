//! A long-poll that is interrupted (the client gives up mid-wait) or whose
//! answer is lost, and is retried with the same cursor, receives every
//! message exactly once; an abandoned poll frees its place at once; and a
//! post wakes a waiting poll within 50 ms.

mod common;

use std::time::{Duration, Instant};

use beeline_signal_client::{SignalClient, SignalMessage};
use common::start;
use serde_json::json;

/// Messages the browser posts while the home polls unreliably.
const MESSAGES: usize = 40;

/// A poll the client abandons after `patience`, as a flaky network would.
async fn impatient_poll(
    harness: &common::Harness,
    patience: Duration,
    after: u64,
) -> Option<serde_json::Value> {
    let http = reqwest::Client::builder()
        .timeout(patience)
        .build()
        .unwrap();
    let response = http
        .get(harness.url(&format!("/webrtc/signal?after={after}")))
        .bearer_auth(common::HOME_TOKEN)
        .send()
        .await
        .ok()?;
    assert_eq!(response.status(), 200);
    response.json().await.ok()
}

#[tokio::test]
async fn interrupted_and_lost_polls_retried_with_the_same_cursor_lose_and_repeat_nothing() {
    let harness = start(|config| config.long_poll_timeout = Duration::from_secs(10)).await;
    let browser = harness.browser();
    let session = browser.create_session().await.unwrap().session_id;

    // Nothing is queued yet: this poll is held, then cut off by the client.
    assert!(impatient_poll(&harness, Duration::from_millis(50), 0)
        .await
        .is_none());
    let mut interrupted = 1;

    // The browser trickles candidates with small pauses.
    let poster = {
        let browser: SignalClient = browser.clone();
        let session = session.clone();
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..MESSAGES {
                let candidate = json!({"candidate": format!("candidate:{i}")});
                seqs.push(
                    browser
                        .post(&SignalMessage::candidate(&session, candidate))
                        .await
                        .unwrap(),
                );
                tokio::time::sleep(Duration::from_millis(if i % 7 == 0 { 40 } else { 3 })).await;
            }
            seqs
        })
    };

    // The home polls with a cursor; a third of its polls are cut off after
    // 15 ms (often while held), and every other answer that carries
    // messages is "lost" (dropped unread), so the same cursor is retried.
    let mut received: Vec<u64> = Vec::new();
    let mut cursor = 0;
    let mut lost = 0;
    let mut lose_next = true;
    let deadline = Instant::now() + Duration::from_secs(20);
    for attempt in 0..2_000u32 {
        assert!(
            Instant::now() < deadline,
            "gave up after {attempt} polls: {received:?}"
        );
        if received.len() == MESSAGES {
            break;
        }
        let patience = if attempt % 3 == 0 {
            Duration::from_millis(15)
        } else {
            Duration::from_secs(15)
        };
        let Some(answer) = impatient_poll(&harness, patience, cursor).await else {
            interrupted += 1;
            continue;
        };
        if !answer["messages"].as_array().unwrap().is_empty() {
            lose_next = !lose_next;
            if !lose_next {
                lost += 1;
                continue;
            }
        }
        for message in answer["messages"].as_array().unwrap() {
            received.push(message["seq"].as_u64().unwrap());
        }
        cursor = answer["cursor"].as_u64().unwrap();
    }
    let posted = poster.await.unwrap();
    assert_eq!(received, posted, "every message exactly once, in order");
    assert!(
        interrupted > 0 && lost > 0,
        "interrupted {interrupted}, lost {lost}"
    );
    // Abandoned polls do not linger on the server.
    harness.until_polls_waiting(0).await;
}

#[tokio::test]
async fn a_message_posted_while_the_only_poll_is_cut_off_is_read_by_the_retry() {
    let harness = start(|_| {}).await;
    let session = harness.browser().create_session().await.unwrap().session_id;
    // Held, then abandoned by the client.
    assert!(impatient_poll(&harness, Duration::from_millis(100), 0)
        .await
        .is_none());
    harness.until_polls_waiting(0).await;
    let seq = harness
        .browser()
        .post(&SignalMessage::offer(&session, "v=0"))
        .await
        .unwrap();
    let retry = impatient_poll(&harness, Duration::from_secs(5), 0)
        .await
        .unwrap();
    assert_eq!(retry["messages"][0]["seq"], seq);
    assert_eq!(retry["cursor"], seq);
}

#[tokio::test]
async fn a_post_wakes_a_waiting_poll_within_50ms() {
    let harness = start(|_| {}).await;
    let session = harness.browser().create_session().await.unwrap().session_id;
    let mut worst = Duration::ZERO;
    let mut cursor = 0;
    for round in 0..5 {
        let home = harness.home();
        let waiting = tokio::spawn(async move {
            let poll = home.poll(None, cursor).await.unwrap();
            (poll, Instant::now())
        });
        harness.until_polls_waiting(1).await;
        let posted_at = Instant::now();
        let seq = harness
            .browser()
            .post(&SignalMessage::candidate(
                &session,
                json!({"candidate": round}),
            ))
            .await
            .unwrap();
        let (poll, received_at) = waiting.await.unwrap();
        assert_eq!(poll.messages.len(), 1);
        assert_eq!(poll.cursor, seq);
        cursor = seq;
        worst = worst.max(received_at - posted_at);
    }
    assert!(
        worst < Duration::from_millis(50),
        "slowest wake-up took {worst:?}"
    );
    assert_eq!(
        harness
            .metric("beeline_poll_wake_latency_seconds_count")
            .await,
        5
    );
}
