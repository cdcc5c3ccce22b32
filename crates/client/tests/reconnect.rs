//! `HomeClient` against an in-process signal-server and home loop on
//! loopback: requests as a `tower::Service`, bodies with their length, a
//! home that goes away (a clear error within the setup budget, no hang) and
//! comes back (the client finds it again by itself).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;
use beeline_bridge::HttpUpstream;
use beeline_client::{connect, Auth, ClientConfig, Error, PathState};
use beeline_home::HomeConfig;
use beeline_signal_client::SignalClient;
use beeline_signal_server::{SignalConfig, SignalServer};
use beeline_transport::{AddressFilter, PeerConfig};
use http_body_util::{BodyExt as _, Empty, Full};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

const TOKEN: &str = "client-test-home-token";

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn loopback() -> PeerConfig {
    PeerConfig {
        address_filter: AddressFilter::loopback(),
        ..Default::default()
    }
}

fn start_home(signal_url: &str, upstream: &str) -> CancellationToken {
    let stop = CancellationToken::new();
    let home = SignalClient::new(signal_url).unwrap().with_bearer(TOKEN);
    let config = HomeConfig {
        peer: loopback(),
        ..Default::default()
    };
    tokio::spawn(beeline_home::run(
        home,
        Arc::new(HttpUpstream::new(upstream).unwrap()),
        config,
        stop.clone(),
    ));
    stop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_survive_the_home_going_away_and_coming_back() {
    let db = tempfile::tempdir().unwrap();
    let server = SignalServer::open(SignalConfig::new(db.path().join("s.db"), TOKEN))
        .await
        .unwrap();
    let signal_url = format!("{}/webrtc", serve(server.router()).await);
    let upstream = serve(Router::new().route("/hello", get(|| async { "hi" })).route(
        "/length",
        post(|headers: axum::http::HeaderMap, body: String| async move {
            let length = headers
                .get("content-length")
                .map(|v| v.to_str().unwrap().to_owned());
            format!("{length:?} {}", body.len())
        }),
    ))
    .await;
    let home = start_home(&signal_url, &upstream);

    let budget = Duration::from_secs(2);
    let config = ClientConfig {
        peer: loopback(),
        setup_budget: budget,
        backoff_initial: Duration::from_millis(100),
        ..Default::default()
    };
    let client = connect(&signal_url, Auth::Open, config).await.unwrap();
    assert_eq!(client.path(), PathState::Direct);

    // As a tower::Service.
    let request = http::Request::get("/hello")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = client.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hi");

    // A body of known length arrives with it.
    let request = http::Request::post("/length")
        .body(Full::new(bytes::Bytes::from_static(b"twelve bytes")))
        .unwrap();
    let response = client.send(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"Some(\"12\") 12");

    // The home goes away: a request fails clearly within the budget.
    home.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let request = http::Request::get("/hello")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    match client.send(request).await {
        Err(Error::Unavailable(why)) => assert!(!why.is_empty()),
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(r) => panic!("answered {} with no home", r.status()),
    }
    assert!(
        started.elapsed() < budget * 2 + Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );

    // It comes back: the client finds it without being told.
    let _home = start_home(&signal_url, &upstream);
    assert!(client.wait_direct(Duration::from_secs(15)).await);
    let request = http::Request::get("/hello")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(response.status(), 200);
}
