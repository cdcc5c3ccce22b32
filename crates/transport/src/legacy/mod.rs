//! The transport on the webrtc-rs 0.17 component crates (`webrtc-ice`,
//! `dtls`, `webrtc-sctp`, `webrtc-data`): each layer runs its own tasks and
//! talks to the next through `webrtc_util::Conn`. Selected with
//! [`crate::Stack::Webrtc017`].

pub(crate) mod channel;
mod ice_conn;
mod peer;

pub(crate) use peer::Peer;

// The 0.17 crates' errors become the transport's own (their types stay out
// of the public API), so `?` keeps working in this module.
impl From<webrtc_ice::Error> for crate::Error {
    fn from(e: webrtc_ice::Error) -> Self {
        Self::Ice(e.to_string())
    }
}

impl From<dtls::Error> for crate::Error {
    fn from(e: dtls::Error) -> Self {
        Self::Dtls(e.to_string())
    }
}

impl From<webrtc_sctp::Error> for crate::Error {
    fn from(e: webrtc_sctp::Error) -> Self {
        Self::Sctp(e.to_string())
    }
}

impl From<webrtc_data::Error> for crate::Error {
    fn from(e: webrtc_data::Error) -> Self {
        Self::DataChannel(e.to_string())
    }
}
