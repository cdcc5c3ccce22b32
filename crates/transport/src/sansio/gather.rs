//! Local candidates for the sans-I/O stack: one UDP socket per allowed local
//! address (host candidates), and server-reflexive candidates learnt by
//! asking each STUN server from each socket. The ICE agent of `rtc-ice`
//! gathers nothing itself; this module is its gatherer.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rtc_ice::candidate::candidate_host::CandidateHostConfig;
use rtc_ice::candidate::candidate_server_reflexive::CandidateServerReflexiveConfig;
use rtc_ice::candidate::{Candidate, CandidateConfig};
use rtc_ice::url::{ProtoType, SchemeType, Url};
use rtc_stun::message::{Getter, Message, TransactionId, BINDING_REQUEST, BINDING_SUCCESS};
use rtc_stun::xoraddr::XorMappedAddress;
use tokio::net::UdpSocket;

#[cfg(feature = "turn-tls")]
use super::tls::{tls_config, TlsTarget};
use super::turn::{TurnServer, Via};
use crate::{AddressFilter, Error, PeerConfig};

/// The ICE component every candidate belongs to (data channels are one
/// component).
const COMPONENT: u16 = 1;

/// A STUN binding request is sent this many times before the server is
/// given up (RFC 8489's Rc is 7; gathering has a budget of its own).
const STUN_TRIES: u32 = 3;
/// The first retransmission wait; doubled per retry.
const STUN_RTO: Duration = Duration::from_millis(300);

/// A socket of ours with the address it is bound to.
#[derive(Debug)]
pub(super) struct LocalSocket {
    pub(super) socket: UdpSocket,
    pub(super) addr: SocketAddr,
    /// Left over from before an ICE restart: closed once a pair on the
    /// restart's sockets is selected.
    pub(super) retired: bool,
    /// Talks to a TURN server (no host candidate of its own).
    pub(super) turn: bool,
    /// Whether runs of datagrams may leave in one segmented send.
    pub(super) segmentation: bool,
}

/// Binds one UDP socket per local address the filter allows, sizes its
/// buffers, and returns them with their host candidates.
pub(super) fn bind_host_sockets(
    config: &PeerConfig,
) -> Result<(Vec<LocalSocket>, Vec<Candidate>), Error> {
    let filter = &config.address_filter;
    let interfaces = rtc_shared::ifaces::ifaces()
        .map_err(|e| Error::Failed(format!("listing network interfaces: {e}")))?;
    let mut sockets = Vec::new();
    let mut candidates = Vec::new();
    let mut seen: Vec<IpAddr> = Vec::new();
    for interface in interfaces {
        let Some(addr) = interface.addr else { continue };
        let ip = addr.ip();
        if seen.contains(&ip) || !usable_local_ip(filter, &interface.name, ip) {
            continue;
        }
        seen.push(ip);
        let std_socket = match std::net::UdpSocket::bind(SocketAddr::new(ip, 0)) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%ip, error = %e, "cannot bind a host candidate socket");
                continue;
            }
        };
        if let Some(size) = config.socket_buffer {
            crate::socket::size_buffers(&socket2::SockRef::from(&std_socket), size);
        }
        std_socket
            .set_nonblocking(true)
            .map_err(|e| Error::Failed(format!("socket: {e}")))?;
        let socket =
            UdpSocket::from_std(std_socket).map_err(|e| Error::Failed(format!("socket: {e}")))?;
        super::udp::request_coalescing(&socket);
        let local = socket
            .local_addr()
            .map_err(|e| Error::Failed(format!("socket: {e}")))?;
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: local.ip().to_string(),
                port: local.port(),
                component: COMPONENT,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .map_err(|e| Error::Failed(format!("host candidate: {e}")))?;
        candidates.push(candidate);
        sockets.push(LocalSocket {
            socket,
            addr: local,
            retired: false,
            turn: false,
            segmentation: super::udp::segmentation_available(),
        });
    }
    Ok((sockets, candidates))
}

/// The address to reach the TURN server at `server` from: the first host
/// address of the same family (so its packets stay inside the filter like
/// every other).
pub(super) fn turn_local_ip(hosts: &[LocalSocket], server: SocketAddr) -> Option<IpAddr> {
    hosts.iter().map(|s| s.addr.ip()).find(|ip| {
        ip.is_ipv4() == server.is_ipv4() && ip.is_loopback() == server.ip().is_loopback()
    })
}

