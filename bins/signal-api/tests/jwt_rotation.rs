//! Rotating browser-JWT keys with no restart (issue 13): with
//! `--jwt-jwks-file`, tokens are verified by the key their `kid` names; two
//! keys are accepted side by side, and removing one from the file refuses
//! its tokens within the reload interval while the other keeps working. A
//! future `nbf` and a lifetime over `--jwt-max-lifetime-secs` are refused.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::{command, Running, TOKEN};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(kid: Option<&str>, secret: &[u8], claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn jwks(keys: &[(&str, &[u8])]) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let keys: Vec<_> = keys
        .iter()
        .map(|(kid, secret)| json!({"kty": "oct", "kid": kid, "alg": "HS256", "k": b64.encode(secret)}))
        .collect();
    json!({ "keys": keys }).to_string()
}

async fn create_session(url: &str, token: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{url}/webrtc/session"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}

#[tokio::test]
async fn keys_rotate_by_kid_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new): (&[u8], &[u8]) = (b"the-old-signing-secret", b"the-new-signing-secret");
    let jwks_path = dir.path().join("keys.jwks");
    std::fs::write(&jwks_path, jwks(&[("old", old), ("new", new)])).unwrap();
    let mut cmd = command(dir.path());
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--home-token",
        TOKEN,
        "--browser-auth",
        "jwt",
        "--jwt-max-lifetime-secs",
        "3600",
    ])
    .arg("--jwt-jwks-file")
    .arg(&jwks_path);
    let mut running = Running::start(cmd);
    let url = running.bound_url();

    let claims = || json!({"sub": "alice", "iat": now(), "exp": now() + 300});
    let by_old = token(Some("old"), old, claims());
    let by_new = token(Some("new"), new, claims());
    assert_eq!(create_session(&url, &by_old).await.0, 200);
    assert_eq!(create_session(&url, &by_new).await.0, 200);

    // Signed by one key but naming the other, without a kid, or not valid yet.
    let (status, body) = create_session(&url, &token(Some("new"), old, claims())).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = create_session(&url, &token(None, new, claims())).await;
    assert_eq!(status, 401);
    assert!(body.contains("kid"), "{body}");
    let future = json!({"sub": "alice", "iat": now(), "nbf": now() + 600, "exp": now() + 900});
    let (status, body) = create_session(&url, &token(Some("new"), new, future)).await;
    assert_eq!(status, 401);
    assert!(body.contains("nbf"), "{body}");
    // A token that lives a week is refused by the lifetime cap.
    let long = json!({"sub": "alice", "iat": now(), "exp": now() + 7 * 86_400});
    let (status, body) = create_session(&url, &token(Some("new"), new, long)).await;
    assert_eq!(status, 401);
    assert!(body.contains("longer"), "{body}");

    // The old key leaves the file: its tokens are refused within the reload
    // interval, with no restart, and the new key's keep working.
    std::fs::write(&jwks_path, jwks(&[("new", new)])).unwrap();
    let start = Instant::now();
    loop {
        let (status, _) = create_session(&url, &by_old).await;
        if status == 401 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the old key is still accepted after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "old key refused {:?} after the file changed",
        start.elapsed()
    );
    assert_eq!(create_session(&url, &by_new).await.0, 200);

    // A broken file is logged and changes nothing.
    std::fs::write(&jwks_path, "{ not json").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(create_session(&url, &by_new).await.0, 200);

    let (clean, log) = running.terminate();
    assert!(clean, "{log:#?}");
    assert!(
        log.iter().any(|line| line.contains("JWT keys reloaded")),
        "{log:#?}"
    );
    assert!(
        log.iter().any(|line| line.contains("JWKS not reloaded")),
        "{log:#?}"
    );
}
