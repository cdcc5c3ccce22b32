//! The transport on the webrtc-rs 0.17 component crates (`webrtc-ice`,
//! `dtls`, `webrtc-sctp`, `webrtc-data`): each layer runs its own tasks and
//! talks to the next through `webrtc_util::Conn`. Selected with
//! [`crate::Stack::Webrtc017`].

pub(crate) mod channel;
mod ice_conn;
mod peer;

pub(crate) use peer::Peer;
