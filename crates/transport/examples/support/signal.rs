//! What the examples share: ICE flags turned into a `PeerConfig`, and a
//! line protocol for signaling over stdin/stdout, so that a test harness (or
//! two pipes) can connect two processes.
//!
//! Lines, both ways:
//! - `sdp <description>` with every CRLF written as the two characters `\n`;
//! - `candidate <candidate:...>` for a trickled candidate;
//! - `end-of-candidates` when gathering is done.
//!
//! Everything else an example prints goes to stderr.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use beeline_transport::{AddressFilter, IceServer, Peer, PeerConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, Stdin};

/// A signaling message.
#[derive(Debug)]
pub enum Signal {
    Sdp(String),
    Candidate(String),
    EndOfCandidates,
}

/// Reads signaling lines from stdin.
pub struct SignalIn(Lines<BufReader<Stdin>>);

impl SignalIn {
    pub fn stdin() -> Self {
        Self(BufReader::new(tokio::io::stdin()).lines())
    }

    /// The next message; `None` at end of input. Unknown lines are skipped.
    pub async fn next(&mut self) -> Option<Signal> {
        loop {
            let line = self.0.next_line().await.ok()??;
            let line = line.trim_end();
            if let Some(sdp) = line.strip_prefix("sdp ") {
                return Some(Signal::Sdp(sdp.replace("\\n", "\r\n")));
            }
            if let Some(c) = line.strip_prefix("candidate ") {
                return Some(Signal::Candidate(c.to_owned()));
            }
            if line == "end-of-candidates" {
                return Some(Signal::EndOfCandidates);
            }
        }
    }
}

/// Writes one signaling line to stdout.
pub async fn send(signal: Signal) {
    let line = match signal {
        Signal::Sdp(sdp) => format!("sdp {}\n", sdp.replace("\r\n", "\\n")),
        Signal::Candidate(c) => format!("candidate {c}\n"),
        Signal::EndOfCandidates => "end-of-candidates\n".to_owned(),
    };
    let mut out = tokio::io::stdout();
    let _ = out.write_all(line.as_bytes()).await;
    let _ = out.flush().await;
}

/// Trickles `peer`'s remaining candidates of the current ICE generation.
pub async fn trickle(peer: &Peer) {
    while let Some(c) = peer.next_local_candidate().await {
        send(Signal::Candidate(c.candidate)).await;
    }
    send(Signal::EndOfCandidates).await;
}

/// Takes the ICE flags out of `args` and returns the config they describe:
/// `--allow CIDR` (repeatable; none allows everything), `--stun URL`,
/// `--turn URL --turn-user NAME --turn-pass SECRET`, `--turn-ca FILE` (PEM
/// CA certificates trusted for `turns:` servers; also `BEELINE_TURN_CA`),
/// `--max-message-size N`, `--gather-wait-ms N`, `--connect-timeout-ms N`.
pub fn peer_config(args: &mut Vec<String>) -> Result<PeerConfig, String> {
    let mut config = PeerConfig::default();
    // The test suites pick the stack for every example they start.
    if let Ok(stack) = std::env::var("BEELINE_STACK") {
        config.stack = stack.parse().map_err(|e| format!("BEELINE_STACK: {e}"))?;
    }
    let mut filter = AddressFilter::allow_all();
    let mut turn = IceServer::default();
    let mut turn_ca = std::env::var("BEELINE_TURN_CA").ok();
    let mut rest = Vec::new();
    let mut it = std::mem::take(args).into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--allow" => {
                filter.allow_network(&value()?).map_err(|e| e.to_string())?;
            }
            "--stack" => config.stack = value()?.parse().map_err(|e| format!("--stack: {e}"))?,
            "--stun" => config.ice_servers.push(IceServer {
                urls: vec![value()?],
                ..Default::default()
            }),
            "--turn" => turn.urls.push(value()?),
            "--turn-user" => turn.username = Some(value()?),
            "--turn-pass" => turn.credential = Some(value()?),
            "--turn-ca" => turn_ca = Some(value()?),
            "--max-message-size" => {
                config.max_message_size = value()?.parse().map_err(|_| "bad --max-message-size")?;
            }
            "--gather-wait-ms" => {
                config.gather_wait =
                    Duration::from_millis(value()?.parse().map_err(|_| "bad --gather-wait-ms")?);
            }
            "--connect-timeout-ms" => {
                config.connect_timeout = Duration::from_millis(
                    value()?.parse().map_err(|_| "bad --connect-timeout-ms")?,
                );
            }
            _ => rest.push(flag),
        }
    }
    if !turn.urls.is_empty() {
        config.ice_servers.push(turn);
    }
    if let Some(path) = turn_ca {
        let pem = std::fs::read_to_string(&path).map_err(|e| format!("--turn-ca {path}: {e}"))?;
        config.turn_tls_roots.push(pem);
    }
    config.address_filter = filter;
    *args = rest;
    Ok(config)
}
