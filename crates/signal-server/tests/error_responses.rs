//! Bad credentials, unknown sessions and malformed requests get JSON errors
//! with the right status, never a panic.

mod common;

use std::time::Duration;

use beeline_signal_client::{SignalError, SignalMessage};
use common::{expect_error, start};
use serde_json::json;

#[tokio::test]
async fn wrong_bearer_is_refused_with_401() {
    let harness = start(|_| {}).await;
    let session = harness.browser().create_session().await.unwrap();
    let intruder = beeline_signal_client::SignalClient::new(&harness.base_url())
        .unwrap()
        .with_bearer("not-the-home-token");

    let err = intruder
        .post(&SignalMessage::answer(&session.session_id, "v=0"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SignalError::Http { status: 401, .. }),
        "{err:?}"
    );
    let err = intruder.poll(None, 0).await.unwrap_err();
    assert!(
        matches!(err, SignalError::Http { status: 401, .. }),
        "{err:?}"
    );

    let response = reqwest::Client::new()
        .get(harness.url("/webrtc/signal"))
        .bearer_auth("not-the-home-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    expect_error(response, 401).await;
}

#[tokio::test]
async fn unknown_session_is_404() {
    let harness = start(|_| {}).await;
    let unknown = "0123456789abcdef0123456789abcdef";
    let err = harness
        .browser()
        .post(&SignalMessage::offer(unknown, "v=0"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SignalError::Http { status: 404, .. }),
        "{err:?}"
    );
    let err = harness.browser().poll(Some(unknown), 0).await.unwrap_err();
    assert!(
        matches!(err, SignalError::Http { status: 404, .. }),
        "{err:?}"
    );
    let err = harness.home().poll(Some(unknown), 0).await.unwrap_err();
    assert!(
        matches!(err, SignalError::Http { status: 404, .. }),
        "{err:?}"
    );

    let response = reqwest::get(harness.url(&format!("/webrtc/signal?session_id={unknown}")))
        .await
        .unwrap();
    expect_error(response, 404).await;
}

#[tokio::test]
async fn expired_session_is_410_to_its_owner_and_home_and_hidden_from_the_home_poll() {
    let harness = start(|config| {
        config.session_ttl = Duration::from_millis(200);
        config.long_poll_timeout = Duration::from_millis(100);
    })
    .await;
    let session = harness.browser().create_session().await.unwrap();
    harness
        .browser()
        .post(&SignalMessage::offer(&session.session_id, "v=0"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = harness
        .browser()
        .post(&SignalMessage::bye(&session.session_id))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SignalError::Http { status: 410, message } if message.contains("expired")),
        "{err:?}"
    );
    // Its offer is gone from the home's view.
    let poll = harness.home().poll(None, 0).await.unwrap();
    assert!(poll.messages.is_empty(), "{poll:?}");
    for client in [harness.browser(), harness.home()] {
        let err = client.poll(Some(&session.session_id), 0).await.unwrap_err();
        assert!(
            matches!(err, SignalError::Http { status: 410, .. }),
            "{err:?}"
        );
    }
    let response =
        reqwest::get(harness.url(&format!("/webrtc/signal?session_id={}", session.session_id)))
            .await
            .unwrap();
    let message = expect_error(response, 410).await;
    assert!(message.contains("create a new session"), "{message}");
}

#[tokio::test]
async fn swept_session_stays_410_until_its_tombstone_is_forgotten() {
    let harness = start(|config| {
        config.session_ttl = Duration::from_millis(100);
        config.tombstone_ttl = Duration::from_millis(600);
        config.sweep_interval = Duration::from_millis(50);
    })
    .await;
    let session = harness.browser().create_session().await.unwrap();
    let bye = SignalMessage::bye(&session.session_id);
    // Expired and swept, but remembered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = harness.browser().post(&bye).await.unwrap_err();
    assert!(
        matches!(err, SignalError::Http { status: 410, .. }),
        "{err:?}"
    );
    // Forgotten after the tombstone time: unknown again.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let err = harness.browser().post(&bye).await.unwrap_err();
    assert!(
        matches!(err, SignalError::Http { status: 404, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn malformed_requests_are_400() {
    let harness = start(|_| {}).await;
    let session = harness.browser().create_session().await.unwrap();
    let http = reqwest::Client::new();
    let signal = harness.url("/webrtc/signal");

    let bad_bodies = [
        "{not json".to_owned(),
        "[]".to_owned(),
        json!({"type": "offer", "sdp": "v=0"}).to_string(),
        json!({"session_id": session.session_id, "type": "renegotiate"}).to_string(),
        json!({"session_id": session.session_id, "type": "offer"}).to_string(),
        json!({"session_id": session.session_id, "type": "answer", "sdp": 5}).to_string(),
        json!({"session_id": 12, "type": "bye"}).to_string(),
    ];
    for body in bad_bodies {
        let response = http.post(&signal).body(body.clone()).send().await.unwrap();
        let message = expect_error(response, 400).await;
        eprintln!("{body} -> {message}");
    }

    let unknown_type = json!({"session_id": session.session_id, "type": "renegotiate"});
    let response = http.post(&signal).json(&unknown_type).send().await.unwrap();
    let message = expect_error(response, 400).await;
    assert!(message.contains("renegotiate"), "{message}");

    for query in [
        "",
        "?after=5",
        "?session_id=x&after=-1",
        "?session_id=x&after=abc",
    ] {
        let response = http.get(format!("{signal}{query}")).send().await.unwrap();
        expect_error(response, 400).await;
    }
    assert_eq!(
        harness
            .metric("beeline_signals_total{type=\"offer\"}")
            .await,
        0
    );
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors_without_a_relay() {
    // The normal path goes over the home link by default: with the home not
    // connected, it is a 502 that says so.
    let harness = start(|_| {}).await;
    let http = reqwest::Client::new();
    let response = http.get(harness.url("/nope")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    let body = response.text().await.unwrap();
    assert!(body.contains("not connected"), "{body}");

    // With home links off and no upstream there is no normal path at all.
    let harness = start(|config| config.home_link = false).await;
    expect_error(http.get(harness.url("/nope")).send().await.unwrap(), 404).await;
    expect_error(
        http.get(harness.url("/webrtc/session"))
            .send()
            .await
            .unwrap(),
        405,
    )
    .await;
    expect_error(
        http.delete(harness.url("/webrtc/signal"))
            .send()
            .await
            .unwrap(),
        405,
    )
    .await;
    assert_eq!(harness.metric("beeline_relay_requests_total").await, 0);
}
