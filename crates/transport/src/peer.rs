//! The peer connection: one ICE agent, one DTLS connection, one SCTP
//! association, any number of data channels.
//!
//! Wiring (what the `webrtc` umbrella crate does with its transports, minus
//! media): the ICE agent yields a `Conn` once a candidate pair is selected;
//! DTLS runs directly on that `Conn` (no SRTP demultiplexer is needed because
//! nothing but DTLS records flows after ICE); SCTP runs on the DTLS `Conn`;
//! each data channel is one SCTP stream opened with DCEP (RFC 8832).

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
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
use webrtc_ice::url::Url;
use webrtc_sctp::association::{Association, Config as SctpConfig};
use webrtc_sctp::chunk::chunk_payload_data::PayloadProtocolIdentifier;
use webrtc_util::Conn;

use crate::channel::DataChannel;
use crate::description::{format_fingerprint, LocalDescription, RemoteDescription, Setup};
use crate::{Error, PeerConfig};

/// The state of a peer connection, as the application sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerState {
    /// Created; the remote description has not been applied.
    New,
    /// ICE/DTLS/SCTP are being established.
    Connecting,
    /// The SCTP association is up; channels can be opened and accepted.
    Connected,
    /// No traffic from the remote peer for `disconnected_timeout`; may recover.
    Disconnected,
    /// The connection could not be established or is gone for good.
    Failed,
    /// Closed locally or by the remote peer.
    Closed,
}

/// The kind of an ICE candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CandidateKind {
    /// An address of a local interface.
    Host,
    /// The address a STUN server saw (outside the local NAT).
    ServerReflexive,
    /// An address learnt from an incoming connectivity check.
    PeerReflexive,
    /// An address allocated on a TURN server.
    Relay,
}

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

/// The candidate pair ICE selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedPair {
    /// Our side.
    pub local: CandidateKind,
    /// `ip:port` of our side.
    pub local_addr: String,
    /// The remote side.
    pub remote: CandidateKind,
    /// `ip:port` of the remote side.
    pub remote_addr: String,
}

/// A local candidate to trickle to the remote peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCandidate {
    /// `candidate:...` as `RTCIceCandidateInit.candidate` expects it.
    pub candidate: String,
}

/// The DTLS server side must accept Chrome's `use_srtp` extension even though
/// no media will flow, or Chrome aborts the handshake. The profile picked is
/// never used.
const SRTP_PROFILES_FOR_SERVER: [SrtpProtectionProfile; 3] = [
    SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
    SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
    SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
];

/// The SCTP port beeline uses on its side (the conventional 5000).
const SCTP_PORT: u16 = 5000;

/// A WebRTC peer connection that carries only data channels.
///
/// Dropping a `Peer` closes it and frees its sockets and tasks.
pub struct Peer {
    inner: Arc<Inner>,
}

struct Inner {
    config: PeerConfig,
    agent: Arc<Agent>,
    certificate: Certificate,
    fingerprint: String,
    controlling: bool,
    remote: StdMutex<Option<RemoteDescription>>,
    state: watch::Sender<PeerState>,
    local_candidates: Mutex<mpsc::UnboundedReceiver<Option<String>>>,
    channels_tx: mpsc::Sender<DataChannel>,
    channels_rx: Mutex<mpsc::Receiver<DataChannel>>,
    association: watch::Sender<Option<Arc<Association>>>,
    dtls: StdMutex<Option<Arc<DTLSConn>>>,
    dtls_client: AtomicBool,
    next_stream_id: AtomicU16,
    cancel: CancellationToken,
}

impl Peer {
    /// Creates an offerer and its offer. Apply the answer with
    /// [`Peer::apply_answer`].
    pub async fn offer(config: PeerConfig) -> Result<(Self, String), Error> {
        let peer = Self::new(config, true).await?;
        let (candidates, complete) = peer.initial_candidates().await;
        let sdp = LocalDescription {
            ufrag: &peer.local_ufrag().await,
            pwd: &peer.local_pwd().await,
            fingerprint: &peer.inner.fingerprint,
            setup: Setup::ActPass,
            mid: "0",
            max_message_size: peer.inner.config.max_message_size,
            candidates: &candidates,
            end_of_candidates: complete,
        }
        .to_sdp();
        Ok((peer, sdp))
    }

