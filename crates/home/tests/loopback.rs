//! The loopback listener (issue 14): a session on the home's network gets
//! the listener's URL and a ticket from signal-api; with it, requests,
//! streams and WebSockets reach the home service over loopback; without
//! it, or from another origin or host name, nothing reaches the home
//! service. Real signal-server, real link loop, real home service, on
//! loopback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::routing::{any, get};
use axum::Router;
use beeline_bridge::{BridgeConfig, HttpUpstream};
use beeline_home::{
    bind_loopback, run_link, serve_loopback, LinkConfig, LinkStatus, LoopbackConfig, LoopbackError,
    LoopbackKey,
};
use beeline_signal_server::{LoopbackOffer, SignalConfig, SignalServer};
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "loopback-home-token";
const PAGE: &str = "http://page.test:8080";

mod common;

/// The home service; counts every request it sees.
fn home_service(seen: Arc<AtomicUsize>) -> Router {
    let count = move |seen: Arc<AtomicUsize>| {
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let seen = Arc::clone(&seen);
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                next.run(request).await
            }
        }
    };
    Router::new()
        .route("/headers", any(common::echo_headers))
        .route(
            "/events",
            get(|| async {
                let stream = futures::stream::iter(0..20).then(|i| async move {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Ok::<_, std::io::Error>(Bytes::from(format!("data: {i}\n\n")))
                });
                (
                    [("content-type", "text/event-stream")],
                    Body::from_stream(stream),
                )
            }),
        )
        .route(
            "/echo",
            axum::routing::post(|body: Bytes| async move { body }),
        )
        .route(
            "/ws/echo",
            get(|ws: axum::extract::ws::WebSocketUpgrade| async move {
                ws.protocols(["chat.v1"]).on_upgrade(|socket| async move {
                    let (mut tx, mut rx) = socket.split();
                    while let Some(Ok(message)) = rx.next().await {
                        use axum::extract::ws::Message;
                        let reply = match message {
                            Message::Text(text) => Message::Text(format!("echo: {text}").into()),
                            Message::Binary(data) => Message::Binary(data),
                            Message::Close(_) => return,
                            _ => continue,
                        };
                        if tx.send(reply).await.is_err() {
                            return;
                        }
                    }
                })
            }),
        )
        .layer(axum::middleware::from_fn(count(seen)))
}

struct Home {
    signal: String,
    loopback: SocketAddr,
    seen: Arc<AtomicUsize>,
    server: SignalServer,
    shutdown: CancellationToken,
    _db: tempfile::TempDir,
}

impl Drop for Home {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.server.shutdown();
    }
}

