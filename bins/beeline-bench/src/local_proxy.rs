//! The `proxy` phase: `beeline-proxy` on a local port, as curl and the
//! OpenAI SDKs use it, against the same home service straight over HTTP.
//! One keep-alive HTTP client sends the small GETs to both, interleaved
//! (proxy, direct, proxy, ...), so load on the shared machine hits both
//! alike; then a 100 MB download through the proxy, checked byte by byte.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::measure::{http_client, http_download};
use crate::procs::{Bins, Proc};
use crate::stats::Samples;

/// Starts `beeline-proxy` against `signal_base`; returns it and its URL.
pub(crate) fn start(bins: &Bins, signal_base: &str) -> Result<(Proc, String)> {
    let args: Vec<String> = [
        "--signal-url",
        signal_base,
        "--listen",
        "127.0.0.1:0",
        "--allow-ip",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut p = Proc::spawn("beeline-proxy", None, &bins.path("beeline-proxy")?, &args)?;
    let addr = p.wait_for("listen=")?;
    if !p.tail().contains("path=direct") {
        bail!("beeline-proxy started without a direct path:\n{}", p.tail());
    }
    Ok((p, format!("http://{addr}")))
}

pub(crate) async fn run(
    bins: &Bins,
    signal_base: &str,
    upstream_url: &str,
    round_trips: usize,
    transfer_bytes: usize,
    transfer_reps: usize,
) -> Result<Value> {
    let (_proxy, proxy_url) = start(bins, signal_base)?;
    let http = http_client();
    let (mut via_proxy, mut direct) = (Samples::default(), Samples::default());
    let deadline = Instant::now() + Duration::from_secs(90);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for i in 0..(200 + round_trips) {
        if Instant::now() > deadline {
            break;
        }
        for (base, samples) in [
            (&proxy_url, &mut via_proxy),
            (&upstream_url.to_owned(), &mut direct),
        ] {
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
    let mut downloads = Vec::new();
    for rep in 0..transfer_reps.max(1) {
        eprintln!(
            "bench: {} MB download through beeline-proxy, rep {}/{}…",
            transfer_bytes / 1_000_000,
            rep + 1,
            transfer_reps.max(1)
        );
        downloads
            .push(http_download(&http, &proxy_url, transfer_bytes, "through the proxy").await?);
    }
    let rates = Samples(downloads.clone());
    Ok(json!({
        "small_get": {"proxy": via_proxy.summary(), "http": direct.summary()},
        "download": {"median_mb_per_s": rates.median(), "runs_mb_per_s": downloads},
    }))
}
