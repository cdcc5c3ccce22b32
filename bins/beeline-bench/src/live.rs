//! The `link` phase (issue 11): the normal path over home-peer's home link
//! against the normal path to `--relay-upstream`, side by side. A second
//! signal-api without an upstream and a second home-peer linked to it
//! serve the same home service as the loopback stack's relay; one
//! keep-alive HTTP client sends the small GETs to both, interleaved, so load
//! on the shared machine hits both alike. Then, over each path, a checked
//! download (with the CPU the relaying processes spend on it) and the
//! memory each relayed WebSocket holds while open.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::measure::{http_client, http_download};
use crate::procs::{
    cpu_secs, rss_mb, start_home_peer, start_signal_api, wait_home_link, Bins, Stack,
};
use crate::stats::Samples;

/// A signal-api with no `--relay-upstream` and a home-peer linked to it,
/// serving `upstream`: the deployment without a tunnel. Keep the guard.
struct Linked {
    url: String,
    signal: crate::procs::Proc,
    home: crate::procs::Proc,
    _db: tempfile::TempDir,
}

async fn linked_stack(bins: &Bins, upstream: &str) -> Result<Linked> {
    let db = tempfile::tempdir()?;
    let (signal, url) = start_signal_api(bins, None, "127.0.0.1:0", None, db.path())?;
    let home = start_home_peer(bins, None, &format!("{url}/webrtc"), upstream, "127.0.0.1")?;
    wait_home_link(&url).await?;
    Ok(Linked {
        url,
        signal,
        home,
        _db: db,
    })
}

pub(crate) async fn relay_link(
    bins: &Bins,
    stack: &Stack,
    round_trips: usize,
    transfer_bytes: usize,
) -> Result<Value> {
    let linked = linked_stack(bins, &stack.upstream_url).await?;
    let linked_url = linked.url.clone();

    let http = http_client();
    let (mut link, mut upstream) = (Samples::default(), Samples::default());
    let deadline = Instant::now() + Duration::from_secs(90);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for i in 0..(200 + round_trips) {
        if Instant::now() > deadline {
            break;
        }
        for (base, samples) in [(&linked_url, &mut link), (&stack.signal_url, &mut upstream)] {
            let t = Instant::now();
            let r = http.get(format!("{base}/bench/small")).send().await?;
            if !r.status().is_success() {
                bail!("GET {base}/bench/small answered {}", r.status());
            }
            r.bytes().await?;
            if i >= 200 {
                samples.push(ms(t.elapsed()));
            }
        }
    }
    // Bulk: the same download over both normal paths, one after the
    // other, with what the processes relaying it spent on it (signal-api,
    // then home-peer where there is one).
    let link_pids = [linked.signal.pid(), linked.home.pid()];
    let upstream_pids = [stack.signal_pid()];
    let paths: [(&str, &str, &[u32]); 2] = [
        ("link", &linked_url, &link_pids),
        ("upstream", &stack.signal_url, &upstream_pids),
    ];
    let mut downloads = serde_json::Map::new();
    for (name, base, pids) in paths {
        eprintln!(
            "bench: {} MB download over the normal path ({name})…",
            transfer_bytes / 1_000_000
        );
        let before: Vec<Option<f64>> = pids.iter().map(|&pid| cpu_secs(Some(pid))).collect();
        let mb_per_s =
            http_download(&http, base, transfer_bytes, &format!("over the {name}")).await?;
        let spent = |i: usize| Some(cpu_secs(Some(*pids.get(i)?))? - (*before.get(i)?)?);
        downloads.insert(
            name.to_owned(),
            json!({
                "mb_per_s": mb_per_s,
                "signal_api_cpu_secs": spent(0),
                "home_peer_cpu_secs": spent(1),
            }),
        );
    }
    // Memory: what each relayed WebSocket holds while open, in the same
    // processes.
    let mut sockets = serde_json::Map::new();
    for (name, base, pids) in paths {
        sockets.insert(
            name.to_owned(),
            json!({"kb_per_socket": memory_per_websocket(base, pids, RELAYED_SOCKETS).await?}),
        );
    }
    Ok(json!({
        "small_get": {"link": link.summary(), "upstream": upstream.summary()},
        "download": downloads,
        "websockets": sockets,
        "websockets_open": RELAYED_SOCKETS,
    }))
}

/// How many WebSockets [`memory_per_websocket`] holds open at once.
const RELAYED_SOCKETS: usize = 200;