async fn home(offer: LoopbackOffer) -> Home {
    let db = tempfile::tempdir().unwrap();
    let mut config = SignalConfig::new(db.path().join("signal.db"), TOKEN);
    config.loopback = offer;
    let server = SignalServer::open(config).await.unwrap();
    let signal = common::serve_signal(&server).await;

    let seen = Arc::new(AtomicUsize::new(0));
    let service = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_url = format!("http://{}", service.local_addr().unwrap());
    let app = home_service(Arc::clone(&seen));
    tokio::spawn(async move { axum::serve(service, app).await.unwrap() });
    let upstream = Arc::new(HttpUpstream::new(&service_url).unwrap());

    let shutdown = CancellationToken::new();
    let home_name = Arc::default();
    let listener = bind_loopback("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let loopback = listener.local_addr().unwrap();
    tokio::spawn(serve_loopback(
        listener,
        Arc::clone(&upstream),
        LoopbackConfig {
            key: LoopbackKey::from_home_token(TOKEN),
            home: Arc::clone(&home_name),
            origins: vec![PAGE.to_owned()],
            bridge: BridgeConfig::default(),
            max_streams_per_session: 8,
            max_sessions: 4,
            session_idle: Duration::from_secs(60),
            cookie_key: None,
        },
        shutdown.clone(),
    ));
    let status = Arc::new(LinkStatus::default());
    tokio::spawn(run_link(
        LinkConfig {
            loopback_url: Some(format!("http://{loopback}")),
            home_name,
            ..common::link_config(&signal, TOKEN)
        },
        upstream,
        Arc::clone(&status),
        shutdown.clone(),
    ));
    common::wait_for(
        || server.home_linked(beeline_signal_server::DEFAULT_HOME),
        Duration::from_secs(5),
    )
    .await;
    Home {
        signal,
        loopback,
        seen,
        server,
        shutdown,
        _db: db,
    }
}

async fn session(http: &reqwest::Client, home: &Home) -> serde_json::Value {
    http.post(format!("{}/webrtc/session", home.signal))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_on_the_home_network_reaches_the_service_over_loopback() {
    let home = home(LoopbackOffer::SameNetwork).await;
    let http = http();
    let created = session(&http, &home).await;
    let offer = &created["loopback"];
    assert_eq!(
        offer["url"],
        format!("http://{}", home.loopback),
        "{created}"
    );
    let ticket = offer["ticket"].as_str().unwrap();
    let url = offer["url"].as_str().unwrap();

    // The probe: the home's name and the proof signal-api predicted.
    let probe = http
        .get(format!("{url}/.beeline/probe"))
        .header("x-beeline-ticket", ticket)
        .header("origin", PAGE)
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 204);
    assert_eq!(
        probe.headers()["x-beeline-home"],
        created["home"].as_str().unwrap()
    );
    assert_eq!(
        probe.headers()["x-beeline-proof"],
        offer["proof"].as_str().unwrap()
    );
    assert_eq!(probe.headers()["access-control-allow-origin"], PAGE);
    assert_eq!(
        home.seen.load(Ordering::SeqCst),
        0,
        "a probe is not a request"
    );

    // A request: the service sees it from 127.0.0.1, without the ticket.
    let response = http
        .get(format!("{url}/headers"))
        .header("x-beeline-ticket", ticket)
        .header("origin", PAGE)
        .header("x-forwarded-for", "6.6.6.6")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], PAGE);
    let seen_headers = response.text().await.unwrap();
    assert!(
        seen_headers.contains("x-forwarded-for: 127.0.0.1"),
        "{seen_headers}"
    );
    assert!(!seen_headers.contains("6.6.6.6"), "{seen_headers}");
    assert!(!seen_headers.contains("x-beeline-ticket"), "{seen_headers}");
    assert_eq!(home.seen.load(Ordering::SeqCst), 1);

    // A body up, and a stream down that arrives piece by piece.
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let echoed = http
        .post(format!("{url}/echo"))
        .header("x-beeline-ticket", ticket)
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(echoed.as_ref(), body.as_slice());
    let mut events = http
        .get(format!("{url}/events"))
        .header("x-beeline-ticket", ticket)
        .send()
        .await
        .unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let first = events.chunk().await.unwrap().unwrap();
    assert_eq!(
        first.as_ref(),
        b"data: 0\n\n",
        "the first event comes alone"
    );
    let mut rest = Vec::new();
    while let Some(piece) = events.chunk().await.unwrap() {
        rest.extend_from_slice(&piece);
    }
    let expected: String = (1..20).map(|i| format!("data: {i}\n\n")).collect();
    assert_eq!(String::from_utf8(rest).unwrap(), expected);

    // A WebSocket, its ticket in the query, its subprotocol chosen.
    let mut request = format!("ws://{}/ws/echo?__beeline_ticket={}", home.loopback, ticket)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", PAGE.parse().unwrap());
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "chat.v1".parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v1");
    socket
        .send(tungstenite::Message::Text("hello".into()))
        .await
        .unwrap();
    let reply = socket.next().await.unwrap().unwrap();
    assert_eq!(reply, tungstenite::Message::Text("echo: hello".into()));
    socket
        .send(tungstenite::Message::Binary(Bytes::from_static(&[
            0, 1, 2, 255,
        ])))
        .await
        .unwrap();
    let reply = socket.next().await.unwrap().unwrap();
    assert_eq!(
        reply,
        tungstenite::Message::Binary(Bytes::from_static(&[0, 1, 2, 255]))
    );
    socket.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_without_a_good_ticket_an_allowed_origin_and_a_loopback_host_reaches_the_service() {
    let home = home(LoopbackOffer::Always).await;
    let http = http();
    let created = session(&http, &home).await;
    let ticket = created["loopback"]["ticket"].as_str().unwrap().to_owned();
    let url = format!("http://{}", home.loopback);
    let forged = LoopbackKey::from_home_token("someone else's token").issue("s", u64::MAX);
    let expired = LoopbackKey::from_home_token(TOKEN).issue("s", 1);

    struct Case {
        what: &'static str,
        method: reqwest::Method,
        headers: Vec<(&'static str, String)>,
        body: Option<&'static str>,
        status: u16,
        code: &'static str,
    }
    let case = |what, method, headers: Vec<(&'static str, String)>, status, code| Case {
        what,
        method,
        headers,
        body: None,
        status,
        code,
    };
    let cases = vec![
        case(
            "no ticket (an image GET)",
            reqwest::Method::GET,
            vec![],
            401,
            "ticket_missing",
        ),
        Case {
            body: Some("a=1"),
            ..case(
                "a form POST from another page",
                reqwest::Method::POST,
                vec![
                    ("origin", "http://evil.test".into()),
                    ("content-type", "application/x-www-form-urlencoded".into()),
                ],
                403,
                "origin_not_allowed",
            )
        },
        Case {
            body: Some("a=1"),
            ..case(
                "a form POST with no Origin",
                reqwest::Method::POST,
                vec![("content-type", "application/x-www-form-urlencoded".into())],
                401,
                "ticket_missing",
            )
        },
        case(
            "a good ticket from another origin",
            reqwest::Method::GET,
            vec![
                ("x-beeline-ticket", ticket.clone()),
                ("origin", "http://evil.test".into()),
            ],
            403,
            "origin_not_allowed",
        ),
        case(
            "a ticket not made with the home token",
            reqwest::Method::GET,
            vec![("x-beeline-ticket", forged.ticket.clone())],
            403,
            "ticket_invalid",
        ),
        case(
            "an expired ticket",
            reqwest::Method::GET,
            vec![("x-beeline-ticket", expired.ticket.clone())],
            403,
            "ticket_expired",
        ),
        case(
            "garbage",
            reqwest::Method::GET,
            vec![("x-beeline-ticket", "v1.x.99.!!!".into())],
            403,
            "ticket_invalid",
        ),
        case(
            "a rebound host name",
            reqwest::Method::GET,
            vec![
                ("x-beeline-ticket", ticket.clone()),
                ("host", format!("evil.test:{}", home.loopback.port())),
            ],
            421,
            "wrong_host",
        ),
        case(
            "a preflight from another origin",
            reqwest::Method::OPTIONS,
            vec![
                ("origin", "http://evil.test".into()),
                ("access-control-request-method", "GET".into()),
                ("access-control-request-headers", "x-beeline-ticket".into()),
            ],
            403,
            "origin_not_allowed",
        ),
    ];
    for case in cases {
        let mut request = http.request(case.method.clone(), format!("{url}/headers"));
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        if let Some(body) = case.body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), case.status, "{}", case.what);
        assert_eq!(
            response
                .headers()
                .get("x-beeline-error")
                .map(|v| v.to_str().unwrap()),
            Some(case.code),
            "{}",
            case.what
        );
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none()
                || case
                    .headers
                    .iter()
                    .all(|(n, v)| *n != "origin" || v == PAGE),
            "{}: no CORS grant for another origin",
            case.what
        );
    }
    // A WebSocket with a ticket but no Origin, and one from another origin.
    for origin in [None, Some("http://evil.test")] {
        let mut request = format!("ws://{}/ws/echo?__beeline_ticket={ticket}", home.loopback)
            .into_client_request()
            .unwrap();
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
            other => panic!(
                "a WebSocket from {origin:?} was not refused: {:?}",
                other.map(|_| ())
            ),
        }
    }
    assert_eq!(
        home.seen.load(Ordering::SeqCst),
        0,
        "the home service was called"
    );

    // The allowed origin's preflight passes, with Private Network Access.
    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{url}/headers"))
        .header("origin", PAGE)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "x-beeline-ticket, content-type",
        )
        .header("access-control-request-private-network", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], PAGE);
    assert_eq!(headers["access-control-allow-methods"], "POST");
    assert_eq!(
        headers["access-control-allow-headers"],
        "x-beeline-ticket, content-type"
    );
    assert_eq!(headers["access-control-allow-private-network"], "true");
    assert_eq!(
        home.seen.load(Ordering::SeqCst),
        0,
        "a preflight is not a request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_elsewhere_is_not_offered_the_listener_and_the_listener_stays_on_loopback() {
    // Everything here is on loopback, so only the policy can say no.
    let home = home(LoopbackOffer::Off).await;
    let created = session(&http(), &home).await;
    assert!(created.get("loopback").is_none(), "{created}");

    match bind_loopback("0.0.0.0:0".parse().unwrap()).await {
        Err(LoopbackError::NotLoopback(_)) => {}
        other => panic!(
            "bound a non-loopback address: {:?}",
            other.map(|l| l.local_addr())
        ),
    }
}
