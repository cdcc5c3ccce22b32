//! WebSocket streams through the bridge (issue 11): a real axum WebSocket
//! service reached through `serve` + `HttpUpstream`, driven by
//! `Client::websocket` over an in-memory channel with small messages, so
//! records are split across many data frames.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as AxumMessage, WebSocket, WebSocketUpgrade};
use axum::routing::get;
use axum::Router;
use beeline_bridge::{serve, BridgeConfig, Client, ClientOptions, HttpUpstream, Upgrade};
use beeline_frame::v2::{Headers, RequestHead};
use beeline_frame::ws::Message;
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};

mod common;
use common::pipe;

/// Echoes; `close:<code>:<reason>` makes the service close.
async fn echo(socket: WebSocket, closed: Arc<AtomicUsize>) {
    let (mut tx, mut rx) = socket.split();
    while let Some(Ok(message)) = rx.next().await {
        let reply = match message {
            AxumMessage::Text(text) if text.starts_with("close:") => {
                let mut parts = text.splitn(3, ':').skip(1);
                let code = parts.next().unwrap_or("1000").parse().unwrap_or(1000);
                let reason = parts.next().unwrap_or("").to_owned();
                let _ = tx
                    .send(AxumMessage::Close(Some(CloseFrame {
                        code,
                        reason: reason.into(),
                    })))
                    .await;
                continue;
            }
            AxumMessage::Close(frame) => {
                if let Some(frame) = frame {
                    closed.store(usize::from(frame.code), Ordering::SeqCst);
                } else {
                    closed.store(1005, Ordering::SeqCst);
                }
                return;
            }
            AxumMessage::Ping(_) | AxumMessage::Pong(_) => continue,
            other => other,
        };
        if tx.send(reply).await.is_err() {
            return;
        }
    }
    closed.store(1006, Ordering::SeqCst);
}

struct Setup {
    client: Client<common::MemChannel>,
    closed: Arc<AtomicUsize>,
}

