//! TURN credentials in coturn's REST format (`use-auth-secret`).

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
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab]), "000fab");
    }
}
