//! Gathers the per-run JSON files into one table (goal, met/not met per
//! row), `report.json` (one key per figure, with its unit), the latency
//! chart, and the README section between `<!-- bench:start -->` and
//! `<!-- bench:end -->`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use crate::chart;

#[derive(Debug, clap::Args)]
pub(crate) struct ReportArgs {
    /// Where the per-run JSON files are, and where the report goes.
    #[arg(long, default_value = "target/bench")]
    dir: PathBuf,
    /// Also update the bench section of this README.
    #[arg(long)]
    readme: Option<PathBuf>,
    /// Also copy the chart here (the README links to it).
    #[arg(long)]
    chart_copy: Option<PathBuf>,
    /// How the far link was delayed (netem, proxy) or why it was not measured.
    #[arg(long, default_value = "")]
    far_delay: String,
    /// Seconds the whole `just bench` run took so far (for the record).
    #[arg(long)]
    elapsed_secs: Option<f64>,
    /// /proc/loadavg when the run started: the machine is shared, and the
    /// load other work put on it explains much of the run-to-run spread.
    #[arg(long)]
    load_at_start: Option<String>,
}

/// What a figure must be to meet its goal.
#[derive(Debug, Clone, Copy)]
enum Goal {
    AtMost(f64),
    AtLeast(f64),
    None,
}

struct Row {
    key: String,
    label: String,
    value: Option<f64>,
    unit: &'static str,
    goal: Goal,
    note: String,
}

impl Row {
    fn met(&self) -> Option<bool> {
        let v = self.value.filter(|v| v.is_finite())?;
        match self.goal {
            Goal::AtMost(g) => Some(v <= g),
            Goal::AtLeast(g) => Some(v >= g),
            Goal::None => None,
        }
    }

    fn goal_text(&self) -> String {
        match self.goal {
            Goal::AtMost(g) => format!("≤ {}", trim(g)),
            Goal::AtLeast(g) => format!("≥ {}", trim(g)),
            Goal::None => "—".into(),
        }
    }

    fn value_text(&self) -> String {
        match self.value.filter(|v| v.is_finite()) {
            Some(v) => format!("{} {}", fmt(v), self.unit),
            None => "not measured".into(),
        }
    }

    fn met_text(&self) -> &'static str {
        match (self.met(), self.goal) {
            (_, Goal::None) => "",
            (Some(true), _) => "met",
            (Some(false), _) => "NOT MET",
            (None, _) => "n/a",
        }
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v}");
    s.trim_end_matches(".0").to_owned()
}

fn fmt(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn read(dir: &Path, name: &str) -> Value {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}

fn num(v: &Value, path: &str) -> Option<f64> {
    path.split('.')
        .try_fold(v, |v, k| match (v, k.parse::<usize>()) {
            (Value::Array(a), Ok(i)) => a.get(i),
            _ => v.get(k),
        })
        .and_then(Value::as_f64)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? / b?)
}

/// What a path would cost against `base` if it added one more process
/// crossing (`crossing`, a measured round trip) and nothing else: the floor
/// under a ratio goal on this machine.
fn floor_ratio(base: Option<f64>, crossing: Option<f64>) -> Option<f64> {
    Some((base? + crossing?) / base?)
}

struct Rows(Vec<Row>);

impl Rows {
    fn add(&mut self, key: &str, label: &str, value: Option<f64>, unit: &'static str, goal: Goal) {
        self.0.push(Row {
            key: key.into(),
            label: label.into(),
            value,
            unit,
            goal,
            note: String::new(),
        });
    }

    fn note(&mut self, note: impl Into<String>) {
        if let Some(r) = self.0.last_mut() {
            r.note = note.into();
        }
    }

    /// "label: note" for every row that has a note.
    fn notes(&self) -> impl Iterator<Item = String> + '_ {
        self.0
            .iter()
            .filter(|r| !r.note.is_empty())
            .map(|r| format!("{}: {}", r.label, r.note))
    }
}

