//! One connection attempt, as `client.js` makes it: create a session, post
//! the offer, trickle candidates both ways, open the `http` channel and
//! negotiate protocol v2. Each milestone is timed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use beeline_bridge::{Client, ClientOptions, DataChannelLink};
use beeline_signal_client::{SessionInfo, SignalClient, SignalKind, SignalMessage};
use beeline_transport::{DataChannel, IceServer, Peer, PeerConfig, PeerState};

use crate::Error;

/// The label of the channel that carries HTTP.
pub const HTTP_CHANNEL_LABEL: &str = "http";

/// Milliseconds from `POST /session` to each setup milestone.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SetupTimes {
    /// The session exists (`POST /session` answered).
    pub session_ms: f64,
    /// The offer is created and posted.
    pub offer_posted_ms: f64,
    /// The answer arrived.
    pub answer_ms: f64,
    /// The data channel is open (DCEP acknowledged).
    pub open_ms: f64,
    /// `agree` arrived: requests can be sent.
    pub agree_ms: f64,
}

/// An open direct path: the peer connection, its `http` channel and a
/// protocol-v2 client on it. Dropping it closes the peer connection;
/// [`Connection::close`] also tells the home peer, which frees the session
/// at once.
pub struct Connection {
    /// The protocol-v2 client on the channel.
    pub client: Client<DataChannelLink>,
    /// The channel, for its counters.
    pub channel: Arc<DataChannelLink>,
    /// How long each setup step took.
    pub times: SetupTimes,
    peer: Arc<Peer>,
    signal: SignalClient,
    session_id: String,
    trickle: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("session", &short(&self.session_id))
            .field("times", &self.times)
            .field("pair", &self.peer.selected_pair())
            .finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.trickle.abort();
    }
}

impl Connection {
    /// The peer connection.
    pub fn peer(&self) -> &Arc<Peer> {
        &self.peer
    }

    /// The signaling session this connection belongs to.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Says `bye` so the home peer releases the session, then closes.
    pub async fn close(self) {
        let _ = self
            .signal
            .post(&SignalMessage::bye(self.session_id.clone()))
            .await;
        self.peer.close().await;
    }