    /// Creates an answerer for `offer_sdp` and returns it with its answer.
    ///
    /// The answer embeds the candidates gathered within
    /// [`PeerConfig::gather_wait`]; later ones come from
    /// [`Peer::next_local_candidate`].
    pub async fn answer(config: PeerConfig, offer_sdp: &str) -> Result<(Self, String), Error> {
        let remote = RemoteDescription::parse(offer_sdp)?;
        let peer = Self::new(config, false).await?;
        let setup = match remote.setup {
            Setup::Active => Setup::Passive,
            Setup::Passive | Setup::ActPass => Setup::Active,
        };
        let mid = remote.mid.clone();
        peer.start(remote, setup == Setup::Active)?;
        let (candidates, complete) = peer.initial_candidates().await;
        let sdp = LocalDescription {
            ufrag: &peer.local_ufrag().await,
            pwd: &peer.local_pwd().await,
            fingerprint: &peer.inner.fingerprint,
            setup,
            mid: &mid,
            max_message_size: peer.inner.config.max_message_size,
            candidates: &candidates,
            end_of_candidates: complete,
        }
        .to_sdp();
        Ok((peer, sdp))
    }

    /// Applies the remote answer to an offerer and starts connecting.
    pub fn apply_answer(&self, answer_sdp: &str) -> Result<(), Error> {
        if !self.inner.controlling {
            return Err(Error::InvalidState("apply_answer on an answerer"));
        }
        let remote = RemoteDescription::parse(answer_sdp)?;
        let dtls_client = match remote.setup {
            Setup::Active => false,
            Setup::Passive => true,
            Setup::ActPass => return Err(Error::InvalidDescription("an answer cannot be a=setup:actpass".into())),
        };
        self.start(remote, dtls_client)
    }

    /// Adds a trickled remote candidate (`candidate:...`, with or without the
    /// `candidate:` prefix). An empty string (end of candidates) is accepted
    /// and ignored. Candidates outside the address filter are dropped.
    pub fn add_remote_candidate(&self, candidate: &str) -> Result<(), Error> {
        let raw = candidate.trim();
        let raw = raw.strip_prefix("a=").unwrap_or(raw);
        let raw = raw.strip_prefix("candidate:").unwrap_or(raw);
        if raw.is_empty() {
            return Ok(());
        }
        let parsed = unmarshal_candidate(raw).map_err(|e| Error::InvalidCandidate(e.to_string()))?;
        if let Ok(ip) = parsed.address().parse::<std::net::IpAddr>() {
            if !self.inner.config.address_filter.allows_ip(ip) {
                tracing::debug!(address = %ip, "dropping remote candidate outside the address filter");
                return Ok(());
            }
        } else if !self.inner.config.address_filter.is_open() {
            // A hostname (mDNS) cannot be checked against the filter.
            tracing::debug!(address = parsed.address(), "dropping remote hostname candidate under an address filter");
            return Ok(());
        }
        let c: Arc<dyn Candidate + Send + Sync> = Arc::new(parsed);
        self.inner.agent.add_remote_candidate(&c)?;
        Ok(())
    }

    /// The next local candidate to trickle, `Ok(None)` once gathering is
    /// complete. Candidates already embedded in the offer/answer are not
    /// returned again.
    pub async fn next_local_candidate(&self) -> Option<LocalCandidate> {
        let mut rx = self.inner.local_candidates.lock().await;
        match rx.recv().await {
            Some(Some(c)) => Some(LocalCandidate { candidate: c }),
            _ => None,
        }
    }

    /// Waits for the next data channel the remote peer opens. `None` once the
    /// peer is closed.
    pub async fn accept_channel(&self) -> Option<DataChannel> {
        let mut rx = self.inner.channels_rx.lock().await;
        tokio::select! {
            ch = rx.recv() => ch,
            _ = self.inner.cancel.cancelled() => None,
        }
    }

