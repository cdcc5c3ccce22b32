//! `POST {base}/session`: ids, ICE servers and coturn REST credentials.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use beeline_signal_server::{turn_credential, TurnSecrets};
use common::{expect_error, start, HOME_TOKEN};

#[tokio::test]
async fn session_carries_stun_and_valid_turn_credentials() {
    let harness = start(|config| {
        config.stun_urls = vec!["stun:stun.example.invalid:3478".into()];
        config.turn_urls = vec![
            "turn:turn.example.invalid:3478?transport=udp".into(),
            "turns:turn.example.invalid:5349".into(),
        ];
        config.turn_secrets = Some(TurnSecrets::new("coturn-shared-secret", None));
    })
    .await;

    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let session = harness.browser().create_session().await.unwrap();
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();

    assert_eq!(session.ttl, 300);
    assert_eq!(session.session_id.len(), 32, "128 bits as hex");
    assert!(session.session_id.bytes().all(|c| c.is_ascii_hexdigit()));

    assert_eq!(session.ice_servers.len(), 2);
    let stun = &session.ice_servers[0];
    assert_eq!(stun.urls, ["stun:stun.example.invalid:3478"]);
    assert_eq!(
        (stun.username.as_deref(), stun.credential.as_deref()),
        (None, None)
    );

    let turn = &session.ice_servers[1];
    assert_eq!(turn.urls.len(), 2);
    let username = turn.username.as_deref().unwrap();
    let (expiry, opaque) = username.split_once(':').unwrap();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        (before + 300..=after + 300).contains(&expiry),
        "expiry {expiry} not 300 s after {before}..{after}"
    );
    assert!(!opaque.is_empty());
    assert_eq!(
        turn.credential.as_deref().unwrap(),
        turn_credential("coturn-shared-secret", username)
    );
}

#[tokio::test]
async fn ids_differ_and_empty_ice_config_gives_empty_list() {
    let harness = start(|_| {}).await;
    let a = harness.browser().create_session().await.unwrap();
    let b = harness.browser().create_session().await.unwrap();
    assert_ne!(a.session_id, b.session_id);
    assert!(a.ice_servers.is_empty());
    assert_eq!(harness.metric("beeline_sessions_created_total").await, 2);
}

#[tokio::test]
async fn empty_body_is_accepted_and_garbage_is_not() {
    let harness = start(|_| {}).await;
    let http = reqwest::Client::new();
    let url = harness.url("/webrtc/session");

    let response = http.post(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["session_id"].is_string());
    assert_eq!(body["ice_servers"], serde_json::json!([]));

    let response = http.post(&url).body("{not json").send().await.unwrap();
    expect_error(response, 400).await;
}

#[tokio::test]
async fn home_token_cannot_create_sessions() {
    let harness = start(|_| {}).await;
    let http = reqwest::Client::new();
    let url = harness.url("/webrtc/session");

    let response = http
        .post(&url)
        .bearer_auth(HOME_TOKEN)
        .send()
        .await
        .unwrap();
    expect_error(response, 403).await;
    let response = http.post(&url).bearer_auth("wrong").send().await.unwrap();
    expect_error(response, 401).await;
    assert_eq!(harness.metric("beeline_sessions_created_total").await, 0);
}

#[tokio::test]
async fn custom_base_path_is_honoured() {
    let harness = start(|config| {
        config.base_path = "/jarvis-api/webrtc/".into();
        // No normal path, so an unknown path is a plain 404.
        config.home_link = false;
    })
    .await;
    assert_eq!(harness.server.base_path(), "/jarvis-api/webrtc");
    harness.browser().create_session().await.unwrap();
    let response = reqwest::Client::new()
        .post(harness.url("/webrtc/session"))
        .send()
        .await
        .unwrap();
    expect_error(response, 404).await;
}
