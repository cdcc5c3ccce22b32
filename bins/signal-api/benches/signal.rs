//! Signaling figures of the real `signal-api` binary on loopback:
//! posts per second, poll wake latency (p50/p99), and the server's RSS while
//! 1,000 long-polls wait. Prints a table and writes `target/bench/signal.json`.
//!
//! Run with `cargo bench -p signal-api --bench signal`. Goals: ≥ 2,000
//! posts/s, wake p99 ≤ 5 ms, RSS ≤ 100 MB at 1,000 waiters; a missed goal is
//! reported, not fatal. Every phase is bounded in count and in time.
//!
//! Then the same figures for three instances sharing one PostgreSQL (a
//! throwaway cluster, `beeline_test_support::postgres`; skipped with a note
//! when PostgreSQL is not installed): posts/s across the three (goal ≥
//! 5,000), wake-ups of a poll on one instance by a post on another (p99 goal
//! ≤ 10 ms), and one instance's RSS while 1,000 polls wait on it (goal ≤ 100
//! MB).

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use beeline_signal_client::{SignalClient, SignalMessage};
use serde_json::json;

const HOME_TOKEN: &str = "bench-home-token";
/// Posts in the throughput phase, and how long it may take at most.
const POSTS: usize = 20_000;
const POST_BUDGET: Duration = Duration::from_secs(60);
/// Concurrent posting connections.
const POSTERS: usize = 16;
/// Wake-up samples, and how long the phase may take at most.
const WAKE_ROUNDS: usize = 500;
const WAKE_BUDGET: Duration = Duration::from_secs(60);
/// Long-polls held at once for the memory figure.
const WAITERS: usize = 1_000;
const WAITERS_BUDGET: Duration = Duration::from_secs(60);

const GOAL_POSTS_PER_SEC: f64 = 2_000.0;
const GOAL_WAKE_P99_MS: f64 = 5.0;
const GOAL_RSS_MB: f64 = 100.0;

/// Instances sharing PostgreSQL, and their posting connections in all.
const INSTANCES: usize = 3;
const MULTI_POSTERS: usize = 48;
const MULTI_POSTS: usize = 30_000;
const GOAL_MULTI_POSTS_PER_SEC: f64 = 5_000.0;
const GOAL_CROSS_WAKE_P99_MS: f64 = 10.0;

/// The server process; killed when dropped.
struct Server {
    child: Child,
    base: String,
    metrics: String,
    _dir: tempfile::TempDir,
}

