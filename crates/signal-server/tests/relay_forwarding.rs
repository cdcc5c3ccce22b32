//! What the relay tells the home service, checked against a real home
//! service built on Python's `http.server` (`tests/upstreams/plain_upstream.py`,
//! which reads only `Content-Length` bodies and logs every request it gets):
//!
//! - a body of known length arrives with that `Content-Length` and intact;
//!   only a body of unknown length (chunked from the client) goes chunked;
//! - the forwarding headers are the relay's own and true; no client-sent
//!   copy of a forwarding or identity header, in any spelling, gets through;
//! - the upstream's path prefix cannot be escaped with `..` in any encoding.
//!
//! Hostile requests are written by hand on a raw TCP connection, so the test
//! sees exactly what a client can send.

mod common;

use std::{path::PathBuf, process::Stdio, time::Duration};

use base64::Engine as _;
use common::{start, Harness};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::TcpStream,
    process::{Child, Command},
};

/// The Python home service, killed when dropped, and its request log.
struct PlainUpstream {
    port: u16,
    log: PathBuf,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl PlainUpstream {
    async fn start() -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/upstreams/plain_upstream.py");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.jsonl");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--host", "127.0.0.1", "--port", "0", "--log"])
            .arg(&log)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs tests/upstreams/plain_upstream.py");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("plain_upstream.py did not start")
        .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Self {
            port,
            log,
            _child: child,
            _dir: dir,
        }
    }

    /// The upstream URL with `path` as its prefix (e.g. `/` or `/api/`).
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request the home service has received so far.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

/// Every value the home service saw for header `name` (any case), in order.
fn header_values(request: &Value, name: &str) -> Vec<String> {
    request["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|pair| pair[1].as_str().unwrap().to_owned())
        .collect()
}

/// A relay in front of a fresh Python home service at `prefix`.
async fn relay_to(
    prefix: &str,
    configure: impl FnOnce(&mut beeline_signal_server::SignalConfig),
) -> (Harness, PlainUpstream) {
    let upstream = PlainUpstream::start().await;
    let url = upstream.url(prefix);
    let harness = start(move |config| {
        config.relay_upstream = Some(url);
        configure(config);
    })
    .await;
    (harness, upstream)
}

/// Sends `head` (request line and headers, without the blank line; a
/// `Connection: close` is added) and `body` as they are, and returns the
/// status code and body of the answer.
async fn raw_request(harness: &Harness, head: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(harness.addr).await.unwrap();
    let mut request = format!("{head}\r\nConnection: close\r\n\r\n").into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the relay answered in time")
        .unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&answer)));
    let status_line = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {status_line:?}"));
    (status, answer[split + 4..].to_vec())
}

/// A few hundred KB of bytes that are not all alike (every byte value,
/// no repeating pattern a short-body bug could hide behind).
fn test_body(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect()
}

