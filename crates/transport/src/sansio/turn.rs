//! Relayed candidates for the sans-I/O stack: one `rtc-turn` client per
//! TURN server, each on a UDP socket of its own, or on a TCP or TLS stream
//! of its own ([`super::stream`]) for `turn:...?transport=tcp` and
//! `turns:` URLs. Either way the allocation relays UDP. The relayed
//! address is a local candidate like any other; what ICE and DTLS send from
//! it goes out through the client (a permission per remote address first),
//! and what the server relays back comes in as if it had arrived on that
//! address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc_crypto::RTCCryptoProvider;
use rtc_ice::candidate::candidate_relay::CandidateRelayConfig;
use rtc_ice::candidate::{Candidate, CandidateConfig};
use rtc_shared::{TransportContext, TransportMessage, TransportProtocol};
use rtc_turn::client::{Client, ClientConfig, Event};
use sansio::Protocol;

use super::stream::{Failure, TurnStream};
use super::tls::TlsTarget;
use crate::Error;

/// The first retransmission wait of a TURN request; doubled per retry.
const RTO: Duration = Duration::from_millis(200);

/// A TURN server to allocate on: its address and the credentials for it.
#[derive(Debug, Clone)]
pub(super) struct TurnServer {
    pub(super) addr: SocketAddr,
    pub(super) url: String,
    pub(super) username: String,
    pub(super) password: String,
    pub(super) via: Via,
}

/// How a TURN server is reached.
#[derive(Debug, Clone)]
pub(super) enum Via {
    /// `turn:` over UDP, from a socket of the driver's.
    Udp,
    /// `turn:...?transport=tcp`.
    Tcp,
    /// `turns:` (TLS over TCP). Without the `turn-tls` feature
    /// [`TlsTarget`] has no value, so nothing makes this.
    #[cfg_attr(not(feature = "turn-tls"), allow(dead_code))]
    Tls(TlsTarget),
}

impl Via {
    /// `udp`, `tcp` or `tls`.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls(_) => "tls",
        }
    }
}

/// Where one allocation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Allocating,
    Allocated(SocketAddr),
    Failed,
}

/// One TURN client and its allocation.
pub(super) struct TurnRelay {
    client: Client,
    /// Our socket's address (the client's side of the server connection).
    pub(super) local: SocketAddr,
    pub(super) server: SocketAddr,
    url: String,
    /// `udp`, `tcp` or `tls`, for the logs.
    via: &'static str,
    state: State,
    /// The connection to the server for TCP and TLS; `None` over UDP (the
    /// driver's socket at `local`).
    pub(super) stream: Option<TurnStream>,
}

impl TurnRelay {
    /// Starts an allocation on `server` from our socket `local`: a UDP
    /// socket of the driver's, or the local end of `stream`.
    pub(super) fn start(
        server: &TurnServer,
        local: SocketAddr,
        stream: Option<TurnStream>,
        crypto: Arc<dyn RTCCryptoProvider>,
        now: Instant,
    ) -> Result<Self, Error> {
        // Over a stream the client sends each request once (TCP
        // retransmits) and gives up after RFC 8489's Ti (39.5 s).
        let transport_protocol = match stream {
            Some(_) => TransportProtocol::TCP,
            None => TransportProtocol::UDP,
        };
        let config = ClientConfig {
            stun_serv_addr: String::new(),
            turn_serv_addr: server.addr.to_string(),
            local_addr: local,
            transport_protocol,
            username: server.username.clone(),
            password: server.password.clone(),
            realm: String::new(),
            software: String::new(),
            rto_in_ms: RTO.as_millis() as u64,
            allocation_refresh_interval_cap: None,
        };
        let mut client =
            Client::new(config, crypto).map_err(|e| Error::Failed(format!("TURN client: {e}")))?;
        client
            .allocate(now)
            .map_err(|e| Error::Failed(format!("TURN allocate: {e}")))?;
        Ok(Self {
            client,
            local,
            server: server.addr,
            url: server.url.clone(),
            via: server.via.name(),
            state: State::Allocating,
            stream,
        })
    }

