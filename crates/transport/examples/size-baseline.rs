//! `size-baseline`: the baseline `just size` measures `dc-echo` against. The
//! same tokio runtime, stdin/stdout line plumbing and log set-up (a
//! `tracing-subscriber` with an `EnvFilter`, as dc-echo has), echoing lines
//! instead of running a WebRTC peer, so the size difference is what the
//! transport costs.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    while let Ok(Some(line)) = lines.next_line().await {
        let _ = out.write_all(format!("{line}\n").as_bytes()).await;
        let _ = out.flush().await;
    }
    let _ = tokio::net::UdpSocket::bind("127.0.0.1:0").await;
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    tracing::info!("done");
}
