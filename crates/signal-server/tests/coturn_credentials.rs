//! The TURN credentials signal-api hands out are accepted by a real coturn
//! (Debian's `coturn`, `use-auth-secret` with two `static-auth-secret`
//! lines), proven with real TURN allocations on loopback: fresh credentials
//! allocate (and relay a packet), credentials from the second (rotation)
//! secret allocate, expired credentials and credentials signed with a wrong
//! secret are refused with 401.
//!
//! Needs `turnserver` (`scripts/ensure-coturn.sh` installs it). Without it
//! the test is skipped with a loud message, unless `BEELINE_REQUIRE_COTURN`
//! is set (CI sets it), in which case a missing coturn is a failure.

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, SystemTime},
};

use beeline_signal_client::SessionInfo;
use beeline_signal_server::{turn_credentials, TurnCredentials, TurnSecrets};
use tokio::net::UdpSocket;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn as _;

const FIRST_SECRET: &str = "first-test-secret-7f3a";
const SECOND_SECRET: &str = "second-test-secret-c41d";
const REALM: &str = "beeline.test";
/// How long one TURN exchange may take on loopback before we call it hung.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

fn find_turnserver() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("turnserver"))
        .find(|candidate| candidate.is_file())
}

fn coturn_required() -> bool {
    std::env::var("BEELINE_REQUIRE_COTURN").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A coturn process on 127.0.0.1, killed when dropped.
struct Coturn {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Coturn {
    /// coturn with the test's own loopback configuration and both secrets.
    fn start(binary: &Path) -> Self {
        Self::start_with(
            binary,
            &format!(
                "use-auth-secret\n\
                 static-auth-secret={FIRST_SECRET}\n\
                 static-auth-secret={SECOND_SECRET}\n\
                 realm={REALM}\n\
                 fingerprint\n\
                 no-multicast-peers\n\
                 allow-loopback-peers\n\
                 allowed-peer-ip=127.0.0.1\n"
            ),
        )
    }

    /// coturn with `settings`, confined to loopback: listening and relay
    /// address, ports, no TLS/DTLS, no CLI, files in a temporary directory.
    fn start_with(binary: &Path, settings: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_udp_port();
        // A relay port range of our own, away from the listening port.
        let min_port = 50_000 + (port % 100) * 100;
        let config = dir.path().join("turnserver.conf");
        let log = dir.path().join("turnserver.log");
        std::fs::write(
            &config,
            format!(
                "{settings}\n\
                 listening-ip=127.0.0.1\n\
                 relay-ip=127.0.0.1\n\
                 listening-port={port}\n\
                 min-port={min_port}\n\
                 max-port={max_port}\n\
                 no-tls\n\
                 no-dtls\n\
                 no-cli\n\
                 userdb={userdb}\n\
                 pidfile={pidfile}\n\
                 simple-log\n",
                max_port = min_port + 99,
                userdb = dir.path().join("turndb").display(),
                pidfile = dir.path().join("turnserver.pid").display(),
            ),
        )
        .unwrap();
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .arg("--no-cli")
            .arg("--log-file")
            .arg("stdout")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", binary.display()));
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until coturn answers STUN binding requests.
    async fn wait_ready(&mut self) {
        for _ in 0..50 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("coturn exited with {status}:\n{}", self.log());
            }
            let client = turn_client(self.addr, "", "").await;
            let answered =
                tokio::time::timeout(Duration::from_millis(300), client.send_binding_request())
                    .await;
            client.close().await.unwrap();
            if matches!(answered, Ok(Ok(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("coturn did not answer STUN within 20 s:\n{}", self.log());
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    // Free for UDP and TCP alike, since coturn listens on both.
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1");
}

async fn turn_client(server: SocketAddr, username: &str, password: &str) -> Client {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let client = Client::new(ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: username.to_owned(),
        password: password.to_owned(),
        realm: String::new(),
        software: "beeline-test".to_owned(),
        rto_in_ms: 0,
        conn: Arc::new(socket),
        vnet: None,
    })
    .await
    .unwrap();
    client.listen().await.unwrap();
    client
}

/// Allocates a relay with `creds`; on success proves the relay carries a
/// packet to a peer on loopback. Returns coturn's refusal as text.
async fn allocate(coturn: &Coturn, creds: &TurnCredentials) -> Result<SocketAddr, String> {
    allocate_and_maybe_relay(coturn, creds, true).await
}

async fn allocate_and_maybe_relay(
    coturn: &Coturn,
    creds: &TurnCredentials,
    relay_a_packet: bool,
) -> Result<SocketAddr, String> {
    let client = turn_client(coturn.addr, &creds.username, &creds.credential).await;
    let outcome = tokio::time::timeout(EXCHANGE_TIMEOUT, async {
        let relay = client.allocate().await.map_err(|e| e.to_string())?;
        let relayed = relay.local_addr().unwrap();
        if !relay_a_packet {
            relay.close().await.map_err(|e| e.to_string())?;
            return Ok(relayed);
        }
        // A packet sent through the relay reaches the peer from the relayed
        // address: the allocation really works.
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        relay
            .send_to(b"through coturn", peer.local_addr().unwrap())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf))
            .await
            .map_err(|_| "the relayed packet never arrived".to_owned())?
            .unwrap();
        assert_eq!(&buf[..n], b"through coturn");
        assert_eq!(
            from, relayed,
            "the packet did not come from the relayed address"
        );
        relay.close().await.map_err(|e| e.to_string())?;
        Ok(relayed)
    })
    .await
    .unwrap_or_else(|_| panic!("TURN allocation hung:\n{}", coturn.log()));
    client.close().await.unwrap();
    outcome
}

fn expect_refused(coturn: &Coturn, what: &str, outcome: Result<SocketAddr, String>) {
    match outcome {
        Ok(relayed) => panic!("{what}: coturn allocated {relayed} but must refuse"),
        Err(error) => assert!(
            error.contains("401"),
            "{what}: expected coturn's 401 Unauthorized, got {error:?}\n{}",
            coturn.log()
        ),
    }
}

/// Credentials from signal-api's `POST {base}/session`, as a browser gets them.
async fn credentials_from_signal_api(coturn: &Coturn, secrets: TurnSecrets) -> TurnCredentials {
    let port = coturn.addr.port();
    let harness = common::start(|config| {
        config.turn_secrets = Some(secrets);
        config.stun_urls = vec![format!("stun:127.0.0.1:{port}")];
        config.turn_urls = vec![
            format!("turn:127.0.0.1:{port}?transport=udp"),
            format!("turn:127.0.0.1:{port}?transport=tcp"),
        ];
    })
    .await;
    let session: SessionInfo = harness.browser().create_session().await.unwrap();
    let turn = session
        .ice_servers
        .iter()
        .find(|server| server.urls.iter().any(|url| url.starts_with("turn:")))
        .expect("a TURN server in the session answer");
    assert!(turn
        .urls
        .contains(&format!("turn:127.0.0.1:{port}?transport=udp")));
    TurnCredentials {
        username: turn.username.clone().unwrap(),
        credential: turn.credential.clone().unwrap(),
    }
}

/// The coturn binary, or `None` (after a loud message) when the test may
/// be skipped.
fn turnserver_or_skip() -> Option<PathBuf> {
    let binary = find_turnserver();
    if binary.is_none() {
        if coturn_required() {
            panic!(
                "BEELINE_REQUIRE_COTURN is set but coturn's turnserver is not installed; \
                 run scripts/ensure-coturn.sh"
            );
        }
        eprintln!(
            "\n\n!!!!!!!! SKIPPED: coturn (turnserver) is not installed, so the TURN credentials \
             were NOT checked against a real coturn. Run scripts/ensure-coturn.sh, or set \
             BEELINE_REQUIRE_COTURN=1 to make this a failure. !!!!!!!!\n\n"
        );
    }
    binary
}

#[tokio::test]
async fn coturn_accepts_fresh_and_rotated_credentials_and_refuses_expired_and_forged_ones() {
    let Some(binary) = turnserver_or_skip() else {
        return;
    };
    let mut coturn = Coturn::start(&binary);
    coturn.wait_ready().await;

    // 1. Fresh credentials from signal-api, signed with the first secret.
    let fresh = credentials_from_signal_api(&coturn, TurnSecrets::new(FIRST_SECRET, None)).await;
    let relayed = allocate(&coturn, &fresh)
        .await
        .unwrap_or_else(|e| panic!("fresh credentials refused: {e}\n{}", coturn.log()));
    assert!(relayed.ip().is_loopback(), "{relayed}");

    // 2. Past their expiry: refused.
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let expired = turn_credentials(FIRST_SECRET, Duration::from_secs(300), an_hour_ago);
    expect_refused(
        &coturn,
        "expired credentials",
        allocate(&coturn, &expired).await,
    );

    // 3. Signed with a secret coturn does not know: refused.
    let forged = turn_credentials(
        "not-the-secret",
        Duration::from_secs(300),
        SystemTime::now(),
    );
    expect_refused(
        &coturn,
        "wrong-secret credentials",
        allocate(&coturn, &forged).await,
    );

    // 4. Mid-rotation, signal-api issues with the second secret (keeping the
    // first for verification): coturn, which has both lines, accepts them.
    let rotated = credentials_from_signal_api(
        &coturn,
        TurnSecrets::new(SECOND_SECRET, Some(FIRST_SECRET.to_owned())),
    )
    .await;
    assert_ne!(
        rotated.credential,
        beeline_signal_server::turn_credential(FIRST_SECRET, &rotated.username),
        "the rotated credentials must be signed with the second secret"
    );
    allocate(&coturn, &rotated)
        .await
        .unwrap_or_else(|e| panic!("second-secret credentials refused: {e}\n{}", coturn.log()));
}

/// docs/examples/turnserver.conf, with only what ties it to a real host
/// replaced (addresses, ports, TLS files, logging) and its secret filled in,
/// accepts the credentials signal-api mints and refuses forged ones.
#[tokio::test]
async fn the_example_coturn_config_accepts_signal_api_credentials() {
    let Some(binary) = turnserver_or_skip() else {
        return;
    };
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/examples/turnserver.conf"
    );
    let text = std::fs::read_to_string(example).unwrap();
    assert!(text.lines().any(|l| l == "use-auth-secret"), "{example}");
    let host_specific = [
        "listening-port=",
        "tls-listening-port=",
        "cert=",
        "pkey=",
        "min-port=",
        "max-port=",
        "log-file=",
        "static-auth-secret=",
    ];
    let settings: String = text
        .lines()
        .filter(|line| !host_specific.iter().any(|key| line.starts_with(key)))
        .map(|line| format!("{line}\n"))
        .collect();
    let mut coturn = Coturn::start_with(
        &binary,
        &format!("{settings}static-auth-secret={FIRST_SECRET}\n"),
    );
    coturn.wait_ready().await;

    let minted = credentials_from_signal_api(&coturn, TurnSecrets::new(FIRST_SECRET, None)).await;
    // The example refuses loopback peers, so only the allocation is checked.
    allocate_and_maybe_relay(&coturn, &minted, false)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the example config refused signal-api's credentials: {e}\n{}",
                coturn.log()
            )
        });
    let forged = turn_credentials(
        "not-the-secret",
        Duration::from_secs(300),
        SystemTime::now(),
    );
    expect_refused(
        &coturn,
        "wrong-secret credentials",
        allocate_and_maybe_relay(&coturn, &forged, false).await,
    );
}
