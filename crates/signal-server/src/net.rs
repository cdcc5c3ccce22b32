//! Address ranges and the client address behind trusted proxies.

use std::{fmt, net::IpAddr, str::FromStr};

use http::HeaderMap;

/// An IP address range in CIDR notation (`10.0.0.0/8`, `::1`, `127.0.0.1`).
///
/// A bare address is a range of one. IPv4-mapped IPv6 addresses
/// (`::ffff:127.0.0.1`, as seen on a dual-stack listener) match the IPv4
/// range they map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// The text is not an address or `address/prefix`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid address range {0:?}: expected an IP address or ADDRESS/PREFIX")]
pub struct IpNetParseError(String);

impl IpNet {
    /// The single address `addr`.
    pub fn host(addr: IpAddr) -> Self {
        let addr = addr.to_canonical();
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, prefix }
    }

    /// Whether `ip` lies inside this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

impl FromStr for IpNet {
    type Err = IpNetParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || IpNetParseError(text.to_owned());
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().map_err(|_| invalid())?,
            None => max,
        };
        if prefix > max {
            return Err(invalid());
        }
        // `::ffff:10.0.0.0/104` and `10.0.0.0/8` are the same range.
        match addr {
            IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => Ok(Self {
                addr: IpAddr::V4(v6.to_ipv4_mapped().unwrap_or_else(|| unreachable!())),
                prefix: prefix - 96,
            }),
            _ => Ok(Self { addr, prefix }),
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Whether `ip` is inside any of `nets`.
pub(crate) fn is_trusted(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|net| net.contains(ip))
}

/// The address of the client behind the connection from `peer`.
///
/// When `peer` is a trusted proxy, `X-Forwarded-For` is read from the right
/// (each proxy appends the address it saw) and the first address that is not
/// itself a trusted proxy is the client. Anything an untrusted peer writes
/// there is ignored, so a client cannot choose its own address.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    forwarded_chain(peer, headers, trusted)[0]
}

/// The addresses a request came through, the client first and `peer` last:
/// the `X-Forwarded-For` an untrusted peer wrote is ignored (the chain is
/// the peer alone); from a trusted proxy, its hops are kept from the client
/// [`client_ip`] finds onward, and whatever the client itself put in front
/// of them is dropped. Never empty; the first entry is [`client_ip`].
pub(crate) fn forwarded_chain(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> Vec<IpAddr> {
    let peer = peer.to_canonical();
    if !is_trusted(trusted, peer) {
        return vec![peer];
    }
    let mut hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    let client = hops
        .iter()
        .rposition(|ip| !is_trusted(trusted, *ip))
        .unwrap_or(0);
    hops.drain(..client);
    hops.push(peer);
    hops
}

/// The last value a trusted `peer` gave for the list header `name` (the
/// statement of the proxy nearest to us), or `None` from any other peer.
pub(crate) fn trusted_proxy_says<'h>(
    peer: IpAddr,
    headers: &'h HeaderMap,
    name: &str,
    trusted: &[IpNet],
) -> Option<&'h str> {
    if !is_trusted(trusted, peer.to_canonical()) {
        return None;
    }
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .rfind(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_parse_and_match() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "mapped IPv4 matches");
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")));
        assert!(!one.contains(ip("127.0.0.2")));
        let odd: IpNet = "192.168.0.0/23".parse().unwrap();
        assert!(odd.contains(ip("192.168.1.255")));
        assert!(!odd.contains(ip("192.168.2.0")));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("fe80::1")));
        let mapped: IpNet = "::ffff:10.0.0.0/104".parse().unwrap();
        assert!(mapped.contains(ip("10.9.9.9")));
        for bad in ["", "10.0.0.0/33", "nope", "10.0.0.0/x", "::1/129"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_is_only_believed_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.7, 10.0.0.2"),
        );
        // Through two trusted proxies: the first untrusted hop from the right.
        assert_eq!(
            client_ip(ip("127.0.0.1"), &headers, &trusted),
            ip("203.0.113.7")
        );
        // A direct client cannot claim another address.
        assert_eq!(
            client_ip(ip("198.51.100.1"), &headers, &trusted),
            ip("198.51.100.1")
        );
        // No header: the proxy itself.
        assert_eq!(
            client_ip(ip("127.0.0.1"), &HeaderMap::new(), &trusted),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn the_forwarded_chain_starts_at_the_client() {
        let trusted: Vec<IpNet> = vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.7"),
        );
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        // The client's made-up 6.6.6.6 is dropped; the trusted hops stay.
        assert_eq!(
            forwarded_chain(ip("127.0.0.1"), &headers, &trusted),
            [ip("203.0.113.7"), ip("10.0.0.2"), ip("127.0.0.1")]
        );
        assert_eq!(
            forwarded_chain(ip("::ffff:198.51.100.1"), &headers, &trusted),
            [ip("198.51.100.1")]
        );
        assert_eq!(
            forwarded_chain(ip("127.0.0.1"), &HeaderMap::new(), &trusted),
            [ip("127.0.0.1")]
        );
        // Only trusted hops: the first of them is the client.
        let mut inside = HeaderMap::new();
        inside.insert(
            "x-forwarded-for",
            HeaderValue::from_static("10.0.0.3, junk"),
        );
        assert_eq!(
            forwarded_chain(ip("10.0.0.1"), &inside, &trusted),
            [ip("10.0.0.3"), ip("10.0.0.1")]
        );
    }

    #[test]
    fn only_a_trusted_proxy_is_listened_to() {
        let trusted: Vec<IpNet> = vec!["127.0.0.1".parse().unwrap()];
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        headers.append(
            "x-forwarded-proto",
            HeaderValue::from_static("http, https "),
        );
        assert_eq!(
            trusted_proxy_says(ip("127.0.0.1"), &headers, "x-forwarded-proto", &trusted),
            Some("https")
        );
        assert_eq!(
            trusted_proxy_says(ip("127.0.0.2"), &headers, "x-forwarded-proto", &trusted),
            None
        );
        assert_eq!(
            trusted_proxy_says(ip("127.0.0.1"), &headers, "x-forwarded-host", &trusted),
            None
        );
    }
}
