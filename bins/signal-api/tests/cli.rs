//! The binary as an operator runs it: refuses to start without a browser
//! auth choice, logs its bound address, honours flag > env > file, never
//! logs the token, and exits cleanly on SIGTERM.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

const TOKEN: &str = "never-log-this-token";

fn command(db_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_signal-api"));
    command
        .env_clear()
        .env("RUST_LOG", "info")
        .arg("--db")
        .arg(db_dir.join("signal.db"));
    command
}

/// A running `signal-api` and the lines it has logged so far.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Running {
    fn start(mut command: Command) -> Self {
        let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for the `listening on http://...` line and returns the URL.
    fn bound_url(&mut self) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no listening line; log so far: {:#?}", self.log));
            self.log.push(line.clone());
            if let Some(at) = line.find("listening on http://") {
                let url = &line[at + "listening on ".len()..];
                // Text logs end the line there; JSON logs close the string.
                let end = url
                    .find(|c: char| c.is_whitespace() || c == '"')
                    .unwrap_or(url.len());
                return url[..end].to_owned();
            }
        }
    }

    /// Sends SIGTERM and returns whether it exited successfully, plus its log.
    fn terminate(mut self) -> (bool, Vec<String>) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.log.extend(self.lines.try_iter());
                return (status.success(), std::mem::take(&mut self.log));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill().unwrap();
        panic!("signal-api did not exit after SIGTERM");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
