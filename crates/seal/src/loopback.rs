//! Loopback tickets (`docs/loopback.md`): what lets a page use home-peer's
//! loopback listener, and what lets the page tell the real home-peer from
//! another process on that port.
//!
//! signal-api issues a ticket with each session of a home that has a
//! loopback listener, and home-peer checks it without asking anyone: both
//! derive the same key from the home token. A ticket names its session and
//! its expiry and is signed with HMAC-SHA256, so a page can use it only
//! until then, and no page can make one. The **proof** is a second MAC over
//! the ticket: signal-api hands it to the page with the ticket, home-peer
//! answers a probe with it, and the page compares the two. A process that
//! does not hold the home token cannot compute it.
//!
//! Text form: `v1.<session>.<expires unix seconds>.<mac, base64url>`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};

type HmacSha256 = Hmac<sha2::Sha256>;

/// Why a ticket was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TicketError {
    /// Not a ticket, or not one signed with this home's key.
    #[error("the loopback ticket is not valid")]
    Invalid,
    /// Past its expiry.
    #[error("the loopback ticket has expired")]
    Expired,
}

/// The key signal-api and home-peer derive from a home token.
#[derive(Clone)]
pub struct LoopbackKey {
    key: [u8; 32],
}

impl std::fmt::Debug for LoopbackKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoopbackKey(..)")
    }
}

/// What a valid ticket says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The signaling session it was issued with.
    pub session: String,
    /// Unix seconds after which it is refused.
    pub expires: u64,
}

/// A ticket and its proof, as signal-api hands them to a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedTicket {
    /// Sent by the page with each loopback request.
    pub ticket: String,
    /// What the genuine home-peer answers a probe with.
    pub proof: String,
}

const VERSION: &str = "v1";

impl LoopbackKey {
    /// The key for the home whose bearer token is `home_token`.
    pub fn from_home_token(home_token: &str) -> Self {
        let mut mac =
            HmacSha256::new_from_slice(home_token.as_bytes()).expect("HMAC takes any key length");
        mac.update(b"beeline loopback key v1");
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    fn mac(&self, purpose: &[u8], text: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(purpose);
        mac.update(text.as_bytes());
        mac
    }

    /// A ticket for `session`, good until `expires` (unix seconds), and its
    /// proof.
    pub fn issue(&self, session: &str, expires: u64) -> IssuedTicket {
        let signed = format!("{VERSION}.{session}.{expires}");
        let tag = self.mac(b"ticket:", &signed).finalize().into_bytes();
        let ticket = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag));
        let proof = self.proof(&ticket);
        IssuedTicket { ticket, proof }
    }

    /// The proof for `ticket` (whether or not it is valid).
    pub fn proof(&self, ticket: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(b"proof:", ticket).finalize().into_bytes())
    }

    /// Checks `ticket` at unix time `now`.
    pub fn open(&self, ticket: &str, now: u64) -> Result<Ticket, TicketError> {
        let (signed, tag) = ticket.rsplit_once('.').ok_or(TicketError::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TicketError::Invalid)?;
        self.mac(b"ticket:", signed)
            .verify_slice(&tag)
            .map_err(|_| TicketError::Invalid)?;
        let mut parts = signed.splitn(3, '.');
        let (Some(VERSION), Some(session), Some(expires)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(TicketError::Invalid);
        };
        let expires: u64 = expires.parse().map_err(|_| TicketError::Invalid)?;
        if now > expires {
            return Err(TicketError::Expired);
        }
        Ok(Ticket {
            session: session.to_owned(),
            expires,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_with_the_same_token_only() {
        let key = LoopbackKey::from_home_token("tok");
        let issued = key.issue("abc123", 1_000);
        let ticket = key.open(&issued.ticket, 999).unwrap();
        assert_eq!(ticket.session, "abc123");
        assert_eq!(ticket.expires, 1_000);
        assert_eq!(key.proof(&issued.ticket), issued.proof);

        let other = LoopbackKey::from_home_token("tok2");
        assert_eq!(other.open(&issued.ticket, 999), Err(TicketError::Invalid));
        assert_ne!(other.proof(&issued.ticket), issued.proof);
    }

    #[test]
    fn expired_forged_and_malformed_tickets_are_refused() {
        let key = LoopbackKey::from_home_token("tok");
        let issued = key.issue("abc", 1_000);
        assert_eq!(key.open(&issued.ticket, 1_001), Err(TicketError::Expired));
        // A later expiry with the old MAC.
        let forged = issued.ticket.replace(".1000.", ".9999.");
        assert_eq!(key.open(&forged, 10), Err(TicketError::Invalid));
        for bad in ["", ".", "v1", "v1.a.b.c", "v1..1.!!", "v2.abc.1000.xx"] {
            assert_eq!(key.open(bad, 10), Err(TicketError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn the_proof_is_not_the_ticket_mac() {
        let key = LoopbackKey::from_home_token("tok");
        let issued = key.issue("abc", 1_000);
        assert!(!issued.ticket.ends_with(&issued.proof));
    }
}
