//! Live migration, end to end in Rust (issue 11): a page's bridge
//! connection starts on its frame connection over the home link
//! (`GET /webrtc/frames`), moves to its `resume` data channel when that
//! opens, and back to the link when the channel dies, while a streamed
//! response keeps arriving byte for byte. Real signal-server, real link
//! loop, real home loop and a real data channel on loopback.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use beeline_bridge::{
    Channel, ChannelClosed, Client, ClientOptions, HttpUpstream, Received, ResumableChannel,
    ResumeConfig,
};
use beeline_frame::Encoded;
use beeline_home::{
    run_link, run_resumable, HomeConfig, LinkStatus, ResumeSessions, ResumeUpstream,
    RESUME_CHANNEL_LABEL,
};
use beeline_signal_client::SignalClient;
use beeline_signal_server::{SignalConfig, SignalServer};
use common::{get_head, loopback_peer, upstream_router, TOKEN};
use futures::StreamExt as _;
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;

/// A carrier that counts what it carries: the page's frame connection
/// (`beeline_client::frame_connection`) or its `resume` data channel.
struct Counted<C> {
    inner: C,
    received: Arc<AtomicU64>,
}

impl<C: Channel> Channel for Counted<C> {
    async fn send(&self, message: Encoded) -> Result<(), ChannelClosed> {
        self.inner.send(message).await
    }
    async fn recv(&self) -> Option<Received> {
        let m = self.inner.recv().await?;
        self.received.fetch_add(1, Ordering::Relaxed);
        Some(m)
    }
    fn max_message_size(&self) -> usize {
        self.inner.max_message_size()
    }
}

