//! Component-level WebRTC data channels for beeline: ICE, DTLS and SCTP wired
//! together without the media stack.
//!
//! The entry type is [`Peer`]. An answerer is one call:
//!
//! ```no_run
//! # async fn demo(offer_sdp: &str) -> Result<(), beeline_transport::Error> {
//! use beeline_transport::{Peer, PeerConfig};
//! let (peer, answer_sdp) = Peer::answer(PeerConfig::default(), offer_sdp).await?;
//! // ... send `answer_sdp` back through signaling, feed remote candidates with
//! // `peer.add_remote_candidate(..)`, then:
//! while let Some(channel) = peer.accept_channel().await {
//!     let _label = channel.label();
//! }
//! # Ok(()) }
//! ```
//!
//! Contract:
//! - Only data channels (`m=application ... UDP/DTLS/SCTP webrtc-datachannel`).
//!   Media sections in a remote description are refused.
//! - The remote DTLS certificate must match the `a=fingerprint` of the remote
//!   description; a mismatch aborts the handshake and no channel ever opens.
//! - Candidates are gathered only on addresses the [`AddressFilter`] allows,
//!   and remote candidates outside it are dropped, so an operator (or a test)
//!   can confine every packet ICE sends.
//! - The transport knows nothing of HTTP or signaling: descriptions and
//!   candidates are plain strings in and out.

mod channel;
mod config;
mod description;
mod error;
#[cfg(feature = "stack-017")]
mod legacy;
mod peer;
mod sansio;
mod socket;

pub use channel::{DataChannel, Message, SEND_LIMIT};
pub use config::{
    AddressFilter, IceServer, PeerConfig, Stack, DEFAULT_CHECK_BUDGET,
    DEFAULT_MAX_REMOTE_CANDIDATES, DEFAULT_SOCKET_BUFFER,
};
pub use description::{RemoteDescription, DEFAULT_MAX_MESSAGE_SIZE};
pub use error::Error;

/// The WebRTC component crates under this transport (both stacks), for a
/// binary's log filter. The 0.17 crates log at WARN in normal operation
/// (while ICE waits for candidates, every 50 ms), so a binary should filter
/// them to ERROR unless the operator names them in `RUST_LOG`. The
/// transport itself logs one INFO line per connection state change.
pub const STACK_LOG_TARGETS: &[&str] = &[
    "webrtc_ice",
    "webrtc_dtls",
    "webrtc_sctp",
    "webrtc_data",
    "webrtc_util",
    "webrtc_mdns",
    "dtls",
    "rtc_ice",
    "rtc_dtls",
    "rtc_sctp",
    "rtc_datachannel",
    "rtc_stun",
    "rtc_mdns",
    "rtc_shared",
    "rtc_crypto",
];

/// Log filter directives (`target=error`) for the [`STACK_LOG_TARGETS`] that
/// `rust_log` (the operator's `RUST_LOG`) does not name.
pub fn quiet_stack_directives(rust_log: &str) -> Vec<String> {
    STACK_LOG_TARGETS
        .iter()
        .filter(|target| !rust_log.contains(*target))
        .map(|target| format!("{target}=error"))
        .collect()
}
pub use peer::{CandidateKind, LocalCandidate, Peer, PeerState, SelectedPair};
