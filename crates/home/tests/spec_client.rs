//! A client that speaks exactly the specification's frame format reaches an
//! upstream service through signal-api and the home peer, over a real data
//! channel on loopback.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::routing::post;
use axum::Router;
use beeline_bridge::HttpUpstream;
use beeline_home::HomeConfig;
use beeline_signal_client::{SignalClient, SignalKind, SignalMessage};
use beeline_signal_server::{SignalConfig, SignalServer};
use beeline_transport::{AddressFilter, DataChannel, Peer, PeerConfig};
use bytes::Bytes;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-home-token";

/// The SSE body the upstream streams for a message: one event per word.
fn sse_reply(message: &str) -> Vec<String> {
    message.split(' ').map(|w| format!("data: {w}\n\n")).chain(["data: [DONE]\n\n".to_owned()]).collect()
}

async fn spawn_upstream() -> String {
    let app = Router::new().route(
        "/v1/chat",
        post(|body: Bytes| async move {
            let message: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let text = message["message"].as_str().unwrap_or("empty").to_owned();
            let events = sse_reply(&text);
            let stream = futures::stream::iter(events).then(|e| async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok::<_, std::io::Error>(Bytes::from(e))
            });
            ([("content-type", "text/event-stream")], Body::from_stream(stream))
        }),
    );
    serve(app).await
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

struct World {
    signal_url: String,
    _db: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn world() -> World {
    let db = tempfile::tempdir().unwrap();
    let server = SignalServer::open(SignalConfig::new(db.path().join("signal.db"), TOKEN)).await.unwrap();
    let signal_url = format!("{}/webrtc", serve(server.router()).await);
    let upstream = Arc::new(HttpUpstream::new(&spawn_upstream().await).unwrap());
    let config = HomeConfig {
        peer: PeerConfig { address_filter: AddressFilter::loopback(), ..Default::default() },
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let home_signal = SignalClient::new(&signal_url).unwrap().with_bearer(TOKEN);
    tokio::spawn(beeline_home::run(home_signal, upstream, config, shutdown.clone()));
    World { signal_url, _db: db, shutdown }
}

/// Does what the browser client does: session, offer, trickle, answer.
async fn browser_connect(signal_url: &str) -> (Arc<Peer>, DataChannel) {
    let signal = SignalClient::new(signal_url).unwrap();
    let session = signal.create_session().await.unwrap();
    let id = session.session_id.clone();
    let config = PeerConfig { address_filter: AddressFilter::loopback(), ..Default::default() };
    let (peer, offer) = Peer::offer(config).await.unwrap();
    let peer = Arc::new(peer);
    signal.post(&SignalMessage::offer(id.clone(), offer)).await.unwrap();
    let mut cursor = 0;
    let mut answered = false;
    let opener = Arc::clone(&peer);
    let open = async move { opener.open_channel("http").await };
    tokio::pin!(open);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        tokio::select! {
            ch = &mut open => return (peer, ch.expect("channel opens")),
            poll = signal.poll(Some(&id), cursor) => {
                let poll = poll.unwrap();
                cursor = poll.cursor;
                for m in poll.messages {
                    match m.kind {
                        SignalKind::Answer => {
                            assert!(!answered, "one answer");
                            answered = true;
                            peer.apply_answer(m.sdp.as_deref().unwrap()).unwrap();
                        }
                        SignalKind::Candidate => {
                            if let Some(c) = m.candidate.as_ref().and_then(|c| c["candidate"].as_str()) {
                                peer.add_remote_candidate(c).unwrap();
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => panic!("no channel within 15 s (answered: {answered})"),
        }
    }
}

/// Collects `chunk` data per id until every id has its `done`.
async fn collect(channel: &DataChannel, ids: &[String]) -> std::collections::HashMap<String, (String, u64)> {
    let mut out: std::collections::HashMap<String, (String, u64)> = Default::default();
    let mut done = 0;
    while done < ids.len() {
        let m = tokio::time::timeout(Duration::from_secs(10), channel.recv()).await.expect("frame in time").expect("open");
        // The specification's frames, read as plain JSON.
        let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
        let id = v["id"].as_str().unwrap().to_owned();
        assert!(ids.contains(&id), "frame for unknown id {id}");
        let entry = out.entry(id).or_default();
        match v["type"].as_str().unwrap() {
            "chunk" => entry.0.push_str(v["data"].as_str().unwrap()),
            "done" => {
                entry.1 = v["status"].as_u64().unwrap();
                done += 1;
            }
            other => panic!("unexpected frame type {other}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specification_request_frame_streams_the_upstream_body() {
    let world = world().await;
    let (_peer, channel) = browser_connect(&world.signal_url).await;

    // The request exactly as the specification writes it: base64 body.
    let body = r#"{"message": "hello from the couch"}"#;
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(body);
    let frame = format!(r#"{{"id": "req-uuid", "method": "POST", "path": "/v1/chat", "body": "{b64}"}}"#);
    channel.send_text(&frame).await.unwrap();

    let got = collect(&channel, &["req-uuid".to_owned()]).await;
    let (data, status) = &got["req-uuid"];
    assert_eq!(data, &sse_reply("hello from the couch").concat());
    assert_eq!(*status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_requests_in_flight_on_one_channel() {
    let world = world().await;
    let (_peer, channel) = browser_connect(&world.signal_url).await;
    use base64::Engine as _;
    let ids: Vec<String> = (0..10).map(|i| format!("req-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let body = format!(r#"{{"message": "request number {i} says hi"}}"#);
        let b64 = base64::engine::general_purpose::STANDARD.encode(body);
        channel
            .send_text(&format!(r#"{{"id":"{id}","method":"POST","path":"/v1/chat","headers":{{"content-type":"application/json"}},"body":"{b64}"}}"#))
            .await
            .unwrap();
    }
    let got = collect(&channel, &ids).await;
    for (i, id) in ids.iter().enumerate() {
        let (data, status) = &got[id];
        assert_eq!(data, &sse_reply(&format!("request number {i} says hi")).concat(), "{id}");
        assert_eq!(*status, 200);
    }
}
