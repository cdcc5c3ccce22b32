//! Call the home service from Rust over the direct path, in a few lines.
//!
//! ```sh
//! cargo run -p example-call-home -- http://127.0.0.1:8080/webrtc /v1/models
//! ```

use beeline_client::{connect, Auth, ClientConfig, PathState};
use beeline_transport::{AddressFilter, PeerConfig};
use http_body_util::{BodyExt as _, Empty};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(signal_url), Some(path)) = (args.next(), args.next()) else {
        eprintln!("usage: call-home SIGNAL_URL PATH [ALLOWED_IP]");
        std::process::exit(2);
    };
    let mut filter = AddressFilter::allow_all();
    if let Some(ip) = args.next() {
        filter.allow_network(&ip)?;
    }
    let config = ClientConfig {
        peer: PeerConfig {
            address_filter: filter,
            ..Default::default()
        },
        ..Default::default()
    };
    let home = connect(&signal_url, Auth::Open, config).await?;
    if home.path() != PathState::Direct {
        eprintln!("no direct path: {:?}", home.path());
    }
    let request = http::Request::get(path.as_str()).body(Empty::<bytes::Bytes>::new())?;
    let response = home.send(request).await?;
    eprintln!("{}", response.status());
    let body = response.into_body().collect().await?.to_bytes();
    println!("{}", String::from_utf8_lossy(&body));
    Ok(())
}
