//! The processes a benchmark runs against: the bench upstream, signal-api
//! and home-peer, each optionally inside a network namespace. Every child is
//! killed when its handle is dropped, so a failing phase leaves nothing
//! behind (`scripts/bench.sh` also kills whatever is left in its namespaces).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// The home token every bench stack uses.
pub(crate) const HOME_TOKEN: &str = "beeline-bench-home-token";

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A child process with its output kept (the last lines, for errors).
pub(crate) struct Proc {
    pub(crate) name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proc {
    /// SIGTERM first (home-peer shuts down cleanly, a profiler writes its
    /// data), SIGKILL after 3 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `program args` (inside `netns` when given).
    pub(crate) fn spawn(
        name: &str,
        netns: Option<&str>,
        program: &Path,
        args: &[String],
    ) -> Result<Self> {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .env(
                "RUST_LOG",
                std::env::var("BEELINE_BENCH_CHILD_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        for out in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as _),
        ]
        .into_iter()
        .flatten()
        {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let mut l = lines.lock().expect("not poisoned");
                    if l.len() > 2000 {
                        l.drain(..1000);
                    }
                    l.push(strip_ansi(&line));
                }
            });
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            lines,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the process printed.
    pub(crate) fn tail(&self) -> String {
        let l = self.lines.lock().expect("not poisoned");
        l[l.len().saturating_sub(30)..].join("\n")
    }

    /// Waits for a printed line containing `marker` and returns what follows it
    /// up to the next whitespace.
    pub(crate) fn wait_for(&mut self, marker: &str) -> Result<String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            {
                let l = self.lines.lock().expect("not poisoned");
                if let Some(rest) = l.iter().find_map(|line| {
                    line.find(marker)
                        .map(|at| line[at + marker.len()..].to_owned())
                }) {
                    return Ok(rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "{} exited ({status}) before printing {marker:?}:\n{}",
                    self.name,
                    self.tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not print {marker:?} within {START_TIMEOUT:?}:\n{}",
                    self.name,
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident set size in MB (of the process itself, not `ip netns exec`,
    /// which execs it).
    pub(crate) fn rss_mb(&self) -> Option<f64> {
        rss_mb(self.pid())
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// VmRSS of `pid` in MB.
pub(crate) fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU time (user + system) `pid` has used, in seconds; `None` for this
/// process reads `/proc/self`. Linux reports it in USER_HZ (100/s).
pub(crate) fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Context switches (voluntary + involuntary) summed over every thread of
/// `pid` (`None`: this process). Many per megabyte means per-packet thread
/// or task hand-offs.
pub(crate) fn context_switches(pid: Option<u32>) -> Option<u64> {
    let dir = pid.map_or_else(
        || "/proc/self/task".to_owned(),
        |p| format!("/proc/{p}/task"),
    );
    let mut total = 0;
    for task in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            if line.starts_with("voluntary_ctxt_switches:")
                || line.starts_with("nonvoluntary_ctxt_switches:")
            {
                total += line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Some(total)
}

/// Where the release binaries are.
#[derive(Debug, Clone)]
pub(crate) struct Bins {
    pub(crate) dir: PathBuf,
}

impl Bins {
    pub(crate) fn path(&self, name: &str) -> Result<PathBuf> {
        let p = self.dir.join(name);
        if !p.is_file() {
            bail!(
                "{} is missing; run `cargo build --release --bins` first",
                p.display()
            );
        }
        Ok(p)
    }

    pub(crate) fn this() -> Result<PathBuf> {
        std::env::current_exe().context("locating beeline-bench itself")
    }
}

/// Starts the bench upstream; returns it and its `http://addr`.
pub(crate) fn start_upstream(netns: Option<&str>, listen: &str) -> Result<(Proc, String)> {
    let mut p = Proc::spawn(
        "upstream",
        netns,
        &Bins::this()?,
        &["upstream".into(), "--listen".into(), listen.into()],
    )?;
    let url = p.wait_for("listening on ")?;
    Ok((p, url))
}

/// Starts signal-api relaying to `relay_upstream` (or, with `None`, over
/// the home link); returns it and its `http://addr`.
pub(crate) fn start_signal_api(
    bins: &Bins,
    netns: Option<&str>,
    listen: &str,
    relay_upstream: Option<&str>,
    db_dir: &Path,
) -> Result<(Proc, String)> {
    let relay: Vec<&str> = match relay_upstream {
        Some(upstream) => vec!["--relay-upstream", upstream],
        None => Vec::new(),
    };
    let args: Vec<String> = [
        "--listen",
        listen,
        "--home-token",
        HOME_TOKEN,
        "--browser-auth",
        "open",
    ]
    .into_iter()
    .chain(relay)
    .chain([
        "--sessions-per-ip-per-minute",
        "0",
        "--sessions-per-identity-per-minute",
        "0",
        "--max-polls-per-identity",
        "0",
        "--max-messages-per-session",
        "0",
        "--posts-per-session-per-minute",
        "0",
        "--posts-per-identity-per-minute",
        "0",
        "--max-live-sessions-per-identity",
        "0",
        "--max-live-sessions-per-ip",
        "0",
    ])
    .map(str::to_owned)
    .chain([
        "--db".to_owned(),
        db_dir.join("signal.db").display().to_string(),
    ])
    .collect();
    let mut p = Proc::spawn("signal-api", netns, &bins.path("signal-api")?, &args)?;
    let url = p.wait_for("listening on ")?;
    Ok((p, url))
}

/// Starts home-peer; ICE confined to `allow_ip`.
pub(crate) fn start_home_peer(
    bins: &Bins,
    netns: Option<&str>,
    signal_base: &str,
    upstream: &str,
    allow_ip: &str,
) -> Result<Proc> {
    start_home_peer_with(bins, netns, signal_base, upstream, allow_ip, &[])
}

/// Starts home-peer with `extra` flags; ICE confined to `allow_ip`.
pub(crate) fn start_home_peer_with(
    bins: &Bins,
    netns: Option<&str>,
    signal_base: &str,
    upstream: &str,
    allow_ip: &str,
    extra: &[&str],
) -> Result<Proc> {
    let args: Vec<String> = [
        "--signal-url",
        signal_base,
        "--token",
        HOME_TOKEN,
        "--upstream",
        upstream,
        "--allow-ip",
        allow_ip,
    ]
    .iter()
    .chain(extra)
    .map(|s| (*s).to_owned())
    .collect();
    // BEELINE_BENCH_HOME_WRAP runs home-peer under a profiler, e.g.
    // "valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p".
    let mut p = match std::env::var("BEELINE_BENCH_HOME_WRAP")
        .ok()
        .filter(|w| !w.trim().is_empty())
    {
        Some(wrap) => {
            let mut words = wrap.split_whitespace().map(str::to_owned);
            let program = PathBuf::from(words.next().unwrap_or_default());
            let wrapped: Vec<String> = words
                .chain([bins.path("home-peer")?.display().to_string()])
                .chain(args)
                .collect();
            Proc::spawn("home-peer", netns, &program, &wrapped)?
        }
        None => Proc::spawn("home-peer", netns, &bins.path("home-peer")?, &args)?,
    };
    p.wait_for("home peer waiting for offers")?;
    Ok(p)
}

/// A loopback stack: upstream, signal-api relaying to it, home-peer.
pub(crate) struct Stack {
    pub(crate) upstream_url: String,
    pub(crate) signal_url: String,
    pub(crate) home: Proc,
    signal: Proc,
    _upstream: Proc,
    _db: tempfile::TempDir,
}

impl Stack {
    /// The pid of the stack's signal-api (the one with `--relay-upstream`).
    pub(crate) fn signal_pid(&self) -> u32 {
        self.signal.pid()
    }

    pub(crate) async fn loopback(bins: &Bins) -> Result<Self> {
        let db = tempfile::tempdir()?;
        let (upstream, upstream_url) = start_upstream(None, "127.0.0.1:0")?;
        let (signal, signal_url) =
            start_signal_api(bins, None, "127.0.0.1:0", Some(&upstream_url), db.path())?;
        // With its loopback listener, for the loopback tier's figures (the
        // other Chromium phases turn the tier off in their clients).
        let home = start_home_peer_with(
            bins,
            None,
            &format!("{signal_url}/webrtc"),
            &upstream_url,
            "127.0.0.1",
            &["--loopback-listen", "127.0.0.1:0"],
        )?;
        wait_home_polling(&signal_url).await?;
        // signal-api offers the listener once the home link has told it.
        wait_home_link(&signal_url).await?;
        Ok(Self {
            upstream_url,
            signal_url,
            home,
            signal,
            _upstream: upstream,
            _db: db,
        })
    }

    pub(crate) fn signal_base(&self) -> String {
        format!("{}/webrtc", self.signal_url)
    }
}

/// Waits until home-peer's long-poll is held by signal-api (its metrics say so).
pub(crate) async fn wait_home_polling(signal_url: &str) -> Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(r) = http.get(format!("{signal_url}/metrics")).send().await {
            let text = r.text().await.unwrap_or_default();
            let waiting = text
                .lines()
                .find(|l| l.starts_with("beeline_longpolls_waiting"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
            if waiting >= 1.0 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("home-peer did not start polling signal-api");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `home`'s link to signal-api is up (its metrics say so).
pub(crate) async fn wait_home_link(signal_url: &str) -> Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(r) = http.get(format!("{signal_url}/metrics")).send().await {
            let text = r.text().await.unwrap_or_default();
            if text.contains("beeline_home_link_connected{home=\"home\"} 1") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("home-peer's home link did not come up");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// UDP datagrams this network namespace dropped because a socket's receive
/// buffer was full (`RcvbufErrors` in /proc/net/snmp). The bench runs in a
/// namespace of its own, so every drop counted is one of its packets, and
/// each costs webrtc-sctp a retransmission.
pub(crate) fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let names = udp.next()?.split_whitespace();
    let values = udp.next()?.split_whitespace();
    names
        .zip(values)
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
}