pub(crate) fn run(args: ReportArgs) -> Result<()> {
    let dir = &args.dir;
    let rust = read(dir, "rust-loopback.json");
    let chromium = read(dir, "chromium-loopback.json");
    let far_rust = read(dir, "far-rust.json");
    let far_chromium = read(dir, "far-chromium.json");
    let signal = read(dir, "signal.json");
    let size = read(dir, "size.json");
    let mut rows = Rows(Vec::new());
    use Goal::*;

    // Setup.
    rows.add(
        "setup_rust_open_median_ms",
        "setup, Rust: POST /session → channel open, median",
        num(&rust, "setup.open.p50"),
        "ms",
        AtMost(50.0),
    );
    rows.add(
        "setup_rust_agree_median_ms",
        "setup, Rust: … → v2 agree (requests can flow), median",
        num(&rust, "setup.agree.p50"),
        "ms",
        None,
    );
    rows.add(
        "setup_chromium_open_median_ms",
        "setup, Chromium: POST /session → channel open, median",
        num(&chromium, "setup.open.p50"),
        "ms",
        AtMost(100.0),
    );
    rows.add(
        "setup_chromium_agree_median_ms",
        "setup, Chromium: … → v2 agree, median",
        num(&chromium, "setup.negotiated.p50"),
        "ms",
        None,
    );

    // The browser client as served, and the loopback tier (home-peer's
    // loopback listener; tests/bench/chromium.mjs).
    rows.add(
        "clientjs_bundle_gzip_kb",
        "client.js bundle as served, minified + gzipped",
        num(&chromium, "bundle.gzip_bytes").map(|b| b / 1000.0),
        "kB",
        AtMost(20.0),
    );
    rows.add(
        "loopback_choose_chromium_median_ms",
        "loopback tier, Chromium: createClient → path chosen (loopback), median",
        num(&chromium, "loopback_tier.choose.p50"),
        "ms",
        AtMost(150.0),
    );
    let (lb50, lh50) = (
        num(&chromium, "loopback_tier.rtt.loopback.p50"),
        num(&chromium, "loopback_tier.rtt.http.p50"),
    );
    rows.add(
        "rtt_chromium_loopback_p50_ms",
        "small GET, Chromium: over the loopback listener p50",
        lb50,
        "ms",
        None,
    );
    rows.add(
        "rtt_chromium_loopback_http_p50_ms",
        "small GET, Chromium: plain fetch to the home service p50",
        lh50,
        "ms",
        None,
    );
    rows.add(
        "rtt_chromium_loopback_p50_ratio",
        "small GET, Chromium: loopback p50 / plain fetch p50",
        ratio(lb50, lh50),
        "×",
        AtMost(1.2),
    );

    // Round trips.
    for (who, v) in [("rust", &rust), ("chromium", &chromium)] {
        let name = if who == "rust" { "Rust" } else { "Chromium" };
        let (ch50, ht50) = (num(v, "rtt.channel.p50"), num(v, "rtt.http.p50"));
        rows.add(
            &format!("rtt_{who}_channel_p50_ms"),
            &format!("small GET, {name}: over the channel p50"),
            ch50,
            "ms",
            None,
        );
        rows.add(
            &format!("rtt_{who}_http_p50_ms"),
            &format!("small GET, {name}: plain HTTP keep-alive p50"),
            ht50,
            "ms",
            None,
        );
        rows.add(
            &format!("rtt_{who}_relay_p50_ms"),
            &format!("small GET, {name}: signal-api relay p50"),
            num(v, "rtt.relay.p50"),
            "ms",
            None,
        );
        rows.add(
            &format!("rtt_{who}_p50_ratio"),
            &format!("small GET, {name}: channel p50 / HTTP p50"),
            ratio(ch50, ht50),
            "×",
            AtMost(1.5),
        );
        if who == "rust" {
            rows.add(
                "rtt_rust_floor_ratio",
                "small GET, Rust: floor, (HTTP p50 + 2-process transport echo p50) / HTTP p50",
                floor_ratio(ht50, num(&rust, "transport.two_processes.echo_rtt.p50")),
                "×",
                None,
            );
            rows.note(
                "the ratio if beeline added one process crossing over the channel and nothing else",
            );
        }
        rows.add(
            &format!("rtt_{who}_channel_p99_ms"),
            &format!("small GET, {name}: over the channel p99"),
            num(v, "rtt.channel.p99"),
            "ms",
            AtMost(1.0),
        );
    }
    rows.add(
        "rtt_chromium_channel_alone_p50_ms",
        "small GET, Chromium: over the channel, no fetch in between, p50",
        num(&chromium, "rtt.channel_alone.p50"),
        "ms",
        None,
    );
    rows.add(
        "rtt_chromium_channel_alone_p99_ms",
        "small GET, Chromium: over the channel, no fetch in between, p99",
        num(&chromium, "rtt.channel_alone.p99"),
        "ms",
        None,
    );
    rows.note("channel requests back to back, as a page on the direct path sends them; the goal rows interleave them with plain fetches");
    rows.add(
        "rtt_rust_channel_head_p50_ms",
        "small GET, Rust: channel, until the response head p50",
        num(&rust, "rtt.channel_head.p50"),
        "ms",
        None,
    );
    rows.add(
        "rtt_rust_channel_empty_p50_ms",
        "small GET, Rust: channel, empty body (2 frames, not 3) p50",
        num(&rust, "rtt.channel_empty.p50"),
        "ms",
        None,
    );
    rows.add(
        "chromium_echo_p50_ms",
        "Chromium↔Chromium 64 B echo, same page (Chromium's floor) p50",
        num(&chromium, "chromium_echo.p50"),
        "ms",
        None,
    );
    rows.add(
        "chromium_echo_p99_ms",
        "Chromium↔Chromium 64 B echo p99",
        num(&chromium, "chromium_echo.p99"),
        "ms",
        None,
    );
    rows.add(
        "clientjs_protocol_p50_ms",
        "client.js alone (fake link, no network): small GET p50",
        num(&chromium, "clientjs_protocol.protocol.p50"),
        "ms",
        None,
    );

    // Streamed tokens.
    for (who, v) in [("rust", &rust), ("chromium", &chromium)] {
        let name = if who == "rust" { "Rust" } else { "Chromium" };
        let events = num(v, "sse.events").map_or(String::new(), |n| format!(" ({n} events)"));
        rows.add(
            &format!("token_delay_{who}_p50_ms"),
            &format!("token delay, {name}: write → arrival p50{events}"),
            num(v, "sse.channel.p50"),
            "ms",
            AtMost(1.0),
        );
        rows.add(
            &format!("token_delay_{who}_p99_ms"),
            &format!("token delay, {name}: p99"),
            num(v, "sse.channel.p99"),
            "ms",
            AtMost(5.0),
        );
        rows.add(
            &format!("token_delay_{who}_max_ms"),
            &format!("token delay, {name}: max"),
            num(v, "sse.channel.max"),
            "ms",
            AtMost(20.0),
        );
        rows.add(
            &format!("token_delay_{who}_http_p99_ms"),
            &format!("token delay, {name}: plain HTTP p99 (baseline)"),
            num(v, "sse.http.p99"),
            "ms",
            None,
        );
    }

    // Throughput.
    for (who, v, goal) in [("rust", &rust, 70.0), ("chromium", &chromium, 30.0)] {
        let name = if who == "rust" { "Rust" } else { "Chromium" };
        for framing in ["binary", "json"] {
            for dirn in ["down", "up"] {
                let g = if framing == "binary" {
                    AtLeast(goal)
                } else {
                    None
                };
                let arrow = if dirn == "down" { "download" } else { "upload" };
                rows.add(
                    &format!("throughput_{who}_{framing}_{dirn}_mb_per_s"),
                    &format!("100 MB {arrow}, {name}, {framing} framing, median"),
                    num(v, &format!("throughput.{framing}.{dirn}.median_mb_per_s")),
                    "MB/s",
                    g,
                );
            }
        }
    }

    // beeline-proxy on a local port (issue 10).
    let (px50, ht50) = (
        num(&rust, "proxy.small_get.proxy.p50"),
        num(&rust, "proxy.small_get.http.p50"),
    );
    rows.add(
        "proxy_small_get_p50_ms",
        "small GET through beeline-proxy (keep-alive HTTP client) p50",
        px50,
        "ms",
        None,
    );
    rows.add(
        "proxy_http_small_get_p50_ms",
        "small GET straight to the home service, same client, p50",
        ht50,
        "ms",
        None,
    );
    rows.add(
        "proxy_small_get_ratio",
        "small GET: beeline-proxy p50 / straight to the home service p50",
        ratio(px50, ht50),
        "×",
        AtMost(2.0),
    );
    rows.add(
        "proxy_floor_ratio",
        "small GET: floor, (2 × straight p50 + 2-process transport echo p50) / straight p50",
        floor_ratio(
            ht50,
            ht50.zip(num(&rust, "transport.two_processes.echo_rtt.p50"))
                .map(|(http, echo)| http + echo),
        ),
        "×",
        None,
    );
    rows.note("the ratio if the proxy's hop cost one more plain request (a loopback HTTP round trip to a process) and the channel one process crossing, and beeline nothing else");
    let (pxd, rd) = (
        num(&rust, "proxy.download.median_mb_per_s"),
        num(&rust, "throughput.binary.down.median_mb_per_s"),
    );
    rows.add(
        "proxy_download_mb_per_s",
        "100 MB download through beeline-proxy, median",
        pxd,
        "MB/s",
        None,
    );
    rows.add(
        "proxy_download_vs_rust_client",
        "100 MB download: beeline-proxy / the Rust client (binary framing)",
        ratio(pxd, rd),
        "×",
        AtLeast(0.8),
    );

    // The normal path over the home link (issue 11).
    let (lk50, up50) = (
        num(&rust, "link.small_get.link.p50"),
        num(&rust, "link.small_get.upstream.p50"),
    );
    rows.add(
        "link_relay_small_get_p50_ms",
        "small GET, normal path over the home link, p50",
        lk50,
        "ms",
        None,
    );
    rows.add(
        "upstream_relay_small_get_p50_ms",
        "small GET, normal path to --relay-upstream, same client, p50",
        up50,
        "ms",
        None,
    );
    rows.add(
        "link_relay_ratio",
        "small GET: home link p50 / --relay-upstream p50",
        ratio(lk50, up50),
        "×",
        AtMost(1.2),
    );
    rows.add(
        "link_relay_floor_ratio",
        "small GET: floor, (--relay-upstream p50 + plain WebSocket round trip p50) / --relay-upstream p50",
        floor_ratio(up50, num(&rust, "websocket.message_rtt.plain.p50")),
        "×",
        None,
    );
    rows.note("the ratio if the home link added one WebSocket crossing (signal-api to home-peer) and nothing else");
    let (lkd, upd) = (
        num(&rust, "link.download.link.mb_per_s"),
        num(&rust, "link.download.upstream.mb_per_s"),
    );
    rows.add(
        "link_download_mb_s",
        "100 MB download, normal path over the home link",
        lkd,
        "MB/s",
        None,
    );
    rows.add(
        "link_relay_download_mb_s",
        "100 MB download, normal path to --relay-upstream",
        upd,
        "MB/s",
        None,
    );
    rows.add(
        "link_download_cpu_s",
        "100 MB over the home link: CPU of signal-api + home-peer",
        num(&rust, "link.download.link.signal_api_cpu_secs")
            .zip(num(&rust, "link.download.link.home_peer_cpu_secs"))
            .map(|(signal, home)| signal + home),
        "CPU-s",
        None,
    );
    rows.add(
        "link_relay_download_cpu_s",
        "100 MB to --relay-upstream: CPU of signal-api",
        num(&rust, "link.download.upstream.signal_api_cpu_secs"),
        "CPU-s",
        None,
    );
    rows.add(
        "link_websocket_kb",
        "memory per relayed WebSocket over the home link (signal-api + home-peer), 200 open",
        num(&rust, "link.websockets.link.kb_per_socket"),
        "KB",
        None,
    );
    rows.add(
        "relay_websocket_kb",
        "memory per relayed WebSocket to --relay-upstream (signal-api), 200 open",
        num(&rust, "link.websockets.upstream.kb_per_socket"),
        "KB",
        None,
    );

    // Live migration (issue 11): a 20 ms event stream moving between the
    // home link and a resume data channel.
    rows.add(
        "handoff_largest_gap_p99_ms",
        "handoff pause: largest gap in a 20 ms-spaced stream across a link<->channel switch, p99 of 40",
        num(&rust, "handoff.largest_gap_ms.p99"),
        "ms",
        AtMost(50.0),
    );

    // WebSockets (issue 11).
    let (wc50, wp50) = (
        num(&rust, "websocket.message_rtt.channel.p50"),
        num(&rust, "websocket.message_rtt.plain.p50"),
    );
    rows.add(
        "websocket_channel_rtt_p50_ms",
        "WebSocket message round trip over the channel, p50",
        wc50,
        "ms",
        None,
    );
    rows.add(
        "websocket_plain_rtt_p50_ms",
        "WebSocket message round trip straight to the home service, p50",
        wp50,
        "ms",
        None,
    );
    rows.add(
        "websocket_rtt_ratio",
        "WebSocket message round trip: channel p50 / plain p50",
        ratio(wc50, wp50),
        "×",
        AtMost(1.5),
    );
    rows.add(
        "websocket_floor_ratio",
        "WebSocket message round trip: floor, (plain p50 + 2-process transport echo p50) / plain p50",
        floor_ratio(wp50, num(&rust, "transport.two_processes.echo_rtt.p50")),
        "×",
        None,
    );
    rows.note("the ratio if beeline added one process crossing over the channel and nothing else");

    // Near vs far.
    let far_note = match args.far_delay.as_str() {
        "netem" => "125 ms one-way by tc netem".to_owned(),
        "proxy" => {
            "kernel has no sch_netem: 125 ms one-way by a userspace TCP delay proxy".to_owned()
        }
        "" => String::new(),
        other => other.to_owned(),
    };
    for (who, v) in [("rust", &far_rust), ("chromium", &far_chromium)] {
        let name = if who == "rust" { "Rust" } else { "Chromium" };
        let (d, r) = (num(v, "rtt.direct.p50"), num(v, "rtt.relay.p50"));
        rows.add(
            &format!("far_{who}_direct_rtt_p50_ms"),
            &format!("near/far, {name}: direct round trip p50"),
            d,
            "ms",
            None,
        );
        rows.add(
            &format!("far_{who}_relay_rtt_p50_ms"),
            &format!("near/far, {name}: relay round trip p50"),
            r,
            "ms",
            None,
        );
        rows.add(
            &format!("far_{who}_rtt_speedup"),
            &format!("near/far, {name}: relay / direct round trip"),
            ratio(r, d),
            "×",
            AtLeast(50.0),
        );
        rows.note(far_note.clone());
        let (fd, fr) = (
            num(v, "first_token.direct.p50"),
            num(v, "first_token.relay.p50"),
        );
        rows.add(
            &format!("far_{who}_first_token_speedup"),
            &format!("near/far, {name}: relay / direct first token"),
            ratio(fr, fd),
            "×",
            AtLeast(50.0),
        );
    }

    // The transport alone (no signaling, bridge or upstream), for attribution,
    // on both stacks in the same phase (medians of alternating rounds).
    for (key, name, echo_goal, switch_goal, mbps_goal) in [
        ("v017", "0.17", None, None, None),
        (
            "sansio",
            "sans-I/O",
            AtMost(0.06),
            AtMost(3.0),
            AtLeast(70.0),
        ),
    ] {
        let id = key;
        rows.add(
            &format!("transport_{id}_echo_rtt_p50_ms"),
            &format!("transport alone, {name} stack (2 peers, 1 process): 64 B echo p50"),
            num(&rust, &format!("transport.{key}.echo_rtt.p50")),
            "ms",
            echo_goal,
        );
        rows.add(
            &format!("transport_{id}_echo_context_switches"),
            &format!("transport alone, {name}: thread switches per echo round trip"),
            num(
                &rust,
                &format!("transport.{key}.echo_context_switches_per_round_trip"),
            ),
            "switches",
            switch_goal,
        );
        rows.add(
            &format!("transport_{id}_one_way_mb_per_s"),
            &format!("transport alone, {name}: 100 MB one way, 64 KiB messages"),
            num(&rust, &format!("transport.{key}.throughput.mb_per_s")),
            "MB/s",
            mbps_goal,
        );
    }
    rows.add(
        "transport_two_processes_echo_rtt_p50_ms",
        "transport alone, default stack, 2 processes: 64 B echo p50",
        num(&rust, "transport.two_processes.echo_rtt.p50"),
        "ms",
        None,
    );
    rows.add(
        "transport_sansio_over_017_one_way",
        "transport alone: sans-I/O / 0.17 one-way throughput",
        ratio(
            num(&rust, "transport.sansio.throughput.mb_per_s"),
            num(&rust, "transport.v017.throughput.mb_per_s"),
        ),
        "×",
        AtLeast(2.0),
    );
    rows.add(
        "chromium_floor_one_way_mb_per_s",
        "Chromium↔Chromium, same page: 100 MB one way, 64 KiB messages (Chromium's floor)",
        num(&chromium, "chromium_throughput.mb_per_s"),
        "MB/s",
        None,
    );
    let floor = num(&chromium, "chromium_throughput.mb_per_s");
    rows.add(
        "chromium_download_vs_floor",
        "100 MB download, Chromium, binary / Chromium↔Chromium (medians, same run)",
        ratio(
            num(&chromium, "throughput.binary.down.median_mb_per_s"),
            floor,
        ),
        "×",
        AtLeast(0.9),
    );
    rows.add(
        "chromium_upload_vs_floor",
        "100 MB upload, Chromium, binary / Chromium↔Chromium (medians, same run)",
        ratio(
            num(&chromium, "throughput.binary.up.median_mb_per_s"),
            floor,
        ),
        "×",
        None,
    );
    rows.add(
        "chromium_floor_cpu_secs",
        "Chromium↔Chromium 100 MB: Chromium's CPU time (both ends)",
        num(&chromium, "chromium_throughput.chromium_and_node_cpu_secs"),
        "CPU-s",
        None,
    );
    rows.add(
        "parallel_rust_binary_down_mb_per_s",
        "3 connections downloading 100 MB in all at once, Rust, binary: aggregate",
        num(&rust, "parallel.mb_per_s"),
        "MB/s",
        None,
    );
    rows.add(
        "udp_drops_rust_binary_down",
        "100 MB download, Rust, binary: UDP datagrams dropped at a full receive buffer",
        num(&rust, "throughput.binary.down.runs.0.udp_rcvbuf_errors"),
        "packets",
        None,
    );
    rows.add(
        "udp_drops_parallel",
        "3 connections at once: UDP datagrams dropped at a full receive buffer",
        num(&rust, "parallel.udp_rcvbuf_errors"),
        "packets",
        None,
    );
    rows.add(
        "throughput_rust_binary_down_home_cpu_secs",
        "100 MB download, Rust, binary: home-peer CPU time",
        num(&rust, "throughput.binary.down.runs.0.home_peer_cpu_secs"),
        "CPU-s",
        None,
    );
    rows.add(
        "throughput_chromium_binary_down_home_cpu_secs",
        "100 MB download, Chromium, binary: home-peer CPU time",
        num(
            &chromium,
            "throughput.binary.down.runs.0.home_peer_cpu_secs",
        ),
        "CPU-s",
        None,
    );
    rows.add(
        "throughput_chromium_binary_down_chromium_cpu_secs",
        "100 MB download, Chromium, binary: Chromium's CPU time",
        num(
            &chromium,
            "throughput.binary.down.runs.0.chromium_and_node_cpu_secs",
        ),
        "CPU-s",
        None,
    );

    rows.add(
        "throughput_rust_binary_down_frames_per_mb",
        "100 MB download, Rust, binary: frames received per MB",
        num(&rust, "throughput.binary.down.runs.0.messages_per_mb"),
        "frames",
        None,
    );

    // Memory.
    rows.add(
        "memory_home_peer_idle_mb",
        "home-peer RSS, idle",
        num(&rust, "memory.idle_mb"),
        "MB",
        AtMost(20.0),
    );
    let conns = num(&rust, "memory.connections").unwrap_or(0.0);
    rows.add(
        "memory_home_peer_per_connection_mb",
        &format!("home-peer RSS per open peer connection ({conns} open)"),
        num(&rust, "memory.per_connection_mb"),
        "MB",
        AtMost(1.0),
    );

    // Size.
    rows.add(
        "size_transport_delta_mb",
        "size: transport-only example − baseline (size profile)",
        num(&size, "delta_mb"),
        "MB",
        AtMost(1.3),
    );
    rows.add(
        "size_transport_delta_without_turn_tls_mb",
        "size: the same without the turn-tls feature (no TURN over TLS)",
        num(&size, "delta_without_turn_tls_mb"),
        "MB",
        Goal::None,
    );
    if let Some(src) = size.get("source").and_then(Value::as_str) {
        rows.note(src.to_owned());
    }

    // Signaling.
    rows.add(
        "signaling_posts_per_s",
        "signaling: posts/s (16 connections)",
        num(&signal, "posts_per_sec"),
        "/s",
        AtLeast(2000.0),
    );
    rows.add(
        "signaling_wake_p99_ms",
        "signaling: long-poll wake p99",
        num(&signal, "wake_latency_p99_ms"),
        "ms",
        AtMost(5.0),
    );
    rows.add(
        "signaling_rss_1000_polls_mb",
        "signaling: signal-api RSS at 1,000 waiting polls",
        num(&signal, "rss_waiting_mb"),
        "MB",
        AtMost(100.0),
    );
    // Three instances sharing PostgreSQL (absent when it is not installed).
    rows.add(
        "signaling_pg_posts_per_s",
        "signaling, 3 instances on PostgreSQL: posts/s",
        num(&signal, "postgres.posts_per_sec"),
        "/s",
        AtLeast(5000.0),
    );
    rows.add(
        "signaling_pg_cross_wake_p99_ms",
        "signaling, 3 instances on PostgreSQL: cross-instance wake p99",
        num(&signal, "postgres.cross_wake_latency_p99_ms"),
        "ms",
        AtMost(10.0),
    );
    rows.add(
        "signaling_pg_rss_1000_polls_mb",
        "signaling, 3 instances on PostgreSQL: instance RSS at 1,000 waiting polls",
        num(&signal, "postgres.instance_rss_waiting_mb"),
        "MB",
        AtMost(100.0),
    );

    let meta = meta(&args);
    print_table(&rows, &meta);

    // report.json: one key per figure.
    let mut figures = serde_json::Map::new();
    for r in &rows.0 {
        let value = r.value.filter(|v| v.is_finite());
        let mut f = json!({"value": value, "unit": r.unit, "label": r.label});
        if !matches!(r.goal, Goal::None) {
            f["goal"] = json!(r.goal_text());
            f["met"] = json!(r.met());
        }
        if !r.note.is_empty() {
            f["note"] = json!(r.note);
        }
        figures.insert(r.key.clone(), f);
    }
    let report = json!({"meta": meta, "figures": figures});
    crate::loopback::write(&dir.join("report.json"), &report)?;

    // Chart.
    let svg = chart::latency_svg(&rust, &chromium, &far_rust, &far_chromium, &args.far_delay);
    let chart_path = dir.join("latency.svg");
    std::fs::write(&chart_path, &svg)?;
    eprintln!("bench: wrote {}", chart_path.display());
    if let Some(copy) = &args.chart_copy {
        if let Some(parent) = copy.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(copy, &svg)?;
    }
    if let Some(readme) = &args.readme {
        update_readme(readme, &rows, &meta, args.chart_copy.as_deref())?;
    }
    Ok(())
}

