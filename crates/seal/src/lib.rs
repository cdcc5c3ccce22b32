//! Secrets shared by signal-api and a home peer through the home token:
//! sealed cookies (`docs/cookies.md`) and loopback tickets ([`LoopbackKey`],
//! `docs/loopback.md`).
//!
//! ## Cookies
//!
//! A cookie-authenticated home app must behave the same on every path. On
//! the normal path the browser sends its cookies itself; on the data channel
//! it cannot (a page cannot read an `HttpOnly` cookie, and a `Set-Cookie`
//! header is dropped by the `Response` constructor). So the two servers that
//! share the home's token carry them across, sealed:
//!
//! - signal-api sees the browser's `Cookie` header on same-origin requests
//!   and hands the page a sealed **jar** ([`CookieKey::seal_jar`]); the
//!   page sends it with each channel request and the home peer opens it
//!   ([`CookieKey::open_jar`]) into the `Cookie` header the home service
//!   sees;
//! - the home peer seals the `Set-Cookie` lines of a channel response
//!   ([`CookieKey::seal_set_cookies`]); the page hands them to signal-api,
//!   which opens them ([`CookieKey::open_set_cookies`]) and answers with the
//!   real `Set-Cookie` headers, so the browser stores them as if the home
//!   app had answered it directly.
//!
//! Sealing is AES-256-GCM with a key derived from the home token by
//! HMAC-SHA256. A seal is bound to its kind and to one signaling session,
//! and carries its time, so the page can neither read it, forge one, nor
//! use one in another session or past its age.

mod loopback;

pub use loopback::{IssuedTicket, LoopbackKey, Ticket, TicketError};

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};

/// Why a seal could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Not a seal made with this key for this kind (or tampered with).
    #[error("the seal is not valid")]
    Invalid,
    /// Made for another session.
    #[error("the seal belongs to another session")]
    WrongSession,
    /// Older than allowed (or made in the future).
    #[error("the seal has expired")]
    Expired,
}

/// The key both sides derive from a home token.
#[derive(Clone)]
pub struct CookieKey {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(..)")
    }
}

#[derive(Serialize, Deserialize)]
struct Sealed<S, T> {
    /// The signaling session.
    s: S,
    /// Unix seconds when it was sealed.
    t: u64,
    /// What is sealed.
    v: T,
}

const JAR: &[u8] = b"beeline jar v1";
const SET_COOKIE: &[u8] = b"beeline set-cookie v1";
const NONCE_LEN: usize = 12;

impl CookieKey {
    /// The key for the home whose bearer token is `home_token`.
    pub fn from_home_token(home_token: &str) -> Self {
        let mut mac = <Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(home_token.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(b"beeline cookie seal key v1");
        let key = mac.finalize().into_bytes();
        Self {
            cipher: Aes256Gcm::new(&key),
        }
    }

    /// Seals a `Cookie` header for `session`.
    pub fn seal_jar(&self, session: &str, cookie_header: &str, now: u64) -> String {
        self.seal(JAR, session, now, cookie_header)
    }

    /// Opens a jar sealed for `session` at most `max_age` seconds ago;
    /// returns the `Cookie` header.
    pub fn open_jar(
        &self,
        session: &str,
        sealed: &str,
        now: u64,
        max_age: u64,
    ) -> Result<String, SealError> {
        self.open(JAR, session, sealed, now, max_age)
    }

    /// Seals `Set-Cookie` lines for `session`.
    pub fn seal_set_cookies(&self, session: &str, lines: &[String], now: u64) -> String {
        self.seal(SET_COOKIE, session, now, lines)
    }

    /// Opens `Set-Cookie` lines sealed for `session` at most `max_age`
    /// seconds ago.
    pub fn open_set_cookies(
        &self,
        session: &str,
        sealed: &str,
        now: u64,
        max_age: u64,
    ) -> Result<Vec<String>, SealError> {
        self.open(SET_COOKIE, session, sealed, now, max_age)
    }

    fn seal<T: Serialize + ?Sized>(
        &self,
        kind: &[u8],
        session: &str,
        now: u64,
        value: &T,
    ) -> String {
        let plain = serde_json::to_vec(&Sealed {
            s: session,
            t: now,
            v: value,
        })
        .expect("plain data serializes");
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut out = nonce.to_vec();
        out.extend(
            self.cipher
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: &plain,
                        aad: kind,
                    },
                )
                .expect("AES-GCM seals any message this size"),
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
    }

