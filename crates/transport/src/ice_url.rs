//! STUN and TURN server URLs (RFC 7064, RFC 7065), parsed here rather than
//! with `webrtc_ice::url::Url::parse_url`: that one goes through the `url`
//! crate, whose IDNA tables (for hostnames of `http:`-like schemes, which an
//! ICE URL never has) cost ~150 KB in every binary.
//!
//! ```text
//! stunURI = ("stun" / "stuns") ":" host [ ":" port ]
//! turnURI = ("turn" / "turns") ":" host [ ":" port ] [ "?transport=" ("udp" / "tcp") ]
//! host    = "[" IPv6address "]" / IPv4address / reg-name
//! ```

use std::net::Ipv6Addr;

use webrtc_ice::url::{ProtoType, SchemeType, Url};

/// The default port of `stun:` and `turn:` (RFC 8489, RFC 8656).
const DEFAULT_PORT: u16 = 3478;
/// The default port of `stuns:` and `turns:`.
const DEFAULT_TLS_PORT: u16 = 5349;

/// Parses a STUN or TURN URL. Username and password are left empty.
pub(crate) fn parse(raw: &str) -> Result<Url, String> {
    let (scheme, rest) = raw
        .split_once(':')
        .ok_or_else(|| "missing scheme (stun:, stuns:, turn: or turns:)".to_owned())?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "stun" => SchemeType::Stun,
        "stuns" => SchemeType::Stuns,
        "turn" => SchemeType::Turn,
        "turns" => SchemeType::Turns,
        other => return Err(format!("unknown scheme {other:?}")),
    };
    let is_turn = matches!(scheme, SchemeType::Turn | SchemeType::Turns);
    let (authority, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };

    // host [":" port]; an IPv6 host is bracketed, anything else is an IPv4
    // address or a DNS name.
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (ip, after) = bracketed
            .split_once(']')
            .ok_or_else(|| "unterminated IPv6 address".to_owned())?;
        ip.parse::<Ipv6Addr>()
            .map_err(|_| format!("bad IPv6 address {ip:?}"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("unexpected {p:?} after the address"))?,
            ),
        };
        (ip, port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let name_char = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_';
        if !host.bytes().all(name_char) {
            return Err(format!("bad host {host:?}"));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("missing host".to_owned());
    }
    let default_port = match scheme {
        SchemeType::Stuns | SchemeType::Turns => DEFAULT_TLS_PORT,
        _ => DEFAULT_PORT,
    };
    let port = match port {
        None | Some("") => default_port,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse().map_err(|_| format!("bad port {p:?}"))?
        }
        Some(p) => return Err(format!("bad port {p:?}")),
    };

    let default_proto = match scheme {
        SchemeType::Stuns | SchemeType::Turns => ProtoType::Tcp,
        _ => ProtoType::Udp,
    };
    let proto = match query {
        None | Some("") => default_proto,
        Some(_) if !is_turn => return Err("a STUN URL takes no query".to_owned()),
        Some(q) => {
            let transport = q
                .strip_prefix("transport=")
                .ok_or_else(|| format!("unsupported query {q:?} (only transport=)"))?;
            match transport.to_ascii_lowercase().as_str() {
                "udp" => ProtoType::Udp,
                "tcp" => ProtoType::Tcp,
                other => return Err(format!("unsupported transport {other:?}")),
            }
        }
    };

    Ok(Url {
        scheme,
        host: host.to_owned(),
        port,
        username: String::new(),
        password: String::new(),
        proto,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> (SchemeType, String, u16, ProtoType) {
        let u = parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
        (u.scheme, u.host, u.port, u.proto)
    }

    #[test]
    fn stun_and_turn_urls() {
        use ProtoType::{Tcp, Udp};
        use SchemeType::{Stun, Stuns, Turn, Turns};
        let cases = [
            (
                "stun:stun.example.org",
                (Stun, "stun.example.org", 3478, Udp),
            ),
            ("stun:192.0.2.1:19302", (Stun, "192.0.2.1", 19302, Udp)),
            ("STUN:example.org", (Stun, "example.org", 3478, Udp)),
            ("stuns:example.org", (Stuns, "example.org", 5349, Tcp)),
            ("stun:[2001:db8::1]", (Stun, "2001:db8::1", 3478, Udp)),
            ("stun:[::1]:4000", (Stun, "::1", 4000, Udp)),
            ("turn:example.org", (Turn, "example.org", 3478, Udp)),
            (
                "turn:10.0.0.1:3479?transport=udp",
                (Turn, "10.0.0.1", 3479, Udp),
            ),
            (
                "turn:example.org?transport=tcp",
                (Turn, "example.org", 3478, Tcp),
            ),
            (
                "turns:example.org:443?transport=tcp",
                (Turns, "example.org", 443, Tcp),
            ),
            ("turns:example.org", (Turns, "example.org", 5349, Tcp)),
        ];
        for (raw, (scheme, host, port, proto)) in cases {
            assert_eq!(ok(raw), (scheme, host.to_owned(), port, proto), "{raw}");
        }
    }

    #[test]
    fn bad_urls() {
        for raw in [
            "",
            "example.org",
            "http://example.org",
            "stun://example.org",
            "stun:",
            "stun::3478",
            "stun:example.org:port",
            "stun:example.org:65536",
            "stun:example.org:-1",
            "stun:exa mple.org",
            "stun:user@example.org",
            "stun:example.org/path",
            "stun:example.org?transport=udp",
            "stun:[2001:db8::1",
            "stun:[not-an-ip]",
            "stun:[::1]x",
            "turn:example.org?transport=sctp",
            "turn:example.org?foo=bar",
            "turn:example.org?transport=udp&transport=tcp",
        ] {
            assert!(parse(raw).is_err(), "accepted {raw:?}");
        }
    }
}
