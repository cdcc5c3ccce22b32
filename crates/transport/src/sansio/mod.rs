//! The transport on webrtc-rs's sans-I/O crates (`rtc-ice`, `rtc-dtls`,
//! `rtc-sctp`, `rtc-datachannel`, `rtc-stun`), selected with
//! [`crate::Stack::SansIo`].
//!
//! The state machines perform no I/O and read no clock. One driver task per
//! connection ([`driver`]) owns them together with the UDP sockets and the
//! TCP/TLS streams to TURN servers ([`stream`]); the
//! [`Peer`] and channel handles talk to it through a command queue. Nothing
//! is shared between the read and write paths but that task.

mod channel;
mod crypto;
mod driver;
mod gather;
mod nomination;
mod sctp_clock;
mod stream;
mod tls;
mod turn;
mod udp;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use rtc_crypto::RTCCryptoProvider;
use rtc_dtls::config::{ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig};
use rtc_dtls::crypto::Certificate;
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc_ice::agent::agent_config::AgentConfig;
use rtc_ice::agent::Agent;
use rtc_ice::candidate::unmarshal_candidate;
use rtc_ice::mdns::MulticastDnsMode;
use rtc_ice::network_type::NetworkType;
use tokio::sync::{mpsc, oneshot, watch, Mutex, Notify};

pub(crate) use channel::Channel;
use driver::{Command, Driver};
use gather::ReflexiveGatherer;

use crate::description::{format_fingerprint, LocalDescription, RemoteDescription, Setup};
use crate::peer::{Failure, LocalCandidate, PeerState, SelectedPair};
use crate::{AddressFilter, DataChannel, Error, PeerConfig};

/// The SCTP port beeline uses on its side (the conventional 5000).
const SCTP_PORT: u16 = 5000;

/// The SCTP receive window: what the remote may have in flight to us. Twice
/// `SEND_QUEUE`, so a beeline sender never fills a beeline receiver's
/// window: after a retransmission timeout `rtc-sctp` 0.21.1 still counts
/// every chunk it marked for retransmission as in flight, so a sender whose
/// flight had filled the window sees no room left and resends one chunk per
/// SACK, as a zero-window probe; the receiver delays each of those SACKs by
/// 200 ms. The NAT `outage` case then took 11–12 s to deliver one 64 KiB
/// message after the heal, in about one run of three. Several busy channels
/// on one connection can still fill it (`docs/transport.md`, known limits).
const RECEIVE_WINDOW: u32 = 4 * 1024 * 1024;

/// Sending waits while more than this many bytes of a channel are queued in
/// SCTP (in flight or not yet sent). Larger than what a fast path needs in
/// flight, so a writer held back by the congestion window leaves data in
/// SCTP's pending queue: `rtc-sctp` grows its congestion window only while
/// that queue is not empty. Half `RECEIVE_WINDOW` (see there): 2 MiB.
const SEND_QUEUE: usize = RECEIVE_WINDOW as usize / 2;

/// How often ICE sends connectivity checks while connecting.
const CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// SRTP profiles offered in the DTLS `use_srtp` extension although no media
/// flows: Chrome sends the extension and aiortc fails a handshake that
/// negotiated none. The keys are never used.
const SRTP_PROFILES: [SrtpProtectionProfile; 3] = [
    SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
    SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
    SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
];

/// Local candidates gathered so far, and whether gathering is over.
#[derive(Debug, Default)]
struct Gathered {
    /// 0, then +1 per ICE restart.
    generation: u64,
    lines: Vec<String>,
    complete: bool,
}

/// What the handles and the driver share. Everything here is written by
/// the driver and read by handles.
pub(crate) struct Shared {
    filter: AddressFilter,
    state: watch::Sender<PeerState>,
    failure: StdMutex<Option<Failure>>,
    selected: StdMutex<Option<SelectedPair>>,
    /// The SCTP association is up.
    up: watch::Sender<bool>,
    /// The remote certificate did not match its fingerprint.
    mismatch: AtomicBool,
    remote_max_message_size: AtomicUsize,
    gathered: StdMutex<Gathered>,
    gathered_changed: watch::Sender<u64>,
    accepted: mpsc::UnboundedSender<DataChannel>,
    /// The driver has stopped.
    finished: watch::Sender<bool>,
}

