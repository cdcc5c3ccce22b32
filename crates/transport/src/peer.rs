//! The peer connection as the application sees it: one [`Peer`] type over
//! either [`Stack`], and the types both stacks report with.

use std::time::Duration;

use tokio::sync::watch;

#[cfg(feature = "stack-017")]
use crate::legacy;
use crate::{sansio, DataChannel, Error, PeerConfig, Stack};

/// The state of a peer connection, as the application sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerState {
    /// Created; the remote description has not been applied.
    New,
    /// ICE/DTLS/SCTP are being established.
    Connecting,
    /// The SCTP association is up; channels can be opened and accepted.
    Connected,
    /// No traffic from the remote peer for `disconnected_timeout`; may recover.
    Disconnected,
    /// The connection could not be established or is gone for good.
    Failed,
    /// Closed locally or by the remote peer.
    Closed,
}

/// The kind of an ICE candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CandidateKind {
    /// An address of a local interface.
    Host,
    /// The address a STUN server saw (outside the local NAT).
    ServerReflexive,
    /// An address learnt from an incoming connectivity check.
    PeerReflexive,
    /// An address allocated on a TURN server.
    Relay,
}

/// The candidate pair ICE selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedPair {
    /// Our side.
    pub local: CandidateKind,
    /// `ip:port` of our side.
    pub local_addr: String,
    /// The remote side.
    pub remote: CandidateKind,
    /// `ip:port` of the remote side.
    pub remote_addr: String,
    /// The receive buffer the kernel gives our socket of this pair, as it
    /// reports it (Linux reports twice the payload it holds); see
    /// [`crate::PeerConfig::socket_buffer`]. `None` for a relayed pair, whose
    /// connection is a TURN client rather than a socket of ours.
    pub receive_buffer: Option<usize>,
}

/// The ICE name of the kind: `host`, `srflx`, `prflx`, `relay`.
impl std::fmt::Display for CandidateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Host => "host",
            Self::ServerReflexive => "srflx",
            Self::PeerReflexive => "prflx",
            Self::Relay => "relay",
        })
    }
}

/// For logs: `host 192.0.2.7:50000 -> srflx 198.51.100.2:61000`.
impl std::fmt::Display for SelectedPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} -> {} {}",
            self.local, self.local_addr, self.remote, self.remote_addr
        )
    }
}

/// A local candidate to trickle to the remote peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCandidate {
    /// `candidate:...` as `RTCIceCandidateInit.candidate` expects it.
    pub candidate: String,
}

/// Why a peer failed, kept so [`Peer::connected`] can say it.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    FingerprintMismatch,
    Timeout(Duration),
    Other(String),
}

impl From<&Failure> for Error {
    fn from(f: &Failure) -> Self {
        match f {
            Failure::FingerprintMismatch => Error::FingerprintMismatch,
            Failure::Timeout(d) => Error::Timeout(*d),
            Failure::Other(why) => Error::Failed(why.clone()),
        }
    }
}

/// A WebRTC peer connection that carries only data channels.
///
/// Dropping a `Peer` closes it and frees its sockets and tasks.
#[derive(Debug)]
pub struct Peer {
    imp: Imp,
}

#[derive(Debug)]
enum Imp {
    #[cfg(feature = "stack-017")]
    Legacy(legacy::Peer),
    SansIo(Box<sansio::Peer>),
}

/// Calls the same method on whichever stack the peer runs.
macro_rules! dispatch {
    ($self:ident, $p:ident => $e:expr) => {
        match &$self.imp {
            #[cfg(feature = "stack-017")]
            Imp::Legacy($p) => $e,
            Imp::SansIo($p) => $e,
        }
    };
}

impl Peer {
    /// Creates an offerer and its offer. Apply the answer with
    /// [`Peer::apply_answer`].
    ///
    /// The offer embeds the candidates gathered within
    /// [`PeerConfig::gather_wait`] (all of them, with `a=end-of-candidates`,
    /// when gathering finishes in time); later ones come from
    /// [`Peer::next_local_candidate`].
    pub async fn offer(config: PeerConfig) -> Result<(Self, String), Error> {
        match config.stack {
            #[cfg(feature = "stack-017")]
            Stack::Webrtc017 => {
                let (p, sdp) = legacy::Peer::offer(config).await?;
                Ok((
                    Self {
                        imp: Imp::Legacy(p),
                    },
                    sdp,
                ))
            }
            #[cfg(not(feature = "stack-017"))]
            Stack::Webrtc017 => Err(without_017()),
            Stack::SansIo => {
                let (p, sdp) = sansio::Peer::offer(config).await?;
                Ok((
                    Self {
                        imp: Imp::SansIo(Box::new(p)),
                    },
                    sdp,
                ))
            }
        }
    }

    /// Creates an answerer for `offer_sdp` and returns it with its answer.
    ///
    /// The answer embeds the candidates gathered within
    /// [`PeerConfig::gather_wait`]; later ones come from
    /// [`Peer::next_local_candidate`].
    pub async fn answer(config: PeerConfig, offer_sdp: &str) -> Result<(Self, String), Error> {
        match config.stack {
            #[cfg(feature = "stack-017")]
            Stack::Webrtc017 => {
                let (p, sdp) = legacy::Peer::answer(config, offer_sdp).await?;
                Ok((
                    Self {
                        imp: Imp::Legacy(p),
                    },
                    sdp,
                ))
            }
            #[cfg(not(feature = "stack-017"))]
            Stack::Webrtc017 => Err(without_017()),
            Stack::SansIo => {
                let (p, sdp) = sansio::Peer::answer(config, offer_sdp).await?;
                Ok((
                    Self {
                        imp: Imp::SansIo(Box::new(p)),
                    },
                    sdp,
                ))
            }
        }
    }

