//! Peer configuration: ICE servers, the address allow-list and timeouts.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::description::DEFAULT_MAX_MESSAGE_SIZE;
use crate::Error;

/// [`PeerConfig::socket_buffer`] unless set otherwise.
pub const DEFAULT_SOCKET_BUFFER: usize = 2 * 1024 * 1024;

/// A STUN or TURN server, as `RTCIceServer` describes one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp`, ...
    pub urls: Vec<String>,
    /// TURN username (coturn REST format: `<expiry>:<id>`).
    pub username: Option<String>,
    /// TURN credential.
    pub credential: Option<String>,
}

/// Which local addresses ICE may gather on and which remote addresses it may
/// send to.
///
/// An empty filter allows everything (what a user on a normal network wants).
/// A filter with entries allows only addresses inside one of its networks, and
/// only interfaces it names when it names any. Tests and the demo use it to
/// keep every packet on loopback or inside a namespace they created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressFilter {
    networks: Vec<Network>,
    interfaces: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses are compared as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl AddressFilter {
    /// A filter that allows every address and interface.
    pub fn allow_all() -> Self {
        Self::default()
    }

    /// A filter that allows only the loopback addresses `127.0.0.0/8` and `::1`.
    pub fn loopback() -> Self {
        let mut f = Self::default();
        f.allow_network("127.0.0.0/8").expect("valid literal");
        f.allow_network("::1").expect("valid literal");
        f
    }

    /// Allows an address (`10.0.0.2`) or a network in CIDR form (`10.0.0.0/24`).
    pub fn allow_network(&mut self, spec: &str) -> Result<&mut Self, Error> {
        let (addr, prefix) = match spec.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (spec, None),
        };
        let addr = IpAddr::from_str(addr.trim())
            .map_err(|_| Error::InvalidConfig(format!("not an IP address or network: {spec:?}")))?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| Error::InvalidConfig(format!("bad prefix length in {spec:?}")))?,
        };
        self.networks.push(Network { addr, prefix });
        Ok(self)
    }

    /// Allows gathering on the named interface (e.g. `lo`, `eth0`).
    pub fn allow_interface(&mut self, name: impl Into<String>) -> &mut Self {
        self.interfaces.push(name.into());
        self
    }

    /// True when the filter restricts nothing.
    pub fn is_open(&self) -> bool {
        self.networks.is_empty() && self.interfaces.is_empty()
    }

    /// Whether ICE may use this address (local or remote).
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.networks.is_empty() || self.networks.iter().any(|n| n.contains(ip))
    }

    /// Whether ICE may send connectivity checks to this remote address.
    /// An allow-list decides alone (allowing `127.0.0.1` allows loopback
    /// peers); with none, addresses no remote peer can really have are
    /// refused — loopback, link-local, multicast, broadcast and unspecified
    /// ones — so an offer cannot make the home probe its own machine or
    /// its LAN's link-local neighbours.
    pub fn allows_remote(&self, ip: IpAddr) -> bool {
        if !self.networks.is_empty() {
            return self.allows_ip(ip);
        }
        let ip = ip.to_canonical();
        let nonsense = match ip {
            IpAddr::V4(v4) => {
                v4.is_loopback()
                    || v4.is_link_local()
                    || v4.is_multicast()
                    || v4.is_broadcast()
                    || v4.is_unspecified()
            }
            IpAddr::V6(v6) => {
                v6.is_loopback()
                    || v6.is_multicast()
                    || v6.is_unspecified()
                    || (v6.segments()[0] & 0xffc0) == 0xfe80
            }
        };
        !nonsense
    }

    /// Whether ICE may gather on this interface.
    pub fn allows_interface(&self, name: &str) -> bool {
        self.interfaces.is_empty() || self.interfaces.iter().any(|i| i == name)
    }

    /// Whether the filter admits any loopback address, in which case loopback
    /// candidates are gathered (they are not by default).
    pub(crate) fn wants_loopback(&self) -> bool {
        self.networks.iter().any(|n| n.addr.is_loopback())
            || self.interfaces.iter().any(|i| i == "lo")
    }
}

/// Remote candidates one peer takes by default.
pub const DEFAULT_MAX_REMOTE_CANDIDATES: u32 = 32;

/// The default [`PeerConfig::check_budget`]: 1,024 checks per local
/// candidate, i.e. 32 per pair (1.6 s of checks at one every 50 ms) with 32
/// remote candidates. Half of it (0.8 s per pair) slowed recovery after an
/// ICE restart from 3.9 s to 12 s in the dead-path test.
pub const DEFAULT_CHECK_BUDGET: u32 = 1024;

