//! A hostile page against the real `home-peer` binary (issue 13,
//! acceptance 1): one peer connection opens 200 `http` channels and asks for
//! 1,000 slow requests across the ones it is given. The extra channels are
//! closed and the extra requests get `too_many_streams`; home-peer's RSS
//! stays under [`RSS_BOUND_KB`] (printed), and a second, well-behaved page
//! is served the whole time.

#[path = "../../../crates/home/tests/common/mod.rs"]
mod common;
mod process;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use beeline_bridge::ClientError;
use common::{bridge_client, browser_connect, get_head, world_with, TOKEN};
use process::{rss_kb, Child};

/// The documented bound on home-peer's resident memory under this flood
/// (docs/home-peer.md).
const RSS_BOUND_KB: u64 = 48 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_channels_and_streams_is_refused_in_bounded_memory() {
    let world = world_with(Default::default(), false).await;
    let child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_home-peer"))
            .args([
                "--signal-url",
                &world.signal_url,
                "--token",
                TOKEN,
                "--upstream",
                &world.upstream_url,
                "--allow-ip",
                "127.0.0.1",
                "--no-home-link",
            ])
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("home-peer starts"),
    );
    let pid = child.0.id();
    let peak = Arc::new(AtomicU64::new(0));
    let watcher = tokio::spawn({
        let peak = Arc::clone(&peak);
        async move {
            while let Some(kb) = rss_kb(pid) {
                peak.fetch_max(kb, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    // The well-behaved page, connected first and checked throughout.
    let (_good_peer, good) = browser_connect(&world.signal_url).await;
    let good = bridge_client(good).await.expect("the good page is served");
    let start_rss = rss_kb(pid).expect("home-peer is running");

    // The hostile page: 200 channels on one peer connection.
    let (hostile, first) = browser_connect(&world.signal_url).await;
    let mut served = vec![bridge_client(first)
        .await
        .expect("its first channel is served")];
    let mut closed = 0;
    for _ in 0..199 {
        let channel = hostile.open_channel("http").await.expect("SCTP opens it");
        match bridge_client(channel).await {
            Ok(c) => served.push(c),
            Err(_) => closed += 1,
        }
    }
    assert_eq!(served.len(), 2, "two channels per peer connection");
    assert_eq!(closed, 198);

    // 1,000 slow requests across the channels it got.
    let mut running = Vec::new();
    let mut refused = 0;
    let flood_started = Instant::now();
    for i in 0..1000 {
        match served[i % served.len()].send(get_head("/hold"), None).await {
            Ok(response) => running.push(response),
            Err(ClientError::Stream { code, .. }) if code == "too_many_streams" => refused += 1,
            Err(other) => panic!("request {i}: {other}"),
        }
        if i % 100 == 0 {
            let r = good
                .send(get_head("/headers"), None)
                .await
                .expect("good page served");
            assert_eq!(r.status, 200);
        }
    }
    assert_eq!(running.len(), 128, "128 requests per peer connection");
    assert_eq!(refused, 872);
    let r = good.send(get_head("/headers"), None).await.unwrap();
    assert_eq!(r.status, 200, "served after {:?}", flood_started.elapsed());

    let peak_kb = peak.load(Ordering::Relaxed);
    watcher.abort();
    eprintln!(
        "home-peer RSS: {} KiB at start, peak {} KiB under the flood (bound {} KiB)",
        start_rss, peak_kb, RSS_BOUND_KB
    );
    assert!(
        peak_kb < RSS_BOUND_KB,
        "home-peer RSS reached {peak_kb} KiB (bound {RSS_BOUND_KB} KiB)"
    );
    drop(running);
}
