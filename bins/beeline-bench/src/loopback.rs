//! The loopback run: memory, then setup, round trips, token delay and
//! throughput with the Rust client, then the same page-level figures with
//! headless Chromium (`tests/bench/chromium.mjs`), all against real
//! `signal-api` + `home-peer` processes. `scripts/bench.sh` runs it inside a
//! fresh network namespace that has only loopback.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use beeline_bridge::ClientOptions;
use beeline_signal_client::SignalClient;
use serde_json::{json, Value};

use crate::client::{self, filter};
use crate::measure::{self, Transfer};
use crate::procs::{context_switches, cpu_secs, udp_rcvbuf_errors, Bins, Stack};
use crate::stats::Samples;

/// What the loopback run does; every count is bounded and every phase has a
/// time budget.
#[derive(Debug, clap::Args)]
pub(crate) struct LoopbackArgs {
    /// Directory with the release binaries (signal-api, home-peer).
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
    /// Connection setups to time.
    #[arg(long, default_value_t = 30)]
    setups: usize,
    /// Round trips per path (after 200 warm-up rounds).
    #[arg(long, default_value_t = 2000)]
    round_trips: usize,
    /// SSE events in the token-delay run, and their spacing.
    #[arg(long, default_value_t = 1000)]
    sse_events: u32,
    #[arg(long, default_value_t = 20)]
    sse_interval_ms: u64,
    /// Bytes per throughput transfer.
    #[arg(long, default_value_t = 100_000_000)]
    transfer_bytes: usize,
    /// Repetitions of each binary-framing transfer (JSON framing: one fewer, at least one).
    #[arg(long, default_value_t = 3)]
    transfer_reps: usize,
    /// Peer connections held open for the memory figure.
    #[arg(long, default_value_t = 20)]
    memory_connections: usize,
    /// Carrier switches in the handoff phase (half to the channel, half back).
    #[arg(long, default_value_t = 40)]
    handoff_switches: usize,
    /// The Chromium script to run against the same stack; none skips Chromium.
    #[arg(long)]
    chromium_script: Option<PathBuf>,
    /// Only these phases (comma-separated: memory,transport,setup,rtt,sse,throughput,proxy,link,handoff,websocket,parallel,chromium).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

const TRANSFER_BUDGET: Duration = Duration::from_secs(60);
const CHROMIUM_BUDGET: Duration = Duration::from_secs(420);

/// The one address the loopback phases' peers may use.
const LOOPBACK: &str = "127.0.0.1";

fn loopback_filter() -> Result<beeline_transport::AddressFilter> {
    filter(&[LOOPBACK.to_owned()])
}

pub(crate) async fn run(args: LoopbackArgs) -> Result<()> {
    let bins = Bins {
        dir: args.bin_dir.clone(),
    };
    std::fs::create_dir_all(&args.out_dir)?;
    let wants = |phase: &str| args.only.is_empty() || args.only.iter().any(|p| p == phase);
    let mut out = serde_json::Map::new();

    if wants("memory") {
        eprintln!("bench: memory ({} connections)…", args.memory_connections);
        out.insert(
            "memory".into(),
            memory(&bins, args.memory_connections).await?,
        );
    }

    if wants("transport") {
        eprintln!("bench: the transport alone (two peers in this process), both stacks…");
        let mut transport =
            crate::transport::run_both(&loopback_filter()?, args.round_trips, args.transfer_bytes)
                .await?;
        eprintln!("bench: the transport alone across two processes (echo)…");
        let two = crate::echo_peer::run(&[LOOPBACK.to_owned()], args.round_trips).await?;
        if let Some(t) = transport.as_object_mut() {
            t.insert("two_processes".into(), two);
        }
        out.insert("transport".into(), transport);
    }

    let stack = Stack::loopback(&bins).await?;
    let signal = SignalClient::new(&stack.signal_base())?;
    let filter = loopback_filter()?;

    if wants("setup") {
        eprintln!("bench: setup ×{}…", args.setups);
        out.insert("setup".into(), setup(&signal, &filter, args.setups).await?);
    }
    if wants("rtt") {
        eprintln!("bench: round trips ×{} per path…", args.round_trips);
        let conn = client::connect(&signal, &filter, ClientOptions::default()).await?;
        let rt = measure::round_trips(
            &conn.client,
            Some(&stack.upstream_url),
            Some(&stack.signal_url),
            200,
            args.round_trips,
            Duration::from_secs(90),
        )
        .await?;
        conn.close().await;
        out.insert(
            "rtt".into(),
            json!({
                "channel": rt.channel.summary(), "http": rt.http.summary(), "relay": rt.relay.summary(),
                "channel_head": rt.channel_head.summary(), "channel_empty": rt.channel_empty.summary(),
                "samples": {"channel": rt.channel.0, "http": rt.http.0, "relay": rt.relay.0},
            }),
        );
    }
    if wants("sse") {
        eprintln!(
            "bench: token delay, {} events at {} ms over the channel and plain HTTP at once…",
            args.sse_events, args.sse_interval_ms
        );
        let conn = client::connect(&signal, &filter, ClientOptions::default()).await?;
        let http = measure::http_client();
        let (channel, plain) = tokio::join!(
            measure::sse_over_channel(&conn.client, args.sse_events, args.sse_interval_ms),
            measure::sse_over_http(
                &http,
                &stack.upstream_url,
                args.sse_events,
                args.sse_interval_ms
            ),
        );
        conn.close().await;
        let ((channel, _), (plain, _)) = (channel?, plain?);
        out.insert(
            "sse".into(),
            json!({"events": args.sse_events, "interval_ms": args.sse_interval_ms, "channel": channel.summary(), "http": plain.summary()}),
        );
    }
    if wants("throughput") {
        out.insert(
            "throughput".into(),
            throughput(&signal, &filter, &args, stack.home.pid()).await?,
        );
    }
    if wants("proxy") {
        eprintln!("bench: beeline-proxy: small GETs against plain HTTP, then a download…");
        out.insert(
            "proxy".into(),
            crate::local_proxy::run(
                &bins,
                &stack.signal_base(),
                &stack.upstream_url,
                args.round_trips,
                args.transfer_bytes,
                args.transfer_reps,
            )
            .await?,
        );
    }
    if wants("link") {
        eprintln!("bench: the normal path over the home link against --relay-upstream…");
        out.insert(
            "link".into(),
            crate::live::relay_link(&bins, &stack, args.round_trips, args.transfer_bytes).await?,
        );
    }
    if wants("handoff") {
        eprintln!(
            "bench: the pause of a live stream moving between the home link and the channel…"
        );
        out.insert(
            "handoff".into(),
            crate::live::handoff(&bins, &stack, &filter, args.handoff_switches).await?,
        );
    }
    if wants("websocket") {
        eprintln!("bench: WebSocket message round trips over the channel and plain…");
        let conn = client::connect(&signal, &filter, ClientOptions::default()).await?;
        let figures =
            crate::live::websocket_rtt(&conn.client, &stack.upstream_url, args.round_trips).await;
        conn.close().await;
        out.insert("websocket".into(), figures?);
    }
    if wants("parallel") {
        out.insert(
            "parallel".into(),
            parallel(&signal, &filter, &args, stack.home.pid()).await?,
        );
    }
    write(
        &args.out_dir.join("rust-loopback.json"),
        &Value::Object(out),
    )?;

    if wants("chromium") {
        if let Some(script) = &args.chromium_script {
            eprintln!("bench: Chromium (loopback)…");
            let outfile = args.out_dir.join("chromium-loopback.json");
            let _ = std::fs::remove_file(&outfile);
            let extra = [
                ("--origin", stack.signal_url.clone()),
                ("--upstream", stack.upstream_url.clone()),
                ("--out", outfile.display().to_string()),
                ("--setups", args.setups.min(20).to_string()),
                ("--round-trips", args.round_trips.min(500).to_string()),
                ("--sse-events", args.sse_events.to_string()),
                ("--sse-interval-ms", args.sse_interval_ms.to_string()),
                ("--transfer-bytes", args.transfer_bytes.to_string()),
                ("--home-pid", stack.home.pid().to_string()),
            ];
            run_node(script, "loopback", &extra, CHROMIUM_BUDGET).await?;
        }
    }
    Ok(())
}

pub(crate) fn write(path: &std::path::Path, value: &Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}

/// Runs the Chromium script with `--mode mode` and the given flags, bounded
/// in time. A failure is reported, not fatal: the report shows the figures
/// as missing.
pub(crate) async fn run_node(
    script: &std::path::Path,
    mode: &str,
    extra: &[(&str, String)],
    budget: Duration,
) -> Result<()> {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(script).args(["--mode", mode]);
    for (k, v) in extra {
        cmd.arg(k).arg(v);
    }
    cmd.kill_on_drop(true);
    let mut child = cmd.spawn().context("starting node")?;
    match tokio::time::timeout(budget, child.wait()).await {
        Ok(Ok(s)) if s.success() => {}
        Ok(Ok(s)) => eprintln!("bench: the Chromium script failed ({s}); its figures are missing"),
        Ok(Err(e)) => eprintln!("bench: the Chromium script failed: {e}"),
        Err(_) => {
            let _ = child.kill().await;
            eprintln!("bench: the Chromium script ran past {budget:?} and was stopped");
        }
    }
    Ok(())
}

async fn setup(
    signal: &SignalClient,
    filter: &beeline_transport::AddressFilter,
    n: usize,
) -> Result<Value> {
    let (mut session, mut offer, mut answer, mut open, mut agree) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut failures = 0;
    for _ in 0..n {
        if Instant::now() > deadline {
            break;
        }
        match client::connect(signal, filter, ClientOptions::default()).await {
            Ok(conn) => {
                let t = conn.times;
                session.push(t.session_ms);
                offer.push(t.offer_posted_ms);
                answer.push(t.answer_ms);
                open.push(t.open_ms);
                agree.push(t.agree_ms);
                client::get(&conn.client, "/bench/small").await?;
                conn.close().await;
            }
            Err(e) => {
                eprintln!("  setup failed: {e:#}");
                failures += 1;
            }
        }
    }
    Ok(json!({
        "failures": failures,
        "session": session.summary(), "offer_posted": offer.summary(), "answer": answer.summary(),
        "open": open.summary(), "agree": agree.summary(), "samples_open": open.0,
    }))
}

async fn throughput(
    signal: &SignalClient,
    filter: &beeline_transport::AddressFilter,
    args: &LoopbackArgs,
    home_pid: u32,
) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for binary in [true, false] {
        let framing = if binary { "binary" } else { "json" };
        let reps = if binary {
            args.transfer_reps
        } else {
            args.transfer_reps.saturating_sub(1).max(1)
        };
        let conn = client::connect(
            signal,
            filter,
            ClientOptions {
                binary,
                ..Default::default()
            },
        )
        .await?;
        let (mut down, mut up) = (Vec::new(), Vec::new());
        // CPU seconds and context switches of home-peer and of this client
        // per transfer: a CPU-bound transfer uses about one core-second per
        // second, and many switches per MB mean per-packet hand-offs.
        let probe = || Probe {
            home_cpu: cpu_secs(Some(home_pid)).unwrap_or(f64::NAN),
            client_cpu: cpu_secs(None).unwrap_or(f64::NAN),
            home_switches: context_switches(Some(home_pid)).unwrap_or(0),
            client_switches: context_switches(None).unwrap_or(0),
            rcvbuf_errors: udp_rcvbuf_errors().unwrap_or(0),
        };
        for rep in 0..reps {
            eprintln!(
                "bench: throughput {framing} {} MB down/up, rep {}/{reps}…",
                args.transfer_bytes / 1_000_000,
                rep + 1
            );
            let before = probe();
            let messages = conn.channel.messages_received();
            let d = measure::download(&conn.client, args.transfer_bytes, TRANSFER_BUDGET).await?;
            let messages = conn.channel.messages_received() - messages;
            let mid = probe();
            let u = measure::upload(&conn.client, args.transfer_bytes, TRANSFER_BUDGET).await?;
            let after = probe();
            let mut down_run = with_costs(&d, &before, &mid);
            // Frames the client received per MB of body (64 KiB pieces would be ~15).
            down_run.1["messages_per_mb"] = json!(messages as f64 / (d.bytes as f64 / 1e6));
            down.push(down_run);
            up.push(with_costs(&u, &mid, &after));
        }
        conn.close().await;
        let summary = |v: &[(f64, Value)]| {
            let rates = Samples(v.iter().map(|(r, _)| *r).collect());
            json!({"median_mb_per_s": rates.median(), "runs": v.iter().map(|(_, j)| j.clone()).collect::<Vec<_>>()})
        };
        out.insert(
            framing.into(),
            json!({"down": summary(&down), "up": summary(&up)}),
        );
    }
    Ok(Value::Object(out))
}

