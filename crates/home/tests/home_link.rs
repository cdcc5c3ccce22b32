//! The home link (issue 11): signal-api relays the normal path through
//! home-peer's own WebSocket to it, with no `--relay-upstream`. Real
//! signal-server, real home services and the real link loop, on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Query;
use axum::routing::{get, post};
use axum::Router;
use beeline_bridge::HttpUpstream;
use beeline_home::{run_link, LinkStatus};
use beeline_signal_server::{HomeCredential, SignalConfig, SignalServer, DEFAULT_HOME};
use bytes::Bytes;
use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

mod common;
use common::{link_config, serve_signal, serve_signal_on, wait_for};

const TOKEN_A: &str = "token-of-home-a";
const TOKEN_B: &str = "token-of-home-b";

/// A home service that says which home it is, and streams.
fn home_service(name: &'static str) -> Router {
    Router::new()
        .route(
            "/who",
            get(move |uri: axum::http::Uri| async move { format!("{name} {uri}") }),
        )
        .route("/headers", get(common::echo_headers))
        .route(
            "/events",
            get(|Query(q): Query<Count>| async move {
                let stream = futures::stream::iter(0..q.n).then(|i| async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok::<_, std::io::Error>(Bytes::from(format!("data: {i}\n\n")))
                });
                (
                    [("content-type", "text/event-stream")],
                    Body::from_stream(stream),
                )
            }),
        )
        .route(
            "/bytes",
            get(|Query(q): Query<Count>| async move {
                let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                let stream = futures::stream::iter(0..q.n / (64 * 1024))
                    .map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
                Body::from_stream(stream)
            }),
        )
        .route(
            "/sha256",
            post(|body: Bytes| async move {
                let hex: String = Sha256::digest(&body)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                format!("{} {hex}", body.len())
            }),
        )
        .route(
            "/cookie",
            get(|| async { ([("set-cookie", "sid=1; Path=/; HttpOnly")], "set") }),
        )
        .route(
            "/ws/echo",
            get(move |ws: axum::extract::ws::WebSocketUpgrade| async move {
                ws.protocols(["chat.v1"])
                    .on_upgrade(move |socket| ws_echo(socket, name))
            }),
        )
        .route(
            "/ws/private",
            get(|| async { (axum::http::StatusCode::FORBIDDEN, "no") }),
        )
}

/// Echoes, prefixing text with the home's name; `close:<code>:<reason>`
/// makes it close.
async fn ws_echo(socket: axum::extract::ws::WebSocket, name: &'static str) {
    use axum::extract::ws::{CloseFrame, Message};
    use futures::SinkExt as _;
    let (mut tx, mut rx) = socket.split();
    while let Some(Ok(message)) = rx.next().await {
        let reply = match message {
            Message::Text(text) if text.starts_with("close:") => {
                let mut parts = text.splitn(3, ':').skip(1);
                let code = parts.next().unwrap_or("1000").parse().unwrap_or(1000);
                let reason = parts.next().unwrap_or("").to_owned();
                let _ = tx
                    .send(Message::Close(Some(CloseFrame {
                        code,
                        reason: reason.into(),
                    })))
                    .await;
                continue;
            }
            Message::Text(text) => Message::Text(format!("{name}: {text}").into()),
            Message::Close(_) => return,
            Message::Ping(_) | Message::Pong(_) => continue,
            other => other,
        };
        if tx.send(reply).await.is_err() {
            return;
        }
    }
}

#[derive(serde::Deserialize)]
struct Count {
    n: usize,
}

async fn serve_plain(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

struct Stack {
    origin: String,
    server: SignalServer,
    shutdown: CancellationToken,
    _db: tempfile::TempDir,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.server.shutdown();
    }
}

