//! What an embedder of the library can set: a zero sweep interval is
//! refused at open (it used to panic), `max_body_bytes = 0` turns the body
//! limit off as the documentation says (it used to refuse every body), the
//! CORS allow-list is the one validated at open (no second parse that
//! could drop an entry silently), and TURN URLs without a TURN secret are
//! refused at open (they used to be dropped with a warning).

mod common;

use std::time::Duration;

use beeline_signal_client::SignalMessage;
use beeline_signal_server::{OpenError, SignalConfig, SignalServer};
use common::{start, HOME_TOKEN};

#[tokio::test]
async fn a_zero_sweep_interval_is_refused_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SignalConfig::new(dir.path().join("s.db"), HOME_TOKEN);
    config.sweep_interval = Duration::ZERO;
    let error = SignalServer::open(config).await.unwrap_err();
    assert!(
        matches!(error, OpenError::InvalidSweepInterval),
        "{error:?}"
    );
    assert!(error.to_string().contains("sweep interval"), "{error}");
}

#[tokio::test]
async fn turn_urls_without_a_turn_secret_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SignalConfig::new(dir.path().join("s.db"), HOME_TOKEN);
    config.turn_urls = vec!["turn:turn.example.invalid".into()];
    assert!(matches!(
        config.validate(),
        Err(OpenError::TurnUrlsWithoutSecret)
    ));
    let error = SignalServer::open(config).await.unwrap_err();
    assert!(
        matches!(error, OpenError::TurnUrlsWithoutSecret),
        "{error:?}"
    );
    assert!(error.to_string().contains("TURN secret"), "{error}");
    // Nothing was opened.
    assert!(!dir.path().join("s.db").exists());
}

#[tokio::test]
async fn max_body_bytes_zero_turns_the_body_limit_off() {
    let harness = start(|config| {
        config.limits.max_body_bytes = 0;
        config.limits.max_sdp_bytes = 0;
    })
    .await;
    let browser = harness.browser();
    // An empty body (session), a small one and one past the default limit.
    let session = browser.create_session().await.unwrap();
    let big = format!("v=0\r\n{}", "a=x\r\n".repeat(40_000));
    assert!(big.len() > beeline_signal_server::MAX_BODY_BYTES);
    for sdp in ["v=0", big.as_str()] {
        browser
            .post(&SignalMessage::offer(&session.session_id, sdp))
            .await
            .unwrap();
    }
    let poll = harness.home().poll(None, 0).await.unwrap();
    assert_eq!(poll.messages.len(), 2);
    assert_eq!(poll.messages[1].sdp.as_deref(), Some(big.as_str()));
}

#[tokio::test]
async fn every_validated_cors_origin_is_allowed_and_a_bad_one_stops_open() {
    let origins = [
        "https://app.example.com",
        "http://127.0.0.1:5173",
        "https://other.example:8443",
    ];
    let harness = start(|config| {
        config.cors_origins = origins.iter().map(|o| (*o).to_owned()).collect();
    })
    .await;
    let http = reqwest::Client::new();
    for origin in origins {
        let preflight = http
            .request(reqwest::Method::OPTIONS, harness.url("/webrtc/session"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(
            preflight
                .headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap()),
            Some(origin),
            "{origin}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = SignalConfig::new(dir.path().join("s.db"), HOME_TOKEN);
    config.cors_origins = vec!["https://ok.example".into(), "ftp://nope".into()];
    let error = SignalServer::open(config).await.unwrap_err();
    assert!(
        matches!(error, OpenError::InvalidOrigin(ref o) if o == "ftp://nope"),
        "{error:?}"
    );
}