    fn open<T: for<'de> Deserialize<'de>>(
        &self,
        kind: &[u8],
        session: &str,
        sealed: &str,
        now: u64,
        max_age: u64,
    ) -> Result<T, SealError> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed.trim())
            .map_err(|_| SealError::Invalid)?;
        if raw.len() <= NONCE_LEN {
            return Err(SealError::Invalid);
        }
        let (nonce, body) = raw.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: kind,
                },
            )
            .map_err(|_| SealError::Invalid)?;
        let sealed: Sealed<String, T> =
            serde_json::from_slice(&plain).map_err(|_| SealError::Invalid)?;
        if sealed.s != session {
            return Err(SealError::WrongSession);
        }
        // A little slack for clocks: the two servers are different machines.
        if sealed.t > now + 60 || now.saturating_sub(sealed.t) > max_age {
            return Err(SealError::Expired);
        }
        Ok(sealed.v)
    }
}

/// A `Cookie` header after the browser applied `set_cookie` lines to it:
/// a cookie set again takes its new value, one whose `Max-Age` is zero or
/// less, or whose `Expires` lies in 1970, is removed. (Path, domain and
/// other attributes are the browser's business; the jar keeps name=value.)
pub fn apply_set_cookies(cookie_header: &str, set_cookie: &[String]) -> String {
    let mut jar: Vec<(String, String)> = cookie_header
        .split(';')
        .filter_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (!n.trim().is_empty()).then(|| (n.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    for line in set_cookie {
        let mut parts = line.split(';');
        let Some((name, value)) = parts.next().and_then(|p| p.trim().split_once('=')) else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() {
            continue;
        }
        let removed = parts.any(|attr| {
            let attr = attr.trim();
            let lower = attr.to_ascii_lowercase();
            if let Some(age) = lower.strip_prefix("max-age=") {
                return age.trim().parse::<i64>().is_ok_and(|a| a <= 0);
            }
            lower.starts_with("expires=") && lower.contains("1970")
        });
        jar.retain(|(n, _)| n != name);
        if !removed {
            jar.push((name.to_owned(), value.to_owned()));
        }
    }
    jar.iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jar_opens_only_with_its_key_kind_session_and_age() {
        let key = CookieKey::from_home_token("home-token");
        let jar = key.seal_jar("s1", "sid=abc; theme=dark", 1000);
        assert_eq!(
            key.open_jar("s1", &jar, 1010, 3600).as_deref(),
            Ok("sid=abc; theme=dark")
        );
        assert!(!jar.contains("abc"));
        assert_eq!(
            key.open_jar("s2", &jar, 1010, 3600),
            Err(SealError::WrongSession)
        );
        assert_eq!(
            key.open_jar("s1", &jar, 9000, 3600),
            Err(SealError::Expired)
        );
        let other = CookieKey::from_home_token("another-home");
        assert_eq!(
            other.open_jar("s1", &jar, 1010, 3600),
            Err(SealError::Invalid)
        );
        // A jar is not a set-cookie seal, and the reverse.
        assert_eq!(
            key.open_set_cookies("s1", &jar, 1010, 3600),
            Err(SealError::Invalid)
        );
        let mut tampered = jar.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            key.open_jar("s1", std::str::from_utf8(&tampered).unwrap(), 1010, 3600),
            Err(SealError::Invalid)
        );
        assert_eq!(
            key.open_jar("s1", "not a seal!", 1010, 3600),
            Err(SealError::Invalid)
        );
    }

    #[test]
    fn set_cookie_lines_round_trip() {
        let key = CookieKey::from_home_token("t");
        let lines = vec!["sid=1; HttpOnly; Path=/".to_owned(), "a=b".to_owned()];
        let sealed = key.seal_set_cookies("s", &lines, 5);
        assert_eq!(key.open_set_cookies("s", &sealed, 6, 60), Ok(lines));
    }

    #[test]
    fn the_jar_follows_set_cookie() {
        let set = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            apply_set_cookies("", &set(&["sid=1; HttpOnly; Path=/"])),
            "sid=1"
        );
        assert_eq!(
            apply_set_cookies("a=1; sid=old", &set(&["sid=new; Secure"])),
            "a=1; sid=new"
        );
        assert_eq!(
            apply_set_cookies("a=1; sid=x", &set(&["sid=; Max-Age=0"])),
            "a=1"
        );
        assert_eq!(
            apply_set_cookies(
                "sid=x",
                &set(&["sid=gone; Expires=Thu, 01 Jan 1970 00:00:00 GMT"])
            ),
            ""
        );
    }
}
