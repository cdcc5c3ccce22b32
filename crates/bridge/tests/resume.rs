//! Streams that outlive their carrier (issue 11): the bridge's client and
//! server over `ResumableChannel`s, a real home service over HTTP, an SSE
//! stream of 5,000 numbered events and a WebSocket echo of 10,000 numbered
//! messages each way, while the carrier changes twice: a planned switch
//! (both carriers up, as when the data channel opens under the relay) and
//! a cut (the carrier dies with messages in flight, as when UDP is
//! dropped). Every number arrives once and in order. Then the resumable
//! channel alone: numbered messages across switches and cuts, waiting for a
//! carrier, and bad input.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message as AxumMessage, WebSocketUpgrade};
use axum::routing::get;
use axum::Router;
use beeline_bridge::{
    serve, BridgeConfig, Channel, ChannelClosed, Client, ClientOptions, HttpUpstream, Received,
    ResumableChannel, ResumeConfig, ResumeError, Upgrade,
};
use beeline_frame::resume::Envelope;
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

// Below: the resumable channel alone, two ends over carriers with 2 ms of
// latency that lose what is in flight when cut.

fn config() -> ResumeConfig {
    ResumeConfig {
        max_unacked_bytes: 256 * 1024,
        ..ResumeConfig::default()
    }
}

async fn numbered(from: &ResumableChannel, n: u32, label: &'static str) {
    for i in 0..n {
        let message = if i % 2 == 0 {
            Encoded::Text(format!("{label} {i}"))
        } else {
            Encoded::Binary(Bytes::from(format!("{label} {i}")))
        };
        from.send(message).await.expect("sent");
        if i % 50 == 0 {
            // Paced, so the switches below land mid-stream.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

async fn expect_numbered(
    at: &ResumableChannel,
    n: u32,
    label: &'static str,
    progress: &std::sync::atomic::AtomicU32,
) {
    for i in 0..n {
        progress.store(i, Ordering::Relaxed);
        let m = tokio::time::timeout(Duration::from_secs(10), at.recv())
            .await
            .unwrap_or_else(|_| panic!("{label} {i} never came"))
            .expect("open");
        assert_eq!(m.data, format!("{label} {i}").as_bytes(), "{label} {i}");
        assert_eq!(m.binary, i % 2 == 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_arrives_once_in_order_across_planned_and_broken_switches() {
    let (a, b) = (
        ResumableChannel::new(config()),
        ResumableChannel::new(config()),
    );
    let (a1, b1, cut1) = carriers();
    a.attach(a1).await.unwrap();
    b.attach(b1).await.unwrap();
    const N: u32 = 10_000;
    let senders = tokio::spawn({
        let (a, b) = (a.clone(), b.clone());
        async move { tokio::join!(numbered(&a, N, "up"), numbered(&b, N, "down")) }
    });
    let (up, down) = (
        Arc::new(std::sync::atomic::AtomicU32::new(0)),
        Arc::new(std::sync::atomic::AtomicU32::new(0)),
    );
    let receivers = tokio::spawn({
        let (a, b, up, down) = (a.clone(), b.clone(), Arc::clone(&up), Arc::clone(&down));
        async move {
            tokio::join!(
                expect_numbered(&b, N, "up", &up),
                expect_numbered(&a, N, "down", &down)
            )
        }
    });
    let mid_stream = || {
        let (u, d) = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
        assert!(
            u > 0 && u < N - 1 && d > 0 && d < N - 1,
            "switched mid-stream ({u}, {d})"
        );
    };
    // A planned switch (both carriers up), each side in its own time.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (a2, b2, cut2) = carriers();
    mid_stream();
    a.attach(a2).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    b.attach(b2).await.unwrap();
    // The old carrier dies later; then the new one dies with messages
    // in flight, and a third takes over.
    tokio::time::sleep(Duration::from_millis(20)).await;
    cut1.cancel();
    tokio::time::sleep(Duration::from_millis(20)).await;
    cut2.cancel();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (a3, b3, _cut3) = carriers();
    mid_stream();
    b.attach(b3).await.unwrap();
    a.attach(a3).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), receivers)
        .await
        .expect("everything arrives")
        .unwrap();
    senders.await.unwrap();
    assert!(a.switches() >= 3 && b.switches() >= 3);
    // Acknowledgements catch up and free what was kept.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!((a.unacked(), b.unacked()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detaching_the_newest_carrier_moves_writing_back_to_the_older_one() {
    let (a, b) = (
        ResumableChannel::new(config()),
        ResumableChannel::new(config()),
    );
    let (a1, b1, _cut1) = carriers();
    a.attach(a1).await.unwrap();
    b.attach(b1).await.unwrap();
    let (a2, b2, _cut2) = carriers();
    let newest = a.attach(a2).await.unwrap();
    b.attach(b2).await.unwrap();
    numbered(&a, 100, "before").await;
    // The path under the newest carrier is known dead: a stops using
    // it, though b still reads it; what went on it unacknowledged goes
    // again on the older one.
    a.detach(newest).await;
    assert_eq!(a.switches(), 3);
    numbered(&a, 100, "after").await;
    let progress = std::sync::atomic::AtomicU32::new(0);
    expect_numbered(&b, 100, "before", &progress).await;
    expect_numbered(&b, 100, "after", &progress).await;
}

#[tokio::test]
async fn sends_wait_for_a_carrier_and_the_connection_closes_after_the_linger() {
    let a = ResumableChannel::new(ResumeConfig {
        linger: Duration::from_millis(200),
        ..config()
    });
    let waiting = tokio::spawn({
        let a = a.clone();
        async move { a.send(Encoded::Text("hello".into())).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "a send waits for a carrier");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(waiting.await.unwrap().is_err());
    assert_eq!(
        a.error(),
        ResumeError::NoCarrier(Duration::from_millis(200))
    );
    assert!(a.recv().await.is_none());
}

#[tokio::test]
async fn garbage_and_impossible_acks_close_it_with_a_clear_error() {
    for (bytes, expected) in [
        (
            Bytes::from_static(b"\x07"),
            ResumeError::Envelope(beeline_frame::resume::EnvelopeError::UnknownKind(7)),
        ),
        (
            Envelope::Ack { next: 5 }.encode(),
            ResumeError::AckBeyond { acked: 5, sent: 0 },
        ),
    ] {
        let a = ResumableChannel::new(config());
        let (a1, b1, _cut) = carriers();
        a.attach(a1).await.unwrap();
        b1.send(Encoded::Binary(bytes)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(2), async {
            while !a.is_closed() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("closed");
        assert_eq!(a.error(), expected);
    }
}

#[tokio::test]
async fn a_gap_that_never_fills_closes_it() {
    let a = ResumableChannel::new(ResumeConfig {
        max_unacked_bytes: 1000,
        ..config()
    });
    let (a1, b1, _cut) = carriers();
    a.attach(a1).await.unwrap();
    // Message 0 never comes; 1, 2, ... pile up.
    for seq in 1..=20 {
        let data = Envelope::Data {
            seq,
            message: Encoded::Binary(Bytes::from(vec![0u8; 100])),
        };
        b1.send(Encoded::Binary(data.encode())).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(2), async {
        while !a.is_closed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("closed");
    assert_eq!(
        a.error(),
        ResumeError::Gap {
            missing: 0,
            limit: 1000
        }
    );
}
