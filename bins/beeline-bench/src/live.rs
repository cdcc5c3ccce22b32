//! The `link` phase (issue 11): the normal path over home-peer's home link
//! against the normal path to `--relay-upstream`, side by side. A second
//! signal-api without an upstream and a second home-peer linked to it
//! serve the same home service as the loopback stack's relay; one
//! keep-alive HTTP client sends the small GETs to both, interleaved, so load
//! on the shared machine hits both alike.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::measure::http_client;
use crate::procs::{start_home_peer, start_signal_api, wait_home_link, Bins, Stack};
use crate::stats::Samples;

pub(crate) async fn relay_link(bins: &Bins, stack: &Stack, round_trips: usize) -> Result<Value> {
    let db = tempfile::tempdir()?;
    let (_signal, linked_url) = start_signal_api(bins, None, "127.0.0.1:0", None, db.path())?;
    let _home = start_home_peer(
        bins,
        None,
        &format!("{linked_url}/webrtc"),
        &stack.upstream_url,
        "127.0.0.1",
    )?;
    wait_home_link(&linked_url).await?;

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
    Ok(json!({"small_get": {"link": link.summary(), "upstream": upstream.summary()}}))
}