impl Shared {
    fn set_state(&self, next: PeerState) {
        let changed = self.state.send_if_modified(|s| {
            // Terminal states stay terminal.
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
        let pair = self.selected.lock().expect("not poisoned").clone();
        match pair {
            Some(p) if state == PeerState::Connected => tracing::info!(
                ?state,
                local = %format_args!("{:?} {}", p.local, p.local_addr),
                remote = %format_args!("{:?} {}", p.remote, p.remote_addr),
                "peer connection state"
            ),
            _ => tracing::info!(?state, "peer connection state"),
        }
    }

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

    fn push_candidate(&self, line: String) {
        self.gathered.lock().expect("not poisoned").lines.push(line);
        self.gathered_changed.send_modify(|v| *v += 1);
    }

    fn gathering_complete(&self) {
        let mut gathered = self.gathered.lock().expect("not poisoned");
        if !gathered.complete {
            gathered.complete = true;
            drop(gathered);
            self.gathered_changed.send_modify(|v| *v += 1);
        }
    }

    /// An ICE restart starts a new list of local candidates.
    fn new_generation(&self) {
        let mut gathered = self.gathered.lock().expect("not poisoned");
        *gathered = Gathered {
            generation: gathered.generation + 1,
            ..Gathered::default()
        };
        drop(gathered);
        self.gathered_changed.send_modify(|v| *v += 1);
    }

    fn closed(&self) {
        self.gathering_complete();
        self.finished.send_replace(true);
    }
}

/// A peer connection of the sans-I/O stack; see [`crate::Peer`].
pub(crate) struct Peer {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    config: PeerConfig,
    controlling: bool,
    crypto: Arc<dyn RTCCryptoProvider>,
    certificate: Certificate,
    fingerprint: String,
    local_credentials: StdMutex<(String, String)>,
    remote: StdMutex<Option<RemoteDescription>>,
    dtls_client: AtomicBool,
    restart_pending: AtomicBool,
    restart_lock: Mutex<()>,
    accepted: Mutex<mpsc::UnboundedReceiver<DataChannel>>,
    remote_candidates: AtomicU32,
    /// Local candidates already handed out (in a description or trickled):
    /// `(generation, count)`.
    handed_out: StdMutex<(u64, usize)>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("stack", &"sansio")
            .field("controlling", &self.controlling)
            .field("state", &*self.shared.state.borrow())
            .finish()
    }
}

impl Peer {
    pub(crate) async fn offer(config: PeerConfig) -> Result<(Self, String), Error> {
        let peer = Self::new(config, true).await?;
        let sdp = peer.local_description(Setup::ActPass, "0").await;
        Ok((peer, sdp))
    }

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

