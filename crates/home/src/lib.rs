//! The home peer: waits for offers on the signaling server, answers each with
//! a [`beeline_transport::Peer`], and serves every `http` data channel through
//! the [`beeline_bridge`] to an upstream HTTP service.
//!
//! Entry point: [`run`]. It long-polls for browser messages with the home's
//! bearer token, with no pause between polls, so an offer is picked up as soon
//! as signal-api stores it. Each session (one browser page) gets its own task
//! and peer connection; a session ends on `bye`, on connection failure, after
//! [`HomeConfig::idle_timeout`] without channel traffic, or at shutdown. When
//! signal-api cannot be reached, polling retries with exponential backoff.

mod link;
mod loopback;
mod resume;

pub use beeline_seal::LoopbackKey;
pub use link::{
    link_url, run_link, LinkConfig, LinkStatus, LinkUrlError, HOME_NAME_HEADER, LINK_MESSAGE_SIZE,
    LINK_SILENCE, LOOPBACK_URL_HEADER, PING_EVERY, RESUMABLE_HEADER,
};
pub use loopback::{
    bind_loopback, serve_loopback, LoopbackConfig, LoopbackError, ERROR_HEADER, HOME_HEADER,
    PROBE_PATH, PROOF_HEADER, TICKET_HEADER, TICKET_PARAM,
};
pub use resume::{
    ResumeSessions, ResumeUpstream, RESUME_CHANNEL_LABEL, RESUME_PATH, UNKNOWN_CONNECTION_CLOSE,
};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beeline_bridge::{
    BridgeConfig, CookieKey, CookieSeal, DataChannelLink, LinkActivity, Upstream,
};
use beeline_signal_client::{SignalClient, SignalKind, SignalMessage};
use beeline_transport::{Peer, PeerConfig, PeerState};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The label of the channel that carries HTTP.
pub const HTTP_CHANNEL_LABEL: &str = "http";

/// How the home peer behaves.
#[derive(Debug, Clone)]
pub struct HomeConfig {
    /// Transport settings for every peer connection (ICE servers, address filter).
    pub peer: PeerConfig,
    /// Limits for the HTTP bridge.
    pub bridge: BridgeConfig,
    /// A connection with no channel traffic for this long is closed.
    pub idle_timeout: Duration,
    /// First retry delay after signal-api fails.
    pub backoff_initial: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
    /// Peer connections (browser sessions) served at once; offers beyond it
    /// are turned down with `bye`, so the page falls back at once.
    pub max_sessions: usize,
    /// `http` channels served per peer connection (a page needs one); more
    /// are closed.
    pub max_channels_per_peer: usize,
    /// Requests in flight per peer connection, across all its channels.
    pub max_streams_per_peer: usize,
    /// The key cookie jars are sealed with, derived from the home token
    /// (`docs/cookies.md`); `None` turns sealed cookie jars off.
    pub cookie_key: Option<CookieKey>,
}

impl Default for HomeConfig {
    fn default() -> Self {
        Self {
            peer: PeerConfig::default(),
            bridge: BridgeConfig::default(),
            idle_timeout: Duration::from_secs(30 * 60),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            cookie_key: None,
            max_sessions: 64,
            max_channels_per_peer: 2,
            max_streams_per_peer: 128,
        }
    }
}

struct Session {
    candidates: mpsc::UnboundedSender<String>,
    /// Later offers of the session: ICE restarts.
    offers: mpsc::UnboundedSender<String>,
    cancel: CancellationToken,
}

/// How long a session whose path failed waits for the browser's ICE
/// restart before it ends.
const RESTART_GRACE: Duration = Duration::from_secs(30);

type Sessions = Arc<Mutex<HashMap<String, Session>>>;

/// Runs the home peer until `shutdown` is cancelled.
pub async fn run<U: Upstream>(
    signal: SignalClient,
    upstream: Arc<U>,
    config: HomeConfig,
    shutdown: CancellationToken,
) {
    run_resumable(signal, upstream, config, None, shutdown).await;
}