    /// The relayed address, once allocated.
    pub(super) fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated(addr) => Some(addr),
            _ => None,
        }
    }

    /// Whether the allocation succeeded or failed (gathering waits for it).
    pub(super) fn is_settled(&self) -> bool {
        self.state != State::Allocating
    }

    /// A datagram from the server on our socket. Returns what it produced:
    /// a relay candidate (once), and data relayed from peers as
    /// `(peer, bytes)`.
    pub(super) fn handle(
        &mut self,
        now: Instant,
        data: BytesMut,
    ) -> (Option<Candidate>, Vec<(SocketAddr, BytesMut)>) {
        self.read(now, data, TransportProtocol::UDP);
        self.events()
    }

    /// What the stream has read (whole messages), and its end if it ended;
    /// returns what [`Self::handle`] returns.
    pub(super) fn handle_stream(
        &mut self,
        now: Instant,
    ) -> (Option<Candidate>, Vec<(SocketAddr, BytesMut)>) {
        let Some(stream) = &mut self.stream else {
            return (None, Vec::new());
        };
        let mut messages = Vec::new();
        while let Some(message) = stream.next_message() {
            messages.push(message);
        }
        let failure = stream.take_failure();
        for message in messages {
            self.read(now, message, TransportProtocol::TCP);
        }
        let produced = self.events();
        if let Some(failure) = failure {
            self.stream_failed(&failure);
        }
        produced
    }

    /// Says once, as loudly as it deserves, that the stream ended, and
    /// gives the allocation up (its candidate's checks fail from now on).
    fn stream_failed(&mut self, failure: &Failure) {
        let (server, via) = (&self.url, self.via);
        match (self.state, failure) {
            // Was working: the relayed candidate is gone.
            (State::Allocated(relayed), _) => {
                tracing::warn!(%server, via, %relayed, error = %failure, "TURN connection lost")
            }
            // Most often a certificate nobody configured trust for.
            (_, Failure::Tls(_)) => {
                tracing::warn!(%server, via, error = %failure, "TURN server refused over TLS")
            }
            // Unreachable, like a UDP server that does not answer.
            _ => tracing::debug!(%server, via, error = %failure, "TURN connection failed"),
        }
        self.state = State::Failed;
    }

    fn read(&mut self, now: Instant, data: BytesMut, transport_protocol: TransportProtocol) {
        let message = TransportMessage {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: self.server,
                transport_protocol,
                ecn: None,
            },
            message: data,
        };
        if let Err(e) = self.client.handle_read(message) {
            tracing::trace!(error = %e, "TURN message refused");
        }
    }

    pub(super) fn handle_timeout(&mut self, now: Instant) -> Option<Candidate> {
        let _ = self.client.handle_timeout(now);
        self.events().0
    }

    pub(super) fn poll_timeout(&mut self) -> Option<Instant> {
        if self.state == State::Failed {
            return None;
        }
        self.client.poll_timeout()
    }

    fn events(&mut self) -> (Option<Candidate>, Vec<(SocketAddr, BytesMut)>) {
        let mut candidate = None;
        let mut data = Vec::new();
        while let Some(event) = self.client.poll_event() {
            match event {
                Event::AllocateResponse(_, relayed) if self.state == State::Allocating => {
                    tracing::debug!(server = %self.url, via = self.via, %relayed, "TURN allocation");
                    self.state = State::Allocated(relayed);
                    candidate = self.candidate(relayed);
                }
                Event::AllocateError(_, e) => {
                    tracing::debug!(server = %self.url, error = %e, "TURN allocation refused");
                    self.state = State::Failed;
                }
                Event::TransactionTimeout(_) if self.state == State::Allocating => {
                    tracing::debug!(server = %self.url, "TURN server did not answer");
                    self.state = State::Failed;
                }
                Event::CreatePermissionError(_, e) => {
                    tracing::debug!(server = %self.url, error = %e, "TURN permission refused");
                }
                Event::DataIndicationOrChannelData(_, peer, bytes) => data.push((peer, bytes)),
                _ => {}
            }
        }
        (candidate, data)
    }

    pub(super) fn candidate(&self, relayed: SocketAddr) -> Option<Candidate> {
        let result = CandidateRelayConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: relayed.ip().to_string(),
                port: relayed.port(),
                component: 1,
                ..Default::default()
            },
            rel_addr: self.local.ip().to_string(),
            rel_port: self.local.port(),
            url: Some(self.url.clone()),
        }
        .new_candidate_relay();
        match result {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::debug!(error = %e, "unusable relayed address");
                None
            }
        }
    }

    /// Sends `data` to `peer` through the relay. The first datagram to a
    /// peer asks for its permission and is dropped (ICE and DTLS resend).
    pub(super) fn send(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) {
        let Some(relayed) = self.relayed() else {
            return;
        };
        let Ok(mut relay) = self.client.relay(relayed) else {
            return;
        };
        if let Err(e) = relay.create_permission(now, peer) {
            tracing::trace!(error = %e, "TURN permission");
            return;
        }
        if let Err(e) = relay.send_to(now, data, peer) {
            tracing::trace!(%peer, error = %e, "not relayed yet");
        }
    }

    /// What the client wants sent to the server over UDP. Over a stream it
    /// is queued on the stream instead (and nothing is returned).
    pub(super) fn poll_transmit(&mut self) -> Vec<BytesMut> {
        let mut out = Vec::new();
        while let Some(transmit) = self.client.poll_write() {
            match &mut self.stream {
                Some(stream) => {
                    if !stream.send(&transmit.message) {
                        tracing::trace!(server = %self.url, "TURN stream full or closed; message dropped");
                    }
                }
                None => out.push(transmit.message),
            }
        }
        out
    }

    /// Releases the allocation (a Refresh with lifetime 0).
    pub(super) fn close(&mut self, now: Instant) {
        if let Some(relayed) = self.relayed() {
            if let Ok(mut relay) = self.client.relay(relayed) {
                let _ = relay.close(now);
            }
        }
    }
}
