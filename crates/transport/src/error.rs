use std::time::Duration;

/// Everything that can go wrong while setting up or using a [`crate::Peer`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The remote peer sent more candidates than
    /// `PeerConfig::max_remote_candidates`; the extra ones are not used.
    #[error("more than {0} remote candidates")]
    TooManyCandidates(u32),
    /// The remote session description could not be used.
    #[error("invalid session description: {0}")]
    InvalidDescription(String),
    /// A remote ICE candidate could not be parsed.
    #[error("invalid ICE candidate: {0}")]
    InvalidCandidate(String),
    /// The configuration was rejected (bad ICE server URL, bad filter).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The ICE agent failed.
    #[error("ICE: {0}")]
    Ice(String),
    /// The DTLS handshake or record layer failed.
    #[error("DTLS: {0}")]
    Dtls(String),
    /// The SCTP association failed.
    #[error("SCTP: {0}")]
    Sctp(String),
    /// A data channel operation failed.
    #[error("data channel: {0}")]
    DataChannel(String),
    /// The remote certificate does not match the fingerprint in its description.
    #[error("remote DTLS certificate does not match the fingerprint in the SDP")]
    FingerprintMismatch,
    /// A message is larger than the remote peer accepts (`a=max-message-size`).
    #[error("message of {size} bytes exceeds the peer's max-message-size of {max}")]
    MessageTooLarge {
        /// Size of the rejected message.
        size: usize,
        /// The remote peer's limit.
        max: usize,
    },
    /// The connection was not established within the allowed time.
    #[error("connection not established within {0:?}")]
    Timeout(Duration),
    /// The connection failed after it was set up, or for a reason none of
    /// the other variants names.
    #[error("connection failed: {0}")]
    Failed(String),
    /// The peer connection is closed or failed.
    #[error("peer connection closed")]
    Closed,
    /// The call does not fit the peer's current state (e.g. answer applied twice).
    #[error("invalid state: {0}")]
    InvalidState(&'static str),
}
