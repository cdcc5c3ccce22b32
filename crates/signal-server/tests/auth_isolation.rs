//! A session belongs to the browser identity that created it and to its
//! home: anyone else — another user, another home — is told it does not
//! exist (404). Home tokens cannot create sessions. JWTs are verified with
//! HS256, RS256 or ES256, from the bearer or a cookie; proxy headers are
//! only believed from trusted proxies.

mod common;

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use beeline_signal_client::{SignalClient, SignalError, SignalKind, SignalMessage};
use beeline_signal_server::{HomeCredential, JwtAuth, JwtKey, ProxyHeaderAuth, SignalConfig};
use common::{expect_error, start_with, Harness};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

const HS_SECRET: &[u8] = b"test-only-hs256-secret";
const KITCHEN: &str = "kitchen-token";
const ATTIC: &str = "attic-token";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(HS_SECRET),
    )
    .unwrap()
}

fn user_token(sub: &str) -> String {
    hs256(json!({"sub": sub, "exp": now() + 300}))
}

fn status(err: SignalError) -> u16 {
    match err {
        SignalError::Http { status, .. } => status,
        other => panic!("expected an HTTP error, got {other:?}"),
    }
}

/// Two homes, HS256 JWTs for browsers.
async fn two_homes(dir: &tempfile::TempDir, auth: JwtAuth) -> Harness {
    let mut config = SignalConfig::with_homes(
        dir.path().join("signal.db"),
        vec![
            HomeCredential::new("kitchen", KITCHEN),
            HomeCredential::new("attic", ATTIC),
        ],
    );
    config.browser_auth = Arc::new(auth);
    config.long_poll_timeout = std::time::Duration::from_millis(200);
    start_with(config).await
}

#[tokio::test]
async fn a_session_is_visible_only_to_its_creator_and_its_home() {
    let dir = tempfile::tempdir().unwrap();
    let harness = two_homes(
        &dir,
        JwtAuth::new(JwtKey::Hs256(HS_SECRET.to_vec())).unwrap(),
    )
    .await;
    let alice = harness.client_with_bearer(&user_token("alice"));
    let bob = harness.client_with_bearer(&user_token("bob"));
    let kitchen = harness.client_with_bearer(KITCHEN);
    let attic = harness.client_with_bearer(ATTIC);

    let session = alice.create_session_with("kitchen").await.unwrap();
    assert_eq!(session.home.as_deref(), Some("kitchen"));
    let id = session.session_id.as_str();
    alice
        .post(&SignalMessage::offer(id, "v=0 alice"))
        .await
        .unwrap();

    // Bob, and the attic's home peer, cannot read or write it.
    assert_eq!(status(bob.poll(Some(id), 0).await.unwrap_err()), 404);
    assert_eq!(
        status(bob.post(&SignalMessage::bye(id)).await.unwrap_err()),
        404
    );
    assert_eq!(status(attic.poll(Some(id), 0).await.unwrap_err()), 404);
    assert_eq!(
        status(
            attic
                .post(&SignalMessage::answer(id, "v=0 attic"))
                .await
                .unwrap_err()
        ),
        404
    );
    let attic_view = attic.poll(None, 0).await.unwrap();
    assert!(attic_view.messages.is_empty(), "{attic_view:?}");

    // The kitchen sees the offer and answers; alice reads the answer.
    let kitchen_view = kitchen.poll(None, 0).await.unwrap();
    assert_eq!(kitchen_view.messages.len(), 1);
    assert_eq!(kitchen_view.messages[0].sdp.as_deref(), Some("v=0 alice"));
    kitchen
        .post(&SignalMessage::answer(id, "v=0 kitchen"))
        .await
        .unwrap();
    let answer = alice.poll(Some(id), 0).await.unwrap();
    assert_eq!(answer.messages.len(), 1);
    assert_eq!(answer.messages[0].kind, SignalKind::Answer);

    // The same refusal as for an id that never existed: nothing to probe.
    let raw = reqwest::Client::new()
        .get(harness.url(&format!("/webrtc/signal?session_id={id}")))
        .bearer_auth(user_token("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(expect_error(raw, 404).await, "unknown session");
}

#[tokio::test]
async fn home_tokens_cannot_create_sessions_and_strangers_get_401() {
    let dir = tempfile::tempdir().unwrap();
    let harness = two_homes(
        &dir,
        JwtAuth::new(JwtKey::Hs256(HS_SECRET.to_vec())).unwrap(),
    )
    .await;
    for token in [KITCHEN, ATTIC] {
        let err = harness
            .client_with_bearer(token)
            .create_session_with("kitchen")
            .await
            .unwrap_err();
        assert_eq!(status(err), 403);
    }
    // No credentials, a wrong home token, a token signed with another secret,
    // an expired token, a token without `sub` or `exp`, and one not valid yet.
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "alice", "exp": now() + 300}),
        &EncodingKey::from_secret(b"another-secret"),
    )
    .unwrap();
    let expired = hs256(json!({"sub": "alice", "exp": now() - 3600}));
    let no_sub = hs256(json!({"exp": now() + 300}));
    let no_exp = hs256(json!({"sub": "alice"}));
    // Not valid for another hour (`nbf` beyond the 60 s leeway).
    let not_yet = hs256(json!({"sub": "alice", "exp": now() + 7200, "nbf": now() + 3600}));
    let anonymous = SignalClient::new(&harness.base_url()).unwrap();
    assert_eq!(status(anonymous.create_session().await.unwrap_err()), 401);
    for token in [
        "not-a-home-token",
        &forged,
        &expired,
        &no_sub,
        &no_exp,
        &not_yet,
    ] {
        let err = harness
            .client_with_bearer(token)
            .create_session_with("kitchen")
            .await
            .unwrap_err();
        assert_eq!(status(err), 401, "{token}");
    }
    let expired_message = expect_error(
        reqwest::Client::new()
            .post(harness.url("/webrtc/session"))
            .bearer_auth(&expired)
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    assert!(expired_message.contains("expired"), "{expired_message}");
    assert_eq!(harness.metric("beeline_sessions_created_total").await, 0);
    // A token whose `nbf` has passed is fine.
    let valid_since = hs256(json!({"sub": "alice", "exp": now() + 300, "nbf": now() - 10}));
    harness
        .client_with_bearer(&valid_since)
        .create_session_with("kitchen")
        .await
        .expect("a token valid since 10 s ago is accepted");
}

