//! `dc-drive`: the offering side of the transport's process-level tests. It
//! signals over stdin/stdout like `dc-echo` (connect the two with two pipes),
//! opens an `echo` channel, pushes bulk data and small messages through it,
//! checks every echo, and reports on stderr which candidate pair carried
//! them. The exit code says whether what was expected happened.
//!
//! ```text
//! dc-drive [ICE flags] [--turn-secret S] [--expect direct|relay|fail]
//!          [--bytes N] [--small N] [--budget-ms N]
//!          [--cut CMD --heal CMD]      # dead-path check with an ICE restart
//!          [--cut CMD --heal CMD --outage-secs N]  # outage mid-transfer, no restart
//! ```
//!
//! `--turn-secret` derives TURN REST credentials (username `<expiry>:drive`,
//! credential base64(HMAC-SHA1(secret, username))), as signal-api issues them.
//! `--cut`/`--heal` are shell commands run mid-transfer: after `--cut` the
//! path must be reported disconnected within 5 s; after `--heal` an ICE
//! restart must bring the channel back. With `--outage-secs`, the path is
//! cut for that long during a full-speed transfer of `--bytes`, with no
//! restart: once healed, echoed bytes must flow again within 2 s on the same
//! connection, and every byte must come back intact.

#[path = "support/signal.rs"]
mod signal;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use beeline_transport::{CandidateKind, DataChannel, Peer, PeerState};
use hmac::{Hmac, Mac};
use signal::{Signal, SignalIn};

const CHUNK: usize = 64 * 1024;

struct Options {
    expect: String,
    bytes: usize,
    small: usize,
    budget: Duration,
    cut: Option<String>,
    heal: Option<String>,
    outage: Option<Duration>,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let turn_secret = take_flag(&mut args, "--turn-secret");
    let mut config = signal::peer_config(&mut args).unwrap_or_else(|e| fail(&e));
    if let Some(secret) = turn_secret {
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 300;
        let username = format!("{expiry}:drive");
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(username.as_bytes());
        let credential =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        for server in &mut config.ice_servers {
            if server.urls.iter().any(|u| u.starts_with("turn")) {
                server.username = Some(username.clone());
                server.credential = Some(credential.clone());
            }
        }
    }
    let options = Options {
        expect: take_flag(&mut args, "--expect").unwrap_or_else(|| "direct".into()),
        bytes: take_flag(&mut args, "--bytes").map_or(10 << 20, |v| v.parse().expect("--bytes")),
        small: take_flag(&mut args, "--small").map_or(1000, |v| v.parse().expect("--small")),
        budget: Duration::from_millis(
            take_flag(&mut args, "--budget-ms").map_or(8000, |v| v.parse().expect("--budget-ms")),
        ),
        cut: take_flag(&mut args, "--cut"),
        heal: take_flag(&mut args, "--heal"),
        outage: take_flag(&mut args, "--outage-secs")
            .map(|v| Duration::from_secs(v.parse().expect("--outage-secs"))),
    };
    if !args.is_empty() {
        fail(&format!("unknown arguments {args:?}"));
    }
    let budget = options.budget;
    config.connect_timeout = budget;

    let started = Instant::now();
    let (peer, offer) = Peer::offer(config)
        .await
        .unwrap_or_else(|e| fail(&e.to_string()));
    let peer = Arc::new(peer);
    signal::send(Signal::Sdp(offer)).await;
    {
        let peer = Arc::clone(&peer);
        tokio::spawn(async move { signal::trickle(&peer).await });
    }
    // Signaling input: the answer, then candidates, then restart answers.
    {
        let peer = Arc::clone(&peer);
        tokio::spawn(async move {
            let mut input = SignalIn::stdin();
            while let Some(signal) = input.next().await {
                match signal {
                    Signal::Sdp(sdp) => {
                        if let Err(e) = peer.apply_answer(&sdp) {
                            eprintln!("error: answer: {e}");
                        }
                    }
                    Signal::Candidate(c) => {
                        let _ = peer.add_remote_candidate(&c);
                    }
                    Signal::EndOfCandidates => {}
                }
            }
        });
    }