    /// The stack this peer runs on.
    pub fn stack(&self) -> Stack {
        match self.imp {
            #[cfg(feature = "stack-017")]
            Imp::Legacy(_) => Stack::Webrtc017,
            Imp::SansIo(_) => Stack::SansIo,
        }
    }

    /// Applies the remote answer to an offerer: the first answer starts
    /// connecting; after [`Peer::restart_offer`], the answer to the restart
    /// offer completes the ICE restart.
    pub fn apply_answer(&self, answer_sdp: &str) -> Result<(), Error> {
        dispatch!(self, p => p.apply_answer(answer_sdp))
    }

    /// Adds a trickled remote candidate (`candidate:...`, with or without the
    /// `candidate:` prefix). An empty string (end of candidates) is accepted
    /// and ignored. Candidates outside the address filter are dropped, and so
    /// are mDNS (`.local`) host candidates: see `docs/transport.md` for why
    /// they need not be resolved.
    pub fn add_remote_candidate(&self, candidate: &str) -> Result<(), Error> {
        dispatch!(self, p => p.add_remote_candidate(candidate))
    }

    /// The next local candidate to trickle; `None` once gathering is
    /// complete (or the peer is closed). Candidates already embedded in the
    /// offer/answer are not returned again, so after a fully gathered
    /// description this returns `None` at once.
    ///
    /// An ICE restart starts a new gathering: after
    /// [`Peer::restart_offer`] or [`Peer::apply_restart_offer`], call this
    /// again (until `None`) to trickle the restart's later candidates.
    pub async fn next_local_candidate(&self) -> Option<LocalCandidate> {
        dispatch!(self, p => p.next_local_candidate().await)
    }

    /// Waits for the next data channel the remote peer opens. `None` once the
    /// peer is closed.
    pub async fn accept_channel(&self) -> Option<DataChannel> {
        dispatch!(self, p => p.accept_channel().await)
    }

    /// Opens a reliable, ordered data channel, waiting for the connection if
    /// it is still being set up.
    pub async fn open_channel(&self, label: &str) -> Result<DataChannel, Error> {
        dispatch!(self, p => p.open_channel(label).await)
    }

    /// Watches the connection state. A dead path shows as
    /// [`PeerState::Disconnected`] after [`PeerConfig::disconnected_timeout`]
    /// of silence, and [`PeerState::Failed`] after
    /// [`PeerConfig::failed_timeout`] more.
    pub fn state(&self) -> watch::Receiver<PeerState> {
        dispatch!(self, p => p.state())
    }

    /// Waits until the connection is up, or fails with why it is not
    /// ([`Error::FingerprintMismatch`], [`Error::Timeout`], ...).
    pub async fn connected(&self) -> Result<(), Error> {
        dispatch!(self, p => p.connected().await)
    }

    /// The candidate pair in use, once ICE has selected one.
    pub fn selected_pair(&self) -> Option<SelectedPair> {
        dispatch!(self, p => p.selected_pair())
    }

    /// The largest message the remote peer accepts (its `a=max-message-size`).
    pub fn remote_max_message_size(&self) -> usize {
        dispatch!(self, p => p.remote_max_message_size())
    }

    /// Starts an ICE restart on an offerer: fresh ICE credentials, fresh
    /// candidates, and a new offer to send to the remote peer, whose answer
    /// goes to [`Peer::apply_answer`]. DTLS, SCTP and every open channel are
    /// kept; messages sent meanwhile are delivered once the new path is up.
    ///
    /// Meant for a path that went [`PeerState::Disconnected`] or
    /// [`PeerState::Failed`] (e.g. after a network change); allowed once the
    /// connection was up and until it is closed.
    pub async fn restart_offer(&self) -> Result<String, Error> {
        dispatch!(self, p => p.restart_offer().await)
    }

    /// Answers an ICE-restart offer from the remote peer (a new offer on a
    /// connection that is up, with a new `a=ice-ufrag`/`a=ice-pwd`), and
    /// returns the answer. DTLS, SCTP and every open channel are kept.
    ///
    /// An offer whose credentials did not change restarts nothing: its
    /// candidates are added and the current answer is returned.
    pub async fn apply_restart_offer(&self, offer_sdp: &str) -> Result<String, Error> {
        dispatch!(self, p => p.apply_restart_offer(offer_sdp).await)
    }

    /// Closes every channel and the connection, and frees its sockets.
    pub async fn close(&self) {
        dispatch!(self, p => p.close().await)
    }
}

/// What asking for the 0.17 stack gets when it is not built in.
#[cfg(not(feature = "stack-017"))]
fn without_017() -> Error {
    Error::InvalidConfig(
        "this build has no 0.17 stack (beeline-transport's `stack-017` feature is off)".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selected_pair_reads_as_its_two_candidates() {
        let pair = SelectedPair {
            local: CandidateKind::Host,
            local_addr: "192.0.2.7:50000".into(),
            remote: CandidateKind::ServerReflexive,
            remote_addr: "198.51.100.2:61000".into(),
            receive_buffer: None,
        };
        assert_eq!(
            pair.to_string(),
            "host 192.0.2.7:50000 -> srflx 198.51.100.2:61000"
        );
        assert_eq!(CandidateKind::Relay.to_string(), "relay");
        assert_eq!(CandidateKind::PeerReflexive.to_string(), "prflx");
    }
}
