//! A browser's WebSocket on the normal path, relayed to `--relay-upstream`
//! as a plain WebSocket proxy (issue 11): messages keep their boundaries
//! and kind, close codes and reasons pass both ways, the subprotocol the
//! home service chose is the one the browser gets, and a refusal is the
//! home service's own HTTP status.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::routing::get;
use axum::Router;
use beeline_signal_server::{SignalConfig, SignalServer};
use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};

/// Echoes every message; `close:<code>:<reason>` makes it close.
async fn echo(socket: WebSocket) {
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
                // Wait for the client's answering close.
                while let Some(Ok(m)) = rx.next().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
                return;
            }
            Message::Close(_) => return,
            Message::Ping(_) | Message::Pong(_) => continue,
            other => other,
        };
        if tx.send(reply).await.is_err() {
            return;
        }
    }
}

fn home_service() -> Router {
    Router::new()
        .route(
            "/ws/echo",
            get(
                |ws: WebSocketUpgrade, headers: axum::http::HeaderMap| async move {
                    // The relay's forwarding headers reach the WebSocket too.
                    assert!(headers.contains_key("x-forwarded-for"));
                    ws.protocols(["chat.v2", "chat.v1"]).on_upgrade(echo)
                },
            ),
        )
        .route(
            "/ws/private",
            get(|| async { (axum::http::StatusCode::FORBIDDEN, "no") }),
        )
}

async fn stack() -> (String, SignalServer, tempfile::TempDir) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, home_service()).await.unwrap() });

    let db = tempfile::tempdir().unwrap();
    let mut config = SignalConfig::new(db.path().join("s.db"), "home-token");
    config.relay_upstream = Some(service);
    let server = SignalServer::open(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("ws://{}", listener.local_addr().unwrap());
    let app = server
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (origin, server, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_close_codes_and_subprotocols_pass_through_the_relay() {
    let (origin, _server, _db) = stack().await;
    let mut request = format!("{origin}/ws/echo").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "chat.v1".parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v1");

    // 1,000 numbered messages, alternating text and binary, in order.
    for i in 0..1000u32 {
        let message = if i % 2 == 0 {
            tungstenite::Message::Text(format!("message {i}").into())
        } else {
            tungstenite::Message::Binary(i.to_be_bytes().to_vec().into())
        };
        socket.send(message).await.unwrap();
    }
    for i in 0..1000u32 {
        let received = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let expected = if i % 2 == 0 {
            tungstenite::Message::Text(format!("message {i}").into())
        } else {
            tungstenite::Message::Binary(i.to_be_bytes().to_vec().into())
        };
        assert_eq!(received, expected, "message {i}");
    }
    // A 4 MiB message keeps its boundary.
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i % 253) as u8).collect();
    socket
        .send(tungstenite::Message::Binary(big.clone().into()))
        .await
        .unwrap();
    match socket.next().await.unwrap().unwrap() {
        tungstenite::Message::Binary(data) => assert!(data[..] == big[..]),
        other => panic!("expected the big message back, got {other:?}"),
    }

    // The home service closes with a code and reason: the browser sees both.
    socket
        .send(tungstenite::Message::Text("close:4001:bye now".into()))
        .await
        .unwrap();
    let close = loop {
        match socket.next().await {
            Some(Ok(tungstenite::Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close, got {other:?}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 4001);
    assert_eq!(close.reason.as_str(), "bye now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_from_the_browser_reaches_the_home_service() {
    let (origin, _server, _db) = stack().await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("{origin}/ws/echo"))
        .await
        .unwrap();
    socket.send("hello".into()).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        tungstenite::Message::Text("hello".into())
    );
    socket
        .close(Some(tungstenite::protocol::CloseFrame {
            code: 3001.into(),
            reason: "leaving".into(),
        }))
        .await
        .unwrap();
    // The echo service returns when it reads the close; the relay then
    // completes the handshake, so the stream ends cleanly.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                None => return Ok(()),
                Some(Ok(tungstenite::Message::Close(_))) => continue,
                Some(Ok(_)) => continue,
                Some(Err(tungstenite::Error::ConnectionClosed)) => return Ok(()),
                Some(Err(error)) => return Err(error),
            }
        }
    })
    .await
    .expect("the relay ends the socket");
    end.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_websocket_gets_the_home_services_status() {
    let (origin, _server, _db) = stack().await;
    match tokio_tungstenite::connect_async(format!("{origin}/ws/private")).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|(_, r)| r.status())),
    }
}