/// Opens `n` WebSockets to the home service's echo through `base` (a
/// signal-api's normal path), one message each, and returns how much the
/// resident memory of `pids` together grew per open socket, in KB.
async fn memory_per_websocket(base: &str, pids: &[u32], n: usize) -> Result<f64> {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;

    let rss = || -> Result<f64> {
        pids.iter()
            .map(|&pid| rss_mb(pid).ok_or_else(|| anyhow::anyhow!("no RSS for pid {pid}")))
            .sum()
    };
    let url = format!("{}/bench/ws", base.replacen("http://", "ws://", 1));
    let before = rss()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut open = Vec::with_capacity(n);
    for i in 0..n {
        let (mut socket, _) = tokio::time::timeout_at(
            deadline.into(),
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await
        .map_err(|_| anyhow::anyhow!("opening {n} WebSockets through {base} ran past 60 s"))??;
        let text = format!("socket {i}");
        socket.send(Message::Text(text.clone().into())).await?;
        match tokio::time::timeout_at(deadline.into(), socket.next()).await {
            Ok(Some(Ok(Message::Text(back)))) if back.as_str() == text => {}
            other => bail!("a relayed WebSocket through {base} answered {other:?}"),
        }
        open.push(socket);
    }
    let grown = rss()? - before;
    for mut socket in open {
        let _ = socket.close(None).await;
    }
    Ok(grown * 1000.0 / n as f64)
}

/// The `websocket` phase: a small message's round trip over a WebSocket on
/// the data channel (the bridge's WebSocket stream to the home service's
/// echo) against a plain WebSocket straight to the same echo, interleaved.
pub(crate) async fn websocket_rtt(
    client: &beeline_bridge::Client<crate::client::ClientChannel>,
    upstream_url: &str,
    round_trips: usize,
) -> Result<Value> {
    use beeline_bridge::Upgrade;
    use beeline_frame::v2::RequestHead;
    use beeline_frame::ws::Message;
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite;

    let head = RequestHead {
        method: "GET".into(),
        path: "/bench/ws".into(),
        ..Default::default()
    };
    let Upgrade::Accepted {
        sender,
        mut receiver,
        ..
    } = client.websocket(head).await?
    else {
        bail!("the home service refused the bench WebSocket");
    };
    let plain_url = format!("{}/bench/ws", upstream_url.replacen("http://", "ws://", 1));
    let (mut plain, _) = tokio_tungstenite::connect_async(plain_url.as_str()).await?;

    let (mut channel, mut direct) = (Samples::default(), Samples::default());
    let deadline = Instant::now() + Duration::from_secs(60);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for i in 0..(200 + round_trips) {
        if Instant::now() > deadline {
            break;
        }
        let text = format!("ping {i}");
        let t = Instant::now();
        sender.send(Message::Text(text.clone())).await?;
        match receiver.next().await {
            Some(Ok(Message::Text(back))) if back == text => {}
            other => bail!("the channel WebSocket answered {other:?}"),
        }
        if i >= 200 {
            channel.push(ms(t.elapsed()));
        }
        let t = Instant::now();
        plain
            .send(tungstenite::Message::Text(text.clone().into()))
            .await?;
        match plain.next().await {
            Some(Ok(tungstenite::Message::Text(back))) if back.as_str() == text => {}
            other => bail!("the plain WebSocket answered {other:?}"),
        }
        if i >= 200 {
            direct.push(ms(t.elapsed()));
        }
    }
    let _ = sender.send(Message::close(1000, "")).await;
    let _ = plain.close(None).await;
    Ok(json!({"message_rtt": {"channel": channel.summary(), "plain": direct.summary()}}))
}

/// The `handoff` phase: how long a live stream pauses when its resumable
/// connection (`docs/protocol.md` §4.8) moves between carriers. A Rust page
/// (as `client.js` with `resume: true`) reads an event stream, one event
/// every 20 ms, that starts on the frame connection through the home link;
/// it then opens a `resume` data channel (the stream moves to it) and closes
/// it again (the stream moves back), `switches / 2` times. Per switch, the
/// figure is the largest gap between two events arriving in the second
/// around it; every event must arrive once and in order.
pub(crate) async fn handoff(
    bins: &Bins,
    stack: &Stack,
    filter: &beeline_transport::AddressFilter,
    switches: usize,
) -> Result<Value> {
    use beeline_bridge::{Client, ClientOptions, DataChannelLink, ResumableChannel, ResumeConfig};
    use beeline_frame::v2::RequestHead;
    use std::sync::{Arc, Mutex};

    const EVERY_MS: u64 = 20;
    let linked = linked_stack(bins, &stack.upstream_url).await?;
    let base = format!("{}/webrtc", linked.url);
    let signal = beeline_signal_client::SignalClient::new(&base)?;
    let session = signal.create_session().await?;
    if !session.resume {
        bail!("signal-api did not offer a resumable connection");
    }
    let page = ResumableChannel::new(ResumeConfig::default());
    page.attach(
        beeline_client::frame_connection(&base, &session.session_id, &Default::default()).await?,
    )
    .await?;
    let client = Client::connect(
        Arc::new(page.clone()),
        ClientOptions {
            binary: true,
            ..Default::default()
        },
    )
    .await?;

    // Long enough for every switch; cancelled once they are done.
    let cycles = switches.div_ceil(2).max(1);
    let events = 200 + cycles as u64 * 3_000 / EVERY_MS;
    let head = RequestHead {
        method: "GET".into(),
        path: format!("/bench/sse?n={events}&interval_ms={EVERY_MS}"),
        ..Default::default()
    };
    let mut response = client.send(head, None).await?;
    if response.status != 200 {
        bail!("GET /bench/sse answered {}", response.status);
    }
    // (arrival, number) of every event, in arrival order.
    let arrivals: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let reader = {
        let arrivals = Arc::clone(&arrivals);
        tokio::spawn(async move {
            let mut text = String::new();
            while let Some(chunk) = response.body.next().await {
                let Ok(chunk) = chunk else { break };
                let at = Instant::now();
                text.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = text.find("\n\n") {
                    let event: String = text.drain(..end + 2).collect();
                    let number = event
                        .strip_prefix("data: ")
                        .and_then(|rest| rest.split(' ').next())
                        .and_then(|n| n.parse().ok());
                    if let Some(n) = number {
                        arrivals.lock().expect("not poisoned").push((at, n));
                    }
                }
            }
        })
    };

    // One peer connection; each cycle opens a new `resume` channel on it
    // (the stream moves there) and closes it (the stream moves back).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let opened = beeline_client::open_channel_on(
        &signal,
        crate::client::peer_config(filter),
        session.clone(),
        beeline_client::RESUME_CHANNEL_LABEL,
        Duration::from_secs(10),
    )
    .await?;
    let mut channel = Some(opened.channel);
    let mut moments = Vec::new();
    let mut on_channel = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    for _ in 0..cycles {
        if Instant::now() > deadline {
            break;
        }
        let next = match channel.take() {
            Some(first) => first,
            None => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                opened
                    .peer
                    .open_channel(beeline_client::RESUME_CHANNEL_LABEL)
                    .await?
            }
        };
        let link = Arc::new(DataChannelLink::new(next));
        page.attach(Arc::clone(&link)).await?;
        moments.push(Instant::now());
        tokio::time::sleep(Duration::from_millis(700)).await;
        moments.push(Instant::now());
        link.channel().close().await?;
        // The home moved too: its messages came over the channel.
        if link.messages_received() == 0 {
            bail!("nothing arrived over a resume channel in 700 ms: the home did not move to it");
        }
        on_channel += link.messages_received();
    }
    opened.peer.close().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    reader.abort();
    let arrivals = arrivals.lock().expect("not poisoned").clone();
    if let Some(bad) = arrivals
        .iter()
        .enumerate()
        .find(|(i, (_, n))| *n != *i as u64)
    {
        bail!(
            "event {} arrived as number {}: lost, duplicated or reordered across a switch",
            bad.0,
            bad.1 .1
        );
    }
    let mut gaps = Samples::default();
    for moment in &moments {
        let from = moment
            .checked_sub(Duration::from_millis(200))
            .unwrap_or(*moment);
        let to = *moment + Duration::from_millis(800);
        let window: Vec<Instant> = arrivals
            .iter()
            .map(|(at, _)| *at)
            .filter(|at| *at >= from && *at <= to)
            .collect();
        let largest = window
            .windows(2)
            .map(|w| w[1].duration_since(w[0]))
            .max()
            .unwrap_or_default();
        gaps.push(largest.as_secs_f64() * 1e3);
    }
    Ok(json!({
        "interval_ms": EVERY_MS,
        "switches": moments.len(),
        "events": arrivals.len(),
        "messages_over_channels": on_channel,
        "largest_gap_ms": gaps.summary(),
    }))
}