    let connected = tokio::time::timeout(budget + Duration::from_secs(1), peer.connected()).await;
    let elapsed = started.elapsed();
    match (options.expect.as_str(), connected) {
        ("fail", Ok(Ok(()))) => fail(&format!(
            "connected ({}) although it should fail",
            describe(&peer)
        )),
        ("fail", Ok(Err(e))) => {
            eprintln!(
                "RESULT failed as expected after {:.2} s: {e}",
                elapsed.as_secs_f64()
            );
            assert_within_budget(elapsed, budget);
            std::process::exit(0);
        }
        ("fail", Err(_)) => fail(&format!(
            "no failure reported within {:.1} s",
            (budget + Duration::from_secs(1)).as_secs_f64()
        )),
        (_, Ok(Ok(()))) => {}
        (_, Ok(Err(e))) => fail(&format!(
            "connection failed after {:.2} s: {e}",
            elapsed.as_secs_f64()
        )),
        (_, Err(_)) => fail("connection did not settle"),
    }
    eprintln!(
        "connected in {:.0} ms over {}",
        elapsed.as_secs_f64() * 1000.0,
        describe(&peer)
    );
    let pair = peer.selected_pair().expect("a selected pair");
    let relayed = pair.local == CandidateKind::Relay || pair.remote == CandidateKind::Relay;
    match options.expect.as_str() {
        "direct" if relayed => fail(&format!("expected a direct pair, got {}", describe(&peer))),
        "relay" if !relayed => fail(&format!("expected a relayed pair, got {}", describe(&peer))),
        _ => {}
    }

    let channel = Arc::new(
        peer.open_channel("echo")
            .await
            .unwrap_or_else(|e| fail(&e.to_string())),
    );
    match (&options.cut, &options.heal, options.outage) {
        (Some(cut), Some(heal), Some(outage)) => {
            ride_out(&peer, &channel, cut, heal, outage, options.bytes).await
        }
        (Some(cut), Some(heal), None) => dead_path(&peer, &channel, cut, heal).await,
        _ => {
            let secs = exchange(&channel, options.bytes, options.small).await;
            eprintln!(
                "RESULT ok: {} bytes and {} small messages echoed in {:.2} s ({:.1} MB/s each way) over {}",
                options.bytes,
                options.small,
                secs,
                options.bytes as f64 / secs / 1e6,
                describe(&peer)
            );
        }
    }
    peer.close().await;
}

