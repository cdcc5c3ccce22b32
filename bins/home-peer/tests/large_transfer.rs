//! 100 MB down and 100 MB up through the real `home-peer` binary over a data
//! channel on loopback, byte-identical, with home-peer's RSS watched.

#[path = "../../../crates/home/tests/common/mod.rs"]
mod common;
mod process;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use beeline_bridge::DataChannelLink;
use beeline_bridge::{Client, ClientOptions};
use beeline_frame::v2::RequestHead;
use bytes::Bytes;
use common::{browser_connect, pattern_chunks, pattern_sha256, world_with, TOKEN};
use futures::StreamExt as _;
use process::{rss_kb, Child};
use sha2::{Digest, Sha256};

const SIZE: usize = 100 * 1024 * 1024;
const RSS_LIMIT_KB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_each_way_byte_identical_in_bounded_memory() {
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
            ])
            .args(["--allow-ip", "127.0.0.1"])
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("home-peer starts"),
    );
    let pid = child.0.id();

    // Watch home-peer's RSS for the whole transfer.
    let peak = Arc::new(AtomicU64::new(0));
    let watcher = tokio::spawn({
        let peak = Arc::clone(&peak);
        async move {
            loop {
                if let Some(kb) = rss_kb(pid) {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });

    let (_peer, channel) = browser_connect(&world.signal_url).await;
    let client = Client::connect(
        Arc::new(DataChannelLink::new(channel)),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    let idle_rss = rss_kb(pid).unwrap_or(0);

    // Download.
    let started = Instant::now();
    let head = RequestHead {
        method: "GET".into(),
        path: format!("/bytes?n={SIZE}&seed=11"),
        ..Default::default()
    };
    let mut response = client.send(head, None).await.unwrap();
    assert_eq!(response.status, 200);
    let (mut hasher, mut len) = (Sha256::new(), 0usize);
    while let Some(piece) = response.body.next().await {
        let piece = piece.unwrap();
        len += piece.len();
        hasher.update(&piece);
    }
    let down = started.elapsed();
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(len, SIZE);
    assert_eq!(digest, pattern_sha256(11, SIZE), "download differs");

    // Upload.
    let started = Instant::now();
    let body =
        futures::stream::iter(pattern_chunks(12, SIZE, 256 * 1024).map(|c| Ok(Bytes::from(c))))
            .boxed();
    let head = RequestHead {
        method: "POST".into(),
        path: "/sha256".into(),
        ..Default::default()
    };
    let answer = client
        .send(head, Some(body))
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    let up = started.elapsed();
    assert_eq!(
        String::from_utf8(answer).unwrap(),
        format!("{SIZE} {}", pattern_sha256(12, SIZE)),
        "upload differs"
    );

    watcher.abort();
    let peak = peak.load(Ordering::Relaxed);
    let mb = |d: Duration| SIZE as f64 / 1e6 / d.as_secs_f64();
    println!(
        "home-peer RSS: idle {} MB, peak {} MB (limit {} MB); download {:.1} MB/s, upload {:.1} MB/s",
        idle_rss / 1024,
        peak / 1024,
        RSS_LIMIT_KB / 1024,
        mb(down),
        mb(up)
    );
    assert!(peak > 0, "RSS was sampled");
    assert!(peak < RSS_LIMIT_KB, "home-peer RSS peaked at {peak} kB");
}
