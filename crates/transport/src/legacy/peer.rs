//! The peer connection on the webrtc-rs 0.17 component crates: one ICE agent, one DTLS connection, one SCTP
//! association, any number of data channels.
//!
//! Wiring (what the `webrtc` umbrella crate does with its transports, minus
//! media): the ICE agent yields a `Conn` once a candidate pair is selected;
//! DTLS runs directly on that `Conn` (no SRTP demultiplexer is needed because
//! nothing but DTLS records flows after ICE); SCTP runs on the DTLS `Conn`;
//! each data channel is one SCTP stream opened with DCEP (RFC 8832).

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use dtls::config::{ClientAuthType, Config as DtlsConfig, ExtendedMasterSecretType};
use dtls::conn::DTLSConn;
use dtls::crypto::Certificate;
use dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch, Mutex};
use tokio_util::sync::CancellationToken;
use webrtc_data::data_channel::{Config as ChannelConfig, DataChannel as RawChannel};
use webrtc_ice::agent::agent_config::AgentConfig;
use webrtc_ice::agent::Agent;
use webrtc_ice::candidate::candidate_base::unmarshal_candidate;
use webrtc_ice::candidate::{Candidate, CandidateType};
use webrtc_ice::mdns::MulticastDnsMode;
use webrtc_ice::network_type::NetworkType;
use webrtc_ice::state::ConnectionState;
use webrtc_ice::url::{ProtoType, SchemeType, Url};
use webrtc_sctp::association::{Association, Config as SctpConfig};
use webrtc_sctp::chunk::chunk_payload_data::PayloadProtocolIdentifier;
use webrtc_util::Conn;

use super::channel::Channel;
use super::ice_conn::IceConn;
use crate::description::{format_fingerprint, LocalDescription, RemoteDescription, Setup};
use crate::peer::{CandidateKind, Failure, LocalCandidate, PeerState, SelectedPair};
use crate::DataChannel;
use crate::{Error, PeerConfig};

impl From<CandidateType> for CandidateKind {
    fn from(t: CandidateType) -> Self {
        match t {
            CandidateType::ServerReflexive => Self::ServerReflexive,
            CandidateType::PeerReflexive => Self::PeerReflexive,
            CandidateType::Relay => Self::Relay,
            _ => Self::Host,
        }
    }
}

/// SRTP profiles offered in the DTLS `use_srtp` extension in both roles,
/// although no media will flow: as a server we must accept the extension
/// Chrome sends, and as a client we must send it because aiortc fails a
/// handshake that negotiated no SRTP profile. The keys are never used.
const SRTP_PROFILES: [SrtpProtectionProfile; 3] = [
    SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
    SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
    SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
];

/// The SCTP port beeline uses on its side (the conventional 5000).
const SCTP_PORT: u16 = 5000;

/// How often ICE sends connectivity checks while connecting.
const CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// How long a restart waits for the previous candidate gathering to finish
/// (the ICE agent refuses to restart while it gathers).
const RESTART_GATHER_WAIT: Duration = Duration::from_secs(6);

/// A gathered local candidate (or the end of a gathering, `None`), tagged
/// with the ICE generation it belongs to: an ICE restart starts a new
/// generation, and candidates of an older one are never handed out.
type GatheredCandidate = (u32, Option<String>);

/// A peer connection of the 0.17 stack; see [`crate::Peer`].
pub(crate) struct Peer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("controlling", &self.inner.controlling)
            .field("state", &*self.inner.state.borrow())
            .finish()
    }
}

struct Inner {
    config: PeerConfig,
    agent: Arc<Agent>,
    certificate: Certificate,
    fingerprint: String,
    controlling: bool,
    remote: StdMutex<Option<RemoteDescription>>,
    state: watch::Sender<PeerState>,
    failure: StdMutex<Option<Failure>>,
    local_candidates: Mutex<mpsc::UnboundedReceiver<GatheredCandidate>>,
    /// The current ICE generation (0, then +1 per restart).
    generation: Arc<AtomicU32>,
    /// The latest generation whose gathering has completed.
    gathered: watch::Sender<Option<u32>>,
    /// An offerer sent a restart offer and waits for its answer.
    restart_pending: AtomicBool,
    /// Serialises restarts.
    restart_lock: Mutex<()>,
    channels_tx: mpsc::Sender<DataChannel>,
    channels_rx: Mutex<mpsc::Receiver<DataChannel>>,
    association: watch::Sender<Option<Arc<Association>>>,
    dtls: StdMutex<Option<Arc<DTLSConn>>>,
    dtls_client: AtomicBool,
    next_stream_id: AtomicU16,
    cancel: CancellationToken,
    /// When the peer was created: the setup budget counts from here.
    created: tokio::time::Instant,
    /// Remote candidates taken so far (capped by
    /// `PeerConfig::max_remote_candidates`).
    remote_candidates: AtomicU32,
}

