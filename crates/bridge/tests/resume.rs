//! Streams that outlive their carrier (issue 11): the bridge's client and
//! server over `ResumableChannel`s, a real home service over HTTP, an SSE
//! stream of 5,000 numbered events and a WebSocket echo of 10,000 numbered
//! messages each way, while the carrier changes twice: a planned switch
//! (both carriers up, as when the data channel opens under the relay) and
//! a cut (the carrier dies with messages in flight, as when UDP is
//! dropped). Every number arrives once and in order.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message as AxumMessage, WebSocketUpgrade};
use axum::routing::get;
use axum::Router;
use beeline_bridge::{
    serve, BridgeConfig, Channel, ChannelClosed, Client, ClientOptions, HttpUpstream, Received,
    ResumableChannel, ResumeConfig, Upgrade,
};
use beeline_frame::v2::RequestHead;
use beeline_frame::ws::Message;
use beeline_frame::Encoded;
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

const EVENTS: u32 = 5_000;
const MESSAGES: u32 = 10_000;

fn service() -> Router {
    Router::new()
        .route(
            "/events",
            get(|| async {
                let stream = futures::stream::iter(0..EVENTS).then(|i| async move {
                    if i % 100 == 0 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Ok::<_, std::io::Error>(Bytes::from(format!("data: {i}\n\n")))
                });
                (
                    [("content-type", "text/event-stream")],
                    axum::body::Body::from_stream(stream),
                )
            }),
        )
        .route(
            "/ws/echo",
            get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|socket| async move {
                    let (mut tx, mut rx) = socket.split();
                    while let Some(Ok(message)) = rx.next().await {
                        let echo = match message {
                            AxumMessage::Text(text) => AxumMessage::Text(text),
                            AxumMessage::Close(_) => return,
                            _ => continue,
                        };
                        if tx.send(echo).await.is_err() {
                            return;
                        }
                    }
                })
            }),
        )
}

/// A carrier with some latency that can be cut: what is in flight at the
/// cut is lost.
struct Carrier {
    tx: mpsc::UnboundedSender<(tokio::time::Instant, Received)>,
    rx: Mutex<mpsc::UnboundedReceiver<(tokio::time::Instant, Received)>>,
    cut: CancellationToken,
}

impl Channel for Carrier {
    async fn send(&self, message: Encoded) -> Result<(), ChannelClosed> {
        if self.cut.is_cancelled() {
            return Err(ChannelClosed);
        }
        let (data, binary) = match message {
            Encoded::Binary(b) => (b, true),
            Encoded::Text(t) => (Bytes::from(t), false),
        };
        let due = tokio::time::Instant::now() + Duration::from_millis(2);
        self.tx
            .send((due, Received { data, binary }))
            .map_err(|_| ChannelClosed)
    }
    async fn recv(&self) -> Option<Received> {
        let mut rx = self.rx.lock().await;
        tokio::select! {
            m = async {
                let (due, m) = rx.recv().await?;
                tokio::time::sleep_until(due).await;
                Some(m)
            } => m.filter(|_| !self.cut.is_cancelled()),
            _ = self.cut.cancelled() => None,
        }
    }
    fn max_message_size(&self) -> usize {
        256 * 1024
    }
}

fn carriers() -> (Carrier, Carrier, CancellationToken) {
    let (a_tx, b_rx) = mpsc::unbounded_channel();
    let (b_tx, a_rx) = mpsc::unbounded_channel();
    let cut = CancellationToken::new();
    let end = |tx, rx| Carrier {
        tx,
        rx: Mutex::new(rx),
        cut: cut.clone(),
    };
    (end(a_tx, a_rx), end(b_tx, b_rx), cut)
}