    /// Opens a reliable, ordered data channel, waiting for the connection if
    /// it is still being set up.
    pub async fn open_channel(&self, label: &str) -> Result<DataChannel, Error> {
        let association = self.wait_association().await?;
        // RFC 8832: the DTLS client uses even stream ids, the server odd ones.
        let parity = u16::from(!self.inner.dtls_client.load(Ordering::SeqCst));
        let id = self.inner.next_stream_id.fetch_add(1, Ordering::SeqCst) * 2 + parity;
        let stream = association.open_stream(id, PayloadProtocolIdentifier::Binary).await?;
        let config = ChannelConfig { label: label.to_owned(), ..Default::default() };
        let raw = RawChannel::client(Arc::clone(&stream), config).await?;
        Ok(DataChannel::new(raw, stream, label.to_owned(), self.remote_max_message_size()))
    }

    /// Watches the connection state.
    pub fn state(&self) -> watch::Receiver<PeerState> {
        self.inner.state.subscribe()
    }

    /// Waits until the connection is up, or fails with why it is not.
    pub async fn connected(&self) -> Result<(), Error> {
        self.wait_association().await.map(|_| ())
    }

    /// The candidate pair in use, once ICE has selected one.
    pub fn selected_pair(&self) -> Option<SelectedPair> {
        let pair = self.inner.agent.get_selected_candidate_pair()?;
        Some(SelectedPair {
            local: pair.local.candidate_type().into(),
            local_addr: format!("{}:{}", pair.local.address(), pair.local.port()),
            remote: pair.remote.candidate_type().into(),
            remote_addr: format!("{}:{}", pair.remote.address(), pair.remote.port()),
        })
    }

    /// The largest message the remote peer accepts (its `a=max-message-size`).
    pub fn remote_max_message_size(&self) -> usize {
        let remote = self.inner.remote.lock().expect("not poisoned");
        remote.as_ref().map_or(64 * 1024, |r| r.max_message_size as usize)
    }

    /// Closes every channel and the connection, and frees its sockets.
    pub async fn close(&self) {
        self.inner.shutdown().await;
    }

    async fn new(config: PeerConfig, controlling: bool) -> Result<Self, Error> {
        let mut urls = Vec::new();
        for server in &config.ice_servers {
            for raw in &server.urls {
                let mut url = Url::parse_url(raw).map_err(|e| Error::InvalidConfig(format!("ICE server {raw:?}: {e}")))?;
                url.username = server.username.clone().unwrap_or_default();
                url.password = server.credential.clone().unwrap_or_default();
                urls.push(url);
            }
        }
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
            check_interval: Duration::from_millis(50),
            keepalive_interval: Some(config.keepalive_interval),
            disconnected_timeout: Some(config.disconnected_timeout),
            failed_timeout: Some(config.failed_timeout),
            // Nominate as soon as a pair works; only relays wait a little for
            // a direct path to win.
            host_acceptance_min_wait: Some(Duration::ZERO),
            srflx_acceptance_min_wait: Some(Duration::ZERO),
            prflx_acceptance_min_wait: Some(Duration::ZERO),
            relay_acceptance_min_wait: Some(Duration::from_millis(300)),
            ..Default::default()
        };
        let agent = Arc::new(Agent::new(agent_config).await?);

        let certificate = Certificate::generate_self_signed(vec!["beeline".to_owned()])?;
        let digest = Sha256::digest(certificate.certificate[0].as_ref());
        let fingerprint = format_fingerprint(&digest);

