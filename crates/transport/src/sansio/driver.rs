//! The connection driver: one task per peer connection that owns its UDP
//! sockets, its TCP/TLS streams to TURN servers, the ICE agent, the DTLS
//! endpoint, the SCTP association and the state of every data channel.
//!
//! Each turn of the loop takes one input — datagrams (every one that is
//! ready, before anything is written), whole TURN messages a stream read, a
//! command from a handle, an expired timer, or a reader that made room —
//! feeds it to the state machines, and then flushes what they produced: SCTP
//! packets into DTLS, DTLS records and ICE checks onto the sockets or into
//! the streams' queues, messages into the channels' queues. The streams are
//! polled in the same select as the sockets and written at the end of every
//! flush; no task of their own (see [`super::stream`]). The only clock is
//! `Instant::now()` taken once per turn, and the only timer is the earliest
//! deadline the machines report.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rtc_datachannel::message::message_channel_ack::DataChannelAck;
use rtc_datachannel::message::message_channel_open::{ChannelType, DataChannelOpen};
use rtc_datachannel::message::Message as Dcep;
use rtc_dtls::config::HandshakeConfig;
use rtc_dtls::endpoint::{Endpoint as DtlsEndpoint, EndpointEvent as DtlsEvent};
use rtc_ice::agent::{Agent, Event as IceEvent};
use rtc_ice::candidate::Candidate;
use rtc_ice::state::ConnectionState;
use rtc_sctp::{
    Association, AssociationHandle, ClientConfig, DatagramEvent, Endpoint as SctpEndpoint, Event,
    Payload, PayloadProtocolIdentifier as Ppi, StreamEvent, TimerConfig, TransportConfig,
};
use rtc_shared::marshal::{Marshal, Unmarshal};
use rtc_shared::{TransportContext, TransportMessage, TransportProtocol};
use sansio::Protocol;
use tokio::sync::{mpsc, oneshot, Notify};

use super::channel::{Channel, ChannelShared, QUEUE};
use super::gather::{LocalSocket, ReflexiveGatherer};
use super::nomination::{self, Held, Stun};
use super::sctp_clock::SctpClock;
use super::turn::TurnRelay;
use super::udp::{self, Transmit};
use super::Shared;
use crate::channel::{Message, LOW_WATER};
use crate::peer::{CandidateKind, Failure, PeerState, SelectedPair};
use crate::{DataChannel, Error};

/// DTLS and SCTP see one fixed address for both ends: the path under them
/// is ICE's business and may change (an ICE restart, a better pair).
pub(super) const TUNNEL: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9);

/// The largest datagram read.
const RECV_BUF: usize = 64 * 1024;

/// Datagrams taken in one turn before the driver writes (a read that
/// brings more, coalesced, is taken whole). Counted in datagrams, not reads:
/// with 64 coalesced reads a turn could take thousands of datagrams before
/// any channel reader ran. (The 12 s stalls of the NAT `outage` case once
/// blamed on this were traced to rtc-sctp's window accounting after a
/// retransmission timeout: see `RECEIVE_WINDOW`.)
const READ_BATCH: usize = 64;

/// What a handle asks of the driver.
#[derive(Debug)]
pub(crate) enum Command {
    /// The remote description is applied: start checking and handshaking.
    Start {
        remote_ufrag: String,
        remote_pwd: String,
        dtls_client: bool,
        dtls_config: Arc<HandshakeConfig>,
        /// The remote's `a=max-message-size`: SCTP's limit on what we send.
        remote_max_message_size: u32,
    },
    /// A remote candidate, already parsed and filtered.
    RemoteCandidate(Box<Candidate>),
    /// Open a channel once the association is up.
    Open {
        label: String,
        reply: oneshot::Sender<Result<DataChannel, Error>>,
    },
    /// Send a message on a channel.
    Send {
        stream_id: u16,
        data: Bytes,
        is_text: bool,
    },
    /// Reset a channel's stream.
    CloseChannel { stream_id: u16 },
    /// ICE restart: new local credentials (returned), checks start over.
    Restart {
        reply: oneshot::Sender<Result<(String, String), Error>>,
    },
    /// The remote side's ICE credentials after a restart.
    RemoteCredentials { ufrag: String, pwd: String },
    /// Close the connection.
    Close,
}

/// Per-channel state the driver keeps.
pub(super) struct ChannelState {
    tx: mpsc::Sender<Message>,
    shared: Arc<ChannelShared>,
    /// The receiving end of a remote-opened stream whose DCEP open has not
    /// arrived yet; handed out with the open.
    awaiting_open: Option<mpsc::Receiver<Message>>,
}

impl ChannelState {
    /// A channel's state and the receiving end of its queue.
    fn new() -> (Self, mpsc::Receiver<Message>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let state = Self {
            tx,
            shared: Arc::new(ChannelShared::default()),
            awaiting_open: None,
        };
        (state, rx)
    }
}

