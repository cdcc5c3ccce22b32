//! The Rust "browser": does what `client.js` does (session, offer, trickle,
//! answer, channel, `hello`), timing each step, then speaks protocol v2
//! through `beeline_bridge::Client`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use beeline_bridge::DataChannelLink;
use beeline_bridge::{Client, ClientOptions};
use beeline_frame::v2::RequestHead;
use beeline_signal_client::{SignalClient, SignalKind, SignalMessage};
use beeline_transport::{AddressFilter, Peer, PeerConfig};
use bytes::Bytes;

/// How long one setup may take before it counts as failed (the
/// specification's budget).
const SETUP_BUDGET: Duration = Duration::from_secs(8);

/// The bench's client end: a transport data channel as the bridge sees it.
/// It counts the messages it receives, so how a body is cut into frames
/// shows up in the figures.
pub(crate) type ClientChannel = DataChannelLink;

/// Milliseconds from `POST /session` to each setup milestone.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SetupTimes {
    /// The session exists (`POST /session` answered).
    pub(crate) session_ms: f64,
    /// The offer is created and posted.
    pub(crate) offer_posted_ms: f64,
    /// The answer arrived.
    pub(crate) answer_ms: f64,
    /// The data channel is open (DCEP acknowledged).
    pub(crate) open_ms: f64,
    /// `agree` arrived: requests can be sent.
    pub(crate) agree_ms: f64,
}

/// An open connection with a protocol-v2 client on it.
pub(crate) struct Connection {
    pub(crate) client: Client<ClientChannel>,
    pub(crate) channel: Arc<ClientChannel>,
    pub(crate) times: SetupTimes,
    signal: SignalClient,
    session_id: String,
    _peer: Arc<Peer>,
    _trickle: tokio::task::JoinHandle<()>,
}

impl Connection {
    /// Says `bye` so the home peer releases the session, then drops everything.
    pub(crate) async fn close(self) {
        let _ = self
            .signal
            .post(&SignalMessage::bye(self.session_id.clone()))
            .await;
        self._trickle.abort();
    }
}

/// An address filter from `--allow-ip` values.
pub(crate) fn filter(allow: &[String]) -> Result<AddressFilter> {
    let mut f = AddressFilter::default();
    for a in allow {
        f.allow_network(a)
            .map_err(|e| anyhow!("--allow-ip {a}: {e}"))?;
    }
    if f.is_open() {
        bail!("the bench never runs WebRTC without an address filter");
    }
    Ok(f)
}

/// The bench's own peers: confined to `filter`, and with the UDP socket
/// buffer that `BEELINE_UDP_BUFFER` gives home-peer (the bench starts
/// home-peer with this process's environment), so one variable sets both
/// ends when comparing buffer sizes. Unset: the transport's default.
pub(crate) fn peer_config(filter: &AddressFilter) -> PeerConfig {
    let socket_buffer = match std::env::var("BEELINE_UDP_BUFFER") {
        Ok(v) => v.parse().ok().filter(|&n: &usize| n > 0),
        Err(_) => PeerConfig::default().socket_buffer,
    };
    PeerConfig {
        address_filter: filter.clone(),
        socket_buffer,
        ..Default::default()
    }
}

/// Connects to the home peer behind `signal` the way the browser does.
pub(crate) async fn connect(
    signal: &SignalClient,
    filter: &AddressFilter,
    options: ClientOptions,
) -> Result<Connection> {
    tokio::time::timeout(SETUP_BUDGET, connect_inner(signal, filter, options))
        .await
        .map_err(|_| anyhow!("no channel within {SETUP_BUDGET:?}"))?
}

async fn connect_inner(
    signal: &SignalClient,
    filter: &AddressFilter,
    options: ClientOptions,
) -> Result<Connection> {
    let started = Instant::now();
    let ms = |t: Instant| t.duration_since(started).as_secs_f64() * 1e3;
    let mut times = SetupTimes::default();

    let session = signal.create_session().await.context("POST /session")?;
    times.session_ms = ms(Instant::now());
    let id = session.session_id.clone();
    let config = peer_config(filter);
    let (peer, offer) = Peer::offer(config).await?;
    let peer = Arc::new(peer);
    signal
        .post(&SignalMessage::offer(id.clone(), offer))
        .await
        .context("posting the offer")?;
    times.offer_posted_ms = ms(Instant::now());

    // Trickle what was gathered after the offer was written.
    let trickle = {
        let (peer, signal, id) = (Arc::clone(&peer), signal.clone(), id.clone());
        tokio::spawn(async move {
            while let Some(c) = peer.next_local_candidate().await {
                let init = serde_json::json!({"candidate": c.candidate, "sdpMid": "0", "sdpMLineIndex": 0});
                if signal
                    .post(&SignalMessage::candidate(id.clone(), init))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };

    let mut cursor = 0;
    let opener = Arc::clone(&peer);
    let open = async move { opener.open_channel("http").await };
    tokio::pin!(open);
    let channel = loop {
        tokio::select! {
            ch = &mut open => break ch?,
            poll = signal.poll(Some(&id), cursor) => {
                let poll = poll.context("polling for the answer")?;
                cursor = poll.cursor;
                for m in poll.messages {
                    match m.kind {
                        SignalKind::Answer => {
                            peer.apply_answer(m.sdp.as_deref().unwrap_or_default())?;
                            times.answer_ms = ms(Instant::now());
                        }
                        SignalKind::Candidate => {
                            if let Some(c) = m.candidate.as_ref().and_then(|c| c["candidate"].as_str()) {
                                peer.add_remote_candidate(c)?;
                            }
                        }
                        SignalKind::Bye => bail!("the home peer said bye"),
                        _ => {}
                    }
                }
            }
        }
    };
    times.open_ms = ms(Instant::now());
    let channel = Arc::new(DataChannelLink::new(channel));
    let client = Client::connect(Arc::clone(&channel), options).await?;
    times.agree_ms = ms(Instant::now());
    Ok(Connection {
        client,
        channel,
        times,
        signal: signal.clone(),
        session_id: id,
        _peer: peer,
        _trickle: trickle,
    })
}

/// A GET over the channel; returns the whole body.
pub(crate) async fn get(client: &Client<ClientChannel>, path: &str) -> Result<Bytes> {
    let head = RequestHead {
        method: "GET".into(),
        path: path.into(),
        ..Default::default()
    };
    let response = client.send(head, None).await?;
    if response.status != 200 {
        bail!("GET {path} answered {}", response.status);
    }
    Ok(Bytes::from(response.body.collect().await?))
}
