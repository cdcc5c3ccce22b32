//! TURN credentials in coturn's REST format (`use-auth-secret`).
//!
//! coturn accepts a username `"<expiry unix time>:<anything>"` until that
//! time, with the password `base64(HMAC-SHA1(secret, username))` for any of
//! its `static-auth-secret` lines. Rotating the secret therefore takes two
//! steps: give coturn both secrets, switch the issuer to the new one, and
//! drop the old one from coturn once the last credentials signed with it
//! have expired (one TTL later).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// A time-limited TURN username and password pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    /// `"<expiry unix time>:<opaque random id>"`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub credential: String,
}

/// Mints credentials valid until `now + ttl` for a coturn server configured
/// with `use-auth-secret` and `static-auth-secret = secret`.
pub fn turn_credentials(secret: &str, ttl: Duration, now: SystemTime) -> TurnCredentials {
    let unix_now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let expiry = unix_now.saturating_add(ttl).as_secs();
    let opaque_id = hex(&rand::random::<[u8; 8]>());
    let username = format!("{expiry}:{opaque_id}");
    let credential = turn_credential(secret, &username);
    TurnCredentials {
        username,
        credential,
    }
}

/// The password coturn expects for `username`: standard base64 of the raw
/// 20-byte `HMAC-SHA1(secret, username)`.
pub fn turn_credential(secret: &str, username: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The secrets shared with coturn: the first signs every credential issued,
/// the second (during a rotation) is still honoured by [`TurnSecrets::verify`].
#[derive(Clone, PartialEq, Eq)]
pub struct TurnSecrets {
    current: String,
    previous: Option<String>,
}

impl TurnSecrets {
    /// Issues with `current`; `previous`, if any, still verifies.
    pub fn new(current: impl Into<String>, previous: Option<String>) -> Self {
        Self {
            current: current.into(),
            previous: previous.filter(|p| !p.is_empty()),
        }
    }

    /// Credentials signed with the current secret, valid until `now + ttl`.
    pub fn issue(&self, ttl: Duration, now: SystemTime) -> TurnCredentials {
        turn_credentials(&self.current, ttl, now)
    }

    /// Whether coturn configured with these secrets would accept `username`
    /// and `credential` at `now`: the expiry has not passed and the
    /// credential is the HMAC of either secret. Useful to an embedder running
    /// its own TURN server.
    pub fn verify(&self, username: &str, credential: &str, now: SystemTime) -> bool {
        let expiry = username
            .split_once(':')
            .map_or(username, |(expiry, _)| expiry)
            .parse::<u64>();
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if !expiry.is_ok_and(|expiry| expiry >= now) {
            return false;
        }
        let matches = |secret: &str| {
            use subtle::ConstantTimeEq as _;
            bool::from(
                turn_credential(secret, username)
                    .as_bytes()
                    .ct_eq(credential.as_bytes()),
            )
        };
        matches(&self.current) | self.previous.as_deref().is_some_and(matches)
    }
}

impl std::fmt::Debug for TurnSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnSecrets")
            .field("current", &"<redacted>")
            .field("previous", &self.previous.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The usual ICE URLs for a coturn at `host`: `stun:` and `turn:` over UDP
/// and TCP on `port` (normally 3478), plus `turns:` on `tls_port` (normally
/// 443, which passes most firewalls) unless it is `None`. Returns the STUN
/// and the TURN URLs.
pub fn ice_urls_for_host(
    host: &str,
    port: u16,
    tls_port: Option<u16>,
) -> (Vec<String>, Vec<String>) {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]") // a bare IPv6 address
    } else {
        host.to_owned()
    };
    let stun = vec![format!("stun:{host}:{port}")];
    let mut turn = vec![
        format!("turn:{host}:{port}?transport=udp"),
        format!("turn:{host}:{port}?transport=tcp"),
    ];
    if let Some(tls_port) = tls_port {
        turn.push(format!("turns:{host}:{tls_port}?transport=tcp"));
    }
    (stun, turn)
}