        let (cand_tx, cand_rx) = mpsc::unbounded_channel();
        agent.on_candidate(Box::new(move |c: Option<Arc<dyn Candidate + Send + Sync>>| {
            let _ = cand_tx.send(c.map(|c| format!("candidate:{}", c.marshal())));
            Box::pin(async {})
        }));

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
            local_candidates: Mutex::new(cand_rx),
            channels_tx,
            channels_rx: Mutex::new(channels_rx),
            association,
            dtls: StdMutex::new(None),
            dtls_client: AtomicBool::new(false),
            next_stream_id: AtomicU16::new(0),
            cancel: CancellationToken::new(),
        });

        let weak = Arc::downgrade(&inner);
        agent.on_connection_state_change(Box::new(move |s: ConnectionState| {
            if let Some(inner) = weak.upgrade() {
                let next = match s {
                    ConnectionState::Disconnected => Some(PeerState::Disconnected),
                    ConnectionState::Failed => Some(PeerState::Failed),
                    ConnectionState::Connected if inner.association.borrow().is_some() => {
                        Some(PeerState::Connected)
                    }
                    _ => None,
                };
                if let Some(next) = next {
                    inner.set_state(next);
                }
            }
            Box::pin(async {})
        }));
        agent.gather_candidates()?;
        Ok(Self { inner })
    }

    async fn local_ufrag(&self) -> String {
        self.inner.agent.get_local_user_credentials().await.0
    }

    async fn local_pwd(&self) -> String {
        self.inner.agent.get_local_user_credentials().await.1
    }

    /// Collects local candidates until gathering completes or `gather_wait`
    /// passes. Returns them and whether gathering completed.
    async fn initial_candidates(&self) -> (Vec<String>, bool) {
        let mut out = Vec::new();
        let mut rx = self.inner.local_candidates.lock().await;
        let deadline = tokio::time::Instant::now() + self.inner.config.gather_wait;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Some(c))) => out.push(c),
                Ok(Some(None)) | Ok(None) => return (out, true),
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
        for c in &remote.candidates {
            if let Err(e) = self.add_remote_candidate(c) {
                tracing::debug!(error = %e, candidate = c, "ignoring bad candidate in description");
            }
        }
        self.inner.set_state(PeerState::Connecting);
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let timeout = inner.config.connect_timeout;
            let result = tokio::select! {
                r = tokio::time::timeout(timeout, Inner::connect(Arc::clone(&inner), remote, dtls_client)) => {
                    r.unwrap_or(Err(Error::Timeout(timeout)))
                }
                _ = inner.cancel.cancelled() => Err(Error::Closed),
            };
            match result {
                Ok(association) => Inner::accept_loop(inner, association).await,
                Err(e) => {
                    tracing::debug!(error = %e, "peer connection failed");
                    inner.set_state(PeerState::Failed);
                    inner.shutdown().await;
                }
            }
        });
        Ok(())
    }

    async fn wait_association(&self) -> Result<Arc<Association>, Error> {
        let mut assoc = self.inner.association.subscribe();
        let mut state = self.inner.state.subscribe();
        loop {
            if let Some(a) = assoc.borrow_and_update().clone() {
                return Ok(a);
            }
            if matches!(*state.borrow_and_update(), PeerState::Failed | PeerState::Closed) {
                return Err(Error::Closed);
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

impl Inner {
    fn set_state(&self, next: PeerState) {
        self.state.send_if_modified(|s| {
            // Terminal states stay terminal.
            if *s == next || matches!(*s, PeerState::Closed | PeerState::Failed) {
                return false;
            }
            *s = next;
            true
        });
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
        let verify = Arc::new(move |certs: &[Vec<u8>], _: &[rustls_pki_types::CertificateDer<'static>]| {
            let ok = certs.first().is_some_and(|der| Sha256::digest(der).as_slice() == expected);
            if ok {
                Ok(())
            } else {
                mismatch_flag.store(true, Ordering::SeqCst);
                Err(dtls::Error::Other("certificate does not match a=fingerprint".into()))
            }
        });
        let config = DtlsConfig {
            certificates: vec![inner.certificate.clone()],
            srtp_protection_profiles: if dtls_client { Vec::new() } else { SRTP_PROFILES_FOR_SERVER.to_vec() },
            client_auth: ClientAuthType::RequireAnyClientCert,
            extended_master_secret: ExtendedMasterSecretType::Request,
            // The certificate is self-signed; it is authenticated by the
            // fingerprint check above instead of a CA.
            insecure_skip_verify: true,
            verify_peer_certificate: Some(verify),
            ..Default::default()
        };
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
        inner.association.send_replace(Some(Arc::clone(&association)));
        inner.set_state(PeerState::Connected);
        let remote_max = inner
            .remote
            .lock()
            .expect("not poisoned")
            .as_ref()
            .map_or(64 * 1024, |r| r.max_message_size as usize);
        loop {
            let stream = tokio::select! {
                s = association.accept_stream() => s,
                _ = inner.cancel.cancelled() => None,
            };
            let Some(stream) = stream else { break };
            stream.set_default_payload_type(PayloadProtocolIdentifier::Binary);
            // The DCEP open arrives right behind the stream's first chunk.
            match RawChannel::server(Arc::clone(&stream), ChannelConfig::default()).await {
                Ok(raw) => {
                    let label = raw.config.label.clone();
                    let channel = DataChannel::new(raw, stream, label, remote_max);
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