/// Connections that download at once in the `parallel` phase.
const PARALLEL: usize = 3;

/// Several peer connections downloading at the same time (binary framing),
/// `transfer_bytes` in all: what home-peer's runtime setting costs when more
/// than one connection is busy.
async fn parallel(
    signal: &SignalClient,
    filter: &beeline_transport::AddressFilter,
    args: &LoopbackArgs,
    home_pid: u32,
) -> Result<Value> {
    eprintln!(
        "bench: {PARALLEL} connections downloading {} MB in all at once…",
        args.transfer_bytes / 1_000_000
    );
    let mut conns = Vec::new();
    for _ in 0..PARALLEL {
        conns.push(
            client::connect(
                signal,
                filter,
                ClientOptions {
                    binary: true,
                    ..Default::default()
                },
            )
            .await?,
        );
    }
    let each = args.transfer_bytes / PARALLEL;
    let cpu_before = cpu_secs(Some(home_pid)).unwrap_or(f64::NAN);
    let drops_before = udp_rcvbuf_errors().unwrap_or(0);
    let started = Instant::now();
    let runs = futures::future::join_all(
        conns
            .iter()
            .map(|c| measure::download(&c.client, each, TRANSFER_BUDGET)),
    )
    .await;
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_secs(Some(home_pid)).unwrap_or(f64::NAN) - cpu_before;
    let drops = udp_rcvbuf_errors().unwrap_or(0) - drops_before;
    for c in conns {
        c.close().await;
    }
    let mut bytes = 0;
    let mut per_connection = Vec::new();
    for run in runs {
        let run = run?;
        if !run.complete {
            bail!("a parallel download stopped at {} bytes", run.bytes);
        }
        bytes += run.bytes;
        per_connection.push(run.mb_per_s());
    }
    Ok(json!({
        "connections": PARALLEL, "bytes": bytes, "secs": secs,
        "mb_per_s": bytes as f64 / 1e6 / secs,
        "per_connection_mb_per_s": per_connection,
        "home_peer_cpu_secs": cpu,
        "udp_rcvbuf_errors": drops,
    }))
}