/// [`run`], with resumable sessions: a session's `resume` data channel
/// joins its frame connection over the home link (give the link a
/// [`ResumeUpstream`] over the same `resume`), so the page's streams move
/// between the two (`docs/protocol.md` §4.8).
pub async fn run_resumable<U: Upstream>(
    signal: SignalClient,
    upstream: Arc<U>,
    config: HomeConfig,
    resume: Option<Arc<ResumeSessions<U>>>,
    shutdown: CancellationToken,
) {
    let sessions: Sessions = Arc::default();
    let mut cursor = 0;
    let mut backoff = config.backoff_initial;
    tracing::info!("home peer waiting for offers");
    loop {
        let poll = tokio::select! {
            p = signal.poll(None, cursor) => p,
            _ = shutdown.cancelled() => break,
        };
        match poll {
            Ok(poll) => {
                backoff = config.backoff_initial;
                if poll.cursor < cursor {
                    // signal-api's store starts over (it was recreated):
                    // go on from its cursor, or nothing would reach us.
                    tracing::warn!(
                        was = cursor,
                        now = poll.cursor,
                        "signaling cursor went backwards; following it"
                    );
                }
                cursor = poll.cursor;
                for message in poll.messages {
                    dispatch(
                        message, &signal, &upstream, &config, &resume, &sessions, &shutdown,
                    );
                }
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "signaling poll failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(config.backoff_max);
            }
        }
    }
    for (_, session) in sessions.lock().expect("not poisoned").drain() {
        session.cancel.cancel();
    }
}

