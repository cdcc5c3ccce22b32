//! Oversized bodies and SDPs are refused with 413 and a JSON error, and an
//! oversized body is refused without being read to its end: a huge declared
//! length is refused before any of it arrives, and a streamed body as soon
//! as it passes the limit.

mod common;

use std::time::Duration;

use beeline_signal_client::{SignalError, SignalMessage};
use beeline_signal_server::MAX_BODY_BYTES;
use common::{expect_error, start};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// How long the server may take to answer a refused upload.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Sends `head` and then `body` over a raw connection, never finishing the
/// body, and returns the status line and JSON body the server answers with.
async fn send_unfinished(
    addr: std::net::SocketAddr,
    head: String,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close while we still write; that is the point.
    let _ = stream.write_all(body).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(ANSWER_WITHIN, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if let Some(end) = find(&answer, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if answer.len() >= end + 4 + length {
                    break;
                }
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no answer within {ANSWER_WITHIN:?}: the server waited for the body"
    );
    let end = find(&answer, b"\r\n\r\n").expect("a complete response head");
    let head = String::from_utf8_lossy(&answer[..end]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let json = serde_json::from_slice(&answer[end + 4..]).unwrap();
    (status, json)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn huge_declared_length_is_refused_before_the_body_arrives() {
    let harness = start(|_| {}).await;
    // Claims a gigabyte, sends 100 bytes, and waits.
    let head = format!(
        "POST /webrtc/signal HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n",
        harness.addr
    );
    let (status, json) = send_unfinished(harness.addr, head, &[b' '; 100]).await;
    assert_eq!(status, 413);
    assert_eq!(
        json["error"],
        format!("request body is larger than {MAX_BODY_BYTES} bytes")
    );
    assert_eq!(
        harness
            .metric("beeline_limit_rejections_total{limit=\"body-size\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn streamed_body_is_refused_once_past_the_limit_without_its_end() {
    let harness = start(|_| {}).await;
    let head = format!(
        "POST /webrtc/session HTTP/1.1\r\nhost: {}\r\ntransfer-encoding: chunked\r\n\r\n",
        harness.addr
    );
    // 80 KiB in 8 KiB chunks, and never the final zero-length chunk.
    let mut body = Vec::new();
    for _ in 0..10 {
        body.extend_from_slice(b"2000\r\n");
        body.extend_from_slice(&[b' '; 0x2000]);
        body.extend_from_slice(b"\r\n");
    }
    let (status, json) = send_unfinished(harness.addr, head, &body).await;
    assert_eq!(status, 413);
    assert!(
        json["error"].as_str().unwrap().contains("larger than"),
        "{json}"
    );
    assert_eq!(harness.metric("beeline_sessions_created_total").await, 0);
}

#[tokio::test]
async fn body_limit_is_exact_and_sdp_has_its_own_limit() {
    let harness = start(|config| config.limits.max_sdp_bytes = MAX_BODY_BYTES).await;
    let session = harness.browser().create_session().await.unwrap();

    // An offer whose JSON is one byte over the body limit.
    let envelope = serde_json::to_vec(&SignalMessage::offer(&session.session_id, "")).unwrap();
    let sdp = "a".repeat(MAX_BODY_BYTES + 1 - envelope.len());
    let body = serde_json::to_vec(&SignalMessage::offer(&session.session_id, sdp)).unwrap();
    assert_eq!(body.len(), MAX_BODY_BYTES + 1);
    let response = reqwest::Client::new()
        .post(harness.url("/webrtc/signal"))
        .header("content-type", "application/json")
        .body(body)
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

#[tokio::test]
async fn sdp_over_its_limit_is_413() {
    let harness = start(|config| config.limits.max_sdp_bytes = 1000).await;
    let session = harness.browser().create_session().await.unwrap();
    harness
        .browser()
        .post(&SignalMessage::offer(&session.session_id, "v".repeat(1000)))
        .await
        .unwrap();
    let err = harness
        .browser()
        .post(&SignalMessage::offer(&session.session_id, "v".repeat(1001)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SignalError::Http { status: 413, message } if message.contains("sdp is 1001 bytes; the limit is 1000")),
        "{err:?}"
    );
    assert_eq!(
        harness
            .metric("beeline_limit_rejections_total{limit=\"sdp-size\"}")
            .await,
        1
    );
}
