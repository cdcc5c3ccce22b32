//! Measurements shared by the loopback and near/far runs: request round
//! trips, streamed-token delay, first token, throughput.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use beeline_bridge::Client;
use beeline_frame::v2::RequestHead;
use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::{json, Value};

use crate::client::{self, ClientChannel};
use crate::stats::Samples;
use crate::upstream::{matches_pattern, pattern_pieces, unix_micros};

/// A keep-alive HTTP client for the plain-HTTP and relay comparisons.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .no_proxy()
        .pool_max_idle_per_host(4)
        .build()
        .expect("static config")
}

/// GETs `{base}/bench/bytes?n={size}` over plain HTTP (beeline-proxy, or a
/// signal-api's normal path) and checks every byte against the upstream's
/// pattern; MB/s. `what` names the path in errors.
pub(crate) async fn http_download(
    http: &reqwest::Client,
    base: &str,
    size: usize,
    what: &str,
) -> Result<f64> {
    let started = Instant::now();
    let r = http
        .get(format!("{base}/bench/bytes?n={size}"))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("the download {what} answered {}", r.status());
    }
    let mut stream = r.bytes_stream();
    let mut got = 0usize;
    let deadline = started + Duration::from_secs(60);
    while let Some(piece) = tokio::time::timeout_at(deadline.into(), stream.next())
        .await
        .map_err(|_| anyhow::anyhow!("the download {what} ran past 60 s"))?
    {
        let piece = piece?;
        if !matches_pattern(got, &piece) {
            bail!("the download {what} differs after byte {got}");
        }
        got += piece.len();
    }
    if got != size {
        bail!("the download {what} ended at {got} of {size} bytes");
    }
    Ok(size as f64 / 1e6 / started.elapsed().as_secs_f64())
}

