//! Session descriptions for a data-channel-only peer: parsing the remote one
//! (with the `sdp` crate) and writing our own.
//!
//! Only one `m=application ... UDP/DTLS/SCTP webrtc-datachannel` section is
//! accepted. Values may sit at session or media level; media level wins.

use std::fmt::Write as _;
use std::io::Cursor;

use sdp::description::session::SessionDescription;

use crate::Error;

/// The `a=max-message-size` beeline advertises by default: what Chrome
/// advertises, and the largest message a browser will send or accept.
pub const DEFAULT_MAX_MESSAGE_SIZE: u32 = 256 * 1024;

/// What the RFC 8841 default is when `a=max-message-size` is absent.
const IMPLIED_MAX_MESSAGE_SIZE: u32 = 64 * 1024;

/// The body of a trickled candidate line as ICE parses it: `a=` and
/// `candidate:` in front are optional, surrounding space is ignored. Empty
/// means end of candidates.
pub(crate) fn candidate_body(line: &str) -> &str {
    let raw = line.trim();
    let raw = raw.strip_prefix("a=").unwrap_or(raw);
    raw.strip_prefix("candidate:").unwrap_or(raw)
}

/// DTLS role negotiation (`a=setup`, RFC 8842).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setup {
    /// The endpoint will initiate the DTLS handshake (DTLS client).
    Active,
    /// The endpoint waits for the handshake (DTLS server).
    Passive,
    /// The endpoint lets the answerer choose (offers only).
    ActPass,
}

/// A remote description, reduced to what a data-channel peer needs.
#[derive(Debug, Clone)]
pub struct RemoteDescription {
    pub(crate) ufrag: String,
    pub(crate) pwd: String,
    /// SHA-256 of the remote DER certificate.
    pub(crate) fingerprint: [u8; 32],
    pub(crate) setup: Setup,
    pub(crate) mid: String,
    pub(crate) sctp_port: u16,
    pub(crate) max_message_size: u32,
    pub(crate) candidates: Vec<String>,
}

impl RemoteDescription {
    /// Parses and checks an offer or answer.
    pub fn parse(sdp_text: &str) -> Result<Self, Error> {
        let bad = |msg: &str| Error::InvalidDescription(msg.to_owned());
        let session = SessionDescription::unmarshal(&mut Cursor::new(sdp_text.as_bytes()))
            .map_err(|e| Error::InvalidDescription(e.to_string()))?;
        let mut media = session.media_descriptions.iter();
        let m = media.next().ok_or_else(|| bad("no media section"))?;
        if media.next().is_some() {
            return Err(bad(
                "more than one media section (only a data channel is supported)",
            ));
        }
        let name = &m.media_name;
        if name.media != "application" || !name.formats.iter().any(|f| f == "webrtc-datachannel") {
            return Err(bad("the media section is not a WebRTC data channel"));
        }
        if !name.protos.iter().any(|p| p == "SCTP") || !name.protos.iter().any(|p| p == "DTLS") {
            return Err(bad("the data channel is not carried over DTLS/SCTP"));
        }

        // Media-level attribute first, then session-level.
        let attr = |key: &str| -> Option<String> {
            match m.attribute(key) {
                Some(Some(v)) => Some(v.to_owned()),
                Some(None) => Some(String::new()),
                None => session.attribute(key).cloned(),
            }
        };

        let ufrag = attr("ice-ufrag")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("missing a=ice-ufrag"))?;
        let pwd = attr("ice-pwd")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("missing a=ice-pwd"))?;
        let fingerprint =
            parse_fingerprint(&attr("fingerprint").ok_or_else(|| bad("missing a=fingerprint"))?)?;
        let setup = match attr("setup").as_deref() {
            Some("active") => Setup::Active,
            Some("passive") => Setup::Passive,
            Some("actpass") | None => Setup::ActPass,
            Some(other) => {
                return Err(Error::InvalidDescription(format!(
                    "unsupported a=setup:{other}"
                )))
            }
        };
        let mid = attr("mid").unwrap_or_else(|| "0".to_owned());
        let sctp_port = match attr("sctp-port") {
            Some(p) => p.trim().parse().map_err(|_| bad("bad a=sctp-port"))?,
            None => 5000,
        };
        let max_message_size = match attr("max-message-size") {
            // 0 means "no limit" (RFC 8841); cap it to something sane.
            Some(v) => match v
                .trim()
                .parse::<u64>()
                .map_err(|_| bad("bad a=max-message-size"))?
            {
                0 => u32::MAX,
                n => n.min(u64::from(u32::MAX)) as u32,
            },
            None => IMPLIED_MAX_MESSAGE_SIZE,
        };
        let candidates = m
            .attributes
            .iter()
            .filter(|a| a.key == "candidate")
            .filter_map(|a| a.value.clone())
            .collect();

        Ok(Self {
            ufrag,
            pwd,
            fingerprint,
            setup,
            mid,
            sctp_port,
            max_message_size,
            candidates,
        })
    }

    /// The remote peer's media id of the data section (`a=mid`), needed to
    /// label trickled candidates (`sdpMid`).
    pub fn mid(&self) -> &str {
        &self.mid
    }

    /// The largest message the remote peer accepts.
    pub fn max_message_size(&self) -> u32 {
        self.max_message_size
    }
}