struct Probe {
    home_cpu: f64,
    client_cpu: f64,
    home_switches: u64,
    client_switches: u64,
    rcvbuf_errors: u64,
}

fn with_costs(t: &Transfer, before: &Probe, after: &Probe) -> (f64, Value) {
    let mb = t.bytes as f64 / 1e6;
    let mut j = t.json();
    j["home_peer_cpu_secs"] = json!(after.home_cpu - before.home_cpu);
    j["client_cpu_secs"] = json!(after.client_cpu - before.client_cpu);
    j["home_peer_switches_per_mb"] =
        json!((after.home_switches - before.home_switches) as f64 / mb);
    j["client_switches_per_mb"] =
        json!((after.client_switches - before.client_switches) as f64 / mb);
    j["udp_rcvbuf_errors"] = json!(after.rcvbuf_errors - before.rcvbuf_errors);
    (t.mb_per_s(), j)
}

/// home-peer's RSS when idle, and with `n` peer connections open (each has
/// served one request).
async fn memory(bins: &Bins, n: usize) -> Result<Value> {
    let stack = Stack::loopback(bins).await?;
    let signal = SignalClient::new(&stack.signal_base())?;
    let filter = loopback_filter()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = stack.home.rss_mb().context("reading home-peer's RSS")?;
    let mut conns = Vec::new();
    let mut after_one = f64::NAN;
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..n {
        if Instant::now() > deadline {
            break;
        }
        let conn = client::connect(&signal, &filter, ClientOptions::default()).await?;
        client::get(&conn.client, "/bench/small").await?;
        conns.push(conn);
        if i == 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            after_one = stack.home.rss_mb().unwrap_or(f64::NAN);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_n = stack.home.rss_mb().unwrap_or(f64::NAN);
    let opened = conns.len();
    for c in conns {
        c.close().await;
    }
    Ok(json!({
        "idle_mb": idle,
        "after_first_mb": after_one,
        "connections": opened,
        "with_connections_mb": with_n,
        "per_connection_mb": (with_n - idle) / opened.max(1) as f64,
        "per_connection_marginal_mb": (with_n - after_one) / (opened.max(2) - 1) as f64,
    }))
}
