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
