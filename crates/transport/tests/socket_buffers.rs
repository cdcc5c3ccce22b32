//! The UDP socket a connection runs on has the receive buffer
//! `PeerConfig::socket_buffer` asked for, and the kernel default without it.

mod common;

use beeline_transport::{PeerConfig, DEFAULT_SOCKET_BUFFER};
use common::{loopback_config, within, Pair};

/// The kernel's cap on socket receive buffers. A machine without it cannot
/// run this test: that is a failure, not a pass.
fn rmem_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .expect("reading /proc/sys/net/core/rmem_max (this test needs Linux's /proc)")
        .trim()
        .parse()
        .expect("net.core.rmem_max is a number")
}

async fn receive_buffers(offer: PeerConfig, answer: PeerConfig) -> [usize; 2] {
    let pair = Pair::connect_with(offer, answer).await;
    let _channels = pair.channel("buffers").await;
    let sizes = [&pair.offerer, &pair.answerer].map(|peer| {
        let selected = peer.selected_pair().expect("a selected pair");
        selected
            .receive_buffer
            .expect("a host pair runs on our own socket")
    });
    within(10, pair.close()).await;
    sizes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_selected_socket_has_the_asked_receive_buffer() {
    let granted = DEFAULT_SOCKET_BUFFER.min(rmem_max());
    let sized = receive_buffers(loopback_config(), loopback_config()).await;
    for size in sized {
        assert!(size >= granted, "receive buffer {size} < {granted}");
    }

    let unsized_config = PeerConfig {
        socket_buffer: None,
        ..loopback_config()
    };
    let default = receive_buffers(unsized_config.clone(), unsized_config).await;
    if granted * 2 > default[0] {
        // Only meaningful where the kernel lets the transport go above its
        // default (net.core.rmem_max > net.core.rmem_default).
        assert!(
            sized[0] > default[0],
            "asking changed nothing: {sized:?} vs {default:?}"
        );
    }
}
