//! The transport alone across two processes: this process offers, a child
//! `beeline-bench echo-peer` answers and echoes. It is what one more
//! process crossing costs a message on this machine, the floor under the
//! channel figures (`transport.rs` measures two peers in one process, where
//! one worker may carry a whole round trip without waking a thread).
//!
//! Signaling is JSON lines: the parent writes `{"offer"}` and then
//! `{"candidate"}` lines to the child's stdin; the child answers with
//! `{"answer"}` and its own `{"candidate"}` lines on stdout.

use std::io::{BufRead, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use beeline_transport::Peer;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::client::{filter, peer_config};
use crate::stats::Samples;

/// Warm-up round trips, not counted.
const WARM_UP: usize = 100;
/// However many round trips were asked for, the phase ends after this.
const BUDGET: Duration = Duration::from_secs(30);

/// Children started, one after another: where the scheduler places the two
/// processes (one vCPU or two) moves the figure by a factor of four on this
/// machine, so one child is not enough.
const ROUNDS: usize = 3;

/// [`run_once`] `ROUNDS` times: the median of each round's p50 and p99,
/// and the rounds.
pub(crate) async fn run(allow: &[String], round_trips: usize) -> Result<Value> {
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        rounds.push(run_once(allow, round_trips).await?);
    }
    let median = |key: &str| {
        Samples(
            rounds
                .iter()
                .filter_map(|r| r["echo_rtt"][key].as_f64())
                .collect(),
        )
        .median()
    };
    Ok(json!({
        "echo_rtt": { "p50": median("p50"), "p99": median("p99") },
        "rounds": rounds,
    }))
}

/// `round_trips` echoes of a 64-byte message to a child process:
/// `{"echo_rtt": {...}, "round_trips": n}`.
async fn run_once(allow: &[String], round_trips: usize) -> Result<Value> {
    let config = peer_config(&filter(allow)?);
    let exe = std::env::current_exe().context("the bench's own path")?;
    let mut child = Command::new(exe)
        .arg("echo-peer")
        .args(allow.iter().flat_map(|a| ["--allow-ip", a.as_str()]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the echo peer")?;
    let mut to_child = child.stdin.take().context("echo peer stdin")?;
    let mut from_child = BufReader::new(child.stdout.take().context("echo peer stdout")?).lines();

    let (offerer, offer) = Peer::offer(config).await?;
    to_child
        .write_all(format!("{}\n", json!({ "offer": offer })).as_bytes())
        .await?;
    let answer = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), from_child.next_line())
            .await
            .map_err(|_| anyhow!("the echo peer did not answer within 10 s"))??
            .ok_or_else(|| anyhow!("the echo peer ended before answering"))?;
        if let Some(sdp) = field(&line, "answer")? {
            break sdp;
        }
    };
    offerer.apply_answer(&answer)?;
    let offerer = std::sync::Arc::new(offerer);
    // Candidates both ways for as long as the phase lasts.
    let theirs = {
        let offerer = std::sync::Arc::clone(&offerer);
        tokio::spawn(async move {
            while let Ok(Some(line)) = from_child.next_line().await {
                if let Ok(Some(c)) = field(&line, "candidate") {
                    let _ = offerer.add_remote_candidate(&c);
                }
            }
        })
    };
    let ours = {
        let offerer = std::sync::Arc::clone(&offerer);
        tokio::spawn(async move {
            while let Some(c) = offerer.next_local_candidate().await {
                let line = format!("{}\n", json!({ "candidate": c.candidate }));
                if to_child.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
            }
            // Keep stdin open (the child ends when it closes) until aborted.
            std::future::pending::<()>().await;
        })
    };
    let result = async {
        let channel = tokio::time::timeout(Duration::from_secs(8), offerer.open_channel("echo"))
            .await
            .map_err(|_| anyhow!("the echo peer did not connect within 8 s"))??;
        let small = Bytes::from(vec![7u8; 64]);
        let mut rtt = Samples::default();
        let deadline = Instant::now() + BUDGET;
        for i in 0..round_trips + WARM_UP {
            if Instant::now() > deadline {
                break;
            }
            let t = Instant::now();
            channel.send_binary(small.clone()).await?;
            let m = channel
                .recv()
                .await
                .ok_or_else(|| anyhow!("the echo channel closed"))?;
            if m.data != small {
                bail!("the echo came back different");
            }
            if i >= WARM_UP {
                rtt.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(json!({ "echo_rtt": rtt.summary(), "round_trips": rtt.len() }))
    }
    .await;
    ours.abort();
    theirs.abort();
    drop(offerer);
    let _ = child.kill().await;
    result
}

/// The string `key` of one signaling line (a JSON object), if it has one.
fn field(line: &str, key: &str) -> Result<Option<String>> {
    let v: Value = serde_json::from_str(line)?;
    Ok(v.get(key).and_then(Value::as_str).map(str::to_owned))
}

/// The child: answers the offer on stdin and echoes every message.
pub(crate) async fn serve(allow: Vec<String>) -> Result<()> {
    let config = peer_config(&filter(&allow)?);
    // Blocking stdin on a thread of its own, one line at a time.
    let (tx, mut lines) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let say = |v: Value| -> Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{v}")?;
        out.flush()?;
        Ok(())
    };
    let offer = loop {
        let line = lines
            .recv()
            .await
            .ok_or_else(|| anyhow!("no offer on stdin"))?;
        if let Some(sdp) = field(&line, "offer")? {
            break sdp;
        }
    };
    let (peer, answer) = Peer::answer(config, &offer).await?;
    say(json!({ "answer": answer }))?;
    let peer = std::sync::Arc::new(peer);
    {
        let peer = std::sync::Arc::clone(&peer);
        tokio::spawn(async move {
            while let Some(c) = peer.next_local_candidate().await {
                if say(json!({ "candidate": c.candidate })).is_err() {
                    break;
                }
            }
        });
    }
    let channel = loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(l) => {
                    if let Ok(Some(c)) = field(&l, "candidate") {
                        let _ = peer.add_remote_candidate(&c);
                    }
                }
                None => return Ok(()),
            },
            ch = peer.accept_channel() => break ch.ok_or_else(|| anyhow!("no channel"))?,
        }
    };
    loop {
        tokio::select! {
            m = channel.recv() => match m {
                Some(m) => {
                    if channel.send_binary(m.data).await.is_err() {
                        return Ok(());
                    }
                }
                None => return Ok(()),
            },
            // The parent closed stdin (or ended): so do we.
            line = lines.recv() => if line.is_none() { return Ok(()) },
        }
    }
}
