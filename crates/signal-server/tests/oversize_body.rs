//! Bodies over 64 KiB are refused with 413 before they are parsed.

mod common;

use beeline_signal_client::SignalMessage;
use beeline_signal_server::MAX_BODY_BYTES;
use common::{expect_error, start};

#[tokio::test]
async fn body_over_64_kib_is_413() {
    let harness = start(|_| {}).await;
    let session = harness.browser().create_session().await.unwrap();
    assert_eq!(MAX_BODY_BYTES, 64 * 1024);

    // An offer whose JSON is one byte over the limit.
    let envelope = serde_json::to_vec(&SignalMessage::offer(&session.session_id, "")).unwrap();
    let sdp = "a".repeat(MAX_BODY_BYTES + 1 - envelope.len());
    let body = serde_json::to_vec(&SignalMessage::offer(&session.session_id, sdp)).unwrap();
    assert_eq!(body.len(), MAX_BODY_BYTES + 1);

    let http = reqwest::Client::new();
    let response = http
        .post(harness.url("/webrtc/signal"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    expect_error(response, 413).await;

    // Streamed without a Content-Length, the limit still holds.
    let chunks = (0..2).map(|_| Ok::<_, std::io::Error>(vec![b' '; 40 * 1024]));
    let response = http
        .post(harness.url("/webrtc/session"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    expect_error(response, 413).await;

    // Exactly at the limit is fine.
    let sdp = "a".repeat(MAX_BODY_BYTES - envelope.len());
    let at_limit = SignalMessage::offer(&session.session_id, sdp);
    assert_eq!(serde_json::to_vec(&at_limit).unwrap().len(), MAX_BODY_BYTES);
    harness.browser().post(&at_limit).await.unwrap();
}