/// Binds a UDP socket for talking to the TURN server at `server`, on
/// [`turn_local_ip`].
pub(super) fn bind_turn_socket(
    config: &PeerConfig,
    hosts: &[LocalSocket],
    server: SocketAddr,
) -> Option<LocalSocket> {
    let ip = turn_local_ip(hosts, server)?;
    let std_socket = std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).ok()?;
    if let Some(size) = config.socket_buffer {
        crate::socket::size_buffers(&socket2::SockRef::from(&std_socket), size);
    }
    std_socket.set_nonblocking(true).ok()?;
    let socket = UdpSocket::from_std(std_socket).ok()?;
    super::udp::request_coalescing(&socket);
    let addr = socket.local_addr().ok()?;
    Some(LocalSocket {
        socket,
        addr,
        retired: false,
        turn: true,
        segmentation: super::udp::segmentation_available(),
    })
}

/// Whether ICE may gather on `ip` of interface `name`: inside the filter,
/// loopback only when the filter asks for it, never an IPv6 link-local or
/// unspecified address.
fn usable_local_ip(filter: &AddressFilter, name: &str, ip: IpAddr) -> bool {
    if ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    if let IpAddr::V6(v6) = ip {
        if (v6.segments()[0] & 0xffc0) == 0xfe80 {
            return false;
        }
    }
    if ip.is_loopback() && !filter.wants_loopback() {
        return false;
    }
    filter.allows_interface(name) && filter.allows_ip(ip)
}

/// The ICE servers of `config` this stack gathers from, in one pass over
/// the URLs: STUN servers by address, and TURN servers with their
/// credentials and how to reach them — `turn:` over UDP or TCP, `turns:`
/// over TLS (verified against Mozilla's roots and
/// [`PeerConfig::turn_tls_roots`]) — each confined to the filter like every
/// other packet ICE sends. `turns:` with `transport=udp` (TURN over DTLS)
/// is skipped with a WARN (once per process).
pub(super) async fn ice_servers(
    config: &PeerConfig,
) -> Result<(Vec<SocketAddr>, Vec<TurnServer>), Error> {
    let filter = &config.address_filter;
    let (mut stun, mut turn) = (Vec::new(), Vec::new());
    // Built at the first `turns:` URL, shared by all of them.
    #[cfg(feature = "turn-tls")]
    let mut tls = None;
    for server in &config.ice_servers {
        for raw in &server.urls {
            let url = Url::parse_url(raw)
                .map_err(|e| Error::InvalidConfig(format!("ICE server {raw:?}: {e}")))?;
            let via = match (url.scheme, url.proto) {
                (SchemeType::Stun, _) => None,
                (SchemeType::Turn, ProtoType::Udp) => Some(Via::Udp),
                (SchemeType::Turn, ProtoType::Tcp) => Some(Via::Tcp),
                #[cfg(feature = "turn-tls")]
                (SchemeType::Turns, ProtoType::Tcp) => {
                    let config = match &tls {
                        Some(config) => std::sync::Arc::clone(config),
                        None => tls.insert(tls_config(&config.turn_tls_roots)?).clone(),
                    };
                    Some(Via::Tls(TlsTarget::new(config, &url.host)?))
                }
                #[cfg(not(feature = "turn-tls"))]
                (SchemeType::Turns, ProtoType::Tcp) => {
                    crate::config::skip_tls_relay_url(raw);
                    continue;
                }
                (SchemeType::Turns, _) => {
                    crate::config::skip_dtls_relay_url(raw);
                    continue;
                }
                _ => continue,
            };
            let Some(addr) = resolve_in_filter(raw, &url, filter).await else {
                continue;
            };
            match via {
                None => stun.push(addr),
                Some(via) => turn.push(TurnServer {
                    addr,
                    url: raw.clone(),
                    username: server.username.clone().unwrap_or_default(),
                    password: server.credential.clone().unwrap_or_default(),
                    via,
                }),
            }
        }
    }
    Ok((stun, turn))
}

