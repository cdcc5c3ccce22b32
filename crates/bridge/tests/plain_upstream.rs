//! What a home service built on Python's `http.server` (no chunked request
//! bodies) is told through the bridge: the exact body with its
//! `Content-Length`, true forwarding headers, no client-made identity, and
//! nothing outside the configured path prefix.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

mod common;

use base64::Engine as _;
use beeline_bridge::{
    serve, BridgeConfig, Channel as _, Client, ClientError, ClientHeaderFilter, ClientOptions,
    HttpUpstream,
};
use beeline_frame::v2::{Headers, RequestHead};
use beeline_frame::{decode_response, ResponseFrame};
use bytes::Bytes;
use common::{pipe, MemChannel, SendText as _};
use serde_json::Value;

/// The Python upstream as a child process, killed on drop.
struct Plain {
    child: Child,
    url: String,
    log: tempfile::NamedTempFile,
}

impl Drop for Plain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Plain {
    fn start() -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/upstreams/plain_upstream.py"
        );
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--log")
            .arg(log.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs tests/upstreams/plain_upstream.py");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .expect("listening <port>");
        let url = format!("http://127.0.0.1:{port}");
        Self { child, url, log }
    }

    /// The path of every request the upstream saw, oldest first.
    fn paths(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| r["path"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Every request the upstream saw, oldest first.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.log.path())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Header values as the upstream saw them: every copy, names lowercased.
fn seen(record: &Value, name: &str) -> Vec<String> {
    record["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap().to_owned())
        .collect()
}

fn config() -> BridgeConfig {
    BridgeConfig {
        peer_addr: Some("198.51.100.7".into()),
        client_headers: ClientHeaderFilter::new(["X-Auth-Token"]),
        ..Default::default()
    }
}

fn start(upstream: &str, config: BridgeConfig) -> MemChannel {
    let (client, server) = pipe(64 * 1024);
    let upstream = Arc::new(HttpUpstream::new(upstream).unwrap());
    tokio::spawn(serve(Arc::new(server), upstream, config));
    client
}

async fn v2_client(upstream: &str) -> Client<MemChannel> {
    let channel = Arc::new(start(upstream, config()));
    Client::connect(channel, ClientOptions::default())
        .await
        .unwrap()
}

fn body_of(pieces: Vec<Bytes>) -> beeline_bridge::BodyStream {
    use futures::StreamExt as _;
    futures::stream::iter(pieces.into_iter().map(Ok)).boxed()
}

fn head(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestHead {
    RequestHead {
        method: method.into(),
        path: path.into(),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Headers>(),
        ..Default::default()
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn a_v1_body_arrives_whole_with_its_length() {
    let plain = Plain::start();
    let client = start(&plain.url, config());
    let body = pattern(40_000);
    let frame = serde_json::json!({
        "id": "r1", "method": "POST", "path": "/v1/chat",
        "headers": {"content-type": "application/octet-stream"},
        "body": base64::engine::general_purpose::STANDARD.encode(&body),
    });
    client.send_text(frame.to_string()).await.unwrap();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), client.recv())
            .await
            .unwrap()
            .unwrap();
        if let Some(ResponseFrame::Done { status, .. }) = decode_response(&msg.data).unwrap() {
            assert_eq!(status, 200);
            break;
        }
    }
    let requests = plain.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r["chunked"], false, "{r}");
    assert_eq!(seen(r, "content-length"), vec![body.len().to_string()]);
    assert_eq!(r["body_len"], body.len());
    assert_eq!(r["body_sha256"], sha256_hex(&body));
}

#[tokio::test]
async fn a_declared_v2_body_arrives_whole_with_its_length() {
    let plain = Plain::start();
    let client = v2_client(&plain.url).await;
    for (len, pieces) in [(5usize, 1usize), (70_000, 3), (600_000, 10)] {
        let body = pattern(len);
        let chunks: Vec<Bytes> = body
            .chunks(len.div_ceil(pieces))
            .map(Bytes::copy_from_slice)
            .collect();
        let n = len.to_string();
        let response = client
            .send(
                head("PUT", "/upload", &[("Content-Length", &n)]),
                Some(body_of(chunks)),
            )
            .await
            .unwrap();
        assert_eq!(response.status, 200);
        let echo: Value = serde_json::from_slice(&response.body.collect().await.unwrap()).unwrap();
        assert_eq!(echo["chunked"], false, "{echo}");
        assert_eq!(seen(&echo, "content-length"), vec![n]);
        assert_eq!(echo["body_sha256"], sha256_hex(&body));
    }
}

#[tokio::test]
async fn an_undeclared_body_goes_chunked_and_an_empty_post_says_zero() {
    let plain = Plain::start();
    let client = v2_client(&plain.url).await;
    let response = client
        .send(
            head("POST", "/stream", &[]),
            Some(body_of(vec![Bytes::from_static(b"abc")])),
        )
        .await
        .unwrap();
    let echo: Value = serde_json::from_slice(&response.body.collect().await.unwrap()).unwrap();
    assert_eq!(echo["chunked"], true, "{echo}");
    assert!(seen(&echo, "content-length").is_empty());

    let response = client
        .send(head("POST", "/empty", &[]), None)
        .await
        .unwrap();
    let echo: Value = serde_json::from_slice(&response.body.collect().await.unwrap()).unwrap();
    assert_eq!(
        seen(&echo, "content-length"),
        vec!["0".to_owned()],
        "{echo}"
    );
    let response = client.send(head("GET", "/get", &[]), None).await.unwrap();
    let echo: Value = serde_json::from_slice(&response.body.collect().await.unwrap()).unwrap();
    assert!(seen(&echo, "content-length").is_empty(), "{echo}");
}

#[tokio::test]
async fn a_body_that_misses_its_length_never_reaches_the_upstream() {
    let plain = Plain::start();
    let client = v2_client(&plain.url).await;
    let cases: [(&str, Vec<Bytes>); 4] = [
        ("10", vec![Bytes::from_static(b"short")]),
        ("3", vec![Bytes::from_static(b"too long")]),
        (
            "3",
            vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")],
        ),
        ("x", vec![Bytes::from_static(b"abc")]),
    ];
    for (declared, pieces) in cases {
        let outcome = client
            .send(
                head("POST", "/mismatch", &[("content-length", declared)]),
                Some(body_of(pieces)),
            )
            .await;
        match outcome {
            Err(ClientError::Stream { code, .. }) => assert_eq!(code, "bad_request"),
            Err(other) => panic!("declared {declared}: {other}"),
            Ok(r) => panic!("declared {declared}: answered {}", r.status),
        }
    }
    // Two spellings that disagree are refused too.
    let outcome = client
        .send(
            head(
                "POST",
                "/mismatch",
                &[("content-length", "3"), ("Content-Length", "4")],
            ),
            Some(body_of(vec![Bytes::from_static(b"abc")])),
        )
        .await;
    assert!(
        matches!(outcome, Err(ClientError::Stream { ref code, .. }) if code == "bad_request"),
        "conflicting lengths"
    );
    // A well-formed request on the same channel still works afterwards.
    let response = client.send(head("GET", "/after", &[]), None).await.unwrap();
    assert_eq!(response.status, 200);
    response.body.collect().await.unwrap();
    assert_eq!(plain.paths(), vec!["/after"]);
}

#[tokio::test]
async fn forwarding_headers_are_the_homes_own_and_identity_cannot_be_forged() {
    let plain = Plain::start();
    let client = v2_client(&plain.url).await;
    let forged = [
        ("Host", "app.example"),
        ("X-Forwarded-For", "10.9.9.9"),
        ("x-forwarded-for", "10.8.8.8"),
        ("X-Forwarded-Proto", "https"),
        ("X-FORWARDED-PROTO", "gopher"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-User", "admin"),
        ("x-forwarded-user", "root"),
        ("X-Real-IP", "10.7.7.7"),
        ("Forwarded", "for=10.6.6.6;proto=https"),
        ("X-Auth-Token", "operator-named"),
        ("x-auth-token", "second spelling"),
        ("X-Request-Id", "kept"),
    ];
    let mut h = head("GET", "/whoami", &forged);
    h.scheme = Some("http".into());
    let response = client.send(h, None).await.unwrap();
    let echo: Value = serde_json::from_slice(&response.body.collect().await.unwrap()).unwrap();
    assert_eq!(
        seen(&echo, "x-forwarded-for"),
        vec!["198.51.100.7"],
        "{echo}"
    );
    assert_eq!(seen(&echo, "x-forwarded-proto"), vec!["http"], "{echo}");
    assert_eq!(
        seen(&echo, "x-forwarded-host"),
        vec!["app.example"],
        "{echo}"
    );
    for gone in ["x-forwarded-user", "x-real-ip", "forwarded", "x-auth-token"] {
        assert!(seen(&echo, gone).is_empty(), "{gone} arrived: {echo}");
    }
    assert_eq!(seen(&echo, "x-request-id"), vec!["kept"]);

    // No scheme stated: the channel is encrypted, so `https`.
    let response = client.send(head("GET", "/", &[]), None).await.unwrap();
    let echo: Value = serde_json::from_slice(&response.body.collect().await.unwrap()).unwrap();
    assert_eq!(seen(&echo, "x-forwarded-proto"), vec!["https"], "{echo}");
}

#[tokio::test]
async fn the_upstream_prefix_cannot_be_left() {
    let plain = Plain::start();
    let client = v2_client(&format!("{}/api/", plain.url)).await;
    for escape in [
        "/../admin",
        "/%2e%2e/admin",
        "/%2E%2E/admin",
        "/.%2e/admin",
        "/x/..%2f..%2fadmin",
        "/a/../../admin",
    ] {
        let outcome = client.send(head("GET", escape, &[]), None).await;
        assert!(
            matches!(outcome, Err(ClientError::Stream { ref code, .. }) if code == "bad_request"),
            "{escape}"
        );
    }
    let response = client
        .send(head("GET", "/v1/../models?x=..", &[]), None)
        .await
        .unwrap();
    response.body.collect().await.unwrap();
    assert_eq!(plain.paths(), vec!["/api/models?x=.."]);
}