struct Home {
    origin: String,
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

async fn home() -> Home {
    let db = tempfile::tempdir().unwrap();
    let server = SignalServer::open(SignalConfig::new(db.path().join("signal.db"), TOKEN))
        .await
        .unwrap();
    let origin = common::serve_signal(&server).await;
    let service = common::serve(upstream_router(Arc::default())).await;
    let upstream = Arc::new(HttpUpstream::new(&service).unwrap());
    let config = HomeConfig {
        peer: loopback_peer(),
        ..Default::default()
    };
    let resume = ResumeSessions::new(
        Arc::clone(&upstream),
        config.bridge.clone(),
        None,
        config.max_sessions,
    );
    let shutdown = CancellationToken::new();
    let status = Arc::new(LinkStatus::default());
    tokio::spawn(run_link(
        common::link_config(&origin, TOKEN),
        Arc::new(ResumeUpstream::new(
            Arc::clone(&upstream),
            Arc::clone(&resume),
        )),
        Arc::clone(&status),
        shutdown.clone(),
    ));
    tokio::spawn(run_resumable(
        SignalClient::new(&format!("{origin}/webrtc"))
            .unwrap()
            .with_bearer(TOKEN),
        upstream,
        config,
        Some(resume),
        shutdown.clone(),
    ));
    common::wait_for(
        || server.home_linked(beeline_signal_server::DEFAULT_HOME),
        Duration::from_secs(5),
    )
    .await;
    Home {
        origin,
        server,
        shutdown,
        _db: db,
    }
}

/// Reads until `text` holds `n` ticks.
async fn read_ticks(body: &mut beeline_bridge::ResponseBody, text: &mut String, n: usize) {
    while text.matches('\n').count() < n {
        let piece = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("a tick within 5 s")
            .expect("not ended")
            .expect("no error");
        text.push_str(std::str::from_utf8(&piece).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_moves_from_the_link_to_the_channel_and_back_without_a_gap() {
    let home = home().await;
    let signal = SignalClient::new(&format!("{}/webrtc", home.origin)).unwrap();
    let info = signal.create_session().await.unwrap();
    let session = info.session_id.clone();

    // The page's frame connection over the link.
    let frames = beeline_client::frame_connection(
        &format!("{}/webrtc", home.origin),
        &session,
        &Default::default(),
    )
    .await
    .unwrap();
    let on_link = Arc::new(AtomicU64::new(0));
    let page = ResumableChannel::new(ResumeConfig::default());
    page.attach(Counted {
        inner: frames,
        received: Arc::clone(&on_link),
    })
    .await
    .unwrap();
    let client = Client::connect(
        Arc::new(page.clone()),
        ClientOptions {
            binary: true,
            ..Default::default()
        },
    )
    .await
    .expect("the home agrees over the link");

    // 20 ticks, 100 ms apart.
    let mut slow = client.send(get_head("/slow"), None).await.unwrap();
    let mut text = String::new();
    read_ticks(&mut slow.body, &mut text, 3).await;
    let link_before = on_link.load(Ordering::Relaxed);
    assert!(link_before > 0, "the first ticks came over the link");

    // The channel opens: the page moves, and so does the home.
    let opened = beeline_client::open_channel_on(
        &signal,
        loopback_peer(),
        info,
        RESUME_CHANNEL_LABEL,
        Duration::from_secs(15),
    )
    .await
    .expect("the resume channel opens");
    let (peer, channel) = (opened.peer, opened.channel);
    let on_channel = Arc::new(AtomicU64::new(0));
    page.attach(Counted {
        inner: beeline_bridge::DataChannelLink::new(channel),
        received: Arc::clone(&on_channel),
    })
    .await
    .unwrap();
    read_ticks(&mut slow.body, &mut text, 10).await;
    assert!(
        on_channel.load(Ordering::Relaxed) > 0,
        "later ticks came over the channel"
    );
    let link_mid = on_link.load(Ordering::Relaxed);

    // The channel dies: both move back to the link.
    peer.close().await;
    read_ticks(&mut slow.body, &mut text, 20).await;
    assert!(
        on_link.load(Ordering::Relaxed) > link_mid,
        "the last ticks came over the link again"
    );
    assert!(slow.body.next().await.is_none(), "the stream ends cleanly");
    let expected: String = (0..20).map(|i| format!("tick {i}\n")).collect();
    assert_eq!(text, expected, "every tick once, in order");
    assert_eq!(page.switches(), 3, "link, channel, link");

    // A new request after all that is served.
    let r = client.send(get_head("/headers"), None).await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_cannot_reach_the_reserved_path_through_the_relay() {
    let home = home().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = http
        .get(format!("{}/.beeline/resume", home.origin))
        .query(&[("session", "0123456789abcdef0123456789abcdef")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    // And a frame connection needs a live session of the caller's.
    let url = format!(
        "{}/webrtc/frames?session_id=0123456789abcdef0123456789abcdef",
        home.origin.replace("http://", "ws://")
    );
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("unknown session accepted: {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_a_connection_the_home_does_not_have_is_closed_with_4410() {
    let home = home().await;
    let signal = SignalClient::new(&format!("{}/webrtc", home.origin)).unwrap();
    let session = signal.create_session().await.unwrap().session_id;
    // What a page sends after home-peer restarted under its connection.
    let url = format!(
        "{}/webrtc/frames?session_id={session}&resume=1",
        home.origin.replace("http://", "ws://")
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("an answer within 5 s");
    match first {
        Some(Ok(tungstenite::Message::Close(Some(frame)))) => {
            assert_eq!(
                u16::from(frame.code),
                beeline_home::UNKNOWN_CONNECTION_CLOSE
            );
            assert!(frame.reason.contains("no such resumable connection"));
        }
        other => panic!("expected a 4410 close, got {other:?}"),
    }
    // Starting one (no resume=1) is fine, and then resuming it is too.
    let fresh = url.replace("&resume=1", "");
    let (mut socket, _) = tokio_tungstenite::connect_async(fresh.as_str())
        .await
        .unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("the home's ack within 5 s");
    assert!(
        matches!(ack, Some(Ok(tungstenite::Message::Binary(ref b))) if b[0] == 3),
        "the home acknowledges a new carrier first: {ack:?}"
    );
    let (mut again, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(5), again.next())
        .await
        .expect("the home's ack within 5 s");
    assert!(
        matches!(ack, Some(Ok(tungstenite::Message::Binary(ref b))) if b[0] == 3),
        "a resume of a connection the home has is taken: {ack:?}"
    );
}