    pub(crate) fn apply_answer(&self, answer_sdp: &str) -> Result<(), Error> {
        if !self.controlling {
            return Err(Error::InvalidState("apply_answer on an answerer"));
        }
        let remote = RemoteDescription::parse(answer_sdp)?;
        if self.restart_pending.load(Ordering::SeqCst) {
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

    pub(crate) fn add_remote_candidate(&self, candidate: &str) -> Result<(), Error> {
        let raw = crate::description::candidate_body(candidate);
        if raw.is_empty() {
            return Ok(());
        }
        let parsed =
            unmarshal_candidate(raw).map_err(|e| Error::InvalidCandidate(e.to_string()))?;
        if let Ok(ip) = parsed.address().parse::<std::net::IpAddr>() {
            if !self.config.address_filter.allows_remote(ip) {
                tracing::debug!(address = %ip, "dropping remote candidate outside the address filter");
                return Ok(());
            }
        } else {
            // A hostname (mDNS): never resolved; the browser's checks reach
            // our candidates and its address is learnt as peer-reflexive.
            tracing::debug!(
                address = parsed.address(),
                "ignoring remote hostname candidate"
            );
            return Ok(());
        }
        if parsed.network_type().is_tcp() {
            tracing::debug!("ignoring remote TCP candidate");
            return Ok(());
        }
        let max = self.config.max_remote_candidates;
        if self.remote_candidates.fetch_add(1, Ordering::Relaxed) >= max {
            return Err(Error::TooManyCandidates(max));
        }
        self.commands
            .send(Command::RemoteCandidate(Box::new(parsed)))
            .map_err(|_| Error::Closed)
    }

    pub(crate) async fn next_local_candidate(&self) -> Option<LocalCandidate> {
        let mut changed = self.shared.gathered_changed.subscribe();
        let generation = self
            .shared
            .gathered
            .lock()
            .expect("not poisoned")
            .generation;
        loop {
            {
                let gathered = self.shared.gathered.lock().expect("not poisoned");
                // Candidates of an older generation are never handed out: a
                // restart ends that trickle (the caller asks again).
                if gathered.generation != generation {
                    return None;
                }
                let mut handed = self.handed_out.lock().expect("not poisoned");
                if handed.0 != generation {
                    *handed = (generation, 0);
                }
                if let Some(line) = gathered.lines.get(handed.1) {
                    handed.1 += 1;
                    return Some(LocalCandidate {
                        candidate: line.clone(),
                    });
                }
                if gathered.complete {
                    return None;
                }
            }
            changed.changed().await.ok()?;
        }
    }

    pub(crate) async fn accept_channel(&self) -> Option<DataChannel> {
        let mut rx = self.accepted.lock().await;
        let mut finished = self.shared.finished.subscribe();
        tokio::select! {
            channel = rx.recv() => channel,
            _ = finished.wait_for(|f| *f) => rx.try_recv().ok(),
        }
    }

    pub(crate) async fn open_channel(&self, label: &str) -> Result<DataChannel, Error> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(Command::Open {
                label: label.to_owned(),
                reply,
            })
            .map_err(|_| self.failure())?;
        match response.await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(Error::Closed)) | Err(_) => Err(self.failure()),
            Ok(Err(e)) => Err(e),
        }
    }

    pub(crate) fn state(&self) -> watch::Receiver<PeerState> {
        self.shared.state.subscribe()
    }

    pub(crate) async fn connected(&self) -> Result<(), Error> {
        let mut up = self.shared.up.subscribe();
        let mut state = self.shared.state.subscribe();
        loop {
            if *up.borrow_and_update() {
                return Ok(());
            }
            if matches!(
                *state.borrow_and_update(),
                PeerState::Failed | PeerState::Closed
            ) {
                return Err(self.failure());
            }
            tokio::select! {
                r = up.changed() => r.map_err(|_| Error::Closed)?,
                r = state.changed() => r.map_err(|_| Error::Closed)?,
            }
        }
    }

    pub(crate) fn selected_pair(&self) -> Option<SelectedPair> {
        self.shared.selected.lock().expect("not poisoned").clone()
    }

    pub(crate) fn remote_max_message_size(&self) -> usize {
        self.shared.remote_max_message_size.load(Ordering::Acquire)
    }

    pub(crate) async fn restart_offer(&self) -> Result<String, Error> {
        if !self.controlling {
            return Err(Error::InvalidState("restart_offer on an answerer"));
        }
        let _guard = self.restart_lock.lock().await;
        self.restart_ice().await?;
        self.restart_pending.store(true, Ordering::SeqCst);
        Ok(self.local_description(Setup::ActPass, "0").await)
    }

    pub(crate) async fn apply_restart_offer(&self, offer_sdp: &str) -> Result<String, Error> {
        if self.controlling {
            return Err(Error::InvalidState("apply_restart_offer on an offerer"));
        }
        let remote = RemoteDescription::parse(offer_sdp)?;
        let _guard = self.restart_lock.lock().await;
        let (changed, mid) = {
            let current = self.remote.lock().expect("not poisoned");
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
            self.take_remote_credentials(&remote)?;
        }
        self.add_description_candidates(&remote);
        let setup = if self.dtls_client.load(Ordering::SeqCst) {
            Setup::Active
        } else {
            Setup::Passive
        };
        *self.remote.lock().expect("not poisoned") = Some(remote);
        Ok(self.local_description(setup, &mid).await)
    }

    pub(crate) async fn close(&self) {
        let _ = self.commands.send(Command::Close);
        let mut finished = self.shared.finished.subscribe();
        let _ = finished.wait_for(|f| *f).await;
    }