/// Parses `sha-256 AB:CD:...`.
fn parse_fingerprint(value: &str) -> Result<[u8; 32], Error> {
    let (alg, hex) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| Error::InvalidDescription("malformed a=fingerprint".into()))?;
    if !alg.eq_ignore_ascii_case("sha-256") {
        return Err(Error::InvalidDescription(format!(
            "unsupported fingerprint algorithm {alg:?} (only sha-256)"
        )));
    }
    let mut out = [0u8; 32];
    let mut n = 0;
    for part in hex.trim().split(':') {
        let byte = u8::from_str_radix(part, 16)
            .ok()
            .filter(|_| part.len() == 2 && n < 32)
            .ok_or_else(|| Error::InvalidDescription("malformed a=fingerprint".into()))?;
        out[n] = byte;
        n += 1;
    }
    if n != 32 {
        return Err(Error::InvalidDescription(
            "a=fingerprint is not 32 bytes".into(),
        ));
    }
    Ok(out)
}

/// Formats a fingerprint the way SDP writes it.
pub(crate) fn format_fingerprint(digest: &[u8]) -> String {
    let mut s = String::with_capacity(digest.len() * 3);
    for (i, b) in digest.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// Our side of the negotiation, written as SDP.
pub(crate) struct LocalDescription<'a> {
    pub(crate) ufrag: &'a str,
    pub(crate) pwd: &'a str,
    pub(crate) fingerprint: &'a str,
    pub(crate) setup: Setup,
    pub(crate) mid: &'a str,
    pub(crate) max_message_size: u32,
    pub(crate) candidates: &'a [String],
    pub(crate) end_of_candidates: bool,
}

/// A random `o=` session id (RFC 8866 asks for a number unique to the
/// session; the top bits are left clear so that it stays a positive
/// 63-bit value for any parser). From ring's system random, which the
/// stack already links, rather than a second generator.
fn session_id() -> u64 {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // Only uniqueness matters here: the clock will do.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos as u64).to_le_bytes();
    }
    u64::from_le_bytes(bytes) >> 2
}