pub(super) struct Driver {
    pub(super) shared: Arc<Shared>,
    pub(super) commands: mpsc::UnboundedReceiver<Command>,
    pub(super) command_tx: mpsc::UnboundedSender<Command>,
    pub(super) wake: Arc<Notify>,
    pub(super) sockets: Vec<LocalSocket>,
    pub(super) agent: Agent,
    pub(super) gatherer: ReflexiveGatherer,
    pub(super) config: crate::PeerConfig,
    pub(super) stun_servers: Vec<SocketAddr>,
    pub(super) relays: Vec<TurnRelay>,
    pub(super) controlling: bool,
    pub(super) deadline: Instant,
    pub(super) connect_timeout: std::time::Duration,
    pub(super) local_max_message_size: u32,
    pub(super) dtls: DtlsEndpoint,
    pub(super) dtls_client_config: Option<Arc<HandshakeConfig>>,
    pub(super) dtls_client: bool,
    pub(super) started: bool,
    pub(super) sctp: Option<SctpEndpoint>,
    pub(super) sctp_server: Option<Arc<rtc_sctp::ServerConfig>>,
    pub(super) sctp_transport: Option<Arc<TransportConfig>>,
    pub(super) association: Option<(AssociationHandle, Association)>,
    /// The time the association is told (see `sctp_clock`).
    pub(super) sctp_clock: SctpClock,
    pub(super) up: bool,
    pub(super) channels: HashMap<u16, ChannelState>,
    pub(super) blocked: HashSet<u16>,
    pub(super) pending_opens: Vec<(String, oneshot::Sender<Result<DataChannel, Error>>)>,
    pub(super) next_stream: u16,
    /// Where DTLS records go: `(local address, remote address)`, the local
    /// address a socket of ours or a relayed one. The selected pair once ICE
    /// has one; before that, where the remote's first DTLS record came from.
    pub(super) path: Option<(SocketAddr, SocketAddr)>,
    /// A nomination the controlled agent read without answering (see
    /// `nomination`).
    pub(super) held_nomination: Option<Held>,
    pub(super) exit: bool,
}

impl Driver {
    pub(super) async fn run(mut self) {
        let mut buf = vec![0u8; RECV_BUF];
        let wake = Arc::clone(&self.wake);
        self.flush(Instant::now()).await;
        while !self.exit {
            let deadline = self.poll_timeout();
            let input = {
                let sockets = &self.sockets;
                let recv = std::future::poll_fn(|cx| poll_recv_any(sockets, cx, &mut buf));
                let relays = &mut self.relays;
                let streams = std::future::poll_fn(|cx| poll_streams(relays, cx));
                tokio::select! {
                    biased;
                    command = self.commands.recv() => Input::Command(command),
                    received = recv => Input::Datagram(received),
                    r = streams => Input::Stream(r),
                    () = wake.notified() => Input::Wake,
                    () = sleep_until(deadline) => Input::Timer,
                }
            };
            let now = Instant::now();
            match input {
                Input::Command(None) => break,
                Input::Command(Some(command)) => {
                    self.handle_command(now, command);
                    while let Ok(command) = self.commands.try_recv() {
                        self.handle_command(now, command);
                        if self.exit {
                            break;
                        }
                    }
                }
                Input::Datagram((index, received)) => {
                    let mut taken = self.take_read(now, index, received, &buf);
                    // What is ready is taken before writing, up to a batch
                    // counted in datagrams (a coalesced read holds many).
                    while taken < READ_BATCH {
                        let Some((index, received)) = try_recv_any(&self.sockets, &mut buf) else {
                            break;
                        };
                        taken += self.take_read(now, index, received, &buf);
                    }
                }
                Input::Stream(r) => {
                    let (candidate, relayed) = self.relays[r].handle_stream(now);
                    self.relay_output(now, r, candidate, relayed);
                }
                Input::Wake => self.drain_blocked(now),
                Input::Timer => self.handle_timeout(now),
            }
            self.process(now);
            self.flush(now).await;
        }
        self.finish().await;
    }

