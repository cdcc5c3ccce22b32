//! `size-baseline`: the baseline `just size` measures `dc-echo` against. The
//! same tokio runtime and stdin/stdout line plumbing, echoing lines instead
//! of running a WebRTC peer, so the size difference is what the transport
//! costs.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::main]
async fn main() {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    while let Ok(Some(line)) = lines.next_line().await {
        let _ = out.write_all(format!("{line}\n").as_bytes()).await;
        let _ = out.flush().await;
    }
    let _ = tokio::net::UdpSocket::bind("127.0.0.1:0").await;
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    eprintln!("done");
}
