//! The controlled side answers a nomination that arrived before its own
//! check of the pair succeeded, once that check succeeds, without waiting
//! for the controlling peer to send it again.
//!
//! Browsers often nominate that early: Chromium's first check of a pair
//! can carry USE-CANDIDATE. rtc-ice drops such a request; Chromium sends
//! the nomination again on its next ping, about 50 ms later, and half of
//! the browser's connection setups took 85 ms instead of 35 on loopback.
//! The controlling peer here is a plain UDP socket speaking STUN by hand,
//! so the order of the messages is the test's, not the scheduler's.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use beeline_transport::{Peer, Stack};
use common::sdp_attribute;
use hmac::{Hmac, Mac};
use rtc_stun::attributes::{
    ATTR_ICE_CONTROLLING, ATTR_MESSAGE_INTEGRITY, ATTR_PRIORITY, ATTR_USERNAME, ATTR_USE_CANDIDATE,
};
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::message::{Message, Setter, TransactionId, BINDING_REQUEST, BINDING_SUCCESS};
use rtc_stun::textattrs::TextAttribute;
use rtc_stun::xoraddr::XorMappedAddress;
use tokio::net::UdpSocket;

/// An attribute given as raw bytes (USE-CANDIDATE, ICE-CONTROLLING, PRIORITY).
struct Raw(rtc_stun::attributes::AttrType, Vec<u8>);

impl Setter for Raw {
    fn add_to(&self, m: &mut Message) -> rtc_shared::error::Result<()> {
        m.add(self.0, &self.1);
        Ok(())
    }
}

/// MESSAGE-INTEGRITY with ICE's short-term key, the password (RFC 8489
/// §14.5): an HMAC-SHA1 over the message so far, its length already
/// counting the attribute.
struct Integrity(String);

impl Setter for Integrity {
    fn add_to(&self, m: &mut Message) -> rtc_shared::error::Result<()> {
        let length = m.length;
        m.length += 24;
        m.write_length();
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(self.0.as_bytes()).expect("any key");
        mac.update(&m.raw);
        m.length = length;
        m.add(ATTR_MESSAGE_INTEGRITY, &mac.finalize().into_bytes());
        Ok(())
    }
}

fn decode(bytes: &[u8]) -> Option<Message> {
    let mut m = Message::new();
    m.unmarshal_binary(bytes).ok()?;
    Some(m)
}

/// Reads from `socket` until a STUN message `keep` accepts arrives, or
/// `secs` pass.
async fn next_stun(
    socket: &UdpSocket,
    secs: u64,
    keep: impl Fn(&Message) -> bool,
) -> Option<(Message, SocketAddr)> {
    let mut buf = vec![0u8; 2048];
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            let (n, from) = socket.recv_from(&mut buf).await.ok()?;
            if let Some(m) = decode(&buf[..n]).filter(|m| keep(m)) {
                return Some((m, from));
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_nomination_is_answered_once_the_pair_succeeds() {
    if common::stack() != Stack::SansIo {
        // webrtc-ice 0.17 drops the early nomination the same way and
        // waits for it to come again; only the sans-I/O driver reads it again.
        eprintln!("skipped: the 0.17 stack waits for the nomination to be sent again");
        return;
    }
    // An offer only for its credentials and fingerprint: its own
    // candidates are left out, so the answerer checks the socket below alone.
    let (offerer, offer) = Peer::offer(common::loopback_config()).await.unwrap();
    let offer_ufrag = sdp_attribute(&offer, "a=ice-ufrag:");
    let offer_pwd = sdp_attribute(&offer, "a=ice-pwd:");
    let offer: String = offer
        .lines()
        .filter(|l| !l.starts_with("a=candidate") && !l.starts_with("a=end-of-candidates"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let (answerer, answer) = Peer::answer(common::loopback_config(), &offer)
        .await
        .unwrap();
    let answer_ufrag = sdp_attribute(&answer, "a=ice-ufrag:");
    let answer_pwd = sdp_attribute(&answer, "a=ice-pwd:");
    // The answerer's loopback candidate: in the answer, or trickled after it.
    let line = match answer.lines().find(|l| l.starts_with("a=candidate:")) {
        Some(line) => line.trim_start_matches("a=").to_owned(),
        None => {
            common::within(5, answerer.next_local_candidate())
                .await
                .expect("the answerer gathers a loopback candidate")
                .candidate
        }
    };
    let fields: Vec<&str> = line.split_whitespace().collect();
    let target: SocketAddr = format!("{}:{}", fields[4], fields[5]).parse().unwrap();

    let browser = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = browser.local_addr().unwrap().port();
    answerer
        .add_remote_candidate(&format!(
            "candidate:1 1 udp 2122260223 127.0.0.1 {port} typ host generation 0"
        ))
        .unwrap();

    let is_check = |m: &Message| m.typ == BINDING_REQUEST;
    // The answerer's own check of the pair arrives; it stays unanswered for now.
    let (first_check, from) = next_stun(&browser, 5, is_check)
        .await
        .expect("the answerer checks the offered candidate");
    assert_eq!(from, target);

    // The nomination, before the answerer's check has succeeded.
    let nomination_id = TransactionId::new();
    let mut nomination = Message::new();
    nomination
        .build(&[
            Box::new(BINDING_REQUEST),
            Box::new(nomination_id),
            Box::new(TextAttribute::new(
                ATTR_USERNAME,
                format!("{answer_ufrag}:{offer_ufrag}"),
            )),
            Box::new(Raw(ATTR_ICE_CONTROLLING, 7u64.to_be_bytes().to_vec())),
            Box::new(Raw(ATTR_PRIORITY, 1_845_501_695u32.to_be_bytes().to_vec())),
            Box::new(Raw(ATTR_USE_CANDIDATE, Vec::new())),
            Box::new(Integrity(answer_pwd.clone())),
            Box::new(FINGERPRINT),
        ])
        .unwrap();
    browser.send_to(&nomination.raw, target).await.unwrap();

    // The answerer's checks so far get their success responses.
    let mut checks = vec![first_check];
    while let Some((check, _)) = next_stun(&browser, 1, is_check).await {
        checks.push(check);
        if checks.len() >= 2 {
            break;
        }
    }
    for check in &checks {
        let mut success = Message::new();
        success
            .build(&[
                Box::new(BINDING_SUCCESS),
                Box::new(check.transaction_id),
                Box::new(XorMappedAddress {
                    ip: target.ip(),
                    port: target.port(),
                }),
                Box::new(Integrity(offer_pwd.clone())),
                Box::new(FINGERPRINT),
            ])
            .unwrap();
        browser.send_to(&success.raw, target).await.unwrap();
    }

    // The nomination, sent once, is answered; the browser would otherwise
    // send it again about 50 ms later.
    let answered = next_stun(&browser, 3, |m| {
        m.typ == BINDING_SUCCESS && m.transaction_id == nomination_id
    })
    .await;
    assert!(
        answered.is_some(),
        "the nomination was never answered (sent once, after {} check(s) of the answerer's)",
        checks.len()
    );

    answerer.close().await;
    offerer.close().await;
}
