//! Test harness: a signaling server on 127.0.0.1:0 with a throwaway database.
#![allow(dead_code, unreachable_pub)]

use std::{net::SocketAddr, path::Path};

use beeline_signal_client::SignalClient;
use beeline_signal_server::{SignalConfig, SignalServer};
use tempfile::TempDir;

pub const HOME_TOKEN: &str = "home-secret-token";

/// A running server; shut down and stopped when dropped.
pub struct Harness {
    pub server: SignalServer,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    _dir: Option<TempDir>,
}

/// Starts a server on a fresh database, after `configure` adjusts the defaults.
pub async fn start(configure: impl FnOnce(&mut SignalConfig)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = start_at(&dir.path().join("signal.db"), configure).await;
    harness._dir = Some(dir);
    harness
}

/// Starts a server on the database file `db`.
pub async fn start_at(db: &Path, configure: impl FnOnce(&mut SignalConfig)) -> Harness {
    let mut config = SignalConfig::new(db, HOME_TOKEN);
    configure(&mut config);
    start_with(config).await
}

/// Starts a server with exactly `config`.
pub async fn start_with(config: SignalConfig) -> Harness {
    let server = SignalServer::open(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = server.router();
    let stop = server.shutdown_token();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .unwrap();
    });
    Harness {
        server,
        addr,
        task,
        _dir: None,
    }
}

impl Harness {
    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The signaling base URL (default base path).
    pub fn base_url(&self) -> String {
        self.url(self.server.base_path())
    }

    /// A client acting as a browser.
    pub fn browser(&self) -> SignalClient {
        SignalClient::new(&self.base_url()).unwrap()
    }

    /// A client acting as the home peer.
    pub fn home(&self) -> SignalClient {
        self.client_with_bearer(HOME_TOKEN)
    }

    /// A client sending `Authorization: Bearer <token>` (a home token, or a
    /// browser JWT).
    pub fn client_with_bearer(&self, token: &str) -> SignalClient {
        SignalClient::new(&self.base_url())
            .unwrap()
            .with_bearer(token)
    }

    /// The value of one un-labelled or labelled series from `/metrics`.
    pub async fn metric(&self, series: &str) -> u64 {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} missing from /metrics:\n{text}"))
            .parse()
            .unwrap()
    }

    /// Waits until `beeline_longpolls_waiting` reaches `count`.
    pub async fn until_polls_waiting(&self, count: u64) {
        for _ in 0..200 {
            if self.metric("beeline_longpolls_waiting").await == count {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("never saw {count} waiting long-polls");
    }

    /// Stops serving (answering held polls) and waits for the server task.
    pub async fn stop(mut self) {
        self.server.shutdown();
        (&mut self.task).await.unwrap();
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.shutdown();
        self.task.abort();
    }
}

/// Asserts that `response` has `status` and a JSON `{"error": "..."}` body,
/// and returns the message.
pub async fn expect_error(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "error content-type was {content_type:?}"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"));
    assert!(!message.is_empty());
    message.to_owned()
}
