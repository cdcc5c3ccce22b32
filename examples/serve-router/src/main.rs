//! Serve your own axum `Router` over beeline's data channel, in-process:
//! no local TCP port, no `--upstream`. Browsers (client.js) and Rust
//! clients reach these routes over the direct path.
//!
//! ```sh
//! cargo run -p example-serve-router -- http://127.0.0.1:8080/webrtc HOME_TOKEN
//! ```

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use beeline_bridge::{CookieKey, ServiceUpstream};
use beeline_home::HomeConfig;
use beeline_signal_client::SignalClient;
use beeline_transport::{AddressFilter, PeerConfig};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(signal_url), Some(token)) = (args.next(), args.next()) else {
        eprintln!("usage: serve-router SIGNAL_URL HOME_TOKEN [ALLOWED_IP]");
        std::process::exit(2);
    };
    let router = Router::new()
        .route(
            "/",
            get(|| async { "hello from a Router served over a data channel\n" }),
        )
        .route(
            "/v1/time",
            get(|| async { format!("{:?}\n", std::time::SystemTime::now()) }),
        );

    // Confine ICE when asked to (tests and demos on one machine do).
    let mut filter = AddressFilter::allow_all();
    if let Some(ip) = args.next() {
        filter.allow_network(&ip)?;
    }
    let config = HomeConfig {
        peer: PeerConfig {
            address_filter: filter,
            ..Default::default()
        },
        // Cookie-authenticated routes work on the channel too (docs/cookies.md).
        cookie_key: Some(CookieKey::from_home_token(&token)),
        ..Default::default()
    };
    let signal = SignalClient::new(&signal_url)?.with_bearer(token);
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    // The home loop answers offers and serves every `http` channel with the
    // router, one task per request.
    beeline_home::run(
        signal,
        Arc::new(ServiceUpstream::new(router)),
        config,
        shutdown,
    )
    .await;
    Ok(())
}
