//! Runs the real `signal-api` binary and reads its log.
#![allow(dead_code, unreachable_pub)]

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

pub const TOKEN: &str = "never-log-this-token";

pub fn command(db_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_signal-api"));
    command
        .env_clear()
        .env("RUST_LOG", "info")
        .arg("--db")
        .arg(db_dir.join("signal.db"));
    command
}

/// A running `signal-api` and the lines it has logged so far.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl Running {
    pub fn start(mut command: Command) -> Self {
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
    pub fn bound_url(&mut self) -> String {
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
    pub fn terminate(mut self) -> (bool, Vec<String>) {
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

impl Running {
    /// Kills the process with SIGKILL: no shutdown code runs.
    pub fn kill_hard(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}
