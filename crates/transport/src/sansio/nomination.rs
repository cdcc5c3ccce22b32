//! The controlling peer's nomination that rtc-ice's controlled agent leaves
//! unanswered, answered one round trip later instead of one retransmission
//! later.
//!
//! When a Binding request with USE-CANDIDATE arrives on a pair whose own
//! check has not succeeded yet, rtc-ice 0.21's controlled agent sends a
//! triggered check and drops the request: no response, and no note that
//! the pair was nominated (`agent_selector.rs`, `handle_binding_request`).
//! RFC 8445 §7.3.1.5 has the agent nominate the pair once that triggered
//! check succeeds; rtc-ice instead waits for the controlling peer to send
//! the nomination again. Chromium does so on its next ping, about 50 ms
//! later, which was half of a browser's connection setup on loopback
//! (35 ms when the race goes one way, 85 ms the other).
//!
//! The driver keeps the last such request ([`Held`]) and hands it to the
//! agent again as soon as the triggered check's success response has
//! arrived from the same address. The pair has succeeded by then, so the
//! agent selects it and answers the request, which the browser still waits
//! on. Only while the agent is controlled and has no selected pair.

use std::net::SocketAddr;

use bytes::BytesMut;
use rtc_stun::attributes::ATTR_USE_CANDIDATE;
use rtc_stun::message::{Message, BINDING_REQUEST, BINDING_SUCCESS};

/// What a STUN datagram is, as far as nomination goes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Stun {
    /// A Binding request carrying USE-CANDIDATE.
    Nomination,
    /// A Binding success response.
    Success,
    /// Anything else, including what does not decode.
    Other,
}

/// Classifies `data`, a datagram whose first byte says STUN. Integrity is
/// not checked here: the agent checks it when it reads the datagram.
pub(super) fn classify(data: &[u8]) -> Stun {
    let mut message = Message::new();
    if message.unmarshal_binary(data).is_err() {
        return Stun::Other;
    }
    if message.typ == BINDING_REQUEST && message.contains(ATTR_USE_CANDIDATE) {
        Stun::Nomination
    } else if message.typ == BINDING_SUCCESS {
        Stun::Success
    } else {
        Stun::Other
    }
}

/// A nomination the agent read without answering, to be read again.
#[derive(Debug)]
pub(super) struct Held {
    /// Our address it arrived on.
    pub(super) local: SocketAddr,
    /// The controlling peer's address it came from.
    pub(super) from: SocketAddr,
    /// The datagram, as it arrived.
    pub(super) request: BytesMut,
}

impl Held {
    /// Whether a success response from `from` to `local` completes the
    /// check this nomination is waiting for.
    pub(super) fn completed_by(&self, local: SocketAddr, from: SocketAddr) -> bool {
        self.local == local && self.from == from
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_stun::message::{Setter, TransactionId, BINDING_ERROR};

    struct UseCandidate;

    impl Setter for UseCandidate {
        fn add_to(&self, m: &mut Message) -> rtc_shared::error::Result<()> {
            m.add(ATTR_USE_CANDIDATE, &[]);
            Ok(())
        }
    }

    fn build(setters: &[Box<dyn Setter>]) -> Vec<u8> {
        let mut m = Message::new();
        m.build(setters).expect("builds");
        m.raw
    }

    fn nomination() -> Vec<u8> {
        build(&[
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(UseCandidate),
        ])
    }

    #[test]
    fn tells_a_nomination_from_a_plain_check_and_a_response() {
        let nominate = nomination();
        let check = build(&[Box::new(BINDING_REQUEST), Box::new(TransactionId::new())]);
        let success = build(&[Box::new(BINDING_SUCCESS), Box::new(TransactionId::new())]);
        let error = build(&[Box::new(BINDING_ERROR), Box::new(TransactionId::new())]);
        assert_eq!(classify(&nominate), Stun::Nomination);
        assert_eq!(classify(&check), Stun::Other);
        assert_eq!(classify(&success), Stun::Success);
        assert_eq!(classify(&error), Stun::Other);
    }

    #[test]
    fn broken_datagrams_are_other_not_a_panic() {
        let nominate = nomination();
        for len in 0..nominate.len() {
            assert_eq!(classify(&nominate[..len]), Stun::Other, "{len} bytes");
        }
        let mut lying = nominate.clone();
        lying[3] = 0xfc; // the header's message length, past the end
        assert_eq!(classify(&lying), Stun::Other);
    }

    #[test]
    fn only_the_same_pair_completes_a_held_nomination() {
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:3000".parse().unwrap();
        let held = Held {
            local: a,
            from: b,
            request: BytesMut::new(),
        };
        assert!(held.completed_by(a, b));
        assert!(!held.completed_by(a, c));
        assert!(!held.completed_by(c, b));
    }
}