/// Two homes, `a` and `b`, each with its own service and its own link
/// (when `links` is true).
async fn two_homes(links: bool) -> Stack {
    let db = tempfile::tempdir().unwrap();
    let config = SignalConfig::with_homes(
        db.path().join("signal.db"),
        vec![
            HomeCredential::new("a", TOKEN_A),
            HomeCredential::new("b", TOKEN_B),
        ],
    );
    let server = SignalServer::open(config).await.unwrap();
    let origin = serve_signal(&server).await;
    let shutdown = CancellationToken::new();
    if links {
        for (name, token) in [("a", TOKEN_A), ("b", TOKEN_B)] {
            let service = serve_plain(home_service(name)).await;
            tokio::spawn(run_link(
                link_config(&origin, token),
                Arc::new(HttpUpstream::new(&service).unwrap()),
                Arc::new(LinkStatus::default()),
                shutdown.clone(),
            ));
        }
    }
    let stack = Stack {
        origin,
        server,
        shutdown,
        _db: db,
    };
    if links {
        // The server's view: its relay can reach both homes now.
        for home in ["a", "b"] {
            wait_for(|| stack.server.home_linked(home), Duration::from_secs(5)).await;
        }
    }
    stack
}

async fn session(http: &reqwest::Client, origin: &str, home: &str) -> String {
    let created: serde_json::Value = http
        .post(format!("{origin}/webrtc/session"))
        .json(&serde_json::json!({ "home": home }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["session_id"].as_str().unwrap().to_owned()
}

async fn metrics(http: &reqwest::Client, origin: &str) -> String {
    http.get(format!("{origin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_request_reaches_only_its_sessions_home() {
    let stack = two_homes(true).await;
    let http = reqwest::Client::new();
    let (sa, sb) = (
        session(&http, &stack.origin, "a").await,
        session(&http, &stack.origin, "b").await,
    );
    let who = |header: Option<&str>, query: &str| {
        let mut request = http.get(format!("{}/who{query}", stack.origin));
        if let Some(session) = header {
            request = request.header("x-beeline-session", session.to_owned());
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(who(Some(&sa), "").await, (200, "a /who".to_owned()));
    assert_eq!(who(Some(&sb), "?x=1").await, (200, "b /who?x=1".to_owned()));
    // The query-parameter form (what a browser WebSocket can send) is
    // taken out before the home sees the request.
    assert_eq!(
        who(None, &format!("?x=1&__beeline_session={sa}")).await,
        (200, "a /who?x=1".to_owned())
    );
    // With two homes and no default, a request must say whose it is; an
    // unknown session says nothing.
    let (status, body) = who(None, "").await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = who(Some("0123456789abcdef0123456789abcdef"), "").await;
    assert_eq!(status, 400);

    let text = metrics(&http, &stack.origin).await;
    assert!(
        text.contains("beeline_home_link_connected{home=\"a\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("beeline_home_link_connected{home=\"b\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("beeline_home_link_connects_total 2"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_with_a_wrong_token_is_refused() {
    let stack = two_homes(false).await;
    let status = Arc::new(LinkStatus::default());
    let service = serve_plain(home_service("intruder")).await;
    tokio::spawn(run_link(
        link_config(&stack.origin, "not-a-home-token"),
        Arc::new(HttpUpstream::new(&service).unwrap()),
        Arc::clone(&status),
        stack.shutdown.clone(),
    ));
    wait_for(|| status.failures() >= 1, Duration::from_secs(5)).await;
    assert!(!status.is_connected());
    assert_eq!(status.connects(), 0);

    let http = reqwest::Client::new();
    let text = metrics(&http, &stack.origin).await;
    assert!(text.contains("beeline_home_link_refused_total 1"), "{text}");
    assert!(
        text.contains("beeline_home_link_connected{home=\"a\"} 0"),
        "{text}"
    );
    // A browser of home a gets a clear 502, not the intruder's service.
    let sa = session(&http, &stack.origin, "a").await;
    let response = http
        .get(format!("{}/who", stack.origin))
        .header("x-beeline-session", sa)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body = response.text().await.unwrap();
    assert!(body.contains("not connected"), "{body}");
}

/// One home, one link: what the service is told, bodies both ways, and a
/// page that stops reading stalls only its own stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_relays_like_a_proxy_and_streams_stay_independent() {
    let db = tempfile::tempdir().unwrap();
    let server = SignalServer::open(SignalConfig::new(db.path().join("s.db"), TOKEN_A))
        .await
        .unwrap();
    let origin = serve_signal(&server).await;
    let service = serve_plain(home_service("only")).await;
    let status = Arc::new(LinkStatus::default());
    let shutdown = CancellationToken::new();
    tokio::spawn(run_link(
        link_config(&origin, TOKEN_A),
        Arc::new(HttpUpstream::new(&service).unwrap()),
        Arc::clone(&status),
        shutdown.clone(),
    ));
    wait_for(|| server.home_linked(DEFAULT_HOME), Duration::from_secs(5)).await;
    let http = reqwest::Client::new();

    // One home: no session needed. Forged forwarding headers are replaced.
    let headers = http
        .get(format!("{origin}/headers"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(headers.contains("x-forwarded-for: 127.0.0.1"), "{headers}");
    assert!(headers.contains("x-forwarded-proto: http"), "{headers}");
    assert!(!headers.contains("6.6.6.6"), "{headers}");

    // An upload arrives whole.
    let body: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let expected: String = Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let answer = http
        .post(format!("{origin}/sha256"))
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(answer, format!("{} {expected}", body.len()));

    // Set-Cookie comes back as it was, and the cookie mark is added.
    let response = http.get(format!("{origin}/cookie")).send().await.unwrap();
    assert_eq!(response.headers()["set-cookie"], "sid=1; Path=/; HttpOnly");
    assert_eq!(response.headers()["x-beeline-cookies-changed"], "1");

    // A page that stops reading a 64 MiB download...
    let stalled = http
        .get(format!("{origin}/bytes?n={}", 64 << 20))
        .send()
        .await
        .unwrap();
    assert_eq!(stalled.status(), 200);
    // ...does not hold up another page's event stream on the same link.
    let start = Instant::now();
    let events = http
        .get(format!("{origin}/events?n=100"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let received: Vec<&str> = events.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(received.len(), 100);
    assert_eq!(received[99], "data: 99");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    drop(stalled);
    shutdown.cancel();
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_comes_back_after_signal_api_restarts() {
    let db = tempfile::tempdir().unwrap();
    let db_path = db.path().join("s.db");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let origin = format!("http://{addr}");
    let server = SignalServer::open(SignalConfig::new(&db_path, TOKEN_A))
        .await
        .unwrap();
    serve_signal_on(&server, listener);
    let service = serve_plain(home_service("home")).await;
    let status = Arc::new(LinkStatus::default());
    let shutdown = CancellationToken::new();
    let config = link_config(&origin, TOKEN_A);
    let backoff_max = config.backoff_max;
    tokio::spawn(run_link(
        config,
        Arc::new(HttpUpstream::new(&service).unwrap()),
        Arc::clone(&status),
        shutdown.clone(),
    ));
    wait_for(|| server.home_linked(DEFAULT_HOME), Duration::from_secs(5)).await;

    server.shutdown();
    wait_for(|| !status.is_connected(), Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = SignalServer::open(SignalConfig::new(&db_path, TOKEN_A))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let restarted = Instant::now();
    serve_signal_on(&server, listener);
    // Back within its longest backoff (plus jitter and the handshake).
    wait_for(
        || status.connects() >= 2,
        backoff_max * 2 + Duration::from_secs(1),
    )
    .await;
    eprintln!(
        "link back {:?} after signal-api listened again",
        restarted.elapsed()
    );
    wait_for(|| server.home_linked(DEFAULT_HOME), Duration::from_secs(5)).await;
    let who = reqwest::get(format!("{origin}/who")).await.unwrap();
    assert_eq!(who.text().await.unwrap(), "home /who");
    shutdown.cancel();
    server.shutdown();
}

/// A browser WebSocket on the normal path, over the home link: messages
/// in order, subprotocol, close code, refusal, and the session's home only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_go_over_the_link_of_their_sessions_home() {
    use futures::SinkExt as _;
    use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};
    let stack = two_homes(true).await;
    let http = reqwest::Client::new();
    let sb = session(&http, &stack.origin, "b").await;
    let ws_origin = stack.origin.replacen("http://", "ws://", 1);

    let mut request = format!("{ws_origin}/ws/echo?__beeline_session={sb}")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "chat.v1".parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v1");
    for i in 0..1000u32 {
        socket
            .send(tungstenite::Message::Text(format!("{i}").into()))
            .await
            .unwrap();
        socket
            .send(tungstenite::Message::Binary(
                i.to_be_bytes().to_vec().into(),
            ))
            .await
            .unwrap();
    }
    for i in 0..1000u32 {
        let text = socket.next().await.unwrap().unwrap();
        assert_eq!(text, tungstenite::Message::Text(format!("b: {i}").into()));
        let binary = socket.next().await.unwrap().unwrap();
        assert_eq!(
            binary,
            tungstenite::Message::Binary(i.to_be_bytes().to_vec().into())
        );
    }
    // A 3 MiB message keeps its boundary and bytes: far larger than the
    // read buffer of every socket on the way (the page's, the home link's
    // two ends, home-peer's upstream socket) and than one link message, so
    // the bridge splits it.
    let big: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    socket
        .send(tungstenite::Message::Binary(big.clone().into()))
        .await
        .unwrap();
    match socket.next().await.unwrap().unwrap() {
        tungstenite::Message::Binary(data) => {
            assert!(data[..] == big[..], "the big message changed")
        }
        other => panic!("expected the big message back, got {other:?}"),
    }
    socket
        .send(tungstenite::Message::Text("close:4002:done".into()))
        .await
        .unwrap();
    let close = loop {
        match socket.next().await.unwrap().unwrap() {
            tungstenite::Message::Close(frame) => break frame.unwrap(),
            _ => continue,
        }
    };
    assert_eq!(u16::from(close.code), 4002);
    assert_eq!(close.reason.as_str(), "done");

    // A refusal is the home service's own status.
    match tokio_tungstenite::connect_async(format!("{ws_origin}/ws/private?__beeline_session={sb}"))
        .await
    {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|(_, r)| r.status())),
    }
    // No session with two homes: no WebSocket.
    match tokio_tungstenite::connect_async(format!("{ws_origin}/ws/echo")).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!("expected 400, got {:?}", other.map(|(_, r)| r.status())),
    }
}

/// When the home link drops (home-peer restarts), an open WebSocket is
/// closed at once with 1011, so the page can reconnect; a new one works
/// once the link is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_is_closed_when_the_link_drops() {
    use futures::SinkExt as _;
    use tokio_tungstenite::tungstenite;
    let db = tempfile::tempdir().unwrap();
    let server = SignalServer::open(SignalConfig::new(db.path().join("s.db"), TOKEN_A))
        .await
        .unwrap();
    let origin = serve_signal(&server).await;
    let service = serve_plain(home_service("home")).await;
    let start_link = |shutdown: CancellationToken| {
        tokio::spawn(run_link(
            link_config(&origin, TOKEN_A),
            Arc::new(HttpUpstream::new(&service).unwrap()),
            Arc::new(LinkStatus::default()),
            shutdown,
        ));
    };
    let first = CancellationToken::new();
    start_link(first.clone());
    wait_for(|| server.home_linked(DEFAULT_HOME), Duration::from_secs(5)).await;
    let ws_origin = origin.replacen("http://", "ws://", 1);
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("{ws_origin}/ws/echo"))
        .await
        .unwrap();
    socket.send("before".into()).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        tungstenite::Message::Text("home: before".into())
    );

    // home-peer goes away.
    first.cancel();
    let started = Instant::now();
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(tungstenite::Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close, got {other:?}"),
            }
        }
    })
    .await
    .expect("the page is told within 5 s");
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1011));
    eprintln!(
        "the page saw close 1011 {:?} after the link dropped",
        started.elapsed()
    );

    // It comes back; the page reconnects.
    let second = CancellationToken::new();
    start_link(second.clone());
    wait_for(|| server.home_linked(DEFAULT_HOME), Duration::from_secs(5)).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("{ws_origin}/ws/echo"))
        .await
        .unwrap();
    socket.send("after".into()).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        tungstenite::Message::Text("home: after".into())
    );
    second.cancel();
    server.shutdown();
}