fn meta(args: &ReportArgs) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    json!({
        "date": today(),
        "machine": format!("{cores} cores ({cpu}), {mem_gb:.0} GB RAM, Linux {kernel}"),
        "far_delay": args.far_delay,
        "elapsed_secs": args.elapsed_secs,
        "load_average_at_start": args.load_at_start,
        "load_average_at_end": std::fs::read_to_string("/proc/loadavg").ok().map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
    })
}

/// Today's UTC date as YYYY-MM-DD (civil-from-days, no date crate).
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn print_table(rows: &Rows, meta: &Value) {
    let w = rows
        .0
        .iter()
        .map(|r| r.label.chars().count())
        .max()
        .unwrap_or(10);
    println!();
    println!(
        "beeline bench — {} — {}",
        meta["date"].as_str().unwrap_or(""),
        meta["machine"].as_str().unwrap_or("")
    );
    println!(
        "load average at start: {}, at end: {}",
        meta["load_average_at_start"].as_str().unwrap_or("?"),
        meta["load_average_at_end"].as_str().unwrap_or("?")
    );
    println!();
    println!(
        "| {:<w$} | {:>14} | {:>9} | {:<7} |",
        "figure", "value", "goal", "met"
    );
    println!(
        "|{:-<a$}|{:-<16}|{:-<11}|{:-<9}|",
        "",
        "",
        "",
        "",
        a = w + 2
    );
    for r in &rows.0 {
        println!(
            "| {:<w$} | {:>14} | {:>9} | {:<7} |",
            r.label,
            r.value_text(),
            r.goal_text(),
            r.met_text()
        );
    }
    for n in rows.notes() {
        println!("  note — {n}");
    }
    let (met, missed, na) = rows
        .0
        .iter()
        .fold((0, 0, 0), |(m, x, n), r| match (r.goal, r.met()) {
            (Goal::None, _) => (m, x, n),
            (_, Some(true)) => (m + 1, x, n),
            (_, Some(false)) => (m, x + 1, n),
            (_, None) => (m, x, n + 1),
        });
    println!();
    println!("goals met: {met}, not met: {missed}, not measured: {na}");
}

