//! Lifecycle without leaks: 200 connect → transfer → close cycles in one
//! process; open file descriptors and resident memory at the end stay
//! within a small margin of what they were after the first 10 cycles.
//!
//! Its own test binary, so no other test's sockets or memory blur the
//! numbers. Linux only (reads /proc/self).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{echo, within, Pair};

const CYCLES: usize = 200;
const WARMUP: usize = 10;
/// Allowed growth between the warm-up and the end.
const FD_MARGIN: usize = 8;
const RSS_MARGIN_KB: u64 = 4 * 1024;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

async fn cycle(i: usize) {
    let pair = tokio::time::timeout(Duration::from_secs(10), Pair::connect())
        .await
        .expect("connect hung");
    let (client, server) = pair.channel("leak").await;
    let echoing = echo(server);
    let client = Arc::new(client);
    // A little of everything: a large message, a few small ones.
    let big = common::pattern(i as u32, 64 * 1024);
    client.send_binary(big.clone()).await.unwrap();
    for n in 0..10 {
        client.send_text(&format!("{i}/{n}")).await.unwrap();
    }
    assert_eq!(within(10, client.recv()).await.unwrap().data, big);
    for n in 0..10 {
        assert_eq!(
            within(10, client.recv()).await.unwrap().data,
            format!("{i}/{n}").as_bytes()
        );
    }
    tokio::time::timeout(Duration::from_secs(10), pair.close())
        .await
        .expect("close hung");
    let _ = within(10, echoing).await;
}

/// Gives closed peers' background tasks a moment to finish, then measures.
async fn settle_and_measure() -> (usize, u64) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    (open_fds(), rss_kb())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_cycles_leak_no_fds_or_memory() {
    let started = Instant::now();
    for i in 0..WARMUP {
        let t = Instant::now();
        cycle(i).await;
        if std::env::var_os("LEAK_VERBOSE").is_some() {
            println!("cycle {i}: {:?} {} fds", t.elapsed(), open_fds());
        }
    }
    let (fds_warm, rss_warm) = settle_and_measure().await;
    for i in WARMUP..CYCLES {
        let t = Instant::now();
        cycle(i).await;
        if std::env::var_os("LEAK_VERBOSE").is_some() {
            println!("cycle {i}: {:?} {} fds", t.elapsed(), open_fds());
        }
    }
    let (fds_end, rss_end) = settle_and_measure().await;
    println!(
        "after {WARMUP} cycles: {fds_warm} fds, {rss_warm} kB RSS; after {CYCLES} cycles: {fds_end} fds, {rss_end} kB RSS \
         (Δ {} fds, Δ {} kB) in {:.1} s",
        fds_end as i64 - fds_warm as i64,
        rss_end as i64 - rss_warm as i64,
        started.elapsed().as_secs_f64()
    );
    assert!(
        fds_end <= fds_warm + FD_MARGIN,
        "file descriptors leak: {fds_warm} → {fds_end}"
    );
    assert!(
        rss_end <= rss_warm + RSS_MARGIN_KB,
        "memory leaks: {rss_warm} kB → {rss_end} kB"
    );
}