#[tokio::test]
async fn several_homes_need_a_name_and_the_homes_claim_restricts_them() {
    let dir = tempfile::tempdir().unwrap();
    let harness = two_homes(
        &dir,
        JwtAuth::new(JwtKey::Hs256(HS_SECRET.to_vec())).unwrap(),
    )
    .await;
    let alice = harness.client_with_bearer(&user_token("alice"));
    let err = alice.create_session().await.unwrap_err();
    assert!(
        matches!(&err, SignalError::Http { status: 400, message } if message.contains("{\"home\": \"name\"}")),
        "{err:?}"
    );
    assert_eq!(
        status(alice.create_session_with("cellar").await.unwrap_err()),
        404
    );

    let kitchen_only = harness.client_with_bearer(&hs256(
        json!({"sub": "carol", "exp": now() + 300, "homes": ["kitchen"]}),
    ));
    kitchen_only.create_session_with("kitchen").await.unwrap();
    assert_eq!(
        status(kitchen_only.create_session_with("attic").await.unwrap_err()),
        404
    );
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_from_bearer_or_cookie() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let read = |name: &str| std::fs::read(format!("{fixtures}/{name}")).unwrap();
    let cases = [
        (
            JwtKey::Rs256Pem(read("rs256-public.pem")),
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&read("rs256-private.pem")).unwrap(),
        ),
        (
            JwtKey::Es256Pem(read("es256-public.pem")),
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&read("es256-private.pem")).unwrap(),
        ),
    ];
    for (public, algorithm, private) in cases {
        let dir = tempfile::tempdir().unwrap();
        let auth = JwtAuth::new(public)
            .unwrap()
            .with_cookie("beeline_jwt")
            .with_issuer("https://login.example")
            .with_audience("beeline");
        let harness = two_homes(&dir, auth).await;
        let claims = json!({"sub": "dave", "exp": now() + 300, "iss": "https://login.example", "aud": "beeline"});
        let token = encode(&Header::new(algorithm), &claims, &private).unwrap();

        let by_bearer = harness.client_with_bearer(&token);
        let session = by_bearer.create_session_with("attic").await.unwrap();
        // The same user through a cookie owns the same session.
        let by_cookie = SignalClient::new(&harness.base_url())
            .unwrap()
            .with_cookie("beeline_jwt", &token)
            .unwrap();
        by_cookie
            .post(&SignalMessage::offer(&session.session_id, "v=0"))
            .await
            .unwrap();

        // Wrong issuer, and an HS256 token "signed" with the public key
        // (algorithm confusion), are refused.
        let wrong_iss = encode(
            &Header::new(algorithm),
            &json!({"sub": "dave", "exp": now() + 300, "iss": "https://evil.example", "aud": "beeline"}),
            &private,
        )
        .unwrap();
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&read(match algorithm {
                Algorithm::RS256 => "rs256-public.pem",
                _ => "es256-public.pem",
            })),
        )
        .unwrap();
        for bad in [wrong_iss, confused] {
            let err = harness
                .client_with_bearer(&bad)
                .create_session_with("attic")
                .await
                .unwrap_err();
            assert_eq!(status(err), 401, "{algorithm:?}");
        }
    }
}

#[tokio::test]
async fn proxy_header_is_believed_only_from_trusted_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let proxy_auth = |trusted: &str| {
        Arc::new(ProxyHeaderAuth::new(
            "x-forwarded-user".parse().unwrap(),
            vec![trusted.parse().unwrap()],
        ))
    };
    let mut config = SignalConfig::new(dir.path().join("signal.db"), KITCHEN);
    config.browser_auth = proxy_auth("127.0.0.1");
    let harness = start_with(config).await;
    let as_user = |user: &str| {
        SignalClient::new(&harness.base_url())
            .unwrap()
            .with_header("x-forwarded-user", user)
            .unwrap()
    };
    let session = as_user("erin@example.com").create_session().await.unwrap();
    let id = session.session_id.as_str();
    as_user("erin@example.com")
        .post(&SignalMessage::offer(id, "v=0"))
        .await
        .unwrap();
    assert_eq!(
        status(
            as_user("frank@example.com")
                .poll(Some(id), 0)
                .await
                .unwrap_err()
        ),
        404
    );
    let no_header = SignalClient::new(&harness.base_url()).unwrap();
    assert_eq!(status(no_header.create_session().await.unwrap_err()), 401);

    // The same header from an address that is not a trusted proxy.
    let dir = tempfile::tempdir().unwrap();
    let mut config = SignalConfig::new(dir.path().join("signal.db"), KITCHEN);
    config.browser_auth = proxy_auth("10.0.0.0/8");
    let untrusted = start_with(config).await;
    let err = SignalClient::new(&untrusted.base_url())
        .unwrap()
        .with_header("x-forwarded-user", "erin@example.com")
        .unwrap()
        .create_session()
        .await
        .unwrap_err();
    assert_eq!(status(err), 401);
}