impl Peer {
    /// Creates an offerer and its offer. Apply the answer with
    /// [`Peer::apply_answer`].
    ///
    /// The offer embeds the candidates gathered within
    /// [`PeerConfig::gather_wait`] (all of them, with `a=end-of-candidates`,
    /// when gathering finishes in time); later ones come from
    /// [`Peer::next_local_candidate`].
    pub(crate) async fn offer(config: PeerConfig) -> Result<(Self, String), Error> {
        let peer = Self::new(config, true).await?;
        let sdp = peer.local_description(Setup::ActPass, "0").await;
        Ok((peer, sdp))
    }

    /// Creates an answerer for `offer_sdp` and returns it with its answer.
    ///
    /// The answer embeds the candidates gathered within
    /// [`PeerConfig::gather_wait`]; later ones come from
    /// [`Peer::next_local_candidate`].
    pub(crate) async fn answer(
        config: PeerConfig,
        offer_sdp: &str,
    ) -> Result<(Self, String), Error> {
        let remote = RemoteDescription::parse(offer_sdp)?;
        let peer = Self::new(config, false).await?;
        let setup = match remote.setup {
            Setup::Active => Setup::Passive,
            Setup::Passive | Setup::ActPass => Setup::Active,
        };
        let mid = remote.mid.clone();
        peer.start(remote, setup == Setup::Active)?;
        let sdp = peer.local_description(setup, &mid).await;
        Ok((peer, sdp))
    }

    /// Applies the remote answer to an offerer: the first answer starts
    /// connecting; after [`Peer::restart_offer`], the answer to the restart
    /// offer completes the ICE restart.
    pub(crate) fn apply_answer(&self, answer_sdp: &str) -> Result<(), Error> {
        if !self.inner.controlling {
            return Err(Error::InvalidState("apply_answer on an answerer"));
        }
        let remote = RemoteDescription::parse(answer_sdp)?;
        if self.inner.restart_pending.load(Ordering::SeqCst) {
            return self.apply_restart_answer(remote);
        }
        let dtls_client = match remote.setup {
            Setup::Active => false,
            Setup::Passive => true,
            Setup::ActPass => {
                return Err(Error::InvalidDescription(
                    "an answer cannot be a=setup:actpass".into(),
                ))
            }
        };
        self.start(remote, dtls_client)
    }

    /// Adds a trickled remote candidate (`candidate:...`, with or without the
    /// `candidate:` prefix). An empty string (end of candidates) is accepted
    /// and ignored. Candidates outside the address filter are dropped, and so
    /// are mDNS (`.local`) host candidates: see `docs/transport.md` for why
    /// they need not be resolved.
    pub(crate) fn add_remote_candidate(&self, candidate: &str) -> Result<(), Error> {
        let raw = crate::description::candidate_body(candidate);
        if raw.is_empty() {
            return Ok(());
        }
        let parsed =
            unmarshal_candidate(raw).map_err(|e| Error::InvalidCandidate(e.to_string()))?;
        if let Ok(ip) = parsed.address().parse::<std::net::IpAddr>() {
            if !self.inner.config.address_filter.allows_remote(ip) {
                tracing::debug!(address = %ip, "dropping remote candidate outside the address filter");
                return Ok(());
            }
        } else {
            // A hostname (mDNS): never resolved, since that would multicast
            // on every interface. The browser's checks reach our candidates
            // and its address is learnt as peer-reflexive instead.
            tracing::debug!(
                address = parsed.address(),
                "ignoring remote hostname candidate"
            );
            return Ok(());
        }
        // Each candidate costs connectivity checks to its address: a peer
        // gets a bounded number, so an offer cannot aim a flood elsewhere.
        let max = self.inner.config.max_remote_candidates;
        if self.inner.remote_candidates.fetch_add(1, Ordering::Relaxed) >= max {
            return Err(Error::TooManyCandidates(max));
        }
        let c: Arc<dyn Candidate + Send + Sync> = Arc::new(parsed);
        self.inner.agent.add_remote_candidate(&c)?;
        Ok(())
    }