impl LocalDescription<'_> {
    pub(crate) fn to_sdp(&self) -> String {
        let session_id = session_id();
        let setup = match self.setup {
            Setup::Active => "active",
            Setup::Passive => "passive",
            Setup::ActPass => "actpass",
        };
        let mut s = String::with_capacity(512);
        let _ = write!(
            s,
            "v=0\r\no=- {session_id} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
             a=group:BUNDLE {mid}\r\n\
             m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
             c=IN IP4 0.0.0.0\r\n\
             a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\na=ice-options:trickle\r\n\
             a=fingerprint:sha-256 {fp}\r\na=setup:{setup}\r\na=mid:{mid}\r\n\
             a=sctp-port:5000\r\na=max-message-size:{mms}\r\n",
            mid = self.mid,
            ufrag = self.ufrag,
            pwd = self.pwd,
            fp = self.fingerprint,
            mms = self.max_message_size,
        );
        for c in self.candidates {
            let c = c.strip_prefix("candidate:").unwrap_or(c);
            let _ = write!(s, "a=candidate:{c}\r\n");
        }
        if self.end_of_candidates {
            s.push_str("a=end-of-candidates\r\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data-channel offer as Chromium writes it (values shortened).
    const CHROME_OFFER: &str = "v=0\r\n\
o=- 4358802486016024582 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
c=IN IP4 0.0.0.0\r\n\
a=candidate:1467250027 1 udp 2122260223 127.0.0.1 46243 typ host generation 0 network-id 1\r\n\
a=ice-ufrag:Rz8u\r\n\
a=ice-pwd:oLJmFIc5ZfJvx2XUlGSsm0Ku\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 1B:05:47:6F:6D:02:7A:3C:9C:13:84:D8:F2:3A:7E:0B:76:5F:01:C1:8E:05:7B:A0:4C:5B:63:9D:4B:6C:42:11\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=sctp-port:5000\r\n\
a=max-message-size:262144\r\n";

    #[test]
    fn parses_chrome_offer() {
        let d = RemoteDescription::parse(CHROME_OFFER).unwrap();
        assert_eq!(d.ufrag, "Rz8u");
        assert_eq!(d.pwd, "oLJmFIc5ZfJvx2XUlGSsm0Ku");
        assert_eq!(d.setup, Setup::ActPass);
        assert_eq!(d.mid(), "0");
        assert_eq!(d.sctp_port, 5000);
        assert_eq!(d.max_message_size(), 262_144);
        assert_eq!(d.fingerprint[0], 0x1B);
        assert_eq!(d.fingerprint[31], 0x11);
        assert_eq!(d.candidates.len(), 1);
        assert!(d.candidates[0].starts_with("1467250027 1 udp"));
    }

    #[test]
    fn missing_max_message_size_means_64k() {
        let sdp = CHROME_OFFER.replace("a=max-message-size:262144\r\n", "");
        assert_eq!(
            RemoteDescription::parse(&sdp).unwrap().max_message_size(),
            65_536
        );
    }

    #[test]
    fn rejects_media_and_broken_descriptions() {
        let audio =
            format!("{CHROME_OFFER}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n");
        assert!(matches!(
            RemoteDescription::parse(&audio),
            Err(Error::InvalidDescription(_))
        ));
        for broken in [
            "",
            "garbage",
            "v=0\r\n",
            &CHROME_OFFER.replace("a=ice-pwd:oLJmFIc5ZfJvx2XUlGSsm0Ku\r\n", ""),
            &CHROME_OFFER.replace("sha-256 1B:05", "sha-256 1B:0"),
            &CHROME_OFFER.replace("sha-256", "md5"),
            &CHROME_OFFER.replace("a=setup:actpass", "a=setup:sideways"),
            &CHROME_OFFER.replace("webrtc-datachannel", "111"),
        ] {
            assert!(
                RemoteDescription::parse(broken).is_err(),
                "accepted: {broken:?}"
            );
        }
    }

    #[test]
    fn a_trickled_line_gives_its_candidate_body() {
        let body = "1 1 udp 2130706431 127.0.0.1 5000 typ host";
        for line in [
            body.to_owned(),
            format!("candidate:{body}"),
            format!("a=candidate:{body}"),
            format!("  a=candidate:{body}\r\n"),
        ] {
            assert_eq!(candidate_body(&line), body, "{line:?}");
        }
        assert_eq!(candidate_body(""), "");
        assert_eq!(candidate_body("a=candidate:"), "");
    }

    #[test]
    fn local_description_round_trips() {
        let fp = format_fingerprint(&[0xAB; 32]);
        let candidates = vec!["candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".to_owned()];
        let text = LocalDescription {
            ufrag: "abcd",
            pwd: "0123456789abcdef01234567",
            fingerprint: &fp,
            setup: Setup::Active,
            mid: "data",
            max_message_size: 1234,
            candidates: &candidates,
            end_of_candidates: true,
        }
        .to_sdp();
        let d = RemoteDescription::parse(&text).unwrap();
        assert_eq!(d.ufrag, "abcd");
        assert_eq!(d.setup, Setup::Active);
        assert_eq!(d.mid(), "data");
        assert_eq!(d.max_message_size(), 1234);
        assert_eq!(d.fingerprint, [0xAB; 32]);
        assert_eq!(
            d.candidates,
            vec!["1 1 udp 2130706431 127.0.0.1 5000 typ host".to_owned()]
        );
    }
}