const START: &str = "<!-- bench:start -->";
const END: &str = "<!-- bench:end -->";

fn update_readme(path: &Path, rows: &Rows, meta: &Value, chart: Option<&Path>) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut section = String::new();
    section.push_str(START);
    section.push('\n');
    section.push_str("## Benchmarks\n\n");
    section.push_str(&format!(
        "Latest `just bench` run: {} on {} (shared machine; load average {} at start, {} at end). \
         Method, causes of misses and options: [docs/performance.md](docs/performance.md).\n\n",
        meta["date"].as_str().unwrap_or(""),
        meta["machine"].as_str().unwrap_or(""),
        meta["load_average_at_start"].as_str().unwrap_or("?"),
        meta["load_average_at_end"].as_str().unwrap_or("?"),
    ));
    section.push_str("| figure | value | goal | met |\n|---|---:|---:|---|\n");
    for r in &rows.0 {
        section.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            r.label,
            r.value_text(),
            r.goal_text(),
            r.met_text()
        ));
    }
    let notes: Vec<String> = rows.notes().map(|n| format!("- {n}")).collect();
    if !notes.is_empty() {
        section.push('\n');
        section.push_str(&notes.join("\n"));
        section.push('\n');
    }
    if let Some(chart) = chart {
        let rel = chart
            .strip_prefix(path.parent().unwrap_or(Path::new("")))
            .unwrap_or(chart);
        section.push_str(&format!(
            "\n![Latency distributions: direct vs relay vs plain HTTP]({})\n",
            rel.display()
        ));
    }
    section.push_str(END);
    let updated = match (text.find(START), text.find(END)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{}{}", &text[..a], section, &text[b + END.len()..])
        }
        _ => format!("{}\n\n{}\n", text.trim_end(), section),
    };
    std::fs::write(path, updated)?;
    eprintln!("bench: updated {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_is_a_date() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }

    #[test]
    fn goals() {
        let r = Row {
            key: "k".into(),
            label: "l".into(),
            value: Some(2.0),
            unit: "ms",
            goal: Goal::AtMost(1.0),
            note: String::new(),
        };
        assert_eq!(r.met(), Some(false));
        let r = Row {
            value: Some(f64::NAN),
            ..r
        };
        assert_eq!(r.met(), None);
        assert_eq!(r.value_text(), "not measured");
    }

    #[test]
    fn counts_print_without_decimals() {
        assert_eq!(fmt(0.0), "0");
        assert_eq!(fmt(12.0), "12");
        assert_eq!(fmt(0.527), "0.527");
        assert_eq!(fmt(21.24), "21.2");
        assert_eq!(fmt(10555.4), "10555");
    }
}