/// Waits (at most 20 s) until `count` echoes came back.
async fn wait_for_echoes(seen: &AtomicU32, count: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.load(Ordering::Relaxed) < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck at {} echoes",
            seen.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn get_head(path: &str) -> RequestHead {
    RequestHead {
        method: "GET".into(),
        path: path.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_and_websocket_streams_survive_a_planned_switch_and_a_cut() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, service()).await.unwrap() });

    let config = ResumeConfig::default();
    let (home, page) = (
        ResumableChannel::new(config.clone()),
        ResumableChannel::new(config),
    );
    // The relay first.
    let (home_relay, page_relay, _relay) = carriers();
    home.attach(home_relay).await.unwrap();
    page.attach(page_relay).await.unwrap();
    tokio::spawn(serve(
        Arc::new(home.clone()),
        Arc::new(HttpUpstream::new(&origin).unwrap()),
        BridgeConfig::default(),
    ));
    let client = Client::connect(
        Arc::new(page.clone()),
        ClientOptions {
            binary: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let events_seen = Arc::new(AtomicU32::new(0));
    let echoes_seen = Arc::new(AtomicU32::new(0));
    let mut events = client.send(get_head("/events"), None).await.unwrap();
    let Upgrade::Accepted {
        sender,
        mut receiver,
        ..
    } = client.websocket(get_head("/ws/echo")).await.unwrap()
    else {
        panic!("the echo service refused");
    };
    let sse = tokio::spawn({
        let seen = Arc::clone(&events_seen);
        async move {
            let mut text = String::new();
            while let Some(piece) = events.body.next().await {
                text.push_str(std::str::from_utf8(&piece.expect("the stream holds")).unwrap());
                seen.store(text.matches("\n\n").count() as u32, Ordering::Relaxed);
            }
            text
        }
    });
    let up = tokio::spawn(async move {
        for i in 0..MESSAGES {
            sender.send(Message::Text(format!("{i}"))).await.unwrap();
            if i % 200 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        sender
    });
    let down = tokio::spawn({
        let seen = Arc::clone(&echoes_seen);
        async move {
            for i in 0..MESSAGES {
                let message = tokio::time::timeout(Duration::from_secs(20), receiver.next())
                    .await
                    .unwrap_or_else(|_| panic!("echo {i} never came"))
                    .expect("open")
                    .expect("a good message");
                assert_eq!(message, Message::Text(format!("{i}")), "echo {i}");
                seen.store(i + 1, Ordering::Relaxed);
            }
            receiver
        }
    });

    let in_flight = |what: &str| {
        let (e, w) = (
            events_seen.load(Ordering::Relaxed),
            echoes_seen.load(Ordering::Relaxed),
        );
        eprintln!("{what}: {e} events, {w} echoes so far");
        assert!(
            e < EVENTS && w < MESSAGES,
            "{what} came after the streams ended"
        );
        (e, w)
    };
    // The channel opens: a planned switch, the page first.
    wait_for_echoes(&echoes_seen, 1_000).await;
    let first = in_flight("to the channel");
    let (home_channel, page_channel, cut_channel) = carriers();
    page.attach(page_channel).await.unwrap();
    home.attach(home_channel).await.unwrap();
    // Later the channel dies with messages in flight; both ends move back
    // to the relay, which stayed up, on their own.
    wait_for_echoes(&echoes_seen, first.1 + 2_000).await;
    cut_channel.cancel();
    let second = in_flight("back to the relay");
    assert!(second.1 > first.1);

    let text = tokio::time::timeout(Duration::from_secs(30), sse)
        .await
        .expect("the SSE stream ends")
        .unwrap();
    let expected: String = (0..EVENTS).map(|i| format!("data: {i}\n\n")).collect();
    assert_eq!(text.len(), expected.len());
    assert!(text == expected, "events lost, repeated or reordered");
    let _sender = up.await.unwrap();
    let _receiver = tokio::time::timeout(Duration::from_secs(30), down)
        .await
        .expect("every echo arrives")
        .unwrap();
    assert_eq!(page.switches(), 3, "relay, channel, relay again");
    assert_eq!(home.switches(), 3);
}