/// Which WebRTC implementation a [`crate::Peer`] runs on. Both carry the
/// same API; `docs/transport.md` compares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Stack {
    /// The webrtc-rs 0.17 component crates, each layer on its own tasks.
    Webrtc017,
    /// webrtc-rs's sans-I/O `rtc-*` crates (0.21), driven by one task per
    /// connection that owns the sockets, ICE, DTLS, SCTP and the channels.
    /// The default: it passes every suite the 0.17 stack passes and moves
    /// data about four times as fast (`docs/transport.md`).
    #[default]
    SansIo,
}

impl std::str::FromStr for Stack {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "0.17" | "webrtc017" | "webrtc-0.17" => Ok(Self::Webrtc017),
            "sansio" | "rtc" => Ok(Self::SansIo),
            other => Err(Error::InvalidConfig(format!(
                "unknown transport stack {other:?} (expected \"0.17\" or \"sansio\")"
            ))),
        }
    }
}

impl std::fmt::Display for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Webrtc017 => "0.17",
            Self::SansIo => "sansio",
        })
    }
}

/// How a [`crate::Peer`] is set up.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The implementation underneath.
    pub stack: Stack,
    /// STUN/TURN servers used to gather server-reflexive and relayed candidates.
    pub ice_servers: Vec<IceServer>,
    /// Addresses ICE may use.
    pub address_filter: AddressFilter,
    /// `a=max-message-size` advertised to the remote peer, which is also the
    /// largest message this peer accepts.
    pub max_message_size: u32,
    /// How long an offer or answer waits for candidate gathering before it is
    /// sent with the candidates found so far (the rest are trickled). Zero
    /// sends it at once with no candidate: everything is trickled.
    pub gather_wait: Duration,
    /// From creating the peer ([`crate::Peer::offer`] or
    /// [`crate::Peer::answer`]) to an open SCTP association; past it the peer
    /// reports [`crate::PeerState::Failed`] with
    /// [`Error::Timeout`]. The default is the specification's 8 s setup budget.
    pub connect_timeout: Duration,
    /// How long a working relayed pair waits before it is nominated, so that
    /// a direct pair found meanwhile wins.
    pub relay_wait: Duration,
    /// How often ICE consent/keepalive binding requests are sent.
    pub keepalive_interval: Duration,
    /// Silence after which the path is reported [`crate::PeerState::Disconnected`].
    pub disconnected_timeout: Duration,
    /// Further silence, after [`PeerConfig::disconnected_timeout`], after
    /// which the peer is reported [`crate::PeerState::Failed`] and closed.
    /// The default, 30 s (33 s of silence in all), outlives RFC 7675's 30 s
    /// consent lifetime, so a connection rides out an outage of half a
    /// minute and resumes where it stopped.
    pub failed_timeout: Duration,
    /// Receive and send buffer size asked of the kernel for every UDP socket
    /// ICE binds for host and server-reflexive candidates (Linux caps it at
    /// `net.core.rmem_max` / `wmem_max`). A bulk transfer sends bursts that
    /// overflow the default buffer (about 208 KiB), and every lost packet
    /// costs webrtc-sctp at least a 1 s retransmission timeout. `None`
    /// leaves the kernel default.
    pub socket_buffer: Option<usize>,
    /// Most remote candidates one peer takes (the SDP's and trickled ones
    /// together); more are refused with [`crate::Error::TooManyCandidates`].
    /// Browsers send a handful; each candidate costs connectivity checks.
    pub max_remote_candidates: u32,
    /// Connectivity checks one local candidate may send to all of a peer's
    /// candidates together: each pair gets `check_budget /
    /// max_remote_candidates` checks (at least 7, at most what fits in
    /// `connect_timeout`) before it is given up. This bounds what a page
    /// naming other hosts as its candidates can make the home send to them.
    pub check_budget: u32,
    /// Certificate authorities trusted for `turns:` servers besides
    /// Mozilla's roots (`webpki-roots`): PEM text, one or more certificates
    /// per entry. A server's certificate must name the URL's host (an IP
    /// address as an IP subject alternative name). The library reads no
    /// file; the embedder passes the text. A bad entry fails
    /// [`crate::Peer::offer`] / [`crate::Peer::answer`] with
    /// [`Error::InvalidConfig`] when a `turns:` URL is configured. Only the
    /// sans-I/O stack speaks TURN over TLS, and only with the `turn-tls`
    /// feature (on by default); otherwise `turns:` URLs are skipped with a
    /// WARN and this is unused.
    pub turn_tls_roots: Vec<String>,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            stack: Stack::default(),
            ice_servers: Vec::new(),
            address_filter: AddressFilter::default(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            gather_wait: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(8),
            relay_wait: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(1),
            disconnected_timeout: Duration::from_secs(3),
            failed_timeout: Duration::from_secs(30),
            socket_buffer: Some(DEFAULT_SOCKET_BUFFER),
            max_remote_candidates: DEFAULT_MAX_REMOTE_CANDIDATES,
            check_budget: DEFAULT_CHECK_BUDGET,
            turn_tls_roots: Vec::new(),
        }
    }
}