/// The address of the server `url` (`raw` as configured) that the filter
/// allows, resolving a hostname here for that check; `None` (with a WARN)
/// when it does not resolve or only to addresses outside the filter.
pub(super) async fn resolve_in_filter(
    raw: &str,
    url: &Url,
    filter: &AddressFilter,
) -> Option<SocketAddr> {
    // `Url::parse_url` has already taken an IPv6 address out of its brackets.
    let host = url.host.as_str();
    let resolved: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, url.port)],
        Err(_) => match tokio::net::lookup_host((host, url.port)).await {
            Ok(addrs) => addrs.collect(),
            Err(e) => {
                tracing::warn!(server = %raw, error = %e, "skipping ICE server that does not resolve");
                return None;
            }
        },
    };
    let found = resolved.into_iter().find(|a| filter.allows_ip(a.ip()));
    if found.is_none() {
        tracing::warn!(server = %raw, "skipping ICE server outside the address filter");
    }
    found
}

/// One binding request in flight: from our socket `local` to `server`.
#[derive(Debug)]
struct Transaction {
    id: TransactionId,
    local: SocketAddr,
    server: SocketAddr,
    request: Vec<u8>,
    tries: u32,
    next: Instant,
}

/// Server-reflexive gathering: binding requests out, candidates in.
#[derive(Debug, Default)]
pub(super) struct ReflexiveGatherer {
    pending: Vec<Transaction>,
}

impl ReflexiveGatherer {
    /// Starts a binding request from every socket to every server of the
    /// same address family.
    pub(super) fn start(
        sockets: &[LocalSocket],
        servers: &[SocketAddr],
        now: Instant,
    ) -> Result<Self, Error> {
        let mut pending = Vec::new();
        for socket in sockets {
            if socket.retired || socket.turn || socket.addr.ip().is_loopback() {
                continue;
            }
            for server in servers {
                if server.is_ipv4() != socket.addr.is_ipv4() {
                    continue;
                }
                let id = TransactionId::new();
                let mut message = Message::new();
                message
                    .build(&[Box::new(BINDING_REQUEST), Box::new(id)])
                    .map_err(|e| Error::Failed(format!("STUN request: {e}")))?;
                pending.push(Transaction {
                    id,
                    local: socket.addr,
                    server: *server,
                    request: message.raw,
                    tries: 0,
                    next: now,
                });
            }
        }
        Ok(Self { pending })
    }

    /// Whether every request was answered or given up.
    pub(super) fn is_done(&self) -> bool {
        self.pending.is_empty()
    }

    /// When [`Self::poll_transmit`] next has something to send.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.pending.iter().map(|t| t.next).min()
    }

    /// The requests due at `now`, as `(our socket's address, server,
    /// bytes)`; requests out of tries are given up.
    pub(super) fn poll_transmit(&mut self, now: Instant) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        self.pending.retain_mut(|t| {
            if t.next > now {
                return true;
            }
            if t.tries == STUN_TRIES {
                tracing::debug!(server = %t.server, "STUN server did not answer");
                return false;
            }
            out.push((t.local, t.server, t.request.clone()));
            t.next = now + STUN_RTO * 2u32.pow(t.tries);
            t.tries += 1;
            true
        });
        out
    }

    /// Takes a datagram that arrived on our socket `local` from `from`: a
    /// binding response to one of our requests yields the candidate it
    /// reveals (`Some(None)` when it reveals nothing new); anything else is
    /// not ours (`None`).
    pub(super) fn handle(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        data: &[u8],
    ) -> Option<Option<Candidate>> {
        let position = self.pending.iter().position(|t| {
            t.local == local && t.server == from && data.get(8..20) == Some(&t.id.0[..])
        })?;
        let mut message = Message::new();
        message.raw = data.to_vec();
        if message.decode().is_err() || message.typ != BINDING_SUCCESS {
            return None;
        }
        let transaction = self.pending.swap_remove(position);
        let mut mapped = XorMappedAddress::default();
        if mapped.get_from(&message).is_err() {
            return Some(None);
        }
        let base = transaction.local;
        if mapped.ip == base.ip() && mapped.port == base.port() {
            return Some(None);
        }
        let candidate = CandidateServerReflexiveConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: mapped.ip.to_string(),
                port: mapped.port,
                component: COMPONENT,
                ..Default::default()
            },
            rel_addr: base.ip().to_string(),
            rel_port: base.port(),
            url: None,
        }
        .new_candidate_server_reflexive();
        match candidate {
            Ok(c) => Some(Some(c)),
            Err(e) => {
                tracing::debug!(error = %e, "unusable server-reflexive address");
                Some(None)
            }
        }
    }
}
