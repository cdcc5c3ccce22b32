//! The transport alone, without signaling, the bridge or an upstream: two
//! `beeline_transport` peers in this process on loopback. Its round trip
//! and throughput bound what the HTTP figures can reach, so the report can
//! tell transport cost from bridge cost. Both stacks run in the same
//! phase, alternately, so their figures share the machine's state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use beeline_transport::{AddressFilter, DataChannel, Peer, Stack};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::client::peer_config;
use crate::procs::context_switches;
use crate::stats::Samples;

/// Two connected peers and a channel between them.
struct Pair {
    _offerer: Arc<Peer>,
    _answerer: Arc<Peer>,
    a: DataChannel,
    b: DataChannel,
}

async fn pair(filter: &AddressFilter, stack: Stack) -> Result<Pair> {
    let config = beeline_transport::PeerConfig {
        stack,
        ..peer_config(filter)
    };
    let (offerer, offer) = Peer::offer(config.clone()).await?;
    let (answerer, answer) = Peer::answer(config, &offer).await?;
    offerer.apply_answer(&answer)?;
    let (offerer, answerer) = (Arc::new(offerer), Arc::new(answerer));
    // Trickle whatever was gathered after the descriptions were written.
    for (from, to) in [
        (Arc::clone(&offerer), Arc::clone(&answerer)),
        (Arc::clone(&answerer), Arc::clone(&offerer)),
    ] {
        tokio::spawn(async move {
            while let Some(c) = from.next_local_candidate().await {
                let _ = to.add_remote_candidate(&c.candidate);
            }
        });
    }
    let (a, b) = tokio::time::timeout(Duration::from_secs(8), async {
        tokio::join!(offerer.open_channel("bench"), answerer.accept_channel())
    })
    .await
    .map_err(|_| anyhow!("transport pair did not connect"))?;
    Ok(Pair {
        a: a?,
        b: b.ok_or_else(|| anyhow!("no channel accepted"))?,
        _offerer: offerer,
        _answerer: answerer,
    })
}

/// Rounds per stack, alternating; the report takes each figure's median.
const ROUNDS: usize = 3;

/// [`run_once`] for each stack, `ROUNDS` times alternately: `{"v017":
/// {...}, "sansio": {...}}` with the median of each figure and the rounds.
pub(crate) async fn run_both(
    filter: &AddressFilter,
    round_trips: usize,
    bytes: usize,
) -> Result<Value> {
    let stacks = [Stack::Webrtc017, Stack::SansIo];
    let mut rounds: Vec<Vec<Value>> = vec![Vec::new(); stacks.len()];
    for _ in 0..ROUNDS {
        for (i, stack) in stacks.iter().enumerate() {
            rounds[i].push(run_once(filter, *stack, round_trips, bytes).await?);
        }
    }
    let mut out = serde_json::Map::new();
    for (stack, runs) in stacks.iter().zip(rounds) {
        let median = |path: &[&str]| {
            Samples(
                runs.iter()
                    .filter_map(|r| path.iter().try_fold(r, |v, k| v.get(*k))?.as_f64())
                    .collect(),
            )
            .median()
        };
        let key = match stack {
            Stack::Webrtc017 => "v017",
            _ => "sansio",
        };
        out.insert(
            key.to_owned(),
            json!({
                "echo_rtt": {"p50": median(&["echo_rtt", "p50"]), "p99": median(&["echo_rtt", "p99"])},
                "echo_context_switches_per_round_trip": median(&["echo_context_switches_per_round_trip"]),
                "throughput": {"mb_per_s": median(&["throughput", "mb_per_s"])},
                "rounds": runs,
            }),
        );
    }
    Ok(Value::Object(out))
}

/// Echo round trips of a 64-byte message, then one-way throughput of
/// `bytes` in messages of the transport's largest size.
async fn run_once(
    filter: &AddressFilter,
    stack: Stack,
    round_trips: usize,
    bytes: usize,
) -> Result<Value> {
    let p = pair(filter, stack).await?;
    let b = Arc::new(p.b);
    let echo_side = Arc::clone(&b);
    let echo = tokio::spawn(async move {
        while let Some(m) = echo_side.recv().await {
            if m.data.len() > 64 {
                continue;
            }
            if echo_side.send_binary(m.data).await.is_err() {
                break;
            }
        }
    });
    let small = Bytes::from(vec![7u8; 64]);
    let mut rtt = Samples::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let switches_before = context_switches(None).unwrap_or(0);
    for i in 0..round_trips + 100 {
        if Instant::now() > deadline {
            break;
        }
        let t = Instant::now();
        p.a.send_binary(small.clone()).await?;
        p.a.recv()
            .await
            .ok_or_else(|| anyhow!("echo channel closed"))?;
        if i >= 100 {
            rtt.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let echo_switches = context_switches(None)
        .unwrap_or(0)
        .saturating_sub(switches_before) as f64
        / (round_trips + 100) as f64;
    echo.abort();

    // One way: a → b. The receiver counts; the sender stops at the budget.
    let size = p.a.max_message_size();
    let chunk = Bytes::from(vec![0x5au8; size]);
    let receiver = Arc::clone(&b);
    let total = bytes;
    let counter = tokio::spawn(async move {
        let mut got = 0usize;
        while got < total {
            match tokio::time::timeout(Duration::from_secs(2), receiver.recv()).await {
                Ok(Some(m)) => got += m.data.len(),
                _ => break,
            }
        }
        got
    });
    let started = Instant::now();
    let budget = Duration::from_secs(60);
    let mut sent = 0usize;
    while sent < bytes && started.elapsed() < budget {
        let n = size.min(bytes - sent);
        p.a.send_binary(chunk.slice(..n)).await?;
        sent += n;
    }
    let got = match tokio::time::timeout(
        budget.saturating_sub(started.elapsed()) + Duration::from_secs(5),
        counter,
    )
    .await
    {
        Ok(Ok(n)) => n,
        _ => bail!("transport throughput run did not finish"),
    };
    let secs = started.elapsed().as_secs_f64();
    Ok(json!({
        "echo_rtt": rtt.summary(),
        // Thread switches of this process (both peers) per echo round trip.
        "echo_context_switches_per_round_trip": echo_switches,
        "throughput": {"bytes": got, "secs": secs, "mb_per_s": got as f64 / 1e6 / secs, "message_bytes": size},
    }))
}