async fn setup(config: BridgeConfig) -> Setup {
    let closed = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/ws/echo",
            get({
                let closed = Arc::clone(&closed);
                move |ws: WebSocketUpgrade| async move {
                    ws.protocols(["chat.v2", "chat.v1"])
                        .on_upgrade(move |s| echo(s, closed))
                }
            }),
        )
        .route(
            "/ws/private",
            get(|| async { (axum::http::StatusCode::FORBIDDEN, "members only") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // Small channel messages: every record is cut into pieces.
    let (home, browser) = pipe(4096);
    let upstream = Arc::new(HttpUpstream::new(&origin).unwrap());
    tokio::spawn(serve(Arc::new(home), upstream, config));
    let client = Client::connect(
        Arc::new(browser),
        ClientOptions {
            window: 64 * 1024,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(client.agree().features.iter().any(|f| f == "websocket"));
    Setup { client, closed }
}

fn open(path: &str, protocols: Option<&str>) -> RequestHead {
    let mut headers = Headers::new();
    if let Some(p) = protocols {
        headers.insert("sec-websocket-protocol".into(), p.into());
    }
    RequestHead {
        method: "GET".into(),
        path: path.into(),
        headers,
        ..Default::default()
    }
}

async fn next(receiver: &mut beeline_bridge::WsReceiver) -> Message {
    tokio::time::timeout(Duration::from_secs(10), receiver.next())
        .await
        .expect("a message within 10 s")
        .expect("the stream is open")
        .expect("a good message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_keep_order_kind_and_boundaries() {
    let s = setup(BridgeConfig::default()).await;
    let Upgrade::Accepted {
        head,
        sender,
        mut receiver,
    } = s
        .client
        .websocket(open("/ws/echo", Some("chat.v1")))
        .await
        .unwrap()
    else {
        panic!("refused")
    };
    assert_eq!(head.status, 101);
    assert_eq!(head.headers["sec-websocket-protocol"], "chat.v1");

    let expected: Vec<Message> = (0..1000u32)
        .map(|i| {
            if i % 2 == 0 {
                Message::Text(format!("message {i}"))
            } else {
                Message::Binary(Bytes::copy_from_slice(&i.to_be_bytes()))
            }
        })
        .collect();
    let sending = {
        let (sender, expected) = (sender.clone(), expected.clone());
        tokio::spawn(async move {
            for m in expected {
                sender.send(m).await.unwrap();
            }
        })
    };
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(&next(&mut receiver).await, want, "message {i}");
    }
    sending.await.unwrap();

    // A 1 MiB message across 4 KiB channel messages and a 64 KiB window.
    let big = Bytes::from(
        (0..1u32 << 20)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    sender.send(Message::Binary(big.clone())).await.unwrap();
    assert_eq!(next(&mut receiver).await, Message::Binary(big));

    // The service closes with a code and reason; the client sees both.
    sender
        .send(Message::Text("close:4001:bye now".into()))
        .await
        .unwrap();
    assert_eq!(next(&mut receiver).await, Message::close(4001, "bye now"));
    assert!(receiver.next().await.is_none(), "the home ended its side");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_from_the_client_reaches_the_service_with_its_code() {
    let s = setup(BridgeConfig::default()).await;
    let Upgrade::Accepted {
        sender,
        mut receiver,
        ..
    } = s.client.websocket(open("/ws/echo", None)).await.unwrap()
    else {
        panic!("refused")
    };
    sender.send(Message::Text("hi".into())).await.unwrap();
    assert_eq!(next(&mut receiver).await, Message::Text("hi".into()));
    sender.send(Message::close(3001, "leaving")).await.unwrap();
    drop(sender);
    // The service's answering close comes back, then the end.
    let reply = next(&mut receiver).await;
    assert!(
        matches!(reply, Message::Close(Some(ref c)) if c.code == 3001),
        "{reply:?}"
    );
    assert!(receiver.next().await.is_none());
    for _ in 0..100 {
        if s.closed.load(Ordering::SeqCst) != 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.closed.load(Ordering::SeqCst), 3001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_handshake_is_an_ordinary_response() {
    let s = setup(BridgeConfig::default()).await;
    match s.client.websocket(open("/ws/private", None)).await.unwrap() {
        Upgrade::Refused(response) => {
            assert_eq!(response.status, 403);
            assert_eq!(response.body.collect().await.unwrap(), b"members only");
        }
        Upgrade::Accepted { .. } => panic!("accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_closes_with_1009_and_other_streams_go_on() {
    let s = setup(BridgeConfig {
        max_ws_message_bytes: 1000,
        ..Default::default()
    })
    .await;
    let Upgrade::Accepted {
        sender,
        mut receiver,
        ..
    } = s.client.websocket(open("/ws/echo", None)).await.unwrap()
    else {
        panic!("refused")
    };
    let Upgrade::Accepted {
        sender: other_sender,
        receiver: mut other_receiver,
        ..
    } = s.client.websocket(open("/ws/echo", None)).await.unwrap()
    else {
        panic!("refused")
    };
    sender
        .send(Message::Binary(Bytes::from(vec![0u8; 5000])))
        .await
        .unwrap();
    let close = next(&mut receiver).await;
    assert!(
        matches!(close, Message::Close(Some(ref c)) if c.code == 1009),
        "{close:?}"
    );
    other_sender
        .send(Message::Text("still here".into()))
        .await
        .unwrap();
    assert_eq!(
        next(&mut other_receiver).await,
        Message::Text("still here".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_client_socket_closes_the_upstream() {
    let s = setup(BridgeConfig::default()).await;
    let Upgrade::Accepted {
        sender,
        mut receiver,
        ..
    } = s.client.websocket(open("/ws/echo", None)).await.unwrap()
    else {
        panic!("refused")
    };
    sender.send(Message::Text("x".into())).await.unwrap();
    assert_eq!(next(&mut receiver).await, Message::Text("x".into()));
    drop(receiver);
    drop(sender);
    for _ in 0..150 {
        if s.closed.load(Ordering::SeqCst) != 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(
        s.closed.load(Ordering::SeqCst),
        0,
        "the upstream socket is still open"
    );
}
