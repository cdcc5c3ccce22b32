//! Mount beeline's signaling endpoints inside your own axum server: your
//! routes and `/webrtc/*` (session, signal, client.js) on one listener.
//!
//! ```sh
//! cargo run -p example-mount-signaling -- 127.0.0.1:8080 /tmp/signal.db HOME_TOKEN
//! ```

use axum::routing::get;
use axum::Router;
use beeline_signal_server::{SignalConfig, SignalServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(db), Some(token)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: mount-signaling LISTEN DB_PATH HOME_TOKEN");
        std::process::exit(2);
    };
    // Browser auth is `open` here; a real server plugs in its own
    // `BrowserAuth` (JWT, trusted header, or its session cookie).
    let signaling = SignalServer::open(SignalConfig::new(db, token)).await?;
    let app = Router::new()
        .route(
            "/",
            get(|| async { "my own server, with beeline's signaling under /webrtc\n" }),
        )
        .merge(signaling.router());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    // Connect info lets signal-api's limits and relay see client addresses.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .await?;
    Ok(())
}