    /// The next local candidate to trickle; `None` once gathering is
    /// complete (or the peer is closed). Candidates already embedded in the
    /// offer/answer are not returned again, so after a fully gathered
    /// description this returns `None` at once.
    ///
    /// An ICE restart starts a new gathering: after
    /// [`Peer::restart_offer`] or [`Peer::apply_restart_offer`], call this
    /// again (until `None`) to trickle the restart's later candidates.
    pub(crate) async fn next_local_candidate(&self) -> Option<LocalCandidate> {
        let mut rx = self.inner.local_candidates.lock().await;
        let mut gathered = self.inner.gathered.subscribe();
        loop {
            let generation = self.inner.generation.load(Ordering::SeqCst);
            let item = match rx.try_recv() {
                Ok(item) => item,
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Every candidate of a generation is queued before its
                    // gathering is marked complete.
                    if *gathered.borrow_and_update() == Some(generation) {
                        return None;
                    }
                    tokio::select! {
                        item = rx.recv() => item?,
                        _ = gathered.changed() => continue,
                        _ = self.inner.cancel.cancelled() => return None,
                    }
                }
            };
            match item {
                (g, _) if g != generation => continue,
                (_, Some(candidate)) => return Some(LocalCandidate { candidate }),
                (_, None) => return None,
            }
        }
    }

    /// Waits for the next data channel the remote peer opens. `None` once the
    /// peer is closed.
    pub(crate) async fn accept_channel(&self) -> Option<DataChannel> {
        let mut rx = self.inner.channels_rx.lock().await;
        tokio::select! {
            ch = rx.recv() => ch,
            _ = self.inner.cancel.cancelled() => None,
        }
    }

    /// Opens a reliable, ordered data channel, waiting for the connection if
    /// it is still being set up.
    pub(crate) async fn open_channel(&self, label: &str) -> Result<DataChannel, Error> {
        let association = self.wait_association().await?;
        // RFC 8832: the DTLS client uses even stream ids, the server odd ones.
        let parity = u16::from(!self.inner.dtls_client.load(Ordering::SeqCst));
        let id = self.inner.next_stream_id.fetch_add(1, Ordering::SeqCst) * 2 + parity;
        let stream = association
            .open_stream(id, PayloadProtocolIdentifier::Binary)
            .await?;
        let config = ChannelConfig {
            label: label.to_owned(),
            ..Default::default()
        };
        let raw = RawChannel::client(Arc::clone(&stream), config).await?;
        Ok(DataChannel::from(Channel::new(
            raw,
            stream,
            label.to_owned(),
            self.remote_max_message_size(),
            self.inner.config.max_message_size as usize,
        )))
    }

    /// Watches the connection state. A dead path shows as
    /// [`PeerState::Disconnected`] after [`PeerConfig::disconnected_timeout`]
    /// of silence, and [`PeerState::Failed`] after
    /// [`PeerConfig::failed_timeout`] more.
    pub(crate) fn state(&self) -> watch::Receiver<PeerState> {
        self.inner.state.subscribe()
    }

    /// Waits until the connection is up, or fails with why it is not
    /// ([`Error::FingerprintMismatch`], [`Error::Timeout`], ...).
    pub(crate) async fn connected(&self) -> Result<(), Error> {
        self.wait_association().await.map(|_| ())
    }

    /// The candidate pair in use, once ICE has selected one.
    pub(crate) fn selected_pair(&self) -> Option<SelectedPair> {
        let pair = self.inner.agent.get_selected_candidate_pair()?;
        Some(SelectedPair {
            local: pair.local.candidate_type().into(),
            local_addr: format!("{}:{}", pair.local.address(), pair.local.port()),
            remote: pair.remote.candidate_type().into(),
            remote_addr: format!("{}:{}", pair.remote.address(), pair.remote.port()),
            receive_buffer: pair
                .local
                .get_conn()
                .and_then(|conn| udp_socket(conn.as_ref()))
                .and_then(|socket| socket.recv_buffer_size().ok()),
        })
    }

    /// The largest message the remote peer accepts (its `a=max-message-size`).
    pub(crate) fn remote_max_message_size(&self) -> usize {
        let remote = self.inner.remote.lock().expect("not poisoned");
        remote
            .as_ref()
            .map_or(64 * 1024, |r| r.max_message_size as usize)
    }

    /// Starts an ICE restart on an offerer: fresh ICE credentials, fresh
    /// candidates, and a new offer to send to the remote peer, whose answer
    /// goes to [`Peer::apply_answer`]. DTLS, SCTP and every open channel are
    /// kept; messages sent meanwhile are delivered once the new path is up.
    ///
    /// Meant for a path that went [`PeerState::Disconnected`] or
    /// [`PeerState::Failed`] (e.g. after a network change); allowed once the
    /// connection was up and until it is closed.
    pub(crate) async fn restart_offer(&self) -> Result<String, Error> {
        if !self.inner.controlling {
            return Err(Error::InvalidState("restart_offer on an answerer"));
        }
        let _guard = self.inner.restart_lock.lock().await;
        self.restart_ice().await?;
        self.inner.restart_pending.store(true, Ordering::SeqCst);
        Ok(self.local_description(Setup::ActPass, "0").await)
    }

    /// Answers an ICE-restart offer from the remote peer (a new offer on a
    /// connection that is up, with a new `a=ice-ufrag`/`a=ice-pwd`), and
    /// returns the answer. DTLS, SCTP and every open channel are kept.
    ///
    /// An offer whose credentials did not change restarts nothing: its
    /// candidates are added and the current answer is returned.
    pub(crate) async fn apply_restart_offer(&self, offer_sdp: &str) -> Result<String, Error> {
        if self.inner.controlling {
            return Err(Error::InvalidState("apply_restart_offer on an offerer"));
        }
        let remote = RemoteDescription::parse(offer_sdp)?;
        let _guard = self.inner.restart_lock.lock().await;
        let (changed, mid) = {
            let current = self.inner.remote.lock().expect("not poisoned");
            let current = current
                .as_ref()
                .ok_or(Error::InvalidState("no offer applied yet"))?;
            if current.fingerprint != remote.fingerprint {
                return Err(Error::InvalidDescription(
                    "the restart offer changes the DTLS fingerprint".into(),
                ));
            }
            (
                (current.ufrag != remote.ufrag || current.pwd != remote.pwd),
                current.mid.clone(),
            )
        };
        if changed {
            self.restart_ice().await?;
            self.inner
                .agent
                .set_remote_credentials(remote.ufrag.clone(), remote.pwd.clone())
                .await?;
        }
        self.add_description_candidates(&remote);
        let setup = if self.inner.dtls_client.load(Ordering::SeqCst) {
            Setup::Active
        } else {
            Setup::Passive
        };
        self.replace_remote(remote);
        Ok(self.local_description(setup, &mid).await)
    }

    /// Closes every channel and the connection, and frees its sockets.
    pub(crate) async fn close(&self) {
        self.inner.shutdown().await;
    }

    async fn new(config: PeerConfig, controlling: bool) -> Result<Self, Error> {
        let urls = ice_server_urls(&config).await?;
        let filter = config.address_filter.clone();
        let ip_filter: Option<webrtc_ice::agent::agent_config::IpFilterFn> = if filter.is_open() {
            None
        } else {
            let f = filter.clone();
            Some(Box::new(move |ip| f.allows_ip(ip)))
        };
        let interface_filter: Option<webrtc_ice::agent::agent_config::InterfaceFilterFn> =
            if filter.is_open() {
                None
            } else {
                let f = filter.clone();
                Some(Box::new(move |name: &str| f.allows_interface(name)))
            };
        // A pair whose checks get no answer is given up after this many
        // checks: the session's check budget shared by as many remote
        // candidates as it may take, so that a page naming other hosts as
        // candidates cannot make us flood them (at least 7, as RFC 8445's
        // retransmissions; at most the setup budget's worth).
        let most = (config.connect_timeout.as_millis() / CHECK_INTERVAL.as_millis()).clamp(7, 400);
        let share = u128::from(config.check_budget / config.max_remote_candidates.max(1));
        let max_binding_requests = share.clamp(7, most) as u16;
        let agent_config = AgentConfig {
            urls,
            network_types: vec![NetworkType::Udp4, NetworkType::Udp6],
            is_controlling: controlling,
            // Browsers hide host candidates behind mDNS names; we do not
            // resolve them (that would multicast on every interface). Their
            // connectivity checks reach us anyway and become peer-reflexive.
            multicast_dns_mode: MulticastDnsMode::Disabled,
            include_loopback: filter.wants_loopback(),
            ip_filter: Arc::new(ip_filter),
            interface_filter: Arc::new(interface_filter),
            check_interval: CHECK_INTERVAL,
            max_binding_requests: Some(max_binding_requests),
            keepalive_interval: Some(config.keepalive_interval),
            disconnected_timeout: Some(config.disconnected_timeout),
            failed_timeout: Some(config.failed_timeout),
            // Nominate as soon as a direct pair works; a relay waits a
            // little so that a direct path found meanwhile wins.
            host_acceptance_min_wait: Some(Duration::ZERO),
            srflx_acceptance_min_wait: Some(Duration::ZERO),
            prflx_acceptance_min_wait: Some(Duration::ZERO),
            relay_acceptance_min_wait: Some(config.relay_wait),
            ..Default::default()
        };
        let agent = Arc::new(Agent::new(agent_config).await?);

        let certificate = Certificate::generate_self_signed(vec!["beeline".to_owned()])?;
        let digest = Sha256::digest(certificate.certificate[0].as_ref());
        let fingerprint = format_fingerprint(&digest);

        let generation = Arc::new(AtomicU32::new(0));
        let (gathered, _) = watch::channel(None);
        let (cand_tx, cand_rx) = mpsc::unbounded_channel();
        {
            let generation = Arc::clone(&generation);
            let gathered = gathered.clone();
            let socket_buffer = config.socket_buffer;
            agent.on_candidate(Box::new(
                move |c: Option<Arc<dyn Candidate + Send + Sync>>| {
                    if let Some((size, conn)) =
                        socket_buffer.zip(c.as_ref().and_then(|c| c.get_conn()))
                    {
                        size_socket_buffers(conn.as_ref(), size);
                    }
                    let g = generation.load(Ordering::SeqCst);
                    if c.is_none() {
                        gathered.send_replace(Some(g));
                    }
                    let _ = cand_tx.send((g, c.map(|c| format!("candidate:{}", c.marshal()))));
                    Box::pin(async {})
                },
            ));
        }

        let (state, _) = watch::channel(PeerState::New);
        let (channels_tx, channels_rx) = mpsc::channel(16);
        let (association, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            config,
            agent: Arc::clone(&agent),
            certificate,
            fingerprint,
            controlling,
            remote: StdMutex::new(None),
            state,
            failure: StdMutex::new(None),
            local_candidates: Mutex::new(cand_rx),
            generation,
            gathered,
            restart_pending: AtomicBool::new(false),
            restart_lock: Mutex::new(()),
            channels_tx,
            channels_rx: Mutex::new(channels_rx),
            association,
            dtls: StdMutex::new(None),
            dtls_client: AtomicBool::new(false),
            next_stream_id: AtomicU16::new(0),
            cancel: CancellationToken::new(),
            created: tokio::time::Instant::now(),
            remote_candidates: AtomicU32::new(0),
        });

        let weak = Arc::downgrade(&inner);
        agent.on_connection_state_change(Box::new(move |s: ConnectionState| {
            if let Some(inner) = weak.upgrade() {
                tracing::debug!(ice = %s, "ICE connection state");
                match s {
                    ConnectionState::Disconnected => inner.set_state(PeerState::Disconnected),
                    ConnectionState::Failed => {
                        inner.fail(Failure::Other("ICE connectivity lost".into()));
                    }
                    ConnectionState::Connected if inner.association.borrow().is_some() => {
                        inner.set_state(PeerState::Connected);
                    }
                    _ => {}
                }
            }
            Box::pin(async {})
        }));
        agent.gather_candidates()?;
        Ok(Self { inner })
    }

    /// Our description with the current ICE credentials and the candidates
    /// of the current generation gathered within `gather_wait`.
    async fn local_description(&self, setup: Setup, mid: &str) -> String {
        let (candidates, complete) = self.initial_candidates().await;
        let (ufrag, pwd) = self.inner.agent.get_local_user_credentials().await;
        LocalDescription {
            ufrag: &ufrag,
            pwd: &pwd,
            fingerprint: &self.inner.fingerprint,
            setup,
            mid,
            max_message_size: self.inner.config.max_message_size,
            candidates: &candidates,
            end_of_candidates: complete,
        }
        .to_sdp()
    }

    /// Collects local candidates of the current generation until gathering
    /// completes or `gather_wait` passes. Returns them and whether gathering
    /// completed.
    async fn initial_candidates(&self) -> (Vec<String>, bool) {
        let mut out = Vec::new();
        if self.inner.config.gather_wait.is_zero() {
            // Pure trickle: every candidate goes through next_local_candidate.
            return (out, false);
        }
        let mut rx = self.inner.local_candidates.lock().await;
        let generation = self.inner.generation.load(Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + self.inner.config.gather_wait;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((g, _))) if g != generation => {}
                Ok(Some((_, Some(c)))) => out.push(c),
                Ok(Some((_, None))) | Ok(None) => return (out, true),
                Err(_) => return (out, false),
            }
        }
    }

    fn start(&self, remote: RemoteDescription, dtls_client: bool) -> Result<(), Error> {
        {
            let mut slot = self.inner.remote.lock().expect("not poisoned");
            if slot.is_some() {
                return Err(Error::InvalidState("remote description already applied"));
            }
            *slot = Some(remote.clone());
        }
        self.inner.dtls_client.store(dtls_client, Ordering::SeqCst);
        self.add_description_candidates(&remote);
        self.inner.set_state(PeerState::Connecting);
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            // The budget counts from the peer's creation, so an offerer's wait
            // for the answer is part of it.
            let timeout = inner.config.connect_timeout;
            let deadline = inner.created + timeout;
            let result = tokio::select! {
                r = tokio::time::timeout_at(deadline, Inner::connect(Arc::clone(&inner), remote, dtls_client)) => {
                    r.unwrap_or(Err(Error::Timeout(timeout)))
                }
                _ = inner.cancel.cancelled() => Err(Error::Closed),
            };
            match result {
                Ok(association) => Inner::accept_loop(inner, association).await,
                Err(e) => {
                    tracing::debug!(error = %e, "peer connection failed");
                    inner.fail(match e {
                        Error::FingerprintMismatch => Failure::FingerprintMismatch,
                        Error::Timeout(d) => Failure::Timeout(d),
                        other => Failure::Other(other.to_string()),
                    });
                    inner.shutdown().await;
                }
            }
        });
        Ok(())
    }

    fn add_description_candidates(&self, remote: &RemoteDescription) {
        for c in &remote.candidates {
            if let Err(e) = self.add_remote_candidate(c) {
                tracing::debug!(error = %e, candidate = c, "ignoring bad candidate in description");
            }
        }
    }

    fn replace_remote(&self, remote: RemoteDescription) {
        *self.inner.remote.lock().expect("not poisoned") = Some(remote);
    }

    fn apply_restart_answer(&self, remote: RemoteDescription) -> Result<(), Error> {
        {
            let current = self.inner.remote.lock().expect("not poisoned");
            let current = current
                .as_ref()
                .ok_or(Error::InvalidState("no answer applied yet"))?;
            if current.fingerprint != remote.fingerprint {
                return Err(Error::InvalidDescription(
                    "the restart answer changes the DTLS fingerprint".into(),
                ));
            }
        }
        self.inner.restart_pending.store(false, Ordering::SeqCst);
        let agent = Arc::clone(&self.inner.agent);
        let (ufrag, pwd) = (remote.ufrag.clone(), remote.pwd.clone());
        // The agent takes the credentials asynchronously; a check sent
        // before they land fails its integrity check and is simply repeated.
        tokio::spawn(async move {
            if let Err(e) = agent.set_remote_credentials(ufrag, pwd).await {
                tracing::warn!(error = %e, "could not apply the restart answer's ICE credentials");
            }
        });
        self.add_description_candidates(&remote);
        self.replace_remote(remote);
        Ok(())
    }

    /// Restarts ICE: new local credentials, the old candidates dropped, a
    /// new gathering started. The caller holds `restart_lock`.
    async fn restart_ice(&self) -> Result<(), Error> {
        let state = *self.inner.state.borrow();
        if matches!(state, PeerState::New | PeerState::Closed)
            || self.inner.remote.lock().expect("not poisoned").is_none()
        {
            return Err(Error::InvalidState(
                "ICE restart before the connection was set up or after it closed",
            ));
        }
        if self.inner.association.borrow().is_none() {
            return Err(Error::InvalidState(
                "ICE restart before the connection was up",
            ));
        }
        // The agent refuses to restart while it gathers: let the current
        // gathering finish first.
        let generation = self.inner.generation.load(Ordering::SeqCst);
        let mut gathered = self.inner.gathered.subscribe();
        let _ = tokio::time::timeout(
            RESTART_GATHER_WAIT,
            gathered.wait_for(|g| *g == Some(generation)),
        )
        .await;
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        self.inner
            .agent
            .restart(String::new(), String::new())
            .await?;
        self.inner.agent.gather_candidates()?;
        self.inner.force_connecting();
        Ok(())
    }

    async fn wait_association(&self) -> Result<Arc<Association>, Error> {
        let mut assoc = self.inner.association.subscribe();
        let mut state = self.inner.state.subscribe();
        loop {
            if let Some(a) = assoc.borrow_and_update().clone() {
                return Ok(a);
            }
            if matches!(
                *state.borrow_and_update(),
                PeerState::Failed | PeerState::Closed
            ) {
                return Err(self
                    .inner
                    .failure
                    .lock()
                    .expect("not poisoned")
                    .as_ref()
                    .map_or(Error::Closed, Error::from));
            }
            tokio::select! {
                r = assoc.changed() => r.map_err(|_| Error::Closed)?,
                r = state.changed() => r.map_err(|_| Error::Closed)?,
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let inner = Arc::clone(&self.inner);
        inner.cancel.cancel();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { inner.shutdown().await });
        }
    }
}

