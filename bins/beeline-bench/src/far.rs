//! Near vs far: three network namespaces made by `tests/bench/netns.sh`.
//!
//! ```text
//!   browser ns ──10.77.1.0/24 (direct, no delay)──────────── home ns
//!       │                                                   │
//!   10.77.2.0/24 (125 ms each way)                    10.77.3.0/24
//!       │                                                   │
//!       └──────────────────── vps ns ───────────────────────┘
//!                    signal-api (+ relay to the home service)
//! ```
//!
//! The relay path (browser → signal-api relay → home service) crosses the
//! slow link; the direct path (browser → data channel → home-peer → home
//! service) does not. ICE is confined to 10.77.1.0/24 on both sides. The
//! delay is `tc netem` on the browser–vps veth pair when the kernel has it,
//! otherwise this crate's userspace delay proxy in front of signal-api
//! (reported as such).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use beeline_bridge::ClientOptions;
use beeline_frame::v2::RequestHead;
use beeline_signal_client::SignalClient;
use futures::StreamExt as _;
use serde_json::{json, Value};

use crate::client::{self, filter};
use crate::loopback::write;
use crate::measure;
use crate::procs::{start_home_peer, start_signal_api, start_upstream, Bins, Proc};
use crate::stats::Samples;

/// Orchestrates the near/far run from the root namespace.
#[derive(Debug, clap::Args)]
pub(crate) struct FarArgs {
    /// Directory with the release binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
    /// Namespace names (made by tests/bench/netns.sh).
    #[arg(long)]
    ns_browser: String,
    #[arg(long)]
    ns_vps: String,
    #[arg(long)]
    ns_home: String,
    /// How the 125 ms delay is applied: `netem` (already on the veth pair)
    /// or `proxy` (start the userspace delay proxy).
    #[arg(long, value_parser = ["netem", "proxy"])]
    delay: String,
    /// One-way delay of the far link, for the proxy.
    #[arg(long, default_value_t = 125)]
    delay_ms: u64,
    /// The Chromium script; none skips Chromium.
    #[arg(long)]
    chromium_script: Option<PathBuf>,
}

const VPS_ON_BROWSER_LINK: &str = "10.77.2.2";
const VPS_ON_HOME_LINK: &str = "10.77.3.1";
const HOME_ON_VPS_LINK: &str = "10.77.3.2";
const DIRECT_NET: &str = "10.77.1.0/24";
const SIGNAL_PORT: u16 = 18000;
const PROXY_PORT: u16 = 18001;
const UPSTREAM_PORT: u16 = 18080;

pub(crate) async fn run(args: FarArgs) -> Result<()> {
    let bins = Bins {
        dir: args.bin_dir.clone(),
    };
    std::fs::create_dir_all(&args.out_dir)?;
    let db = tempfile::tempdir()?;
    let (_upstream, _) = start_upstream(Some(&args.ns_home), &format!("0.0.0.0:{UPSTREAM_PORT}"))?;
    let (_signal, _) = start_signal_api(
        &bins,
        Some(&args.ns_vps),
        &format!("0.0.0.0:{SIGNAL_PORT}"),
        Some(&format!("http://{HOME_ON_VPS_LINK}:{UPSTREAM_PORT}")),
        db.path(),
    )?;
    let (_proxy, origin) = if args.delay == "proxy" {
        let mut p = Proc::spawn(
            "delay-proxy",
            Some(&args.ns_vps),
            &Bins::this()?,
            &[
                "delay-proxy".into(),
                "--listen".into(),
                format!("{VPS_ON_BROWSER_LINK}:{PROXY_PORT}"),
                "--to".into(),
                format!("127.0.0.1:{SIGNAL_PORT}"),
                "--delay-ms".into(),
                args.delay_ms.to_string(),
            ],
        )?;
        p.wait_for("listening on ")?;
        (
            Some(p),
            format!("http://{VPS_ON_BROWSER_LINK}:{PROXY_PORT}"),
        )
    } else {
        (None, format!("http://{VPS_ON_BROWSER_LINK}:{SIGNAL_PORT}"))
    };
    let _home = start_home_peer(
        &bins,
        Some(&args.ns_home),
        &format!("http://{VPS_ON_HOME_LINK}:{SIGNAL_PORT}/webrtc"),
        &format!("http://127.0.0.1:{UPSTREAM_PORT}"),
        DIRECT_NET,
    )?;

    eprintln!(
        "bench: near vs far with the Rust client (delay by {})…",
        args.delay
    );
    let out_rust = args.out_dir.join("far-rust.json");
    let status = tokio::process::Command::new("ip")
        .args(["netns", "exec", &args.ns_browser])
        .arg(Bins::this()?)
        .args([
            "far-client",
            "--origin",
            &origin,
            "--allow-ip",
            DIRECT_NET,
            "--delay",
            &args.delay,
            "--out",
        ])
        .arg(&out_rust)
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(Duration::from_secs(180), status).await {
        Ok(Ok(s)) if s.success() => {}
        Ok(s) => eprintln!("bench: far-client failed: {s:?}"),
        Err(_) => eprintln!("bench: far-client ran past its budget"),
    }

    if let Some(script) = &args.chromium_script {
        eprintln!("bench: near vs far with Chromium…");
        let outfile = args.out_dir.join("far-chromium.json");
        let _ = std::fs::remove_file(&outfile);
        // node itself must run in the browser namespace.
        let wrapper = args.out_dir.join("far-node.sh");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec ip netns exec {} node \"$@\"\n",
                args.ns_browser
            ),
        )?;
        set_exec(&wrapper)?;
        let extra = [
            ("--origin", origin.clone()),
            ("--out", outfile.display().to_string()),
            ("--delay", args.delay.clone()),
        ];
        run_node_via(&wrapper, script, &extra).await?;
    }
    Ok(())
}