    /// The earliest instant any state machine wants to be called at.
    fn poll_timeout(&mut self) -> Instant {
        let mut at = if self.up { None } else { Some(self.deadline) };
        let mut take = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a: Instant| a.min(t)));
            }
        };
        take(self.agent.poll_timeout());
        take(self.dtls.poll_timeout(&TUNNEL));
        if let Some((_, association)) = &self.association {
            take(self.sctp_clock.deadline(association, Instant::now()));
        }
        take(self.gatherer.poll_timeout());
        for relay in &mut self.relays {
            take(relay.poll_timeout());
        }
        at.unwrap_or_else(|| Instant::now() + std::time::Duration::from_secs(3600))
    }

    fn handle_timeout(&mut self, now: Instant) {
        if !self.up && now >= self.deadline {
            self.fail(Failure::Timeout(self.connect_timeout));
            return;
        }
        if let Err(e) = self.agent.handle_timeout(now) {
            tracing::debug!(error = %e, "ICE timer");
        }
        for r in 0..self.relays.len() {
            if let Some(candidate) = self.relays[r].handle_timeout(now) {
                self.add_local_candidate(candidate);
            }
        }
        self.publish_gathering_state();
        if self.dtls.poll_timeout(&TUNNEL).is_some_and(|t| t <= now) {
            if let Err(e) = self.dtls.handle_timeout(TUNNEL, now) {
                tracing::debug!(error = %e, "DTLS handshake gave up");
                self.fail(Failure::Other(format!("DTLS: {e}")));
                return;
            }
        }
        if let Some((_, association)) = &mut self.association {
            let skipped = self.sctp_clock.handle_timeout(association, now);
            if !skipped.is_zero() {
                tracing::trace!(?skipped, "SCTP retransmission timer brought forward");
            }
        }
    }

    fn handle_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Start {
                remote_ufrag,
                remote_pwd,
                dtls_client,
                dtls_config,
                remote_max_message_size,
            } => {
                let transport = Arc::new(
                    TransportConfig::default()
                        .with_sctp_port(super::SCTP_PORT)
                        .with_max_message_size(remote_max_message_size)
                        .with_max_receive_buffer_size(super::RECEIVE_WINDOW)
                        .with_timer_config(TimerConfig {
                            // The default gives up re-arming T3-rtx after 5
                            // expiries (about 31 s of outage) and the data
                            // then waits forever. ICE decides when the path
                            // is lost, not SCTP.
                            max_t3_rtx_retrans: usize::MAX,
                            ..TimerConfig::default()
                        }),
                );
                self.dtls_client = dtls_client;
                if dtls_client {
                    self.dtls_client_config = Some(dtls_config);
                } else {
                    self.dtls.set_server_config(Some(dtls_config));
                    self.sctp_server =
                        Some(Arc::new(rtc_sctp::ServerConfig::new((*transport).clone())));
                }
                self.sctp_transport = Some(transport);
                self.started = true;
                if let Err(e) = self.agent.start_connectivity_checks(
                    now,
                    self.controlling,
                    remote_ufrag,
                    remote_pwd,
                ) {
                    self.fail(Failure::Other(format!("ICE: {e}")));
                }
                self.set_state(PeerState::Connecting);
            }
            Command::RemoteCandidate(candidate) => {
                let line = candidate.marshal();
                match self.agent.add_remote_candidate(*candidate) {
                    Ok(added) => tracing::debug!(candidate = %line, added, "remote candidate"),
                    Err(e) => tracing::debug!(error = %e, "remote candidate refused by ICE"),
                }
            }
            Command::Open { label, reply } => {
                if self.up {
                    let result = self.open_channel(now, label);
                    let _ = reply.send(result);
                } else {
                    self.pending_opens.push((label, reply));
                }
            }
            Command::Send {
                stream_id,
                data,
                is_text,
            } => self.send(now, stream_id, data, is_text),
            Command::CloseChannel { stream_id } => self.close_channel(now, stream_id, true),
            Command::Restart { reply } => {
                let _ = reply.send(self.restart(now));
            }
            Command::RemoteCredentials { ufrag, pwd } => {
                if let Err(e) =
                    self.agent
                        .start_connectivity_checks(now, self.controlling, ufrag, pwd)
                {
                    tracing::warn!(error = %e, "could not apply the remote ICE credentials");
                }
                tracing::debug!(
                    local = self.agent.get_local_candidates().len(),
                    remote = self.agent.get_remote_candidates().len(),
                    "ICE checks restart"
                );
            }
            Command::Close => self.exit = true,
        }
    }

    /// Handles each datagram of one read on socket `index`; returns how
    /// many there were.
    fn take_read(
        &mut self,
        now: Instant,
        index: usize,
        received: udp::Received,
        buf: &[u8],
    ) -> usize {
        let mut count = 0;
        for datagram in received.datagrams(buf) {
            self.handle_datagram(now, index, received.from, BytesMut::from(datagram));
            count += 1;
        }
        count
    }

    fn handle_datagram(&mut self, now: Instant, index: usize, from: SocketAddr, data: BytesMut) {
        let local = self.sockets[index].addr;
        if self.sockets[index].turn {
            let Some(r) = self
                .relays
                .iter()
                .position(|r| r.stream.is_none() && r.local == local && r.server == from)
            else {
                return;
            };
            let (candidate, relayed) = self.relays[r].handle(now, data);
            self.relay_output(now, r, candidate, relayed);
            return;
        }
        self.handle_input(now, local, from, data);
    }

    /// What relay `r` produced from the server's messages: its candidate,
    /// and datagrams from peers, which arrive on its relayed address.
    fn relay_output(
        &mut self,
        now: Instant,
        r: usize,
        candidate: Option<Candidate>,
        relayed: Vec<(SocketAddr, BytesMut)>,
    ) {
        if let Some(candidate) = candidate {
            self.add_local_candidate(candidate);
        }
        self.publish_gathering_state();
        if let Some(relayed_addr) = self.relays[r].relayed() {
            for (peer, bytes) in relayed {
                self.handle_input(now, relayed_addr, peer, bytes);
            }
        }
    }

    /// A datagram that reached our local address `local` (a socket of ours,
    /// or a relayed address) from `from`.
    fn handle_input(&mut self, now: Instant, local: SocketAddr, from: SocketAddr, data: BytesMut) {
        let Some(&first) = data.first() else { return };
        let transport = TransportContext {
            local_addr: local,
            peer_addr: from,
            transport_protocol: TransportProtocol::UDP,
            ecn: None,
        };
        match first {
            0..=3 => match self.gatherer.handle(transport.local_addr, from, &data) {
                Some(Some(candidate)) => self.add_local_candidate(candidate),
                Some(None) => self.publish_gathering_state(),
                None => {
                    if !self.shared.filter.allows_remote(from.ip()) {
                        return;
                    }
                    self.ice_input(now, transport, data);
                }
            },
            20..=63 => {
                if !self.started || !self.agent.is_valid_non_stun_traffic(now, transport) {
                    tracing::trace!(%from, "DTLS record from an unchecked address dropped");
                    return;
                }
                if self.path.is_none() {
                    self.path = Some((local, from));
                }
                let events = match self.dtls.read(now, TUNNEL, None, data) {
                    Ok(events) => events,
                    Err(e) => {
                        if self.shared.mismatch.load(Ordering::Acquire) {
                            self.fail(Failure::FingerprintMismatch);
                        } else {
                            tracing::debug!(error = %e, "DTLS record refused");
                        }
                        return;
                    }
                };
                for event in events {
                    match event {
                        DtlsEvent::HandshakeComplete => self.dtls_up(now),
                        DtlsEvent::ApplicationData(data) => self.sctp_input(now, data.freeze()),
                        DtlsEvent::PeerClosed => {
                            tracing::debug!("DTLS closed by the remote peer");
                            self.set_state(PeerState::Closed);
                            self.exit = true;
                        }
                        _ => {}
                    }
                }
            }
            _ => tracing::trace!(first, "datagram of no protocol of ours dropped"),
        }
    }

    fn dtls_up(&mut self, now: Instant) {
        tracing::debug!(client = self.dtls_client, "DTLS connected");
        let Some(transport) = self.sctp_transport.clone() else {
            return;
        };
        let endpoint_config = Arc::new(rtc_sctp::EndpointConfig::new());
        let mut endpoint = SctpEndpoint::new(
            TUNNEL,
            TransportProtocol::UDP,
            endpoint_config,
            self.sctp_server.clone(),
        );
        if self.dtls_client {
            let now = self.sctp_clock.at(now);
            match endpoint.connect(now, ClientConfig::new((*transport).clone()), TUNNEL) {
                Ok(association) => self.association = Some(association),
                Err(e) => {
                    self.fail(Failure::Other(format!("SCTP: {e}")));
                    return;
                }
            }
        }
        self.sctp = Some(endpoint);
    }

    fn sctp_input(&mut self, now: Instant, data: Bytes) {
        let Some(endpoint) = &mut self.sctp else {
            return;
        };
        match endpoint.handle(self.sctp_clock.at(now), TUNNEL, None, data) {
            Some((handle, DatagramEvent::NewAssociation(association)))
                if self.association.is_none() =>
            {
                self.association = Some((handle, association));
            }
            Some((handle, DatagramEvent::AssociationEvent(event))) => {
                if let Some((h, association)) = &mut self.association {
                    if *h == handle {
                        association.handle_event(event);
                    }
                }
            }
            _ => {}
        }
    }

    /// Drains every state machine's events.
    fn process(&mut self, now: Instant) {
        while let Some(event) = self.agent.poll_event() {
            match event.event {
                IceEvent::ConnectionStateChange(state) => self.ice_state_changed(now, state),
                IceEvent::SelectedCandidatePairChange(local, remote) => {
                    self.pair_selected(now, &local, &remote)
                }
                _ => {}
            }
        }
        let mut events = Vec::new();
        let mut endpoint_events = Vec::new();
        if let Some((handle, association)) = &mut self.association {
            while let Some(event) = association.poll() {
                events.push(event);
            }
            while let Some(event) = association.poll_endpoint_event() {
                endpoint_events.push((*handle, event));
            }
        }
        for (handle, event) in endpoint_events {
            if let Some(endpoint) = &mut self.sctp {
                endpoint.handle_event(handle, event);
            }
        }
        for event in events {
            match event {
                Event::Connected => self.association_up(now),
                Event::HandshakeFailed { reason } => {
                    self.fail(Failure::Other(format!("SCTP handshake: {reason}")))
                }
                // Despite its name, reported per stream: the stream `id`
                // was reset (rtc-sctp `unregister_stream`).
                Event::AssociationLost { id, .. } => self.close_channel(now, id, false),
                Event::Stream(StreamEvent::Opened { id })
                | Event::Stream(StreamEvent::Readable { id }) => {
                    self.accept_streams();
                    self.drain_stream(now, id);
                }
                Event::Stream(StreamEvent::BufferedAmountReleased { id, n_bytes }) => {
                    if let Some(channel) = self.channels.get(&id) {
                        if channel.shared.release(n_bytes) <= LOW_WATER {
                            channel.shared.drained.notify_waiters();
                        }
                    }
                }
                Event::Stream(StreamEvent::Stopped { id, .. }) => {
                    self.close_channel(now, id, false)
                }
                _ => {}
            }
        }
        self.check_association_closed();
    }

    /// The association closed (an ABORT, a SHUTDOWN, or too many
    /// retransmissions): the connection is over.
    fn check_association_closed(&mut self) {
        // A new association starts out closed; only one that was up can end.
        let closed = self.up
            && self
                .association
                .as_ref()
                .is_some_and(|(_, association)| association.is_closed());
        if closed && !self.exit {
            tracing::debug!("SCTP association closed");
            self.set_state(PeerState::Closed);
            self.exit = true;
        }
    }

    fn association_up(&mut self, now: Instant) {
        if self.up {
            return;
        }
        self.up = true;
        tracing::debug!("SCTP association up");
        self.set_state(PeerState::Connected);
        self.shared.up.send_replace(true);
        for (label, reply) in std::mem::take(&mut self.pending_opens) {
            let result = self.open_channel(now, label);
            let _ = reply.send(result);
        }
    }

    fn ice_state_changed(&mut self, now: Instant, state: ConnectionState) {
        tracing::debug!(ice = %state, "ICE connection state");
        match state {
            ConnectionState::Disconnected => self.set_state(PeerState::Disconnected),
            ConnectionState::Failed => self.fail(Failure::Other("ICE connectivity lost".into())),
            ConnectionState::Connected | ConnectionState::Completed if self.up => {
                self.set_state(PeerState::Connected);
                self.resume_sctp(now);
            }
            _ => {}
        }
    }

    /// The path works again (after silence, or after an ICE restart): what
    /// waits on a backed-off retransmission timer is sent now.
    fn resume_sctp(&mut self, now: Instant) {
        if let Some((_, association)) = &mut self.association {
            let skipped = self.sctp_clock.resume(association, now);
            if !skipped.is_zero() {
                tracing::debug!(?skipped, "path back: SCTP retransmits now");
            }
        }
    }

    /// A STUN datagram from a remote address the filter allows, for the
    /// ICE agent, with a nomination it leaves unanswered read again once
    /// the pair's own check succeeds (see `nomination`).
    fn ice_input(&mut self, now: Instant, transport: TransportContext, data: BytesMut) {
        let watch = !self.agent.role() && self.agent.get_selected_candidate_pair().is_none();
        let kind = if watch {
            nomination::classify(&data)
        } else {
            Stun::Other
        };
        let copy = (kind == Stun::Nomination).then(|| data.clone());
        self.agent_read(now, transport, data);
        if !watch || self.agent.get_selected_candidate_pair().is_some() {
            self.held_nomination = None;
            return;
        }
        let (local, from) = (transport.local_addr, transport.peer_addr);
        match kind {
            Stun::Nomination => {
                self.held_nomination = copy.map(|request| Held {
                    local,
                    from,
                    request,
                });
            }
            Stun::Success => {
                if let Some(held) = self
                    .held_nomination
                    .take_if(|held| held.completed_by(local, from))
                {
                    tracing::trace!(%from, "nomination read again: its pair's check succeeded");
                    self.agent_read(now, transport, held.request);
                }
            }
            Stun::Other => {}
        }
    }

    fn agent_read(&mut self, now: Instant, transport: TransportContext, message: BytesMut) {
        let message = TransportMessage {
            now,
            transport,
            message,
        };
        if let Err(e) = self.agent.handle_read(message) {
            tracing::trace!(error = %e, "STUN datagram refused");
        }
    }

    fn pair_selected(&mut self, now: Instant, local: &Candidate, remote: &Candidate) {
        let base = local.base_addr();
        if self.sockets.iter().any(|s| s.addr == base && !s.retired) {
            // The restart's path works: the old sockets go.
            self.sockets.retain(|s| !s.retired);
        }
        self.path = Some((base, remote.addr()));
        let receive_buffer = self
            .socket_index(base)
            .filter(|_| local.candidate_type() != rtc_ice::candidate::CandidateType::Relay)
            .and_then(|i| {
                socket2::SockRef::from(&self.sockets[i].socket)
                    .recv_buffer_size()
                    .ok()
            });
        let pair = SelectedPair {
            local: kind(local),
            local_addr: format!("{}:{}", local.address(), local.port()),
            remote: kind(remote),
            remote_addr: format!("{}:{}", remote.address(), remote.port()),
            receive_buffer,
        };
        *self.shared.selected.lock().expect("not poisoned") = Some(pair);
        if self.up {
            self.shared.log_state(PeerState::Connected);
        }
        if self.dtls_client {
            if let Some(config) = self.dtls_client_config.take() {
                if let Err(e) = self.dtls.connect(now, TUNNEL, config, None) {
                    self.fail(Failure::Other(format!("DTLS: {e}")));
                }
            }
        }
    }

    fn add_local_candidate(&mut self, candidate: Candidate) {
        let line = format!("candidate:{}", candidate.marshal());
        tracing::debug!(candidate = %line, "local candidate");
        match self.agent.add_local_candidate(candidate) {
            Ok(_) => self.shared.push_candidate(line),
            Err(e) => tracing::debug!(error = %e, "local candidate refused by ICE"),
        }
        self.publish_gathering_state();
    }

    fn publish_gathering_state(&mut self) {
        if self.gatherer.is_done() && self.relays.iter().all(TurnRelay::is_settled) {
            self.shared.gathering_complete();
        }
    }

    /// Accepts streams the remote opened; their DCEP open follows.
    fn accept_streams(&mut self) {
        let Some((_, association)) = &mut self.association else {
            return;
        };
        while let Some(mut stream) = association.accept_stream() {
            let id = stream.stream_identifier();
            let _ = stream.set_default_payload_type(Ppi::Binary);
            if self.channels.contains_key(&id) {
                continue;
            }
            let (mut state, rx) = ChannelState::new();
            state.awaiting_open = Some(rx);
            self.channels.insert(id, state);
        }
    }

    /// Moves complete messages of stream `id` into its channel's queue, as
    /// far as the queue has room.
    fn drain_stream(&mut self, now: Instant, id: u16) {
        loop {
            let Some(channel) = self.channels.get(&id) else {
                return;
            };
            if channel.tx.capacity() == 0 && channel.awaiting_open.is_none() {
                // Flag first, then look again: a reader that made room in
                // between is seen here, one that makes room later wakes us.
                channel.shared.blocked.store(true, Ordering::Release);
                if channel.tx.capacity() == 0 {
                    self.blocked.insert(id);
                    return;
                }
                channel.shared.blocked.store(false, Ordering::Release);
            }
            let Some((_, association)) = &mut self.association else {
                return;
            };
            let chunks = match association.stream(id).and_then(|mut s| s.read_sctp()) {
                Ok(Some(chunks)) => chunks,
                Ok(None) => return,
                Err(_) => {
                    // Reset by the remote peer.
                    self.close_channel(now, id, false);
                    return;
                }
            };
            let max = self.local_max_message_size as usize;
            let payload = match chunks.to_payload(max) {
                Ok(p) => p,
                Err(_) => {
                    tracing::warn!(
                        stream = id,
                        max,
                        "the remote peer sent a message over our max-message-size; closing the channel"
                    );
                    self.close_channel(now, id, true);
                    return;
                }
            };
            self.deliver(now, id, chunks.ppi, payload);
        }
    }

    fn deliver(&mut self, now: Instant, id: u16, ppi: Ppi, payload: BytesMut) {
        let message = match ppi {
            Ppi::Dcep => {
                self.handle_dcep(now, id, payload);
                return;
            }
            Ppi::String => Message {
                data: payload.freeze(),
                is_text: true,
            },
            Ppi::Binary => Message {
                data: payload.freeze(),
                is_text: false,
            },
            Ppi::StringEmpty => Message {
                data: Bytes::new(),
                is_text: true,
            },
            Ppi::BinaryEmpty => Message {
                data: Bytes::new(),
                is_text: false,
            },
            _ => return,
        };
        if let Some(channel) = self.channels.get(&id) {
            if channel.awaiting_open.is_some() {
                tracing::debug!(stream = id, "data before DATA_CHANNEL_OPEN dropped");
                return;
            }
            // Room was checked before the read, and only this task sends.
            let _ = channel.tx.try_send(message);
        }
    }

    fn handle_dcep(&mut self, now: Instant, id: u16, payload: BytesMut) {
        let mut buf = payload.freeze();
        let message = match Dcep::unmarshal(&mut buf) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(stream = id, error = %e, "malformed DCEP message");
                return;
            }
        };
        match message {
            Dcep::DataChannelOpen(open) => self.remote_opened(now, id, open),
            // Our open was accepted; a reliable ordered channel needs no more.
            Dcep::DataChannelAck(_) => {}
            _ => {}
        }
    }

    fn remote_opened(&mut self, now: Instant, id: u16, open: DataChannelOpen) {
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        let Some(rx) = channel.awaiting_open.take() else {
            tracing::debug!(
                stream = id,
                "a second DATA_CHANNEL_OPEN on an open stream ignored"
            );
            return;
        };
        let shared = Arc::clone(&channel.shared);
        let label = String::from_utf8_lossy(&open.label).into_owned();
        if let Ok(ack) = Dcep::DataChannelAck(DataChannelAck {}).marshal() {
            self.write(now, id, ack.freeze(), Ppi::Dcep);
        }
        let handle = self.channel_handle(label, id, rx, shared);
        let _ = self.shared.accepted.send(handle);
    }

    fn open_channel(&mut self, now: Instant, label: String) -> Result<DataChannel, Error> {
        let Some((_, association)) = &mut self.association else {
            return Err(Error::Closed);
        };
        // RFC 8832: the DTLS client uses even stream ids, the server odd ones.
        let parity = u16::from(!self.dtls_client);
        let id = loop {
            let id = self
                .next_stream
                .checked_mul(2)
                .and_then(|n| n.checked_add(parity))
                .ok_or_else(|| Error::Failed("no stream id left".into()))?;
            self.next_stream += 1;
            if !self.channels.contains_key(&id) {
                break id;
            }
        };
        association
            .open_stream(id, Ppi::Binary)
            .map_err(|e| Error::Failed(format!("SCTP stream: {e}")))?;
        let open = Dcep::DataChannelOpen(DataChannelOpen {
            channel_type: ChannelType::Reliable,
            priority: 0,
            reliability_parameter: 0,
            label: label.as_bytes().to_vec(),
            protocol: Vec::new(),
        })
        .marshal()
        .map_err(|e| Error::Failed(format!("DCEP: {e}")))?;
        let (state, rx) = ChannelState::new();
        let shared = Arc::clone(&state.shared);
        self.channels.insert(id, state);
        self.write(now, id, open.freeze(), Ppi::Dcep);
        Ok(self.channel_handle(label, id, rx, shared))
    }

    /// The application's handle on stream `id`.
    fn channel_handle(
        &self,
        label: String,
        id: u16,
        rx: mpsc::Receiver<Message>,
        shared: Arc<ChannelShared>,
    ) -> DataChannel {
        DataChannel::from(Channel {
            label,
            stream_id: id,
            max_send: self.shared.remote_max_message_size.load(Ordering::Acquire),
            commands: self.command_tx.clone(),
            incoming: tokio::sync::Mutex::new(rx),
            shared,
            wake: Arc::clone(&self.wake),
        })
    }

    fn send(&mut self, now: Instant, id: u16, data: Bytes, is_text: bool) {
        let len = data.len();
        let (ppi, data) = match (is_text, data.is_empty()) {
            // RFC 8831 §6.6: an empty message is one zero byte with its own PPI.
            (true, true) => (Ppi::StringEmpty, Bytes::from_static(&[0])),
            (false, true) => (Ppi::BinaryEmpty, Bytes::from_static(&[0])),
            (true, false) => (Ppi::String, data),
            (false, false) => (Ppi::Binary, data),
        };
        if !self.write(now, id, data, ppi) {
            if let Some(channel) = self.channels.get(&id) {
                channel.shared.release(len);
            }
        }
    }

    /// Writes one message on stream `id`; false when it could not be.
    fn write(&mut self, now: Instant, id: u16, data: Bytes, ppi: Ppi) -> bool {
        let Some((_, association)) = &mut self.association else {
            return false;
        };
        match association
            .stream(id)
            .and_then(|mut s| s.write_sctp(self.sctp_clock.at(now), &data, ppi))
        {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(stream = id, error = %e, "data channel write failed");
                false
            }
        }
    }

    /// Forgets channel `id`; `reset` also resets its SCTP stream.
    fn close_channel(&mut self, now: Instant, id: u16, reset: bool) {
        if let Some(channel) = self.channels.remove(&id) {
            channel.shared.closed.store(true, Ordering::Release);
            channel.shared.drained.notify_waiters();
        }
        self.blocked.remove(&id);
        if reset {
            if let Some((_, association)) = &mut self.association {
                if let Ok(mut stream) = association.stream(id) {
                    let _ = stream.close(self.sctp_clock.at(now));
                }
            }
        }
    }

    fn drain_blocked(&mut self, now: Instant) {
        for id in std::mem::take(&mut self.blocked) {
            self.drain_stream(now, id);
        }
    }

    /// Sends everything the state machines produced: datagrams now, and
    /// as much of the streams' queues as they take without waiting (the
    /// rest when the select finds them writable).
    async fn flush(&mut self, now: Instant) {
        let out = self.transmits(now);
        for run in udp::runs(&out) {
            let socket = &mut self.sockets[out[run.start].0];
            udp::send_run(&socket.socket, &mut socket.segmentation, &out[run]).await;
        }
        let relays = &mut self.relays;
        std::future::poll_fn(|cx| {
            for stream in relays.iter_mut().filter_map(|r| r.stream.as_mut()) {
                stream.poll_output(cx);
            }
            Poll::Ready(())
        })
        .await;
    }

    /// The datagrams the state machines want sent, in order:
    /// `(socket index, destination, bytes)`.
    fn transmits(&mut self, now: Instant) -> Vec<Transmit> {
        let mut out: Vec<Transmit> = Vec::new();
        for (local, server, request) in self.gatherer.poll_transmit(now) {
            self.route(now, local, server, BytesMut::from(&request[..]), &mut out);
        }
        self.publish_gathering_state();
        while let Some(transmit) = self.agent.poll_write() {
            let (local, to) = (transmit.transport.local_addr, transmit.transport.peer_addr);
            self.route(now, local, to, transmit.message, &mut out);
        }
        if let Some((_, association)) = &mut self.association {
            let sctp_now = self.sctp_clock.at(now);
            while let Some(transmit) = association.poll_transmit(sctp_now) {
                if let Payload::RawEncode(raw) = transmit.message {
                    for packet in raw {
                        if let Err(e) = self.dtls.write(now, TUNNEL, &packet) {
                            tracing::debug!(error = %e, "DTLS write failed");
                        }
                    }
                }
            }
        }
        while let Some(transmit) = self.dtls.poll_transmit() {
            if let Some((local, remote)) = self.path {
                self.route(now, local, remote, transmit.message, &mut out);
            }
        }
        for r in 0..self.relays.len() {
            // Over a stream this queues on it and returns nothing.
            let datagrams = self.relays[r].poll_transmit();
            if datagrams.is_empty() {
                continue;
            }
            let Some(index) = self.socket_index(self.relays[r].local) else {
                continue;
            };
            let server = self.relays[r].server;
            for bytes in datagrams {
                out.push((index, server, bytes));
            }
        }
        out
    }

    /// Queues `data` from our local address `local` to `to`: on the socket
    /// bound there, or through the TURN relay whose relayed address it is.
    fn route(
        &mut self,
        now: Instant,
        local: SocketAddr,
        to: SocketAddr,
        data: BytesMut,
        out: &mut Vec<Transmit>,
    ) {
        if let Some(index) = self.socket_index(local) {
            out.push((index, to, data));
        } else if let Some(relay) = self.relays.iter_mut().find(|r| r.relayed() == Some(local)) {
            relay.send(now, to, &data);
        }
    }

    fn socket_index(&self, local: SocketAddr) -> Option<usize> {
        self.sockets.iter().position(|s| s.addr == local)
    }

    /// An ICE restart: new credentials, and new sockets with their own
    /// candidates (a path blocked on the old ports, or a network that
    /// changed, gets a fresh start). The old sockets stay open until a pair
    /// on the new ones is selected. Returns the new local credentials.
    fn restart(&mut self, now: Instant) -> Result<(String, String), Error> {
        let (sockets, candidates) = super::gather::bind_host_sockets(&self.config)?;
        self.agent
            .restart(now, String::new(), String::new(), false)
            .map_err(|e| Error::Failed(format!("ICE restart: {e}")))?;
        for socket in self.sockets.iter_mut().filter(|s| !s.turn) {
            socket.retired = true;
        }
        self.sockets.extend(sockets);
        // The new gatherer first: the new generation is complete only when
        // its own reflexive candidates are in.
        self.gatherer = ReflexiveGatherer::start(&self.sockets, &self.stun_servers, now)?;
        self.shared.new_generation();
        for candidate in candidates {
            self.add_local_candidate(candidate);
        }
        // The allocations outlive the restart; their candidates join anew.
        let relayed: Vec<Candidate> = self
            .relays
            .iter()
            .filter_map(|r| r.relayed().and_then(|a| r.candidate(a)))
            .collect();
        for candidate in relayed {
            self.add_local_candidate(candidate);
        }
        self.publish_gathering_state();
        self.force_connecting();
        let c = self.agent.get_local_credentials();
        Ok((c.ufrag.clone(), c.pwd.clone()))
    }

    fn set_state(&self, state: PeerState) {
        self.shared.set_state(state);
    }

    fn force_connecting(&self) {
        self.shared.force_connecting();
    }

    fn fail(&mut self, why: Failure) {
        tracing::debug!(?why, "peer connection failed");
        self.shared.fail(why);
        self.exit = true;
    }

    /// Ends the connection: SCTP abort and DTLS close_notify go out, every
    /// channel reads its end, every waiting open fails.
    async fn finish(&mut self) {
        let now = Instant::now();
        if let Some((_, association)) = &mut self.association {
            let mut stats = association.stats();
            tracing::debug!(
                data_chunks_received = stats.get_num_datas(),
                sacks_received = stats.get_num_sacks(),
                retransmission_timeouts = stats.get_num_t3timeouts(),
                fast_retransmissions = stats.get_num_fast_retrans(),
                "SCTP association ends"
            );
            let _ = association.abort();
        }
        let _ = self.dtls.close(now);
        for relay in &mut self.relays {
            relay.close(now);
        }
        self.flush(now).await;
        let _ = self.agent.close();
        for (_, reply) in self.pending_opens.drain(..) {
            let _ = reply.send(Err(Error::Closed));
        }
        for (_, channel) in self.channels.drain() {
            channel.shared.closed.store(true, Ordering::Release);
            channel.shared.drained.notify_waiters();
        }
        self.shared.set_state(PeerState::Closed);
        self.shared.closed();
    }
}