/// The ICE server URLs of `config`, with credentials. Under an address
/// filter, a server is used only when its address is inside the filter
/// (hostnames are resolved here for that check), so that STUN and TURN
/// traffic is confined like every other ICE packet.
async fn ice_server_urls(config: &PeerConfig) -> Result<Vec<Url>, Error> {
    let filter = &config.address_filter;
    let mut urls = Vec::new();
    for server in &config.ice_servers {
        for raw in &server.urls {
            let mut url = Url::parse_url(raw)
                .map_err(|e| Error::InvalidConfig(format!("ICE server {raw:?}: {e}")))?;
            if !relay_url_usable(&url) {
                crate::config::skip_unusable_relay_url(raw);
                continue;
            }
            url.username = server.username.clone().unwrap_or_default();
            url.password = server.credential.clone().unwrap_or_default();
            if !filter.is_open() {
                let host = url
                    .host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                let resolved: Vec<std::net::IpAddr> = match host.parse() {
                    Ok(ip) => vec![ip],
                    Err(_) => match tokio::net::lookup_host((host.as_str(), url.port)).await {
                        Ok(addrs) => addrs.map(|a| a.ip()).collect(),
                        Err(e) => {
                            tracing::warn!(server = %raw, error = %e, "skipping ICE server that does not resolve");
                            continue;
                        }
                    },
                };
                let Some(ip) = resolved.iter().copied().find(|ip| filter.allows_ip(*ip)) else {
                    tracing::warn!(server = %raw, "skipping ICE server outside the address filter");
                    continue;
                };
                url.host = ip.to_string();
            }
            urls.push(url);
        }
    }
    Ok(urls)
}