/// Set once the first TURN URL the 0.17 stack cannot use has been reported
/// at WARN.
#[cfg(feature = "stack-017")]
static WARNED_UNUSABLE_RELAY: AtomicBool = AtomicBool::new(false);

/// Set once the first `turns:` URL over TCP has been reported at WARN by a
/// build without the `turn-tls` feature.
#[cfg(not(feature = "turn-tls"))]
static WARNED_TLS_RELAY: AtomicBool = AtomicBool::new(false);

/// Set once the first `turns:` URL over UDP (DTLS) has been reported at WARN.
static WARNED_DTLS_RELAY: AtomicBool = AtomicBool::new(false);

/// Says that a TURN URL is skipped: the first time in a process at WARN, then
/// at DEBUG (a client handed signal-api's URL list meets the same ones on
/// every connection).
fn skip_relay_url(warned: &AtomicBool, raw: &str, why: &str) {
    if warned.swap(true, Ordering::Relaxed) {
        tracing::debug!(server = %raw, "{why}");
    } else {
        tracing::warn!(server = %raw, "{why}");
    }
}

/// The 0.17 stack skips a `turn:` URL over TCP and every `turns:` URL.
#[cfg(feature = "stack-017")]
pub(crate) fn skip_unusable_relay_url(raw: &str) {
    skip_relay_url(
        &WARNED_UNUSABLE_RELAY,
        raw,
        "skipping TURN server URL: this transport gathers relayed candidates over UDP only (no TURN over TCP or TLS)",
    );
}

/// A build without the `turn-tls` feature skips every `turns:` URL over TCP.
#[cfg(not(feature = "turn-tls"))]
pub(crate) fn skip_tls_relay_url(raw: &str) {
    skip_relay_url(
        &WARNED_TLS_RELAY,
        raw,
        "skipping TURN server URL: TURN over TLS needs beeline-transport's turn-tls feature, which this build leaves out",
    );
}

/// The sans-I/O stack skips `turns:` with `transport=udp` (TURN over DTLS).
pub(crate) fn skip_dtls_relay_url(raw: &str) {
    skip_relay_url(
        &WARNED_DTLS_RELAY,
        raw,
        "skipping TURN server URL: TURN over DTLS (turns: with transport=udp) is not supported; use turns: over TCP or turn: over UDP",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_filter_refuses_remote_addresses_no_peer_has() {
        let open = AddressFilter::default();
        for bad in [
            "127.0.0.1",
            "::1",
            "169.254.1.2",
            "fe80::1",
            "224.0.0.251",
            "ff02::fb",
            "255.255.255.255",
            "0.0.0.0",
            "::",
            "::ffff:127.0.0.1",
        ] {
            assert!(!open.allows_remote(bad.parse().unwrap()), "{bad}");
        }
        for good in ["192.168.1.20", "10.0.0.5", "203.0.113.9", "2001:db8::5"] {
            assert!(open.allows_remote(good.parse().unwrap()), "{good}");
        }
        // An allow-list decides alone: loopback allowed when listed.
        assert!(AddressFilter::loopback().allows_remote("127.0.0.1".parse().unwrap()));
        assert!(!AddressFilter::loopback().allows_remote("10.0.0.5".parse().unwrap()));
    }

    #[test]
    fn empty_filter_allows_everything() {
        let f = AddressFilter::default();
        assert!(f.allows_ip("192.0.2.1".parse().unwrap()));
        assert!(f.allows_interface("eth0"));
        assert!(!f.wants_loopback());
    }

    #[test]
    fn networks_and_mapped_addresses() {
        let mut f = AddressFilter::default();
        f.allow_network("10.1.0.0/16").unwrap();
        f.allow_network("fd00::/8").unwrap();
        assert!(f.allows_ip("10.1.200.3".parse().unwrap()));
        assert!(!f.allows_ip("10.2.0.1".parse().unwrap()));
        assert!(f.allows_ip("::ffff:10.1.0.9".parse().unwrap()));
        assert!(f.allows_ip("fd12::1".parse().unwrap()));
        assert!(!f.allows_ip("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn loopback_filter() {
        let f = AddressFilter::loopback();
        assert!(f.allows_ip("127.0.0.1".parse().unwrap()));
        assert!(f.allows_ip("::1".parse().unwrap()));
        assert!(!f.allows_ip("192.168.1.2".parse().unwrap()));
        assert!(f.wants_loopback());
    }

    #[test]
    fn bad_specs_are_errors() {
        let mut f = AddressFilter::default();
        assert!(f.allow_network("nope").is_err());
        assert!(f.allow_network("10.0.0.0/33").is_err());
        assert!(f.allow_network("::/129").is_err());
        assert!(f.allow_network("0.0.0.0/0").is_ok());
    }
}
