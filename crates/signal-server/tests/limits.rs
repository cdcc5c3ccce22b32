//! Each abuse limit answers its documented status with a JSON error:
//! messages per session (429), sessions per address and per identity per
//! minute (429 with `Retry-After`), concurrent long-polls per identity (429
//! with `Retry-After`).

mod common;

use std::{sync::Arc, time::Duration};

use beeline_signal_client::{SignalError, SignalMessage};
use beeline_signal_server::{AuthRejection, BrowserAuth, BrowserRequest, Identity};
use common::{expect_error, start};

/// Browsers name themselves in an `x-test-user` header (tests only).
#[derive(Debug)]
struct HeaderNamesUser;

impl BrowserAuth for HeaderNamesUser {
    fn authenticate(&self, request: &BrowserRequest<'_>) -> Result<Identity, AuthRejection> {
        request
            .headers()
            .get("x-test-user")
            .and_then(|v| v.to_str().ok())
            .map(Identity::new)
            .ok_or_else(|| AuthRejection::new("no x-test-user"))
    }
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn messages_per_session_are_capped() {
    let harness = start(|config| config.limits.max_messages_per_session = 3).await;
    let browser = harness.browser();
    let session = browser.create_session().await.unwrap().session_id;
    browser
        .post(&SignalMessage::offer(&session, "v=0"))
        .await
        .unwrap();
    harness
        .home()
        .post(&SignalMessage::answer(&session, "v=0"))
        .await
        .unwrap();
    browser
        .post(&SignalMessage::candidate(&session, serde_json::Value::Null))
        .await
        .unwrap();
    let err = browser
        .post(&SignalMessage::bye(&session))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SignalError::Http { status: 429, message } if message.contains("maximum of 3 messages")),
        "{err:?}"
    );
    // Other sessions are unaffected.
    let other = browser.create_session().await.unwrap().session_id;
    browser.post(&SignalMessage::bye(&other)).await.unwrap();
    assert_eq!(
        harness
            .metric("beeline_limit_rejections_total{limit=\"session-messages\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn sessions_per_address_per_minute_answer_429_with_retry_after() {
    let harness = start(|config| config.limits.sessions_per_ip_per_minute = 2).await;
    let http = reqwest::Client::new();
    let url = harness.url("/webrtc/session");
    for _ in 0..2 {
        assert_eq!(http.post(&url).send().await.unwrap().status(), 200);
    }
    let response = http.post(&url).send().await.unwrap();
    // Two per minute: the next one is 30 s away.
    let wait = retry_after(&response);
    assert!((29..=30).contains(&wait), "Retry-After: {wait}");
    let message = expect_error(response, 429).await;
    assert!(message.contains("from this address"), "{message}");
    assert_eq!(harness.metric("beeline_sessions_created_total").await, 2);
}

/// A rate alone lets an address hold rate × lifetime sessions (each a peer
/// connection at home); the live caps bound that number itself.
#[tokio::test]
async fn live_sessions_per_address_and_per_user_are_capped() {
    let harness = start(|config| {
        config.browser_auth = Arc::new(HeaderNamesUser);
        config.limits.sessions_per_ip_per_minute = 0;
        config.limits.sessions_per_identity_per_minute = 0;
        config.limits.max_live_sessions_per_identity = 2;
        config.limits.max_live_sessions_per_ip = 3;
        config.session_ttl = std::time::Duration::from_secs(2);
    })
    .await;
    let http = reqwest::Client::new();
    let url = harness.url("/webrtc/session");
    let create = |user: &'static str| http.post(&url).header("x-test-user", user).send();

    assert_eq!(create("alice").await.unwrap().status(), 200);
    assert_eq!(create("alice").await.unwrap().status(), 200);
    let response = create("alice").await.unwrap();
    let wait = retry_after(&response);
    assert!((1..=2).contains(&wait), "Retry-After: {wait}");
    let message = expect_error(response, 429).await;
    assert!(message.contains("live sessions"), "{message}");
    // Another user from the same address: one more fits the address's 3.
    assert_eq!(create("bob").await.unwrap().status(), 200);
    let message = expect_error(create("carol").await.unwrap(), 429).await;
    assert!(message.contains("this address"), "{message}");
    assert_eq!(
        harness
            .metric("beeline_limit_rejections_total{limit=\"identity-live-sessions\"}")
            .await,
        1
    );
    // Once the first sessions expire there is room again.
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    assert_eq!(create("alice").await.unwrap().status(), 200);
}

#[tokio::test]
async fn sessions_per_identity_per_minute_answer_429_with_retry_after() {
    let harness = start(|config| {
        config.browser_auth = Arc::new(HeaderNamesUser);
        config.limits.sessions_per_identity_per_minute = 1;
    })
    .await;
    let http = reqwest::Client::new();
    let url = harness.url("/webrtc/session");
    let create = |user: &'static str| http.post(&url).header("x-test-user", user).send();

    assert_eq!(create("alice").await.unwrap().status(), 200);
    let response = create("alice").await.unwrap();
    let wait = retry_after(&response);
    assert!((59..=60).contains(&wait), "Retry-After: {wait}");
    let message = expect_error(response, 429).await;
    assert!(message.contains("for this user"), "{message}");
    // Another user from the same address is not held back by alice, and
    // alice's refusal did not use up the address's allowance.
    assert_eq!(create("bob").await.unwrap().status(), 200);
    assert_eq!(
        harness
            .metric("beeline_limit_rejections_total{limit=\"identity-session-rate\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn concurrent_long_polls_per_identity_are_capped() {
    let harness = start(|config| {
        config.limits.max_polls_per_identity = 2;
        config.long_poll_timeout = Duration::from_secs(5);
    })
    .await;
    let browser = harness.browser();
    let sessions = [
        browser.create_session().await.unwrap().session_id,
        browser.create_session().await.unwrap().session_id,
        browser.create_session().await.unwrap().session_id,
    ];
    let held: Vec<_> = sessions[..2]
        .iter()
        .map(|id| {
            let browser = browser.clone();
            let id = id.clone();
            tokio::spawn(async move { browser.poll(Some(&id), 0).await })
        })
        .collect();
    harness.until_polls_waiting(2).await;

    let response = reqwest::get(harness.url(&format!("/webrtc/signal?session_id={}", sessions[2])))
        .await
        .unwrap();
    assert_eq!(retry_after(&response), 1);
    let message = expect_error(response, 429).await;
    assert!(message.contains("too many long-polls"), "{message}");

    // The home peer is another identity: not affected.
    let home = harness.home();
    let home_poll = tokio::spawn(async move { home.poll(None, 0).await });
    harness.until_polls_waiting(3).await;

    // Once one poll is answered, its slot is free again.
    harness
        .home()
        .post(&SignalMessage::bye(&sessions[0]))
        .await
        .unwrap();
    held.into_iter().next().unwrap().await.unwrap().unwrap();
    harness.until_polls_waiting(2).await;
    let freed = browser.clone();
    let third = sessions[2].clone();
    let poll = tokio::spawn(async move { freed.poll(Some(&third), 0).await });
    harness.until_polls_waiting(3).await;
    harness.stop().await;
    poll.await.unwrap().unwrap();
    home_poll.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_flooding_session_is_slowed_and_others_are_not() {
    let harness = start(|config| config.limits.posts_per_session_per_minute = 5).await;
    let browser = harness.browser();
    let flood = browser.create_session().await.unwrap().session_id;
    let mut refused = 0;
    for _ in 0..20 {
        match browser
            .post(&SignalMessage::candidate(
                &flood,
                serde_json::json!({"candidate": "x"}),
            ))
            .await
        {
            Ok(_) => {}
            Err(SignalError::Http { status: 429, .. }) => refused += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(refused, 15, "5 posts a minute, the rest refused");
    // The home's own posts to that session have their own budget, and
    // another session's offer goes straight through.
    harness
        .home()
        .post(&SignalMessage::answer(&flood, "v=0"))
        .await
        .unwrap();
    let other = browser.create_session().await.unwrap().session_id;
    browser
        .post(&SignalMessage::offer(&other, "v=0"))
        .await
        .unwrap();
    let poll = harness.home().poll(None, 0).await.unwrap();
    assert!(poll.messages.iter().any(|m| m.session_id == other));
    assert_eq!(
        harness
            .metric("beeline_limit_rejections_total{limit=\"session-post-rate\"}")
            .await,
        15
    );
}

#[tokio::test]
async fn more_sessions_buy_a_user_no_more_posts() {
    let harness = start(|config| {
        config.limits.posts_per_session_per_minute = 0;
        config.limits.posts_per_identity_per_minute = 8;
    })
    .await;
    let browser = harness.browser();
    let mut accepted = 0;
    let mut refused = 0;
    for _ in 0..4 {
        let session = browser.create_session().await.unwrap().session_id;
        for _ in 0..4 {
            match browser
                .post(&SignalMessage::candidate(
                    &session,
                    serde_json::json!({"candidate": "x"}),
                ))
                .await
            {
                Ok(_) => accepted += 1,
                Err(SignalError::Http { status: 429, .. }) => refused += 1,
                Err(other) => panic!("{other:?}"),
            }
        }
    }
    assert_eq!((accepted, refused), (8, 8));
    // The home is not a browser user: its posts are not counted here.
    let session = browser.create_session().await.unwrap().session_id;
    for _ in 0..10 {
        harness
            .home()
            .post(&SignalMessage::candidate(
                &session,
                serde_json::json!({"candidate": "y"}),
            ))
            .await
            .unwrap();
    }
    assert_eq!(
        harness
            .metric("beeline_limit_rejections_total{limit=\"identity-post-rate\"}")
            .await,
        8
    );
}

#[tokio::test]
async fn an_oversized_candidate_gets_413() {
    let harness = start(|_| {}).await;
    let browser = harness.browser();
    let session = browser.create_session().await.unwrap().session_id;
    let huge = serde_json::json!({"candidate": "a".repeat(10_000)});
    let err = browser
        .post(&SignalMessage::candidate(&session, huge))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SignalError::Http { status: 413, message } if message.contains("candidate")),
        "{err:?}"
    );
    let real = serde_json::json!({"candidate": "candidate:1 1 udp 2113937151 192.0.2.4 50000 typ host", "sdpMid": "0"});
    browser
        .post(&SignalMessage::candidate(&session, real))
        .await
        .unwrap();
}