/// Whether webrtc-ice 0.17 can gather a relayed candidate from `url`: a
/// `turn:` URL over UDP. Its relay gatherer
/// (`webrtc-ice-0.17.2/src/agent/agent_gather.rs`, `gather_candidates_relay`)
/// handles only that case and drops `turn:...?transport=tcp` and every
/// `turns:` URL with a `log` warning; the TURN client it uses (`turn` 0.17)
/// speaks only datagrams. See docs/transport.md, "TURN over TCP and TLS".
/// STUN URLs are not relay URLs and are always usable here.
fn relay_url_usable(url: &Url) -> bool {
    match url.scheme {
        SchemeType::Turn => url.proto == ProtoType::Udp,
        SchemeType::Turns => false,
        _ => true,
    }
}

impl Inner {
    fn set_state(&self, next: PeerState) {
        let changed = self.state.send_if_modified(|s| {
            // Terminal states stay terminal (only an ICE restart leaves Failed).
            if *s == next || matches!(*s, PeerState::Closed | PeerState::Failed) {
                return false;
            }
            *s = next;
            true
        });
        if changed {
            self.log_state(next);
        }
    }

    /// The one INFO line per state change, naming the selected pair.
    fn log_state(&self, state: PeerState) {
        match self.agent.get_selected_candidate_pair() {
            Some(pair) if state == PeerState::Connected => tracing::info!(
                ?state,
                local = %format_args!("{} {}:{}", pair.local.candidate_type(), pair.local.address(), pair.local.port()),
                remote = %format_args!("{} {}:{}", pair.remote.candidate_type(), pair.remote.address(), pair.remote.port()),
                "peer connection state"
            ),
            _ => tracing::info!(?state, "peer connection state"),
        }
    }

