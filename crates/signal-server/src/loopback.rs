//! Loopback offers (`docs/loopback.md`): when a home's link says home-peer
//! listens on a loopback port, a new session of that home gets the URL and
//! a ticket for it, so a browser on the home machine can skip both the data
//! channel and this server.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use beeline_seal::LoopbackKey;
use serde::Serialize;

use crate::auth::HomeCredential;

/// Which sessions are offered a home's loopback listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LoopbackOffer {
    /// None.
    Off,
    /// Those whose browser comes from the network the home's link comes
    /// from (the same IPv4 address, the same IPv6 /64, or both on
    /// loopback): a browser elsewhere could not reach the listener anyway,
    /// and probing a local port from a far page makes some browsers ask
    /// the user for permission.
    #[default]
    SameNetwork,
    /// Every session of a home with a listener.
    Always,
}

/// What a session response carries for the loopback tier.
#[derive(Debug, Serialize)]
pub(crate) struct LoopbackOut {
    pub(crate) url: String,
    pub(crate) ticket: String,
    pub(crate) proof: String,
}

/// Per-home ticket keys, derived from the home tokens.
#[derive(Debug, Default)]
pub(crate) struct LoopbackKeys(HashMap<Arc<str>, LoopbackKey>);

impl LoopbackKeys {
    pub(crate) fn new(homes: &[HomeCredential]) -> Self {
        Self(crate::cookies::per_home(
            homes,
            LoopbackKey::from_home_token,
        ))
    }

    /// The offer for a new session of `home`, or `None` when the policy or
    /// the home says no.
    pub(crate) fn offer(
        &self,
        policy: LoopbackOffer,
        home: &str,
        listener: Option<(&str, Option<IpAddr>)>,
        browser: Option<IpAddr>,
        session: &str,
        lifetime: std::time::Duration,
    ) -> Option<LoopbackOut> {
        let (url, home_ip) = listener?;
        let allowed = match policy {
            LoopbackOffer::Off => false,
            LoopbackOffer::Always => true,
            LoopbackOffer::SameNetwork => match (home_ip, browser) {
                (Some(a), Some(b)) => same_network(a, b),
                _ => false,
            },
        };
        if !allowed {
            return None;
        }
        let expires = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + lifetime.as_secs();
        let issued = self.0.get(home)?.issue(session, expires);
        Some(LoopbackOut {
            url: url.to_owned(),
            ticket: issued.ticket,
            proof: issued.proof,
        })
    }
}

/// Whether two client addresses are one home network.
pub(crate) fn same_network(a: IpAddr, b: IpAddr) -> bool {
    let a = a.to_canonical();
    let b = b.to_canonical();
    if a.is_loopback() && b.is_loopback() {
        return true;
    }
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a == b,
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..4] == b.segments()[..4],
        _ => false,
    }
}

/// `url` when it is an `http://` URL of a loopback address with a port and
/// nothing else (what home-peer states on its link).
pub(crate) fn valid_listener_url(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (host, port) = rest.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|&p| p != 0)?;
    let loopback = match host {
        "localhost" => true,
        "[::1]" => true,
        other => other
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback()),
    };
    loopback.then(|| format!("http://{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_loopback_urls_are_accepted() {
        assert_eq!(
            valid_listener_url("http://127.0.0.1:33120").as_deref(),
            Some("http://127.0.0.1:33120")
        );
        assert!(valid_listener_url("http://[::1]:33120").is_some());
        for bad in [
            "https://127.0.0.1:33120",
            "http://10.0.0.1:33120",
            "http://evil.example:33120",
            "http://127.0.0.1",
            "http://127.0.0.1:0",
            "http://127.0.0.1:33120/path",
            "http://user@127.0.0.1:33120",
        ] {
            assert_eq!(valid_listener_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn one_network_is_one_ipv4_address_or_one_ipv6_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(same_network(ip("127.0.0.1"), ip("::1")));
        assert!(same_network(ip("203.0.113.5"), ip("203.0.113.5")));
        assert!(same_network(ip("203.0.113.5"), ip("::ffff:203.0.113.5")));
        assert!(!same_network(ip("203.0.113.5"), ip("203.0.113.6")));
        assert!(same_network(
            ip("2001:db8:1:2::5"),
            ip("2001:db8:1:2:aa::9")
        ));
        assert!(!same_network(ip("2001:db8:1:2::5"), ip("2001:db8:1:3::5")));
        assert!(!same_network(ip("127.0.0.1"), ip("203.0.113.5")));
    }

    #[test]
    fn policy_decides_and_the_ticket_opens_at_home() {
        let homes = [HomeCredential::new("home", "tok")];
        let keys = LoopbackKeys::new(&homes);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let listener = Some(("http://127.0.0.1:33120", ip("198.51.100.7")));
        let lifetime = std::time::Duration::from_secs(600);
        let offer = |policy, browser| keys.offer(policy, "home", listener, browser, "s1", lifetime);
        assert!(offer(LoopbackOffer::SameNetwork, ip("198.51.100.8")).is_none());
        assert!(offer(LoopbackOffer::Off, ip("198.51.100.7")).is_none());
        assert!(offer(LoopbackOffer::Always, ip("198.51.100.8")).is_some());
        let out = offer(LoopbackOffer::SameNetwork, ip("198.51.100.7")).unwrap();
        let at_home = LoopbackKey::from_home_token("tok");
        let ticket = at_home.open(&out.ticket, 0).unwrap();
        assert_eq!(ticket.session, "s1");
        assert_eq!(at_home.proof(&out.ticket), out.proof);
        assert!(keys
            .offer(
                LoopbackOffer::Always,
                "home",
                None,
                ip("1.2.3.4"),
                "s",
                lifetime
            )
            .is_none());
    }
}
