//! `dc-echo`: a data-channel echo peer using only beeline-transport.
//!
//! It signals over stdin/stdout (see `support/signal.rs`) and echoes every
//! message on every data channel, text as text and binary as binary. It is
//! the peer the interop and NAT tests drive, and the binary `just size`
//! measures.
//!
//! ```text
//! dc-echo answer [ICE flags]               # waits for an offer on stdin
//! dc-echo offer [--open LABEL] [ICE flags] # prints an offer, waits for the answer
//! ```
//!
//! As an answerer, every later `sdp` line is an ICE-restart offer and is
//! answered. Status lines (`state ...`, `pair ...`) go to stderr. It exits
//! when stdin closes or the remote closes the connection (0), or when the
//! connection fails (1).

#[path = "support/signal.rs"]
mod signal;

use std::sync::Arc;

use beeline_transport::{DataChannel, Peer, PeerState};
use signal::{Signal, SignalIn};

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let config = match signal::peer_config(&mut args) {
        Ok(c) => c,
        Err(e) => fail(&e),
    };
    let role = args.first().cloned().unwrap_or_default();
    let open = args
        .iter()
        .position(|a| a == "--open")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let mut input = SignalIn::stdin();

    let peer = match role.as_str() {
        "answer" => {
            let offer = loop {
                match input.next().await {
                    Some(Signal::Sdp(sdp)) => break sdp,
                    Some(_) => continue,
                    None => return,
                }
            };
            let (peer, answer) = Peer::answer(config, &offer).await.unwrap_or_else(|e| fail(&e.to_string()));
            signal::send(Signal::Sdp(answer)).await;
            peer
        }
        "offer" => {
            let (peer, offer) = Peer::offer(config).await.unwrap_or_else(|e| fail(&e.to_string()));
            signal::send(Signal::Sdp(offer)).await;
            peer
        }
        _ => fail("usage: dc-echo answer|offer [--open LABEL] [--allow CIDR].. [--stun URL] [--turn URL --turn-user U --turn-pass P] [--turn-ca FILE]"),
    };
    let peer = Arc::new(peer);
    let mut answered = role == "answer";

    {
        let peer = Arc::clone(&peer);
        tokio::spawn(async move { signal::trickle(&peer).await });
    }
    eprintln!("stack {}", peer.stack());
    tokio::spawn(report_state(Arc::clone(&peer)));
    {
        let peer = Arc::clone(&peer);
        tokio::spawn(async move {
            while let Some(channel) = peer.accept_channel().await {
                eprintln!("channel {}", channel.label());
                tokio::spawn(echo(channel));
            }
        });
    }
    if let Some(label) = open {
        let peer = Arc::clone(&peer);
        tokio::spawn(async move {
            match peer.open_channel(&label).await {
                Ok(channel) => {
                    eprintln!("opened {label}");
                    echo(channel).await;
                }
                Err(e) => eprintln!("error opening {label}: {e}"),
            }
        });
    }

    while let Some(signal) = input.next().await {
        match signal {
            Signal::Candidate(c) => {
                if let Err(e) = peer.add_remote_candidate(&c) {
                    eprintln!("error: bad candidate {c:?}: {e}");
                }
            }
            Signal::EndOfCandidates => {}
            Signal::Sdp(sdp) if !answered => {
                answered = true;
                if let Err(e) = peer.apply_answer(&sdp) {
                    fail(&format!("bad answer: {e}"));
                }
            }
            Signal::Sdp(sdp) => {
                // An ICE restart: answer it, then trickle the new candidates.
                let result = if role == "answer" {
                    peer.apply_restart_offer(&sdp).await
                } else {
                    peer.apply_answer(&sdp).map(|()| String::new())
                };
                match result {
                    Ok(answer) if !answer.is_empty() => {
                        eprintln!("restarted ICE");
                        signal::send(Signal::Sdp(answer)).await;
                        let peer = Arc::clone(&peer);
                        tokio::spawn(async move { signal::trickle(&peer).await });
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("error: restart: {e}"),
                }
            }
        }
    }
    peer.close().await;
}

async fn echo(channel: DataChannel) {
    while let Some(m) = channel.recv().await {
        let sent = if m.is_text {
            channel.send_text(&String::from_utf8_lossy(&m.data)).await
        } else {
            channel.send_binary(m.data).await
        };
        if let Err(e) = sent {
            eprintln!("error: echo on {}: {e}", channel.label());
            return;
        }
    }
}

async fn report_state(peer: Arc<Peer>) {
    let mut state = peer.state();
    loop {
        let s = *state.borrow_and_update();
        eprintln!("state {s:?}");
        if s == PeerState::Connected {
            if let Some(p) = peer.selected_pair() {
                eprintln!(
                    "pair {:?} {} -> {:?} {}",
                    p.local, p.local_addr, p.remote, p.remote_addr
                );
            }
        }
        if s == PeerState::Failed {
            if let Err(e) = peer.connected().await {
                eprintln!("failed: {e}");
            }
            std::process::exit(1);
        }
        if s == PeerState::Closed {
            // The remote closed it (the sans-I/O stack says so with a DTLS
            // close_notify; the 0.17 stack's remote goes Failed instead).
            std::process::exit(0);
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

fn fail(why: &str) -> ! {
    eprintln!("dc-echo: {why}");
    std::process::exit(2)
}