    async fn new(config: PeerConfig, controlling: bool) -> Result<Self, Error> {
        let crypto = crypto::provider();
        let (mut sockets, host_candidates) = gather::bind_host_sockets(&config)?;
        let (servers, turn_servers) = gather::ice_servers(&config).await?;
        let now = Instant::now();
        let mut relays = Vec::new();
        for server in &turn_servers {
            if let Some(relay) = start_relay(&config, &mut sockets, server, &crypto, now)? {
                relays.push(relay);
            }
        }
        let gatherer = ReflexiveGatherer::start(&sockets, &servers, now)?;
        let driver_config = config.clone();

        // A pair whose checks get no answer is given up after this many
        // checks (see the 0.17 stack for the reasoning).
        let most = (config.connect_timeout.as_millis() / CHECK_INTERVAL.as_millis()).clamp(7, 400);
        let share = u128::from(config.check_budget / config.max_remote_candidates.max(1));
        let max_binding_requests = share.clamp(7, most) as u16;
        let agent_config = AgentConfig {
            network_types: vec![NetworkType::Udp4, NetworkType::Udp6],
            is_controlling: controlling,
            multicast_dns_mode: MulticastDnsMode::Disabled,
            check_interval: CHECK_INTERVAL,
            max_binding_requests: Some(max_binding_requests),
            keepalive_interval: Some(config.keepalive_interval),
            disconnected_timeout: Some(config.disconnected_timeout),
            failed_timeout: Some(config.failed_timeout),
            host_acceptance_min_wait: Some(Duration::ZERO),
            srflx_acceptance_min_wait: Some(Duration::ZERO),
            prflx_acceptance_min_wait: Some(Duration::ZERO),
            relay_acceptance_min_wait: Some(config.relay_wait),
            ..Default::default()
        };
        let mut agent = Agent::new(now, Arc::new(agent_config), Arc::clone(&crypto))
            .map_err(|e| Error::Failed(format!("ICE agent: {e}")))?;
        let (accepted_tx, accepted_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            filter: config.address_filter.clone(),
            state: watch::channel(PeerState::New).0,
            failure: StdMutex::new(None),
            selected: StdMutex::new(None),
            up: watch::channel(false).0,
            mismatch: AtomicBool::new(false),
            remote_max_message_size: AtomicUsize::new(64 * 1024),
            gathered: StdMutex::new(Gathered::default()),
            gathered_changed: watch::channel(0).0,
            accepted: accepted_tx,
            finished: watch::channel(false).0,
        });
        for candidate in host_candidates {
            let line = format!("candidate:{}", candidate.marshal());
            agent
                .add_local_candidate(candidate)
                .map_err(|e| Error::Failed(format!("ICE: {e}")))?;
            shared.push_candidate(line);
        }
        if gatherer.is_done() && relays.is_empty() {
            shared.gathering_complete();
        }
        let credentials = agent.get_local_credentials();
        let local_credentials = (credentials.ufrag.clone(), credentials.pwd.clone());