/// Cuts the path mid-transfer, times the disconnect report, heals it,
/// restarts ICE and checks the channel carries data again.
async fn dead_path(peer: &Arc<Peer>, channel: &Arc<DataChannel>, cut: &str, heal: &str) {
    // A paced transfer (about 800 kB/s), running when the path is cut.
    let sender = {
        let channel = Arc::clone(channel);
        tokio::spawn(async move {
            for i in 0u32.. {
                if channel.send_binary(pattern(i, 4 * 1024)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut received = 0usize;
    while received < 512 * 1024 {
        received += within(10, channel.recv())
            .await
            .expect("echo before the cut")
            .data
            .len();
    }
    let mut state = peer.state();
    state.borrow_and_update();
    run(cut);
    let cut_at = Instant::now();
    // The application stops writing once the path is gone (as the bridge
    // does when it fails in-flight requests); what SCTP already holds is
    // retransmitted after the restart.
    sender.abort();
    // Drain what is still in flight; only the state matters now.
    let drain = {
        let channel = Arc::clone(channel);
        tokio::spawn(async move { while channel.recv().await.is_some() {} })
    };
    let reported = tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|s| matches!(s, PeerState::Disconnected | PeerState::Failed)),
    )
    .await;
    let detect = cut_at.elapsed();
    match reported.map(|r| r.map(|s| *s)) {
        Ok(Ok(s)) => eprintln!(
            "RESULT disconnect reported as {s:?} {:.2} s after the cut",
            detect.as_secs_f64()
        ),
        _ => fail("the dead path was not reported within 5 s"),
    }
    drain.abort();
    run(heal);

    let restart = peer
        .restart_offer()
        .await
        .unwrap_or_else(|e| fail(&format!("restart_offer: {e}")));
    signal::send(Signal::Sdp(restart)).await;
    {
        let peer = Arc::clone(peer);
        tokio::spawn(async move { signal::trickle(&peer).await });
    }
    let restarted = Instant::now();
    let back = tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| *s == PeerState::Connected),
    )
    .await;
    if !matches!(back, Ok(Ok(_))) {
        fail("ICE restart did not reconnect within 10 s");
    }
    eprintln!(
        "ICE restart reconnected in {:.2} s over {}",
        restarted.elapsed().as_secs_f64(),
        describe(peer)
    );
    // What was sent before the cut is still queued in order; a marker
    // message after it proves the channel works end to end again.
    channel
        .send_text("after restart")
        .await
        .unwrap_or_else(|e| fail(&e.to_string()));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let Ok(Some(m)) = tokio::time::timeout_at(deadline.into(), channel.recv()).await else {
            fail("no echo after the ICE restart within 20 s");
        };
        if m.is_text && &m.data[..] == b"after restart" {
            break;
        }
    }
    eprintln!(
        "RESULT channel works again {:.2} s after the restart",
        restarted.elapsed().as_secs_f64()
    );
}

/// How soon after the path returns echoed bytes must flow again.
const RESUME_GOAL: Duration = Duration::from_secs(2);

/// Cuts the path for `outage` in the middle of a full-speed transfer of
/// `bytes` through the echo, with data queued both ways, and heals it. The
/// same connection must carry on (no ICE restart): echoed bytes flow again
/// within [`RESUME_GOAL`] and every message comes back intact, in order.
async fn ride_out(
    peer: &Arc<Peer>,
    channel: &Arc<DataChannel>,
    cut: &str,
    heal: &str,
    outage: Duration,
    bytes: usize,
) {
    let chunks = bytes.div_ceil(CHUNK);
    let sender = {
        let channel = Arc::clone(channel);
        tokio::spawn(async move { send_bulk(&channel, bytes).await })
    };
    // Echoes are checked as they come; the time of each is kept.
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let receiver = {
        let channel = Arc::clone(channel);
        tokio::spawn(async move {
            for i in 0..chunks {
                let Some(m) = channel.recv().await else {
                    fail(&format!("channel closed after {i} of {chunks} messages"));
                };
                let len = CHUNK.min(bytes - i * CHUNK);
                if m.is_text || m.data != pattern(i as u32, len) {
                    fail(&format!("bulk message {i} came back different"));
                }
                let _ = arrived_tx.send((i, Instant::now()));
            }
        })
    };
    // Cut once a tenth has come back, while the rest is in flight.
    let mut last = 0;
    while last < chunks / 10 {
        last = within(30, arrived.recv())
            .await
            .unwrap_or_else(|| fail("echo ended before the cut"))
            .0;
    }
    let mut state = peer.state();
    run(cut);
    let cut_at = Instant::now();
    tokio::time::sleep(outage).await;
    // What arrived while cut was in flight before it.
    while let Ok((i, _)) = arrived.try_recv() {
        last = i;
    }
    let during = *state.borrow_and_update();
    run(heal);
    let healed = Instant::now();
    eprintln!(
        "path cut for {:.1} s at message {last} of {chunks} (state before the heal: {during:?})",
        healed.duration_since(cut_at).as_secs_f64()
    );
    let Ok(Some((first, at))) = tokio::time::timeout(Duration::from_secs(60), arrived.recv()).await
    else {
        fail(&format!(
            "no echoed bytes within 60 s of the path returning (state {:?})",
            *state.borrow()
        ));
    };
    let resumed = at.duration_since(healed);
    eprintln!(
        "RESULT bytes flow again {:.2} s after the path returned (message {first}, state {:?})",
        resumed.as_secs_f64(),
        *state.borrow()
    );
    if resumed > RESUME_GOAL {
        fail(&format!(
            "bytes flowed again {:.2} s after the path returned, over the {} s goal",
            resumed.as_secs_f64(),
            RESUME_GOAL.as_secs()
        ));
    }
    within(120, receiver).await.expect("receiver");
    sender.await.expect("sender");
    let rest = healed.elapsed().as_secs_f64();
    eprintln!(
        "RESULT ok: all {bytes} bytes echoed intact after a {:.0} s outage ({:.1} s after the heal) over {}",
        outage.as_secs_f64(),
        rest,
        describe(peer)
    );
}

