//! `beeline-bench`: the measuring instrument behind `just bench`.
//!
//! Subcommands (`scripts/bench.sh` runs them in order, inside the network
//! namespaces it creates):
//!
//! - `loopback`: memory, setup time, request round trips, streamed-token
//!   delay and throughput with the Rust client, then the same with headless
//!   Chromium (`tests/bench/chromium.mjs`), against real `signal-api` and
//!   `home-peer` processes on loopback;
//! - `far`: near vs far across three namespaces, the relay path crossing a
//!   link with 125 ms one-way delay (`far-client` is its browser side);
//! - `report`: one table with goal and met/not met per row,
//!   `target/bench/report.json`, the latency chart, the README section;
//! - `upstream`, `delay-proxy`: the home service the benchmarks call and
//!   the userspace stand-in for `tc netem`.
//!
//! All WebRTC traffic stays on loopback or inside the bench's namespaces:
//! every peer runs with an address filter, and every load loop is bounded in
//! count and in time.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod chart;
mod client;
mod echo_peer;
mod far;
mod live;
mod local_proxy;
mod loopback;
mod measure;
mod procs;
mod proxy;
mod report;
mod stats;
mod transport;
mod upstream;

#[derive(Parser, Debug)]
#[command(version, about = "beeline's benchmark suite (`just bench`)")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Loopback figures with the Rust client, then Chromium.
    Loopback(loopback::LoopbackArgs),
    /// Near vs far across the bench's network namespaces.
    Far(far::FarArgs),
    /// The browser side of `far` (runs inside the browser namespace).
    FarClient(far::FarClientArgs),
    /// Print the table; write report.json, the chart and the README section.
    Report(report::ReportArgs),
    /// Serve the bench's home service.
    Upstream {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Forward TCP with a fixed delay each way.
    DelayProxy {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 125)]
        delay_ms: u64,
    },
    /// The answering side of the two-process transport echo (started by
    /// `loopback`'s transport phase; signals over stdin and stdout).
    #[command(hide = true)]
    EchoPeer {
        #[arg(long = "allow-ip", required = true)]
        allow_ip: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "warn,webrtc_ice=error,webrtc_sctp=error,webrtc_data=error,dtls=error".into()
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Everything runs in a task on the runtime's workers, as an embedder's
    // code does, not on the thread parked in `block_on`: every wake-up of
    // that thread would otherwise count against what is measured (it was
    // 2–3 of the 3.5–5.9 thread switches per transport echo).
    let result = runtime.block_on(async move {
        let work = tokio::spawn(async move {
            match args.command {
                Command::Loopback(a) => loopback::run(a).await,
                Command::Far(a) => far::run(a).await,
                Command::FarClient(a) => far::client_run(a).await,
                Command::Report(a) => report::run(a),
                Command::Upstream { listen } => upstream::run(listen).await,
                Command::DelayProxy {
                    listen,
                    to,
                    delay_ms,
                } => proxy::run(listen, to, Duration::from_millis(delay_ms)).await,
                Command::EchoPeer { allow_ip } => echo_peer::serve(allow_ip).await,
            }
        });
        work.await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("the bench task ended: {e}")))
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("beeline-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
