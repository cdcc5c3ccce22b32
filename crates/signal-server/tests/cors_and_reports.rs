//! Cross-origin calls need the origin on the allow-list; the browser's
//! outcome reports are counted in `/metrics`.

mod common;

use beeline_signal_client::{ConnectionOutcome, ConnectionReport, SignalError};
use common::{expect_error, start};

const APP: &str = "https://app.example.com";

#[tokio::test]
async fn listed_origins_get_cors_headers_and_others_are_refused() {
    let harness = start(|config| config.cors_origins = vec![APP.to_owned()]).await;
    let http = reqwest::Client::new();
    let session_url = harness.url("/webrtc/session");

    // Preflight from the listed origin.
    let preflight = http
        .request(reqwest::Method::OPTIONS, &session_url)
        .header("origin", APP)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, authorization",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], APP);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert!(headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));

    // The real request from the listed origin.
    let created = http
        .post(&session_url)
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    assert_eq!(created.headers()["access-control-allow-origin"], APP);

    // Another site is refused outright, even for simple requests that a
    // browser would send without a preflight (and with cookies).
    let foreign = http
        .post(&session_url)
        .header("origin", "https://evil.example")
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert!(foreign
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let message = expect_error(foreign, 403).await;
    assert!(message.contains("https://evil.example"), "{message}");

    // The server's own origin needs no listing.
    let own = http
        .post(&session_url)
        .header("origin", format!("http://{}", harness.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    assert_eq!(harness.metric("beeline_sessions_created_total").await, 2);
}

#[tokio::test]
async fn without_an_allow_list_only_the_own_origin_may_call() {
    let harness = start(|_| {}).await;
    let http = reqwest::Client::new();
    let refused = http
        .post(harness.url("/webrtc/session"))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    expect_error(refused, 403).await;
    let preflight = http
        .request(reqwest::Method::OPTIONS, harness.url("/webrtc/session"))
        .header("origin", APP)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(preflight
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[tokio::test]
async fn reports_are_counted_by_outcome_reason_and_setup_time() {
    let harness = start(|_| {}).await;
    let browser = harness.browser();
    let session = browser.create_session().await.unwrap().session_id;
    let report = |outcome, reason: Option<&str>, setup_ms| ConnectionReport {
        outcome,
        reason: reason.map(str::to_owned),
        detail: Some("no direct channel within 8000 ms".into()),
        setup_ms: Some(setup_ms),
        session_id: Some(session.clone()),
    };
    browser
        .report(&report(ConnectionOutcome::Direct, None, 180.0))
        .await
        .unwrap();
    browser
        .report(&report(ConnectionOutcome::RelayCandidate, None, 650.0))
        .await
        .unwrap();
    browser
        .report(&report(
            ConnectionOutcome::Fallback,
            Some("timeout"),
            8000.0,
        ))
        .await
        .unwrap();
    browser
        .report(&report(
            ConnectionOutcome::Fallback,
            Some("something new"),
            20.0,
        ))
        .await
        .unwrap();

    for (series, value) in [
        ("beeline_connection_outcomes_total{outcome=\"direct\"}", 1),
        (
            "beeline_connection_outcomes_total{outcome=\"relay-candidate\"}",
            1,
        ),
        ("beeline_connection_outcomes_total{outcome=\"fallback\"}", 2),
        ("beeline_connection_fallbacks_total{reason=\"timeout\"}", 1),
        ("beeline_connection_fallbacks_total{reason=\"other\"}", 1),
        (
            "beeline_connection_setup_seconds_bucket{outcome=\"direct\",le=\"0.25\"}",
            1,
        ),
        (
            "beeline_connection_setup_seconds_count{outcome=\"fallback\"}",
            2,
        ),
    ] {
        assert_eq!(harness.metric(series).await, value, "{series}");
    }

    // sendBeacon's text/plain body is accepted too.
    let beacon = reqwest::Client::new()
        .post(harness.url("/webrtc/report"))
        .header("content-type", "text/plain;charset=UTF-8")
        .body(r#"{"outcome":"direct","setup_ms":90}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(beacon.status(), 204);

    // Bad reports and home peers are refused.
    let http = reqwest::Client::new();
    for body in [
        r#"{"outcome":"teleported"}"#,
        r#"{"outcome":"direct","setup_ms":-1}"#,
        r#"{"reason":"timeout"}"#,
    ] {
        let response = http
            .post(harness.url("/webrtc/report"))
            .body(body)
            .send()
            .await
            .unwrap();
        expect_error(response, 400).await;
    }
    let err = harness
        .home()
        .report(&report(ConnectionOutcome::Direct, None, 1.0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SignalError::Http { status: 403, .. }),
        "{err:?}"
    );
    assert_eq!(
        harness
            .metric("beeline_connection_outcomes_total{outcome=\"direct\"}")
            .await,
        2
    );
}