async fn http_get(http: &reqwest::Client, url: &str) -> Result<Bytes> {
    let r = http.get(url).send().await?;
    if !r.status().is_success() {
        bail!("GET {url} answered {}", r.status());
    }
    Ok(r.bytes().await?)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Round trips of `GET /bench/small`, interleaved so the three paths see the
/// same machine noise: over the channel, over plain HTTP keep-alive to the
/// upstream, and through signal-api's relay (when `relay_base` is given).
pub(crate) struct RoundTrips {
    pub(crate) channel: Samples,
    pub(crate) http: Samples,
    pub(crate) relay: Samples,
    /// Over the channel, until the response head (the first of the three
    /// frames RESPONSE, DATA, END) arrived.
    pub(crate) channel_head: Samples,
    /// Over the channel, a response with an empty body (RESPONSE, END).
    pub(crate) channel_empty: Samples,
}

pub(crate) async fn round_trips(
    client: &Client<ClientChannel>,
    upstream_base: Option<&str>,
    relay_base: Option<&str>,
    warmup: usize,
    samples: usize,
    budget: Duration,
) -> Result<RoundTrips> {
    let http = http_client();
    let mut out = RoundTrips {
        channel: Samples::default(),
        http: Samples::default(),
        relay: Samples::default(),
        channel_head: Samples::default(),
        channel_empty: Samples::default(),
    };
    let deadline = Instant::now() + budget;
    for i in 0..warmup + samples {
        if Instant::now() > deadline {
            eprintln!("  round trips: time budget reached after {i} rounds");
            break;
        }
        let keep = i >= warmup;
        let t = Instant::now();
        let head = RequestHead {
            method: "GET".into(),
            path: "/bench/small".into(),
            ..Default::default()
        };
        let response = client.send(head, None).await?;
        let head_at = t.elapsed();
        if response.status != 200 || response.body.collect().await?.len() != 2 {
            bail!("GET /bench/small over the channel failed");
        }
        if keep {
            out.channel.push(ms(t.elapsed()));
            out.channel_head.push(ms(head_at));
        }
        if upstream_base.is_some() {
            let t = Instant::now();
            client::get(client, "/bench/empty").await?;
            if keep {
                out.channel_empty.push(ms(t.elapsed()));
            }
        }
        if let Some(base) = upstream_base {
            let t = Instant::now();
            http_get(&http, &format!("{base}/bench/small")).await?;
            if keep {
                out.http.push(ms(t.elapsed()));
            }
        }
        if let Some(base) = relay_base {
            let t = Instant::now();
            http_get(&http, &format!("{base}/bench/small")).await?;
            if keep {
                out.relay.push(ms(t.elapsed()));
            }
        }
    }
    Ok(out)
}

/// Splits SSE text into `data: <seq> <µs>` events and records, for each,
/// the delay from the upstream's write to `arrival_us`.
struct SseDelays {
    buf: String,
    delays: Samples,
    first_arrival: Option<Instant>,
}

impl SseDelays {
    fn new() -> Self {
        Self {
            buf: String::new(),
            delays: Samples::default(),
            first_arrival: None,
        }
    }

    fn feed(&mut self, piece: &[u8]) {
        let arrival = unix_micros();
        self.first_arrival.get_or_insert_with(Instant::now);
        self.buf.push_str(&String::from_utf8_lossy(piece));
        while let Some(end) = self.buf.find("\n\n") {
            let event: String = self.buf.drain(..end + 2).collect();
            let mut parts = event.trim().trim_start_matches("data:").split_whitespace();
            let (_seq, written) = (
                parts.next(),
                parts.next().and_then(|w| w.parse::<u64>().ok()),
            );
            if let Some(written) = written {
                self.delays
                    .push(arrival.saturating_sub(written) as f64 / 1e3);
            }
        }
    }
}

/// Streams `GET /bench/sse` over the channel; returns the per-event delays
/// and the time from sending the request to the first event.
pub(crate) async fn sse_over_channel(
    client: &Client<ClientChannel>,
    events: u32,
    interval_ms: u64,
) -> Result<(Samples, f64)> {
    let started = Instant::now();
    let head = RequestHead {
        method: "GET".into(),
        path: format!("/bench/sse?n={events}&interval_ms={interval_ms}"),
        ..Default::default()
    };
    let budget = Duration::from_millis(u64::from(events) * interval_ms) + Duration::from_secs(30);
    let mut response = client.send(head, None).await?;
    let mut d = SseDelays::new();
    tokio::time::timeout(budget, async {
        while let Some(piece) = response.body.next().await {
            d.feed(&piece?);
        }
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow::anyhow!("SSE over the channel did not finish in {budget:?}"))??;
    let first = d
        .first_arrival
        .map_or(f64::NAN, |t| ms(t.duration_since(started)));
    Ok((d.delays, first))
}

/// The same stream over plain HTTP (`base` is the upstream or the relay).
pub(crate) async fn sse_over_http(
    http: &reqwest::Client,
    base: &str,
    events: u32,
    interval_ms: u64,
) -> Result<(Samples, f64)> {
    let started = Instant::now();
    let budget = Duration::from_millis(u64::from(events) * interval_ms) + Duration::from_secs(30);
    let r = http
        .get(format!(
            "{base}/bench/sse?n={events}&interval_ms={interval_ms}"
        ))
        .send()
        .await?;
    let mut body = r.bytes_stream();
    let mut d = SseDelays::new();
    tokio::time::timeout(budget, async {
        while let Some(piece) = body.next().await {
            d.feed(&piece?);
        }
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow::anyhow!("SSE over HTTP did not finish in {budget:?}"))??;
    let first = d
        .first_arrival
        .map_or(f64::NAN, |t| ms(t.duration_since(started)));
    Ok((d.delays, first))
}

/// One 100 MB-class transfer's outcome.
pub(crate) struct Transfer {
    pub(crate) bytes: u64,
    pub(crate) secs: f64,
    pub(crate) complete: bool,
}

impl Transfer {
    pub(crate) fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs
    }

    pub(crate) fn json(&self) -> Value {
        json!({"bytes": self.bytes, "secs": self.secs, "mb_per_s": self.mb_per_s(), "complete": self.complete})
    }
}

/// Downloads `size` bytes over the channel, checking every byte.
pub(crate) async fn download(
    client: &Client<ClientChannel>,
    size: usize,
    budget: Duration,
) -> Result<Transfer> {
    let started = Instant::now();
    let head = RequestHead {
        method: "GET".into(),
        path: format!("/bench/bytes?n={size}"),
        ..Default::default()
    };
    let mut response = client.send(head, None).await?;
    let mut got = 0usize;
    let deadline = started + budget;
    loop {
        let piece = match tokio::time::timeout_at(deadline.into(), response.body.next()).await {
            Err(_) => break,
            Ok(None) => break,
            Ok(Some(p)) => p?,
        };
        if !matches_pattern(got, &piece) {
            bail!("download corrupt at byte {got}");
        }
        got += piece.len();
    }
    Ok(Transfer {
        bytes: got as u64,
        secs: started.elapsed().as_secs_f64(),
        complete: got == size,
    })
}

/// Uploads `size` bytes over the channel; the upstream checks them.
pub(crate) async fn upload(
    client: &Client<ClientChannel>,
    size: usize,
    budget: Duration,
) -> Result<Transfer> {
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    let body = futures::stream::iter(pattern_pieces(0, size, 256 * 1024))
        .map(move |b| {
            counter.fetch_add(b.len() as u64, Ordering::Relaxed);
            Ok(b)
        })
        .boxed();
    let head = RequestHead {
        method: "POST".into(),
        path: "/bench/sink".into(),
        ..Default::default()
    };
    let outcome = tokio::time::timeout(budget, async {
        let response = client.send(head, Some(body)).await?;
        let text = String::from_utf8(response.body.collect().await?)?;
        anyhow::Ok(text)
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    match outcome {
        Ok(text) => {
            let text = text?;
            if text != format!("{size} intact") {
                bail!("upload check failed: upstream saw {text:?}");
            }
            Ok(Transfer {
                bytes: size as u64,
                secs,
                complete: true,
            })
        }
        // Bytes handed to the client (some may still be queued): an upper bound.
        Err(_) => Ok(Transfer {
            bytes: sent.load(Ordering::Relaxed),
            secs,
            complete: false,
        }),
    }
}