        let certificate = crypto::self_signed_certificate(crypto.crypto(), "beeline")
            .map_err(|e| Error::Failed(format!("certificate: {e}")))?;
        let fingerprint = format_fingerprint(&crypto::sha256(certificate.certificate[0].as_ref()));

        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            shared: Arc::clone(&shared),
            commands: command_rx,
            command_tx: command_tx.clone(),
            wake: Arc::new(Notify::new()),
            sockets,
            agent,
            gatherer,
            config: driver_config,
            stun_servers: servers,
            relays,
            controlling,
            deadline: now + config.connect_timeout,
            connect_timeout: config.connect_timeout,
            local_max_message_size: config.max_message_size,
            dtls: rtc_dtls::endpoint::Endpoint::new(
                driver::TUNNEL,
                rtc_shared::TransportProtocol::UDP,
                None,
            ),
            dtls_client_config: None,
            dtls_client: false,
            started: false,
            sctp: None,
            sctp_server: None,
            sctp_transport: None,
            association: None,
            sctp_clock: Default::default(),
            up: false,
            channels: HashMap::new(),
            blocked: Default::default(),
            pending_opens: Vec::new(),
            next_stream: 0,
            path: None,
            held_nomination: None,
            exit: false,
        };
        tokio::spawn(driver.run());
        Ok(Self {
            shared,
            commands: command_tx,
            config,
            controlling,
            crypto,
            certificate,
            fingerprint,
            local_credentials: StdMutex::new(local_credentials),
            remote: StdMutex::new(None),
            dtls_client: AtomicBool::new(false),
            restart_pending: AtomicBool::new(false),
            restart_lock: Mutex::new(()),
            accepted: Mutex::new(accepted_rx),
            remote_candidates: AtomicU32::new(0),
            handed_out: StdMutex::new((0, 0)),
        })
    }

    /// The DTLS handshake configuration for this connection: our
    /// certificate, and the remote's checked against `a=fingerprint`.
    fn dtls_config(&self, expected: [u8; 32], client: bool) -> Result<Arc<HandshakeConfig>, Error> {
        let shared = Arc::clone(&self.shared);
        let verify: rtc_dtls::config::VerifyPeerCertificateFn = Arc::new(move |certs, _| {
            if certs
                .first()
                .is_some_and(|der| crypto::sha256(der) == expected)
            {
                Ok(())
            } else {
                shared.mismatch.store(true, Ordering::Release);
                Err(rtc_shared::error::Error::Other(
                    "certificate does not match a=fingerprint".into(),
                ))
            }
        });
        let config = ConfigBuilder::default()
            .with_crypto_provider(Arc::clone(&self.crypto))
            .with_certificates(vec![self.certificate.clone()])
            .with_srtp_protection_profiles(SRTP_PROFILES.to_vec())
            .with_client_auth(ClientAuthType::RequireAnyClientCert)
            .with_extended_master_secret(ExtendedMasterSecretType::Request)
            // Self-signed: authenticated by the fingerprint check instead.
            .with_insecure_skip_verify(true)
            .with_verify_peer_certificate(Some(verify))
            // Names nothing (the certificate is checked by fingerprint);
            // set so the builder does not warn that it guessed one.
            .with_server_name("beeline".to_owned())
            .build(client, None)
            .map_err(|e| Error::Failed(format!("DTLS configuration: {e}")))?;
        Ok(Arc::new(config))
    }

    fn start(&self, remote: RemoteDescription, dtls_client: bool) -> Result<(), Error> {
        {
            let mut slot = self.remote.lock().expect("not poisoned");
            if slot.is_some() {
                return Err(Error::InvalidState("remote description already applied"));
            }
            *slot = Some(remote.clone());
        }
        self.dtls_client.store(dtls_client, Ordering::SeqCst);
        if remote.sctp_port != SCTP_PORT {
            // rtc-sctp 0.21 takes one port for both ends (its remote-port
            // support is a TODO); every browser and aiortc use 5000.
            tracing::warn!(
                port = remote.sctp_port,
                "the remote's a=sctp-port is not 5000; this stack talks to 5000"
            );
        }
        self.shared
            .remote_max_message_size
            .store(remote.max_message_size as usize, Ordering::Release);
        let dtls_config = self.dtls_config(remote.fingerprint, dtls_client)?;
        self.commands
            .send(Command::Start {
                remote_ufrag: remote.ufrag.clone(),
                remote_pwd: remote.pwd.clone(),
                dtls_client,
                dtls_config,
                remote_max_message_size: remote.max_message_size,
            })
            .map_err(|_| Error::Closed)?;
        self.add_description_candidates(&remote);
        Ok(())
    }

    fn add_description_candidates(&self, remote: &RemoteDescription) {
        for c in &remote.candidates {
            if let Err(e) = self.add_remote_candidate(c) {
                tracing::debug!(error = %e, candidate = c, "ignoring bad candidate in description");
            }
        }
    }

    fn apply_restart_answer(&self, remote: RemoteDescription) -> Result<(), Error> {
        {
            let current = self.remote.lock().expect("not poisoned");
            let current = current
                .as_ref()
                .ok_or(Error::InvalidState("no answer applied yet"))?;
            if current.fingerprint != remote.fingerprint {
                return Err(Error::InvalidDescription(
                    "the restart answer changes the DTLS fingerprint".into(),
                ));
            }
        }
        self.restart_pending.store(false, Ordering::SeqCst);
        self.take_remote_credentials(&remote)?;
        self.add_description_candidates(&remote);
        *self.remote.lock().expect("not poisoned") = Some(remote);
        Ok(())
    }

    /// A restart's remote credentials: checks start over against them, and
    /// the remote's candidates are counted afresh.
    fn take_remote_credentials(&self, remote: &RemoteDescription) -> Result<(), Error> {
        self.commands
            .send(Command::RemoteCredentials {
                ufrag: remote.ufrag.clone(),
                pwd: remote.pwd.clone(),
            })
            .map_err(|_| Error::Closed)?;
        self.remote_candidates.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// New local ICE credentials and a new generation of candidates.
    async fn restart_ice(&self) -> Result<(), Error> {
        if !*self.shared.up.borrow() || self.remote.lock().expect("not poisoned").is_none() {
            return Err(Error::InvalidState(
                "ICE restart before the connection was up",
            ));
        }
        let (reply, response) = oneshot::channel();
        self.commands
            .send(Command::Restart { reply })
            .map_err(|_| Error::Closed)?;
        let credentials = response.await.map_err(|_| Error::Closed)??;
        *self.local_credentials.lock().expect("not poisoned") = credentials;
        Ok(())
    }

    /// Our description with the current ICE credentials and every local
    /// candidate gathered within `gather_wait`.
    async fn local_description(&self, setup: Setup, mid: &str) -> String {
        let (candidates, complete) = self.initial_candidates().await;
        let (ufrag, pwd) = self.local_credentials.lock().expect("not poisoned").clone();
        LocalDescription {
            ufrag: &ufrag,
            pwd: &pwd,
            fingerprint: &self.fingerprint,
            setup,
            mid,
            max_message_size: self.config.max_message_size,
            candidates: &candidates,
            end_of_candidates: complete,
        }
        .to_sdp()
    }

    async fn initial_candidates(&self) -> (Vec<String>, bool) {
        let mut changed = self.shared.gathered_changed.subscribe();
        let deadline = tokio::time::Instant::now() + self.config.gather_wait;
        loop {
            let waited =
                self.config.gather_wait.is_zero() || tokio::time::Instant::now() >= deadline;
            {
                let gathered = self.shared.gathered.lock().expect("not poisoned");
                if gathered.complete || waited {
                    let mut handed = self.handed_out.lock().expect("not poisoned");
                    if self.config.gather_wait.is_zero() {
                        // Pure trickle: every candidate goes through
                        // next_local_candidate.
                        *handed = (gathered.generation, 0);
                        return (Vec::new(), false);
                    }
                    *handed = (gathered.generation, gathered.lines.len());
                    return (gathered.lines.clone(), gathered.complete);
                }
            }
            let _ = tokio::time::timeout_at(deadline, changed.changed()).await;
        }
    }

    fn failure(&self) -> Error {
        self.shared
            .failure
            .lock()
            .expect("not poisoned")
            .as_ref()
            .map_or(Error::Closed, Error::from)
    }
}