    /// An ICE restart: back to connecting from anything but closed.
    fn force_connecting(&self) {
        let changed = self.state.send_if_modified(|s| {
            if matches!(*s, PeerState::Closed | PeerState::Connecting) {
                return false;
            }
            *s = PeerState::Connecting;
            true
        });
        if changed {
            self.log_state(PeerState::Connecting);
        }
    }

    fn fail(&self, why: Failure) {
        {
            let mut failure = self.failure.lock().expect("not poisoned");
            if failure.is_none() {
                *failure = Some(why);
            }
        }
        self.set_state(PeerState::Failed);
    }

    async fn connect(
        inner: Arc<Self>,
        remote: RemoteDescription,
        dtls_client: bool,
    ) -> Result<Arc<Association>, Error> {
        // The agent cancels dial/accept when this sender is dropped.
        let (_cancel_tx, cancel_rx) = mpsc::channel(1);
        let (ufrag, pwd) = (remote.ufrag.clone(), remote.pwd.clone());
        let ice: Arc<dyn Conn + Send + Sync> = if inner.controlling {
            inner.agent.dial(cancel_rx, ufrag, pwd).await?
        } else {
            inner.agent.accept(cancel_rx, ufrag, pwd).await?
        };
        tracing::debug!(pair = ?inner.agent.get_selected_candidate_pair().map(|p| p.to_string()), "ICE connected");

        let expected = remote.fingerprint;
        let mismatch = Arc::new(AtomicBool::new(false));
        let mismatch_flag = Arc::clone(&mismatch);
        let verify = Arc::new(
            move |certs: &[Vec<u8>], _: &[rustls_pki_types::CertificateDer<'static>]| {
                let ok = certs
                    .first()
                    .is_some_and(|der| Sha256::digest(der).as_slice() == expected);
                if ok {
                    Ok(())
                } else {
                    mismatch_flag.store(true, Ordering::SeqCst);
                    Err(dtls::Error::Other(
                        "certificate does not match a=fingerprint".into(),
                    ))
                }
            },
        );
        let config = DtlsConfig {
            certificates: vec![inner.certificate.clone()],
            srtp_protection_profiles: SRTP_PROFILES.to_vec(),
            client_auth: ClientAuthType::RequireAnyClientCert,
            extended_master_secret: ExtendedMasterSecretType::Request,
            // The certificate is self-signed; it is authenticated by the
            // fingerprint check above instead of a CA.
            insecure_skip_verify: true,
            verify_peer_certificate: Some(verify),
            ..Default::default()
        };
        let ice: Arc<dyn Conn + Send + Sync> = Arc::new(IceConn::new(ice, inner.cancel.clone()));
        let dtls = match DTLSConn::new(ice, config, dtls_client, None).await {
            Ok(c) => Arc::new(c),
            Err(_) if mismatch.load(Ordering::SeqCst) => return Err(Error::FingerprintMismatch),
            Err(e) => return Err(e.into()),
        };
        *inner.dtls.lock().expect("not poisoned") = Some(Arc::clone(&dtls));
        tracing::debug!(client = dtls_client, "DTLS connected");

        let association = Association::client(SctpConfig {
            net_conn: dtls as Arc<dyn Conn + Send + Sync>,
            max_receive_buffer_size: 0,
            max_message_size: remote.max_message_size,
            mtu: 0,
            name: String::new(),
            local_port: SCTP_PORT,
            remote_port: remote.sctp_port,
        })
        .await?;
        tracing::debug!("SCTP association up");
        Ok(Arc::new(association))
    }