/// Sends `bytes` in messages of [`CHUNK`], message `i` being `pattern(i)`.
async fn send_bulk(channel: &DataChannel, bytes: usize) {
    for i in 0..bytes.div_ceil(CHUNK) {
        let len = CHUNK.min(bytes - i * CHUNK);
        if let Err(e) = channel.send_binary(pattern(i as u32, len)).await {
            fail(&format!("send: {e}"));
        }
    }
}

/// Bulk and small messages through the echo; returns the seconds the bulk took.
async fn exchange(channel: &Arc<DataChannel>, bytes: usize, small: usize) -> f64 {
    let chunks = bytes.div_ceil(CHUNK);
    let sender = {
        let channel = Arc::clone(channel);
        tokio::spawn(async move {
            send_bulk(&channel, bytes).await;
            for i in 0..small {
                channel
                    .send_text(&format!("small {i}"))
                    .await
                    .expect("send");
            }
        })
    };
    let started = Instant::now();
    for i in 0..chunks {
        let m = within(60, channel.recv())
            .await
            .unwrap_or_else(|| fail("channel closed"));
        let len = CHUNK.min(bytes - i * CHUNK);
        if m.is_text || m.data != pattern(i as u32, len) {
            fail(&format!("bulk message {i} came back different"));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    for i in 0..small {
        let m = within(30, channel.recv())
            .await
            .unwrap_or_else(|| fail("channel closed"));
        if !m.is_text || m.data != format!("small {i}").as_bytes() {
            fail(&format!("small message {i} came back different"));
        }
    }
    sender.await.expect("sender");
    secs
}

fn describe(peer: &Peer) -> String {
    match peer.selected_pair() {
        Some(p) => format!(
            "{:?} {} -> {:?} {}",
            p.local, p.local_addr, p.remote, p.remote_addr
        ),
        None => "no pair".into(),
    }
}

fn assert_within_budget(elapsed: Duration, budget: Duration) {
    if elapsed > budget + Duration::from_millis(500) {
        fail(&format!(
            "failure reported after {:.2} s, over the {:.1} s budget",
            elapsed.as_secs_f64(),
            budget.as_secs_f64()
        ));
    }
}

use beeline_test_support::xorshift32_bytes as pattern;

fn run(cmd: &str) {
    eprintln!("running: {cmd}");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .expect("sh");
    if !status.success() {
        fail(&format!("{cmd:?} failed: {status}"));
    }
}

async fn within<F: std::future::Future>(secs: u64, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => fail(&format!("timed out after {secs} s")),
    }
}

fn take_flag(args: &mut Vec<String>, name: &str) -> Option<String> {
    let i = args.iter().position(|a| a == name)?;
    args.remove(i);
    (i < args.len()).then(|| args.remove(i))
}

fn fail(why: &str) -> ! {
    eprintln!("RESULT FAIL: {why}");
    std::process::exit(1)
}