/// Starts allocating on `server`: from a UDP socket bound for it (added to
/// `sockets`), or over a TCP/TLS stream. `None` when no local address can
/// reach it.
fn start_relay(
    config: &PeerConfig,
    sockets: &mut Vec<gather::LocalSocket>,
    server: &turn::TurnServer,
    crypto: &Arc<dyn RTCCryptoProvider>,
    now: Instant,
) -> Result<Option<turn::TurnRelay>, Error> {
    let unreachable = || {
        tracing::debug!(server = %server.url, "no local address to reach the TURN server from");
        Ok(None)
    };
    let tls = match &server.via {
        turn::Via::Udp => {
            let Some(socket) = gather::bind_turn_socket(config, sockets, server.addr) else {
                return unreachable();
            };
            let local = socket.addr;
            sockets.push(socket);
            let relay = turn::TurnRelay::start(server, local, None, Arc::clone(crypto), now)?;
            return Ok(Some(relay));
        }
        turn::Via::Tcp => None,
        turn::Via::Tls(target) => Some(target),
    };
    let Some(ip) = gather::turn_local_ip(sockets, server.addr) else {
        return unreachable();
    };
    let (stream, local) = match stream::TurnStream::connect(ip, server.addr, tls) {
        Ok(connecting) => connecting,
        Err(e) => {
            tracing::debug!(server = %server.url, error = %e, "no TCP socket for the TURN server");
            return Ok(None);
        }
    };
    let relay = turn::TurnRelay::start(server, local, Some(stream), Arc::clone(crypto), now)?;
    Ok(Some(relay))
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Close);
    }
}
