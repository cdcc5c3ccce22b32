//! The binary as an operator runs it: refuses to start without a browser
//! auth choice, logs its bound address, honours flag > env > file, never
//! logs the token, and exits cleanly on SIGTERM.

mod common;

use common::{command, Running, TOKEN};

#[test]
fn refuses_to_start_without_a_browser_auth_choice() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path())
        .args(["--home-token", TOKEN, "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--browser-auth open"), "{stderr}");
}

#[tokio::test]
async fn serves_on_an_ephemeral_port_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--home-token",
        TOKEN,
        "--browser-auth",
        "open",
    ]);
    let mut running = Running::start(cmd);
    let url = running.bound_url();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(!url.ends_with(":0"), "{url}");

    let health = reqwest::get(format!("{url}/healthz")).await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
    let session = reqwest::Client::new()
        .post(format!("{url}/webrtc/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), 200);

    let (clean, log) = running.terminate();
    assert!(clean, "exit was not clean: {log:#?}");
    assert!(
        log.iter()
            .any(|line| line.contains("WARN") && line.contains("OPEN")),
        "{log:#?}"
    );
    assert!(
        !log.iter().any(|line| line.contains(TOKEN)),
        "token leaked: {log:#?}"
    );
}

#[tokio::test]
async fn flag_beats_env_beats_file() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let config = dir.path().join("signal-api.toml");
    std::fs::write(
        &config,
        r#"
        listen = "127.0.0.1:0"
        browser_auth = "open"
        home_token_file = "token"
        base_path = "/from-file"
        relay_upstream = "http://127.0.0.1:9"
        "#,
    )
    .unwrap();

    // File alone: its base path is used, and its relative token path resolves.
    let mut cmd = command(dir.path());
    cmd.arg("--config").arg(&config).arg("--log-json");
    let mut running = Running::start(cmd);
    let url = running.bound_url();
    let http = reqwest::Client::new();
    let status = |path: &str| {
        let request = http.get(format!("{url}{path}")).bearer_auth(TOKEN);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/from-file/client.js").await, 200);
    // The home token from the file authenticates the home peer.
    let poll = http
        .get(format!("{url}/from-file/signal?after=0"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), 401);
    assert!(
        running.log.iter().all(|line| line.starts_with('{')),
        "--log-json: {:#?}",
        running.log
    );
    drop(running);

    // Env overrides the file.
    let mut cmd = command(dir.path());
    cmd.arg("--config")
        .arg(&config)
        .env("BEELINE_BASE_PATH", "/from-env");
    let mut running = Running::start(cmd);
    let url = running.bound_url();
    let get = |path: String| async move { reqwest::get(path).await.unwrap().status().as_u16() };
    assert_eq!(get(format!("{url}/from-env/client.js")).await, 200);
    // Unmatched paths go to the file's (dead) relay upstream.
    assert_eq!(get(format!("{url}/from-file/client.js")).await, 502);
    drop(running);

    // A flag overrides both.
    let mut cmd = command(dir.path());
    cmd.arg("--config")
        .arg(&config)
        .env("BEELINE_BASE_PATH", "/from-env")
        .args(["--base-path", "/from-flag"]);
    let mut running = Running::start(cmd);
    let url = running.bound_url();
    assert_eq!(get(format!("{url}/from-flag/client.js")).await, 200);
    assert_eq!(get(format!("{url}/from-env/client.js")).await, 502);
}

#[test]
fn help_documents_every_setting_with_its_environment_variable() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_signal-api"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "--home <NAME=SOURCE>",
        "[env: BEELINE_HOMES=]",
        "--browser-auth <MODE>",
        "proxy-header",
        "--jwt-public-key-file",
        "--trusted-proxy",
        "--cors-origin",
        "--turn-previous-secret-file",
        "--turn-host",
        "--sessions-per-ip-per-minute",
        "--max-polls-per-identity",
        "--log-json",
        "--db <PATH|URL>",
        "--db-pool-size <N>",
        "POST {base}/report",
        "Precedence: flags > environment > config file",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

#[tokio::test]
async fn jwt_mode_refuses_browsers_without_a_valid_token() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt-secret");
    std::fs::write(&secret, "test-only-jwt-secret\n").unwrap();
    let mut cmd = command(dir.path());
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--home-token",
        TOKEN,
        "--browser-auth",
        "jwt",
    ])
    .arg("--jwt-secret-file")
    .arg(&secret)
    .args(["--jwt-cookie", "session_jwt"]);
    let mut running = Running::start(cmd);
    let url = running.bound_url();
    let http = reqwest::Client::new();
    let session_url = format!("{url}/webrtc/session");
    let anonymous = http.post(&session_url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "alice", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(b"test-only-jwt-secret"),
    )
    .unwrap();
    let with_cookie = http
        .post(&session_url)
        .header("cookie", format!("session_jwt={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(with_cookie.status(), 200);
    let (clean, log) = running.terminate();
    assert!(clean, "{log:#?}");
    assert!(!log.iter().any(|l| l.contains("OPEN")), "{log:#?}");
    assert!(
        !log.iter().any(|l| l.contains("test-only-jwt-secret")),
        "{log:#?}"
    );
}

/// A database URL that cannot be used stops the start at once, saying
/// what is wrong, and never shows the password.
#[test]
fn a_bad_or_unreachable_database_url_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    for (url, expected) in [
        (
            "postgres://beeline:hunter2@127.0.0.1:notaport/signal".to_owned(),
            "invalid PostgreSQL URL",
        ),
        (
            format!("postgres://beeline:hunter2@127.0.0.1:{port}/signal"),
            "could not connect to the signaling database",
        ),
    ] {
        let started = std::time::Instant::now();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_signal-api"))
            .env_clear()
            .current_dir(dir.path())
            .args(["--home-token", TOKEN, "--listen", "127.0.0.1:0"])
            .args(["--browser-auth", "open", "--db", &url])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{url}: {stderr}");
        assert!(stderr.contains("beeline:***@127.0.0.1"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "password shown: {stderr}");
        assert!(started.elapsed() < std::time::Duration::from_secs(15));
    }
}