#[tokio::test]
async fn a_body_arrives_with_its_length_and_only_an_unknown_length_goes_chunked() {
    let (harness, upstream) = relay_to("/", |_| {}).await;
    let body = test_body(300 * 1024);

    let response = reqwest::Client::new()
        .post(harness.url("/upload?kind=blob"))
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let requests = upstream.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let seen = &requests[0];
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/upload?kind=blob");
    assert_eq!(
        seen["chunked"], false,
        "sent chunked: {:?}",
        seen["headers"]
    );
    assert!(
        header_values(seen, "transfer-encoding").is_empty(),
        "{:?}",
        seen["headers"]
    );
    assert_eq!(
        header_values(seen, "content-length"),
        [body.len().to_string()]
    );
    assert_eq!(seen["body_len"], body.len());
    let arrived = base64::engine::general_purpose::STANDARD
        .decode(seen["body_b64"].as_str().unwrap())
        .unwrap();
    assert!(arrived == body, "the body arrived changed");

    // Written by hand: a PUT with a Content-Length, and an empty POST.
    let (status, _) = raw_request(
        &harness,
        &format!(
            "PUT /doc HTTP/1.1\r\nHost: {}\r\nContent-Length: 11",
            harness.addr
        ),
        b"hello world",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = raw_request(
        &harness,
        &format!(
            "POST /empty HTTP/1.1\r\nHost: {}\r\nContent-Length: 0",
            harness.addr
        ),
        b"",
    )
    .await;
    assert_eq!(status, 200);
    // The length is the relay's to state, from the body it forwards, not
    // the client's header copied through: a `Connection` header naming it as
    // hop-by-hop (which used to strip it, so the body went chunked and
    // http.server read nothing) or the header repeated still reach the home
    // service as one plain length.
    for (i, framing) in [
        "Content-Length: 11\r\nContent-Length: 11",
        "Connection: content-length\r\nContent-Length: 11",
    ]
    .iter()
    .enumerate()
    {
        let (status, body) = raw_request(
            &harness,
            &format!(
                "PUT /framing/{i} HTTP/1.1\r\nHost: {}\r\n{framing}",
                harness.addr
            ),
            b"hello world",
        )
        .await;
        assert_eq!(status, 200, "{framing}: {}", String::from_utf8_lossy(&body));
    }

    let requests = upstream.requests();
    assert_eq!(requests.len(), 5, "{requests:?}");
    assert_eq!(requests[2]["path"], "/empty");
    assert_eq!(requests[2]["chunked"], false);
    assert_eq!(requests[2]["body_len"], 0);
    for seen in [&requests[1], &requests[3], &requests[4]] {
        assert_eq!(seen["body_b64"], "aGVsbG8gd29ybGQ=", "{seen}");
        assert_eq!(header_values(seen, "content-length"), ["11"], "{seen}");
        assert_eq!(seen["chunked"], false, "{seen}");
    }

    // Only a body whose length nobody knows goes chunked.
    let (status, _) = raw_request(
        &harness,
        &format!(
            "POST /stream HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked",
            harness.addr
        ),
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    // http.server answers without reading a chunked body and closes the
    // connection, so the relay's write of that body may meet a closed
    // socket (502) before it reads the answer (200): that is the upstream's
    // limit. What it was sent is in its log either way.
    assert!(status == 200 || status == 502, "{status}");
    let requests = upstream.requests();
    assert_eq!(requests.len(), 6, "{requests:?}");
    assert_eq!(requests[5]["chunked"], true, "{:?}", requests[5]["headers"]);
    assert!(header_values(&requests[5], "content-length").is_empty());
}

/// A request from a client that tries every way of telling the home service
/// who it is.
fn spoofing_head(harness: &Harness, path: &str) -> String {
    [
        format!("GET {path} HTTP/1.1"),
        format!("Host: {}", harness.addr),
        "X-Forwarded-For: 6.6.6.6".into(),
        "X-FORWARDED-FOR: 7.7.7.7".into(),
        "X-Forwarded-Proto: https".into(),
        "X-FORWARDED-PROTO: https".into(),
        "x-forwarded-host: evil.example".into(),
        "X-Forwarded-Port: 443".into(),
        "X-Forwarded-User: admin".into(),
        "x-forwarded-user: root".into(),
        "X-Forwarded-Email: admin@example.com".into(),
        "Forwarded: for=6.6.6.6;proto=https;host=evil.example".into(),
        "FORWARDED: for=7.7.7.7".into(),
        "X-Real-IP: 6.6.6.6".into(),
        "x-real-ip: 7.7.7.7".into(),
        "X-Auth-Request-User: admin".into(),
        "Remote-User: admin".into(),
        "X-Auth-Token: operator-named".into(),
        "X-Custom: kept".into(),
    ]
    .join("\r\n")
}

/// The headers a client may not set, none of which may reach the home
/// service (the relay's own `X-Forwarded-For/-Proto/-Host` are checked
/// separately).
const NEVER_ARRIVE: &[&str] = &[
    "x-forwarded-port",
    "x-forwarded-user",
    "x-forwarded-email",
    "forwarded",
    "x-real-ip",
    "x-auth-request-user",
    "remote-user",
    "x-auth-token",
];

#[tokio::test]
async fn the_home_service_is_told_the_truth_and_nothing_a_client_chose() {
    let (harness, upstream) = relay_to("/", |config| {
        config.strip_request_headers = vec!["X-Auth-Token".to_owned()];
    })
    .await;
    let (status, _) = raw_request(&harness, &spoofing_head(&harness, "/whoami"), b"").await;
    assert_eq!(status, 200);

    let requests = upstream.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let seen = &requests[0];
    assert_eq!(header_values(seen, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header_values(seen, "x-forwarded-proto"), ["http"]);
    assert_eq!(
        header_values(seen, "x-forwarded-host"),
        [harness.addr.to_string()]
    );
    for name in NEVER_ARRIVE {
        assert!(
            header_values(seen, name).is_empty(),
            "{name} arrived: {:?}",
            seen["headers"]
        );
    }
    assert_eq!(header_values(seen, "x-custom"), ["kept"]);
    // The home service is addressed by its own name, not the client's.
    assert_eq!(
        header_values(seen, "host"),
        [format!("127.0.0.1:{}", upstream.port)]
    );
}

#[tokio::test]
async fn a_trusted_proxy_says_who_the_client_is_and_whether_it_used_https() {
    let (harness, upstream) = relay_to("/", |config| {
        config.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    // What a fronting proxy on 127.0.0.1 sends: the chain it got from the
    // client (whose first entry the client made up) plus the client address
    // it saw, the scheme the client used and the client's `Host`; and, passed
    // through from the client, an `X-Forwarded-Host` and identity headers.
    let head = [
        "POST /behind-proxy HTTP/1.1".to_owned(),
        "Host: app.example.com".to_owned(),
        "X-Forwarded-For: 6.6.6.6, 203.0.113.7".to_owned(),
        "X-Forwarded-Proto: https".to_owned(),
        "X-Forwarded-Host: evil.example".to_owned(),
        "X-Forwarded-User: admin".to_owned(),
        "X-Real-IP: 203.0.113.7".to_owned(),
        "Content-Length: 2".to_owned(),
    ]
    .join("\r\n");
    let (status, _) = raw_request(&harness, &head, b"{}").await;
    assert_eq!(status, 200);

    let requests = upstream.requests();
    let seen = &requests[0];
    assert_eq!(
        header_values(seen, "x-forwarded-for"),
        ["203.0.113.7, 127.0.0.1"],
        "the chain starts at the client the trusted proxy saw and ends with the proxy"
    );
    assert_eq!(header_values(seen, "x-forwarded-proto"), ["https"]);
    // The host is the request's own: a proxy passes `Host` on, while an
    // `X-Forwarded-Host` it sends may be the client's copy passed through.
    assert_eq!(header_values(seen, "x-forwarded-host"), ["app.example.com"]);
    assert!(header_values(seen, "x-forwarded-user").is_empty());
    assert!(header_values(seen, "x-real-ip").is_empty());

    // The same headers from an address that is not a trusted proxy count
    // for nothing.
    let (harness, upstream) = relay_to("/", |config| {
        config.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    })
    .await;
    let (status, _) = raw_request(&harness, &head, b"{}").await;
    assert_eq!(status, 200);
    let requests = upstream.requests();
    let seen = &requests[0];
    assert_eq!(header_values(seen, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header_values(seen, "x-forwarded-proto"), ["http"]);
    assert_eq!(header_values(seen, "x-forwarded-host"), ["app.example.com"]);
}

#[tokio::test]
async fn the_upstream_path_prefix_cannot_be_escaped() {
    let (harness, upstream) = relay_to("/api/", |_| {}).await;
    for path in [
        "/../admin",
        "/%2e%2e/admin",
        "/%2E%2E/admin",
        "/.%2e/admin",
        "/x/..%2f..%2fadmin",
        "/x/../../admin",
        "/%252e%252e/admin",
        "/..\\admin",
        "//evil.example/admin",
    ] {
        let head = format!("GET {path} HTTP/1.1\r\nHost: {}", harness.addr);
        let (status, body) = raw_request(&harness, &head, b"").await;
        // What hyper lets through, the relay refuses with the server's usual
        // JSON error; what hyper refuses itself (a backslash) is a bare 400.
        // Either way nothing reaches the upstream.
        assert_eq!(status, 400, "{path}: {}", String::from_utf8_lossy(&body));
        if path.contains('\\') {
            continue;
        }
        let error: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("{path}: {}", String::from_utf8_lossy(&body)));
        assert!(
            error["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("request path refused")),
            "{path}: {error}"
        );
    }
    // Absolute-form targets are resolved the same way.
    let head = format!(
        "GET http://{0}/../admin HTTP/1.1\r\nHost: {0}",
        harness.addr
    );
    let (status, _) = raw_request(&harness, &head, b"").await;
    assert_eq!(status, 400);
    let requests = upstream.requests();
    assert!(requests.is_empty(), "escaped the prefix: {requests:?}");
    assert_eq!(harness.metric("beeline_relay_requests_total").await, 0);

    // Paths that stay inside are resolved there, and the query is untouched.
    for (path, arrives) in [
        ("/v1/models", "/api/v1/models"),
        ("/a/./b/../c?next=../../x", "/api/a/c?next=../../x"),
        ("/", "/api/"),
        ("/files/a%20b", "/api/files/a%20b"),
    ] {
        let head = format!("GET {path} HTTP/1.1\r\nHost: {}", harness.addr);
        let (status, _) = raw_request(&harness, &head, b"").await;
        assert_eq!(status, 200, "{path}");
        let requests = upstream.requests();
        assert_eq!(requests.last().unwrap()["path"], arrives, "{path}");
    }
    for request in upstream.requests() {
        let path = request["path"].as_str().unwrap();
        assert!(path.starts_with("/api/"), "{path}");
    }
}
