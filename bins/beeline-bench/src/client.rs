//! The Rust "browser": `beeline_client::dial` does what `client.js` does
//! (session, offer, trickle, answer, channel, `hello`), timing each step;
//! the bench then speaks protocol v2 through `beeline_bridge::Client`.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use beeline_bridge::DataChannelLink;
use beeline_bridge::{Client, ClientOptions};
use beeline_frame::v2::RequestHead;
use beeline_signal_client::SignalClient;
use beeline_transport::{AddressFilter, PeerConfig};
use bytes::Bytes;

/// How long one setup may take before it counts as failed (the
/// specification's budget).
const SETUP_BUDGET: Duration = Duration::from_secs(8);

/// The bench's client end: a transport data channel as the bridge sees it.
/// It counts the messages it receives, so how a body is cut into frames
/// shows up in the figures.
pub(crate) type ClientChannel = DataChannelLink;

/// An open connection with a protocol-v2 client on it, its setup timed
/// (`beeline_client::dial`, the same connect step every Rust caller uses).
pub(crate) use beeline_client::Connection;

/// An address filter from `--allow-ip` values.
pub(crate) fn filter(allow: &[String]) -> Result<AddressFilter> {
    let mut f = AddressFilter::default();
    for a in allow {
        f.allow_network(a)
            .map_err(|e| anyhow!("--allow-ip {a}: {e}"))?;
    }
    if f.is_open() {
        bail!("the bench never runs WebRTC without an address filter");
    }
    Ok(f)
}

/// The bench's own peers: confined to `filter`, and with the UDP socket
/// buffer that `BEELINE_UDP_BUFFER` gives home-peer (the bench starts
/// home-peer with this process's environment), so one variable sets both
/// ends when comparing buffer sizes. Unset: the transport's default.
pub(crate) fn peer_config(filter: &AddressFilter) -> PeerConfig {
    let socket_buffer = match std::env::var("BEELINE_UDP_BUFFER") {
        Ok(v) => v.parse().ok().filter(|&n: &usize| n > 0),
        Err(_) => PeerConfig::default().socket_buffer,
    };
    // The same variable picks home-peer's stack (it reads BEELINE_STACK).
    let stack = std::env::var("BEELINE_STACK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    PeerConfig {
        stack,
        address_filter: filter.clone(),
        socket_buffer,
        ..Default::default()
    }
}

/// Connects to the home peer behind `signal` the way the browser does.
pub(crate) async fn connect(
    signal: &SignalClient,
    filter: &AddressFilter,
    options: ClientOptions,
) -> Result<Connection> {
    Ok(beeline_client::dial(signal, peer_config(filter), options, SETUP_BUDGET).await?)
}

/// A GET over the channel; returns the whole body.
pub(crate) async fn get(client: &Client<ClientChannel>, path: &str) -> Result<Bytes> {
    let head = RequestHead {
        method: "GET".into(),
        path: path.into(),
        ..Default::default()
    };
    let response = client.send(head, None).await?;
    if response.status != 200 {
        bail!("GET {path} answered {}", response.status);
    }
    Ok(Bytes::from(response.body.collect().await?))
}