impl Server {
    /// One instance on `db` (a PostgreSQL URL), or on a fresh SQLite file.
    fn start(db: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = db.map_or_else(
            || dir.path().join("signal.db").into_os_string(),
            std::ffi::OsString::from,
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_signal-api"))
            .env_clear()
            .env("RUST_LOG", "warn,signal_api=info")
            .args(["--listen", "127.0.0.1:0", "--browser-auth", "open"])
            .args(["--home-token", HOME_TOKEN])
            .arg("--db")
            .arg(db)
            // The bench is one client address and one identity.
            .args(["--sessions-per-ip-per-minute", "0"])
            .args(["--max-polls-per-identity", "0"])
            .args(["--max-messages-per-session", "0"])
            .args(["--posts-per-session-per-minute", "0"])
            .args(["--posts-per-identity-per-minute", "0"])
            .args(["--max-live-sessions-per-ip", "0"])
            .args(["--max-live-sessions-per-identity", "0"])
            .args(["--long-poll-timeout", "120"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    let _ = tx.send(line[at + "listening on ".len()..].trim().to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("signal-api did not start");
        Self {
            child,
            base: format!("{url}/webrtc"),
            metrics: format!("{url}/metrics"),
            _dir: dir,
        }
    }

    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb / 1024.0
    }

    async fn metric(&self, http: &reqwest::Client, series: &str) -> f64 {
        let text = http
            .get(&self.metrics)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} missing"))
            .parse()
            .unwrap()
    }

    async fn until_waiting(&self, http: &reqwest::Client, count: usize, budget: Duration) {
        let deadline = Instant::now() + budget;
        while self.metric(http, "beeline_longpolls_waiting").await as usize != count {
            assert!(Instant::now() < deadline, "never saw {count} waiting polls");
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Time from sending a post until the poll it wakes has its answer.
async fn wake_latencies(server: &Server, http: &reqwest::Client) -> Vec<f64> {
    let browser = SignalClient::new(&server.base).unwrap();
    let home = SignalClient::new(&server.base)
        .unwrap()
        .with_bearer(HOME_TOKEN);
    let session = browser.create_session().await.unwrap().session_id;
    let deadline = Instant::now() + WAKE_BUDGET;
    let mut cursor = 0;
    let mut samples = Vec::new();
    for round in 0..WAKE_ROUNDS {
        if Instant::now() > deadline {
            break;
        }
        let poller = browser.clone();
        let id = session.clone();
        let waiting = tokio::spawn(async move {
            let poll = poller.poll(Some(&id), cursor).await.unwrap();
            (poll, Instant::now())
        });
        server.until_waiting(http, 1, Duration::from_secs(10)).await;
        let sent = Instant::now();
        home.post(&SignalMessage::candidate(
            &session,
            json!({"candidate": round}),
        ))
        .await
        .unwrap();
        let (poll, received) = waiting.await.unwrap();
        assert_eq!(poll.messages.len(), 1);
        cursor = poll.cursor;
        samples.push((received - sent).as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    samples
}

/// RSS with `WAITERS` held polls, and how long waking them all takes.
async fn waiters(server: &Server, http: &reqwest::Client) -> (f64, f64, f64) {
    let browser = SignalClient::new(&server.base).unwrap();
    let mut sessions = Vec::with_capacity(WAITERS);
    for _ in 0..WAITERS {
        sessions.push(browser.create_session().await.unwrap().session_id);
    }
    let idle_rss = server.rss_mb();
    // One connection per poll, as 1,000 browsers would have.
    let polls: Vec<_> = sessions
        .iter()
        .map(|session| {
            let client = SignalClient::new(&server.base).unwrap();
            let session = session.clone();
            tokio::spawn(
                async move { client.poll(Some(&session), 0).await.unwrap().messages.len() },
            )
        })
        .collect();
    server.until_waiting(http, WAITERS, WAITERS_BUDGET).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss = server.rss_mb();

    // Wake every one of them.
    let home = Arc::new(
        SignalClient::new(&server.base)
            .unwrap()
            .with_bearer(HOME_TOKEN),
    );
    let started = Instant::now();
    let chunks: Vec<Vec<String>> = sessions
        .chunks(WAITERS / 8)
        .map(<[String]>::to_vec)
        .collect();
    let posts: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let home = home.clone();
            tokio::spawn(async move {
                for session in chunk {
                    home.post(&SignalMessage::bye(&session)).await.unwrap();
                }
            })
        })
        .collect();
    for post in posts {
        post.await.unwrap();
    }
    let mut woken = 0;
    for poll in polls {
        woken += tokio::time::timeout(WAITERS_BUDGET, poll)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(woken, WAITERS);
    (idle_rss, rss, started.elapsed().as_secs_f64() * 1000.0)
}

/// Acknowledged posts per second (and their count and p99 latency in ms):
/// `posts` in all on `posters` connections, each posting to its own
/// session on one of `servers` (round-robin over them).
async fn posts_per_second(servers: &[Server], posters: usize, posts: usize) -> (f64, usize, f64) {
    let browser = SignalClient::new(&servers[0].base).unwrap();
    let mut sessions = Vec::new();
    for _ in 0..posters {
        sessions.push(browser.create_session().await.unwrap().session_id);
    }
    let started = Instant::now();
    let deadline = started + POST_BUDGET;
    let tasks: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(i, session)| {
            let client = SignalClient::new(&servers[i % servers.len()].base).unwrap();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for n in 0..posts / posters {
                    if Instant::now() > deadline {
                        break;
                    }
                    let candidate = json!({"candidate": format!("candidate:{n} 1 udp 2122260223 192.0.2.1 5000 typ host"), "sdpMid": "0"});
                    let sent = Instant::now();
                    client
                        .post(&SignalMessage::candidate(&session, candidate))
                        .await
                        .unwrap();
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    (
        latencies.len() as f64 / elapsed,
        latencies.len(),
        percentile(&latencies, 99.0),
    )
}

/// From sending a post to one instance until the poll it wakes on another
/// has its answer; the instances take turns.
async fn cross_wake_latencies(servers: &[Server], http: &reqwest::Client) -> Vec<f64> {
    let session = SignalClient::new(&servers[0].base)
        .unwrap()
        .create_session()
        .await
        .unwrap()
        .session_id;
    let deadline = Instant::now() + WAKE_BUDGET;
    let mut cursor = 0;
    let mut samples = Vec::new();
    for round in 0..WAKE_ROUNDS {
        if Instant::now() > deadline {
            break;
        }
        let waits = &servers[round % servers.len()];
        let posts = &servers[(round + 1) % servers.len()];
        let poller = SignalClient::new(&waits.base).unwrap();
        let id = session.clone();
        let waiting = tokio::spawn(async move {
            let poll = poller.poll(Some(&id), cursor).await.unwrap();
            (poll, Instant::now())
        });
        waits.until_waiting(http, 1, Duration::from_secs(10)).await;
        let home = SignalClient::new(&posts.base)
            .unwrap()
            .with_bearer(HOME_TOKEN);
        let sent = Instant::now();
        home.post(&SignalMessage::candidate(
            &session,
            json!({"candidate": round}),
        ))
        .await
        .unwrap();
        let (poll, received) = waiting.await.unwrap();
        assert_eq!(poll.messages.len(), 1);
        cursor = poll.cursor;
        samples.push((received - sent).as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    samples
}

/// Figures of three instances on one PostgreSQL.
struct MultiFigures {
    posts_per_sec: f64,
    posts: usize,
    post_p99: f64,
    wakes: Vec<f64>,
    idle_rss: f64,
    rss: f64,
    others_rss: Vec<f64>,
    wake_all_ms: f64,
}

async fn multi_instance(http: &reqwest::Client) -> Option<MultiFigures> {
    let pg = beeline_test_support::postgres::TestPostgres::start_or_skip(
        "the signal bench's PostgreSQL rows",
    )?;
    let url = pg.create_database("bench");
    let servers: Vec<Server> = (0..INSTANCES).map(|_| Server::start(Some(&url))).collect();
    eprintln!("signal bench: {MULTI_POSTS} posts across {INSTANCES} instances on PostgreSQL…");
    let (posts_per_sec, posts, post_p99) =
        posts_per_second(&servers, MULTI_POSTERS, MULTI_POSTS).await;
    eprintln!("signal bench: {WAKE_ROUNDS} cross-instance wake-ups…");
    let wakes = cross_wake_latencies(&servers, http).await;
    eprintln!("signal bench: {WAITERS} polls waiting on one instance…");
    let (idle_rss, rss, wake_all_ms) = waiters(&servers[0], http).await;
    let others_rss = servers[1..].iter().map(Server::rss_mb).collect();
    drop(servers);
    drop(pg);
    Some(MultiFigures {
        posts_per_sec,
        posts,
        post_p99,
        wakes,
        idle_rss,
        rss,
        others_rss,
        wake_all_ms,
    })
}

fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // …/target/<profile>/signal-api
    PathBuf::from(env!("CARGO_BIN_EXE_signal-api"))
        .parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that is not ours means another
    // bench was asked for.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && a != "signal")
    {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = Server::start(None);
        let http = reqwest::Client::new();
        eprintln!("signal bench: {POSTS} posts on {POSTERS} connections…");
        let (posts_per_sec, posts, post_p99) = posts_per_second(std::slice::from_ref(&server), POSTERS, POSTS).await;
        eprintln!("signal bench: {WAKE_ROUNDS} wake-ups…");
        let wakes = wake_latencies(&server, &http).await;
        let (wake_p50, wake_p99) = (percentile(&wakes, 50.0), percentile(&wakes, 99.0));
        eprintln!("signal bench: {WAITERS} waiting polls…");
        let (idle_rss, rss, wake_all_ms) = waiters(&server, &http).await;
        let server_wake_count = server
            .metric(&http, "beeline_poll_wake_latency_seconds_count")
            .await;
        let server_wake_under_1ms = server
            .metric(&http, "beeline_poll_wake_latency_seconds_bucket{le=\"0.001\"}")
            .await;

        let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
        let row = |figure: String, value: String, goal: &str, met: &str| {
            println!("| {figure:<44} | {value:>10} | {goal:>9} | {met:<6} |");
        };
        println!();
        row("figure".into(), "value".into(), "goal", "");
        println!("|{:-<46}|{:-<12}|{:-<11}|{:-<8}|", "", "", "", "");
        row(
            format!("posts/s ({posts} posts, {POSTERS} connections)"),
            format!("{posts_per_sec:.0}"),
            &format!(">= {GOAL_POSTS_PER_SEC:.0}"),
            verdict(posts_per_sec >= GOAL_POSTS_PER_SEC),
        );
        row("post latency p99 (ms)".into(), format!("{post_p99:.2}"), "", "");
        row(
            format!("poll wake latency p50 (ms, {} samples)", wakes.len()),
            format!("{wake_p50:.2}"),
            "",
            "",
        );
        row(
            "poll wake latency p99 (ms)".into(),
            format!("{wake_p99:.2}"),
            &format!("<= {GOAL_WAKE_P99_MS:.1}"),
            verdict(wake_p99 <= GOAL_WAKE_P99_MS),
        );
        row(
            format!("server RSS, {WAITERS} idle sessions (MB)"),
            format!("{idle_rss:.1}"),
            "",
            "",
        );
        row(
            format!("server RSS, {WAITERS} waiting polls (MB)"),
            format!("{rss:.1}"),
            &format!("<= {GOAL_RSS_MB:.0}"),
            verdict(rss <= GOAL_RSS_MB),
        );
        row(
            format!("wake all {WAITERS} waiters (ms)"),
            format!("{wake_all_ms:.1}"),
            "",
            "",
        );
        row(
            "server-side wakes answered within 1 ms".into(),
            format!(
                "{:.1}%",
                100.0 * server_wake_under_1ms / server_wake_count.max(1.0)
            ),
            "",
            "",
        );
        drop(server);
        let multi = multi_instance(&http).await;
        if let Some(m) = &multi {
            let (p50, p99) = (percentile(&m.wakes, 50.0), percentile(&m.wakes, 99.0));
            row(
                format!("PostgreSQL x{INSTANCES}: posts/s ({} posts)", m.posts),
                format!("{:.0}", m.posts_per_sec),
                &format!(">= {GOAL_MULTI_POSTS_PER_SEC:.0}"),
                verdict(m.posts_per_sec >= GOAL_MULTI_POSTS_PER_SEC),
            );
            row("  post latency p99 (ms)".into(), format!("{:.2}", m.post_p99), "", "");
            row(
                format!("  cross-instance wake p50 (ms, {} samples)", m.wakes.len()),
                format!("{p50:.2}"),
                "",
                "",
            );
            row(
                "  cross-instance wake p99 (ms)".into(),
                format!("{p99:.2}"),
                &format!("<= {GOAL_CROSS_WAKE_P99_MS:.1}"),
                verdict(p99 <= GOAL_CROSS_WAKE_P99_MS),
            );
            row(
                format!("  instance RSS, {WAITERS} idle sessions (MB)"),
                format!("{:.1}", m.idle_rss),
                "",
                "",
            );
            row(
                format!("  instance RSS, {WAITERS} waiting polls (MB)"),
                format!("{:.1}", m.rss),
                &format!("<= {GOAL_RSS_MB:.0}"),
                verdict(m.rss <= GOAL_RSS_MB),
            );
            row(
                "  other instances' RSS (MB)".into(),
                m.others_rss
                    .iter()
                    .map(|mb| format!("{mb:.1}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                "",
                "",
            );
            row(
                format!("  wake all {WAITERS} waiters (ms)"),
                format!("{:.1}", m.wake_all_ms),
                "",
                "",
            );
        }
        println!();
        println!("wake latency = from sending the POST until the waiting poll's answer arrives (client side, loopback).");
        println!("cross-instance: the poll waits on one instance, the post goes to another; both on one PostgreSQL.");

        let postgres = multi.as_ref().map(|m| {
            let p99 = percentile(&m.wakes, 99.0);
            json!({
                "instances": INSTANCES,
                "posters": MULTI_POSTERS,
                "posts": m.posts,
                "posts_per_sec": m.posts_per_sec,
                "post_latency_p99_ms": m.post_p99,
                "cross_wake_samples": m.wakes.len(),
                "cross_wake_latency_p50_ms": percentile(&m.wakes, 50.0),
                "cross_wake_latency_p99_ms": p99,
                "instance_rss_idle_mb": m.idle_rss,
                "instance_rss_waiting_mb": m.rss,
                "other_instances_rss_mb": m.others_rss,
                "wake_all_waiters_ms": m.wake_all_ms,
                "goals": {
                    "posts_per_sec": GOAL_MULTI_POSTS_PER_SEC,
                    "cross_wake_latency_p99_ms": GOAL_CROSS_WAKE_P99_MS,
                    "instance_rss_waiting_mb": GOAL_RSS_MB,
                },
                "met": {
                    "posts_per_sec": m.posts_per_sec >= GOAL_MULTI_POSTS_PER_SEC,
                    "cross_wake_latency_p99_ms": p99 <= GOAL_CROSS_WAKE_P99_MS,
                    "instance_rss_waiting_mb": m.rss <= GOAL_RSS_MB,
                },
            })
        });
        let report = json!({
            "postgres": postgres,
            "posts": posts,
            "posters": POSTERS,
            "posts_per_sec": posts_per_sec,
            "post_latency_p99_ms": post_p99,
            "wake_samples": wakes.len(),
            "wake_latency_p50_ms": wake_p50,
            "wake_latency_p99_ms": wake_p99,
            "waiters": WAITERS,
            "rss_idle_mb": idle_rss,
            "rss_waiting_mb": rss,
            "wake_all_waiters_ms": wake_all_ms,
            "goals": {
                "posts_per_sec": GOAL_POSTS_PER_SEC,
                "wake_latency_p99_ms": GOAL_WAKE_P99_MS,
                "rss_waiting_mb": GOAL_RSS_MB,
            },
            "met": {
                "posts_per_sec": posts_per_sec >= GOAL_POSTS_PER_SEC,
                "wake_latency_p99_ms": wake_p99 <= GOAL_WAKE_P99_MS,
                "rss_waiting_mb": rss <= GOAL_RSS_MB,
            },
        });
        let dir = target_dir().join("bench");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("signal.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
        println!("wrote {}", path.display());
    });
}