    async fn accept_loop(inner: Arc<Self>, association: Arc<Association>) {
        inner
            .association
            .send_replace(Some(Arc::clone(&association)));
        inner.set_state(PeerState::Connected);
        let remote_max = inner
            .remote
            .lock()
            .expect("not poisoned")
            .as_ref()
            .map_or(64 * 1024, |r| r.max_message_size as usize);
        let local_max = inner.config.max_message_size as usize;
        loop {
            let stream = tokio::select! {
                s = association.accept_stream() => s,
                _ = inner.cancel.cancelled() => None,
            };
            let Some(stream) = stream else { break };
            stream.set_default_payload_type(PayloadProtocolIdentifier::Binary);
            // The DCEP open arrives right behind the stream's first chunk.
            let opened = tokio::select! {
                r = RawChannel::server(Arc::clone(&stream), ChannelConfig::default()) => r,
                _ = inner.cancel.cancelled() => break,
            };
            match opened {
                Ok(raw) => {
                    let label = raw.config.label.clone();
                    let channel =
                        DataChannel::from(Channel::new(raw, stream, label, remote_max, local_max));
                    if inner.channels_tx.send(channel).await.is_err() {
                        break;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "refused a data channel open"),
            }
        }
        inner.set_state(PeerState::Closed);
        inner.shutdown().await;
    }

    async fn shutdown(&self) {
        self.cancel.cancel();
        self.set_state(PeerState::Closed);
        if let Some(association) = self.association.send_replace(None) {
            let _ = association.close().await;
        }
        let dtls = self.dtls.lock().expect("not poisoned").take();
        if let Some(dtls) = dtls {
            let _ = dtls.close().await;
        }
        let _ = self.agent.close().await;
    }
}

/// The UDP socket behind an ICE connection, when it is one of ours (host
/// and server-reflexive candidates; not a relayed candidate's TURN client).
fn udp_socket(conn: &(dyn Conn + Send + Sync)) -> Option<socket2::SockRef<'_>> {
    conn.as_any()
        .downcast_ref::<tokio::net::UdpSocket>()
        .map(socket2::SockRef::from)
}