fn set_exec(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

async fn run_node_via(
    wrapper: &std::path::Path,
    script: &std::path::Path,
    extra: &[(&str, String)],
) -> Result<()> {
    let mut cmd = tokio::process::Command::new(wrapper);
    cmd.arg(script).args(["--mode", "far"]);
    for (k, v) in extra {
        cmd.arg(k).arg(v);
    }
    cmd.kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .context("starting node in the browser namespace")?;
    match tokio::time::timeout(Duration::from_secs(240), child.wait()).await {
        Ok(Ok(s)) if s.success() => {}
        other => eprintln!("bench: the Chromium far run failed: {other:?}"),
    }
    Ok(())
}

/// The browser side of the near/far run (inside the browser namespace).
#[derive(Debug, clap::Args)]
pub(crate) struct FarClientArgs {
    /// The page origin as the browser reaches it (signal-api, across the far link).
    #[arg(long)]
    origin: String,
    /// ICE allow-list.
    #[arg(long)]
    allow_ip: Vec<String>,
    /// Recorded in the output.
    #[arg(long)]
    delay: String,
    #[arg(long)]
    out: PathBuf,
}

pub(crate) async fn client_run(args: FarClientArgs) -> Result<()> {
    let signal = SignalClient::new(&format!("{}/webrtc", args.origin))?;
    let filter = filter(&args.allow_ip)?;
    let http = measure::http_client();

    // The relay path must work before anything is timed (home-peer is up).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http
            .get(format!("{}/bench/small", args.origin))
            .send()
            .await
        {
            if r.status().is_success() {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("the relay path does not answer");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut setup = Samples::default();
    for _ in 0..3 {
        let conn = client::connect(&signal, &filter, ClientOptions::default()).await?;
        setup.push(conn.times.agree_ms);
        conn.close().await;
    }
    let conn = client::connect(&signal, &filter, ClientOptions::default()).await?;
    let rt = measure::round_trips(
        &conn.client,
        None,
        Some(&args.origin),
        5,
        30,
        Duration::from_secs(60),
    )
    .await?;

    // First token: from sending the request to the first SSE event.
    let (mut first_direct, mut first_relay) = (Samples::default(), Samples::default());
    for _ in 0..10 {
        let t = Instant::now();
        let head = RequestHead {
            method: "GET".into(),
            path: "/bench/sse?n=2&interval_ms=5".into(),
            ..Default::default()
        };
        let mut r = conn.client.send(head, None).await?;
        if r.body.next().await.transpose()?.is_some() {
            first_direct.push(t.elapsed().as_secs_f64() * 1e3);
        }
        while r.body.next().await.is_some() {}
        let t = Instant::now();
        let r = http
            .get(format!("{}/bench/sse?n=2&interval_ms=5", args.origin))
            .send()
            .await?;
        let mut body = r.bytes_stream();
        if body.next().await.transpose()?.is_some() {
            first_relay.push(t.elapsed().as_secs_f64() * 1e3);
        }
        while body.next().await.is_some() {}
    }
    conn.close().await;
    let value: Value = json!({
        "delay": args.delay,
        "setup_ms": setup.summary(),
        "rtt": {"direct": rt.channel.summary(), "relay": rt.relay.summary(), "samples": {"direct": rt.channel.0, "relay": rt.relay.0}},
        "first_token": {"direct": first_direct.summary(), "relay": first_relay.summary()},
    });
    write(&args.out, &value)
}
