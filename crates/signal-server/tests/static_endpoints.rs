//! `/healthz`, `/metrics` and `{base}/client.js`.

mod common;

use common::start;

#[tokio::test]
async fn healthz_metrics_and_client_js() {
    let harness = start(|config| config.base_path = "/jarvis-api/webrtc".into()).await;

    let response = reqwest::get(harness.url("/healthz")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");

    let response = reqwest::get(harness.url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    for series in [
        "beeline_sessions_created_total 0",
        "beeline_signals_total{type=\"offer\"} 0",
        "beeline_signals_total{type=\"answer\"} 0",
        "beeline_signals_total{type=\"candidate\"} 0",
        "beeline_signals_total{type=\"bye\"} 0",
        "beeline_longpolls_waiting 0",
        "beeline_relay_requests_total 0",
    ] {
        assert!(
            text.lines().any(|line| line == series),
            "{series} missing:\n{text}"
        );
    }

    let response = reqwest::get(harness.url("/jarvis-api/webrtc/client.js"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let served = response.text().await.unwrap();
    assert_eq!(served, include_str!("../assets/client.js"));
}