/// Asks the kernel for `size` bytes of receive and send buffer on a UDP
/// socket ICE gathered a candidate on, and returns what it granted. A
/// relayed candidate's connection (a TURN client, not a socket of ours) is
/// left alone (`None`). A refusal is logged: the default buffer still works,
/// only slower.
fn size_socket_buffers(conn: &(dyn Conn + Send + Sync), size: usize) -> Option<(usize, usize)> {
    crate::socket::size_buffers(&udp_socket(conn)?, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turn_over_tcp_and_tls_urls_are_skipped() {
        let config = PeerConfig {
            ice_servers: vec![crate::IceServer {
                urls: vec![
                    "stun:192.0.2.1:3478".into(),
                    "turn:192.0.2.1:3478".into(),
                    "turn:192.0.2.1:3478?transport=udp".into(),
                    "turn:192.0.2.1:3478?transport=tcp".into(),
                    "turns:192.0.2.1:5349".into(),
                    "turns:192.0.2.1:5349?transport=tcp".into(),
                    "turns:192.0.2.1:5349?transport=udp".into(),
                ],
                username: Some("1:u".into()),
                credential: Some("c".into()),
            }],
            ..Default::default()
        };
        let kept: Vec<String> = ice_server_urls(&config)
            .await
            .unwrap()
            .iter()
            .map(|u| format!("{}:{}:{}", u.scheme, u.port, u.proto))
            .collect();
        assert_eq!(kept, ["stun:3478:udp", "turn:3478:udp", "turn:3478:udp"]);
    }

    fn kernel_limit(name: &str) -> usize {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(usize::MAX)
    }

    #[tokio::test]
    async fn ice_sockets_get_the_asked_buffers() {
        let asked = 1024 * 1024;
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let before = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        let (recv, send) = size_socket_buffers(&socket, asked).expect("a UDP socket is sized");
        // Linux grants min(asked, rmem_max) and reports twice that.
        let floor = asked.min(kernel_limit("rmem_max"));
        assert!(recv >= floor, "receive buffer {recv} < {floor}");
        let send_floor = asked.min(kernel_limit("wmem_max"));
        assert!(send >= send_floor, "send buffer {send} < {send_floor}");
        if floor > before {
            assert!(recv > before, "receive buffer did not grow from {before}");
        }
    }

    #[tokio::test]
    async fn a_capped_request_reports_what_was_granted() {
        // Above net.core.rmem_max the kernel grants less than asked, which
        // is what makes the transport warn.
        let Some(asked) = kernel_limit("rmem_max").checked_mul(4) else {
            return;
        };
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (recv, _) = size_socket_buffers(&socket, asked).expect("a UDP socket is sized");
        assert!(recv < asked, "asked {asked}, granted {recv}");
    }

    #[tokio::test]
    async fn other_connections_are_left_alone() {
        let (pipe, _other) = webrtc_util::conn::conn_pipe::pipe();
        assert_eq!(size_socket_buffers(&pipe, 1 << 20), None);
    }
}