enum Input {
    Command(Option<Command>),
    Datagram((usize, udp::Received)),
    /// Relay `r`'s stream has messages, or ended.
    Stream(usize),
    Wake,
    Timer,
}

fn kind(c: &Candidate) -> CandidateKind {
    use rtc_ice::candidate::CandidateType;
    match c.candidate_type() {
        CandidateType::ServerReflexive => CandidateKind::ServerReflexive,
        CandidateType::PeerReflexive => CandidateKind::PeerReflexive,
        CandidateType::Relay => CandidateKind::Relay,
        _ => CandidateKind::Host,
    }
}

async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
}

/// Polls every socket once for a read (one datagram, or several
/// coalesced).
fn poll_recv_any(
    sockets: &[LocalSocket],
    cx: &mut std::task::Context<'_>,
    buf: &mut [u8],
) -> Poll<(usize, udp::Received)> {
    for (index, socket) in sockets.iter().enumerate() {
        match udp::poll_recv(&socket.socket, cx, buf) {
            Poll::Ready(Ok(received)) => return Poll::Ready((index, received)),
            Poll::Ready(Err(e)) => {
                tracing::trace!(error = %e, "receive failed");
                // Come back for what follows the error (the waker is not
                // registered for this socket now).
                cx.waker().wake_by_ref();
            }
            Poll::Pending => {}
        }
    }
    Poll::Pending
}

/// Polls every TURN stream (connecting, writing, reading); ready with the
/// index of a relay whose stream has whole messages, or ended.
fn poll_streams(relays: &mut [TurnRelay], cx: &mut std::task::Context<'_>) -> Poll<usize> {
    for (r, relay) in relays.iter_mut().enumerate() {
        if let Some(stream) = &mut relay.stream {
            if stream.poll_input(cx).is_ready() {
                return Poll::Ready(r);
            }
        }
    }
    Poll::Pending
}

/// A read that is ready now on any socket.
fn try_recv_any(sockets: &[LocalSocket], buf: &mut [u8]) -> Option<(usize, udp::Received)> {
    sockets.iter().enumerate().find_map(|(index, socket)| {
        udp::try_recv(&socket.socket, buf)
            .ok()
            .map(|received| (index, received))
    })
}