    /// Resolves once the path is gone: the channel closed, or the peer
    /// connection left `Connected` (consent lost for 3 s, failed, closed).
    pub async fn lost(&self) {
        let mut state = self.peer.state();
        let gone = async {
            loop {
                let s = *state.borrow_and_update();
                if matches!(
                    s,
                    PeerState::Disconnected | PeerState::Failed | PeerState::Closed
                ) {
                    return;
                }
                if state.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = gone => {}
            _ = self.client.closed() => {}
        }
    }
}

/// Enough of a session id to tell sessions apart in logs.
pub(crate) fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// Connects once to the home peer behind `signal` and negotiates protocol
/// v2 on the channel, within `budget`.
pub async fn dial(
    signal: &SignalClient,
    peer: PeerConfig,
    options: ClientOptions,
    budget: Duration,
) -> Result<Connection, Error> {
    tokio::time::timeout(budget, async {
        let opened = open_inner(signal, peer, HTTP_CHANNEL_LABEL, None).await?;
        let OpenChannel {
            peer,
            channel,
            mut times,
            session_id,
            trickle,
            started,
            ..
        } = opened;
        let channel = Arc::new(DataChannelLink::new(channel));
        let client = Client::connect(Arc::clone(&channel), options).await?;
        times.agree_ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(Connection {
            client,
            channel,
            times,
            peer,
            signal: signal.clone(),
            session_id,
            trickle: trickle.take(),
        })
    })
    .await
    .map_err(|_| Error::SetupTimeout(budget))?
}

/// A freshly opened channel (`http`, or the one [`open_channel_on`]
/// named) on which nothing has been said yet (for callers that speak the
/// protocol themselves, e.g. protocol tests).
pub struct OpenChannel {
    /// The peer connection.
    pub peer: Arc<Peer>,
    /// The open data channel.
    pub channel: DataChannel,
    /// Setup milestones (`agree_ms` is 0: no `hello` was sent).
    pub times: SetupTimes,
    /// The signaling session.
    pub session_id: String,
    /// What `POST /session` answered.
    pub session: SessionInfo,
    trickle: AbortOnDrop,
    started: Instant,
}

/// Opens the `http` channel to the home peer behind `signal` as the
/// browser does, within `budget`, without negotiating anything on it.
pub async fn open_channel(
    signal: &SignalClient,
    peer: PeerConfig,
    budget: Duration,
) -> Result<OpenChannel, Error> {
    tokio::time::timeout(budget, open_inner(signal, peer, HTTP_CHANNEL_LABEL, None))
        .await
        .map_err(|_| Error::SetupTimeout(budget))?
}

/// Opens a channel labelled `label` (e.g. [`RESUME_CHANNEL_LABEL`](crate::RESUME_CHANNEL_LABEL))
/// on a new peer connection of an existing `session`, within `budget`,
/// without saying anything on it. `times.session_ms` is 0.
pub async fn open_channel_on(
    signal: &SignalClient,
    peer: PeerConfig,
    session: SessionInfo,
    label: &str,
    budget: Duration,
) -> Result<OpenChannel, Error> {
    tokio::time::timeout(budget, open_inner(signal, peer, label, Some(session)))
        .await
        .map_err(|_| Error::SetupTimeout(budget))?
}

async fn open_inner(
    signal: &SignalClient,
    mut config: PeerConfig,
    label: &str,
    session: Option<SessionInfo>,
) -> Result<OpenChannel, Error> {
    let started = Instant::now();
    let ms = |t: Instant| t.duration_since(started).as_secs_f64() * 1e3;
    let mut times = SetupTimes::default();

    let session = match session {
        Some(session) => session,
        None => {
            let session = signal.create_session().await?;
            times.session_ms = ms(Instant::now());
            session
        }
    };
    let id = session.session_id.clone();
    // TURN credentials from signal-api join whatever the caller configured.
    config
        .ice_servers
        .extend(session.ice_servers.iter().map(|s| IceServer {
            urls: s.urls.clone(),
            username: s.username.clone(),
            credential: s.credential.clone(),
        }));
    let (peer, offer) = Peer::offer(config).await?;
    let peer = Arc::new(peer);
    signal
        .post(&SignalMessage::offer(id.clone(), offer))
        .await?;
    times.offer_posted_ms = ms(Instant::now());

    // Trickle what is gathered after the offer was written.
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
    let abort_trickle = AbortOnDrop(Some(trickle));

    let mut cursor = 0;
    let opener = Arc::clone(&peer);
    let label = label.to_owned();
    let open = async move { opener.open_channel(&label).await };
    tokio::pin!(open);
    let channel = loop {
        tokio::select! {
            ch = &mut open => break ch?,
            poll = signal.poll(Some(&id), cursor) => {
                let poll = poll?;
                cursor = poll.cursor;
                for m in poll.messages {
                    match m.kind {
                        SignalKind::Answer => {
                            peer.apply_answer(m.sdp.as_deref().unwrap_or_default())?;
                            times.answer_ms = ms(Instant::now());
                        }
                        SignalKind::Candidate => {
                            if let Some(c) = m.candidate.as_ref().and_then(|c| c["candidate"].as_str()) {
                                if let Err(e) = peer.add_remote_candidate(c) {
                                    tracing::debug!(error = %e, "ignoring a remote candidate");
                                }
                            }
                        }
                        SignalKind::Bye => return Err(Error::Refused("the home peer said bye".into())),
                        _ => {}
                    }
                }
            }
        }
    };
    times.open_ms = ms(Instant::now());
    Ok(OpenChannel {
        peer,
        channel,
        times,
        session_id: id,
        session,
        trickle: abort_trickle,
        started,
    })
}

struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl AbortOnDrop {
    fn take(mut self) -> tokio::task::JoinHandle<()> {
        self.0.take().expect("taken once")
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}