fn dispatch<U: Upstream>(
    message: SignalMessage,
    signal: &SignalClient,
    upstream: &Arc<U>,
    config: &HomeConfig,
    resume: &Option<Arc<ResumeSessions<U>>>,
    sessions: &Sessions,
    shutdown: &CancellationToken,
) {
    let id = message.session_id.clone();
    let mut map = sessions.lock().expect("not poisoned");
    match message.kind {
        SignalKind::Offer => {
            if let Some(session) = map.get(&id) {
                // The browser restarts ICE on the connection it has.
                if let Some(sdp) = message.sdp {
                    let _ = session.offers.send(sdp);
                }
                return;
            }
            if map.len() >= config.max_sessions {
                tracing::warn!(session = %short(&id), limit = config.max_sessions, "too many sessions at once; turning an offer down");
                let (signal, id) = (signal.clone(), id.clone());
                tokio::spawn(async move {
                    let _ = signal.post(&SignalMessage::bye(id)).await;
                });
                return;
            }
            let Some(sdp) = message.sdp else {
                tracing::debug!(session = %short(&id), "offer without sdp");
                return;
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let (offers_tx, offers) = mpsc::unbounded_channel();
            let cancel = shutdown.child_token();
            map.insert(
                id.clone(),
                Session {
                    candidates: tx,
                    offers: offers_tx,
                    cancel: cancel.clone(),
                },
            );
            let task = SessionTask {
                id,
                signal: signal.clone(),
                upstream: Arc::clone(upstream),
                resume: resume.clone(),
                config: config.clone(),
                sessions: Arc::clone(sessions),
                cancel,
            };
            tokio::spawn(task.run(sdp, rx, offers));
        }
        SignalKind::Candidate => {
            let candidate = message
                .candidate
                .as_ref()
                .and_then(|c| c.get("candidate"))
                .and_then(|c| c.as_str())
                .unwrap_or_default();
            if let Some(session) = map.get(&id) {
                if !candidate.is_empty() {
                    let _ = session.candidates.send(candidate.to_owned());
                }
            }
        }
        SignalKind::Bye => {
            if let Some(session) = map.remove(&id) {
                tracing::debug!(session = %short(&id), "browser said bye");
                session.cancel.cancel();
            }
        }
        _ => {}
    }
}

/// The browser's address on the selected pair.
fn peer_ip(peer: &Peer) -> Option<String> {
    peer.selected_pair()
        .map(|p| match p.remote_addr.rsplit_once(':') {
            Some((ip, _port)) => ip.to_owned(),
            None => p.remote_addr,
        })
}

/// The `a=ice-ufrag` and `a=ice-pwd` of an offer.
fn ice_credentials_of(sdp: &str) -> Option<(String, String)> {
    let value = |key: &str| {
        sdp.lines()
            .find_map(|line| line.trim().strip_prefix(key))
            .map(str::to_owned)
    };
    Some((value("a=ice-ufrag:")?, value("a=ice-pwd:")?))
}

/// Enough of a session id to tell sessions apart in logs without logging
/// the whole credential.
fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

struct SessionTask<U> {
    id: String,
    signal: SignalClient,
    upstream: Arc<U>,
    resume: Option<Arc<ResumeSessions<U>>>,
    config: HomeConfig,
    sessions: Sessions,
    cancel: CancellationToken,
}

impl<U: Upstream> SessionTask<U> {
    async fn run(
        self,
        offer: String,
        candidates: mpsc::UnboundedReceiver<String>,
        offers: mpsc::UnboundedReceiver<String>,
    ) {
        let started = Instant::now();
        match self.serve(&offer, candidates, offers, started).await {
            Ok(()) => {
                tracing::info!(session = %short(&self.id), secs = started.elapsed().as_secs(), "session ended")
            }
            Err(reason) => tracing::warn!(session = %short(&self.id), %reason, "session failed"),
        }
        self.sessions.lock().expect("not poisoned").remove(&self.id);
    }

    async fn serve(
        &self,
        offer: &str,
        mut candidates: mpsc::UnboundedReceiver<String>,
        mut offers: mpsc::UnboundedReceiver<String>,
        started: Instant,
    ) -> Result<(), String> {
        let (peer, answer) = Peer::answer(self.config.peer.clone(), offer)
            .await
            .map_err(|e| e.to_string())?;
        let mid = beeline_transport::RemoteDescription::parse(offer)
            .map(|d| d.mid().to_owned())
            .unwrap_or_else(|_| "0".into());
        self.signal
            .post(&SignalMessage::answer(self.id.clone(), answer))
            .await
            .map_err(|e| format!("posting the answer: {e}"))?;
        let peer = Arc::new(peer);

        // Trickle candidates found after the answer was written.
        let trickle = {
            let (peer, signal, id) = (Arc::clone(&peer), self.signal.clone(), self.id.clone());
            tokio::spawn(async move {
                while let Some(c) = peer.next_local_candidate().await {
                    let init = serde_json::json!({"candidate": c.candidate, "sdpMid": mid, "sdpMLineIndex": 0});
                    if let Err(e) = signal
                        .post(&SignalMessage::candidate(id.clone(), init))
                        .await
                    {
                        tracing::debug!(error = %e, "could not trickle a candidate");
                        break;
                    }
                }
            })
        };
        let _trickle_guard = AbortOnDrop(trickle);

        let activity = Arc::new(LinkActivity::default());
        let mut state = peer.state();
        let mut idle_check =
            tokio::time::interval(Duration::from_secs(5).min(self.config.idle_timeout));
        let mut bridges = tokio::task::JoinSet::new();
        let mut channels = 0usize;
        let peer_streams = Arc::new(tokio::sync::Semaphore::new(
            self.config.max_streams_per_peer.max(1),
        ));
        // ICE credentials of the offer in force, to tell a restart from a
        // repeated offer.
        let mut ice_credentials = ice_credentials_of(offer);
        // Since when the path has failed, waiting for a restart.
        let mut failed_since: Option<Instant> = None;
        // The `resume` channel, when the page's session is resumable, and
        // its id on the resumable connection.
        let mut resume_carrier: Option<(beeline_bridge::CarrierId, Arc<DataChannelLink>)> = None;
        let outcome = loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break Ok(()),
                Some(offer) = offers.recv() => {
                    let credentials = ice_credentials_of(&offer);
                    if credentials.is_none() || credentials == ice_credentials {
                        tracing::debug!(session = %short(&self.id), "ignoring a repeated offer");
                        continue;
                    }
                    match peer.apply_restart_offer(&offer).await {
                        Ok(answer) => {
                            ice_credentials = credentials;
                            tracing::info!(session = %short(&self.id), "ICE restart from the browser");
                            if let Err(e) = self.signal.post(&SignalMessage::answer(self.id.clone(), answer)).await {
                                break Err(format!("posting the restart answer: {e}"));
                            }
                        }
                        Err(e) => tracing::warn!(session = %short(&self.id), error = %e, "refusing an ICE restart offer"),
                    }
                }
                Some(c) = candidates.recv() => {
                    if let Err(e) = peer.add_remote_candidate(&c) {
                        tracing::debug!(error = %e, "ignoring a remote candidate");
                    }
                }
                channel = peer.accept_channel() => {
                    let Some(channel) = channel else { break Ok(()) };
                    if let (RESUME_CHANNEL_LABEL, Some(resume)) = (channel.label(), &self.resume) {
                        // The page opens a new `resume` channel only when
                        // it stopped using the one before: the newest wins.
                        if let Some((id, old)) = resume_carrier.take() {
                            resume.detach(&self.id, id).await;
                            tokio::spawn(async move {
                                let _ = old.channel().close().await;
                            });
                        }
                        let link = Arc::new(DataChannelLink::sharing(channel, Arc::clone(&activity)));
                        match resume.attach(&self.id, Arc::clone(&link), peer_ip(&peer)).await {
                            Ok(id) => {
                                tracing::info!(session = %short(&self.id), "resumable session on the channel");
                                resume_carrier = Some((id, link));
                            }
                            Err(e) => tracing::debug!(session = %short(&self.id), error = %e, "resume channel refused"),
                        }
                        continue;
                    }
                    if channel.label() != HTTP_CHANNEL_LABEL {
                        tracing::debug!(label = channel.label(), "closing a channel with an unknown label");
                        let _ = channel.close().await;
                        continue;
                    }
                    if channels >= self.config.max_channels_per_peer {
                        tracing::debug!(session = %short(&self.id), limit = self.config.max_channels_per_peer, "closing an http channel over the limit");
                        let _ = channel.close().await;
                        continue;
                    }
                    channels += 1;
                    if bridges.is_empty() {
                        tracing::info!(
                            session = %short(&self.id),
                            setup_ms = started.elapsed().as_millis() as u64,
                            pair = %peer.selected_pair().map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
                            "direct channel open"
                        );
                    }
                    let channel = Arc::new(DataChannelLink::sharing(channel, Arc::clone(&activity)));
                    let mut bridge = self.config.bridge.clone();
                    bridge.peer_streams = Some(Arc::clone(&peer_streams));
                    bridge.cookies = self.config.cookie_key.clone().map(|key| CookieSeal {
                        key,
                        session: self.id.clone(),
                    });
                    bridge.peer_addr = peer_ip(&peer);
                    bridges.spawn(beeline_bridge::serve(channel, Arc::clone(&self.upstream), bridge));
                }
                changed = state.changed() => {
                    if changed.is_err() { break Ok(()) }
                    let s = *state.borrow_and_update();
                    match s {
                        // The browser may restart ICE (client.js does
                        // when its path goes `disconnected` or `failed`).
                        PeerState::Failed => {
                            failed_since.get_or_insert_with(Instant::now);
                            tracing::debug!(session = %short(&self.id), "path failed; waiting for an ICE restart");
                        }
                        PeerState::Closed => break Ok(()),
                        PeerState::Disconnected => {
                            tracing::debug!(session = %short(&self.id), "path disconnected");
                            // The page's streams go back to the link now,
                            // not when the channel is declared dead.
                            if let (Some((id, link)), Some(resume)) = (resume_carrier.take(), &self.resume) {
                                resume.detach(&self.id, id).await;
                                // Closed, so the page stops writing to it
                                // too; if the path comes back, it opens a
                                // new `resume` channel.
                                tokio::spawn(async move {
                                    let _ = link.channel().close().await;
                                });
                            }
                        }
                        PeerState::Connected => failed_since = None,
                        _ => {}
                    }
                }
                _ = idle_check.tick() => {
                    if failed_since.is_some_and(|t| t.elapsed() >= RESTART_GRACE) {
                        break Err("connection failed (no ICE restart came)".to_owned());
                    }
                    if activity.idle_for() >= self.config.idle_timeout {
                        tracing::info!(session = %short(&self.id), "closing idle connection");
                        break Ok(());
                    }
                }
            }
        };
        bridges.abort_all();
        peer.close().await;
        outcome
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