/// Checks that every URL has one of `schemes` and a host.
pub(crate) fn check_ice_urls(urls: &[String], schemes: &[&str]) -> Result<(), String> {
    for url in urls {
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(url.clone());
        };
        let host = rest.split(['?', ':']).next().unwrap_or_default();
        let host = if rest.starts_with('[') { rest } else { host };
        if !schemes.contains(&scheme) || host.is_empty() || rest.starts_with("//") {
            return Err(url.clone());
        }
    }
    Ok(())
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently, twice:
    /// `printf '%s' '1700000300:4f2a9c1d' | openssl dgst -sha1 -hmac 'north-star-secret' -binary | base64`
    /// and `base64.b64encode(hmac.new(b'north-star-secret', b'1700000300:4f2a9c1d', hashlib.sha1).digest())`
    /// both print `tVDdCtmSrOW+F3Wg92YLhQhepGs=`.
    const KNOWN_CREDENTIAL: &str = "tVDdCtmSrOW+F3Wg92YLhQhepGs=";

    #[test]
    fn credential_matches_an_independently_computed_hmac() {
        assert_eq!(
            turn_credential("north-star-secret", "1700000300:4f2a9c1d"),
            KNOWN_CREDENTIAL
        );
    }

    #[test]
    fn username_carries_expiry_and_a_random_id() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = turn_credentials("north-star-secret", Duration::from_secs(300), now);
        let b = turn_credentials("north-star-secret", Duration::from_secs(300), now);
        let (expiry, id) = a.username.split_once(':').unwrap();
        assert_eq!(expiry, "1700000300");
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.username, b.username, "ids must be random");
        assert_eq!(
            a.credential,
            turn_credential("north-star-secret", &a.username)
        );
    }

    #[test]
    fn verify_accepts_both_secrets_until_expiry() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ttl = Duration::from_secs(300);
        let rotating = TurnSecrets::new("new-secret", Some("old-secret".into()));
        let fresh = rotating.issue(ttl, now);
        assert_eq!(
            fresh.credential,
            turn_credential("new-secret", &fresh.username)
        );
        assert!(rotating.verify(&fresh.username, &fresh.credential, now));
        let old = turn_credentials("old-secret", ttl, now);
        assert!(rotating.verify(&old.username, &old.credential, now));
        let stranger = turn_credentials("other-secret", ttl, now);
        assert!(!rotating.verify(&stranger.username, &stranger.credential, now));
        let later = now + Duration::from_secs(301);
        assert!(!rotating.verify(&fresh.username, &fresh.credential, later));
        assert!(!TurnSecrets::new("new-secret", None).verify(&old.username, &old.credential, now));
        let shown = format!("{rotating:?}");
        assert!(
            !shown.contains("new-secret") && !shown.contains("old-secret"),
            "{shown}"
        );
    }

    #[test]
    fn host_urls_cover_udp_tcp_and_tls() {
        let (stun, turn) = ice_urls_for_host("turn.example.com", 3478, Some(443));
        assert_eq!(stun, ["stun:turn.example.com:3478"]);
        assert_eq!(
            turn,
            [
                "turn:turn.example.com:3478?transport=udp",
                "turn:turn.example.com:3478?transport=tcp",
                "turns:turn.example.com:443?transport=tcp",
            ]
        );
        let (stun, turn) = ice_urls_for_host("::1", 3478, None);
        assert_eq!(stun, ["stun:[::1]:3478"]);
        assert_eq!(turn.len(), 2);
        assert!(check_ice_urls(&turn, &["turn", "turns"]).is_ok());
        assert!(check_ice_urls(&stun, &["stun", "stuns"]).is_ok());
        assert!(check_ice_urls(&["http://x".into()], &["turn"]).is_err());
        assert!(check_ice_urls(&["turn:".into()], &["turn"]).is_err());
        assert!(check_ice_urls(&["stun:x".into()], &["turn"]).is_err());
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab]), "000fab");
    }
}
