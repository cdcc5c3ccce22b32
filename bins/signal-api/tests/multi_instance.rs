//! Three signal-api processes on one PostgreSQL database behind a real load
//! balancer (Debian's haproxy, round-robin, each request balanced on its
//! own), all on loopback:
//!
//! - a session created through the balancer, its offer posted to another
//!   instance and the home's poll held on a third: the offer wakes the
//!   poll, the answer comes back; then a home peer and a Rust browser
//!   connect through the balancer and the data channel opens;
//! - cross-instance wake-ups, measured (p50/p99 printed);
//! - SIGKILL of the instance holding polls while posts flow: the pollers
//!   retry through the balancer with the same cursor and read every
//!   acknowledged message exactly once, in order;
//! - PostgreSQL restarted: 503 with `Retry-After` during the gap, every
//!   acknowledged message there afterwards.
//!
//! Needs PostgreSQL (`scripts/ensure-postgres.sh`) and haproxy
//! (`scripts/ensure-haproxy.sh`); without them it is skipped with a loud
//! note, unless `BEELINE_REQUIRE_POSTGRES` is set (the `just` recipe sets
//! it), which makes a missing one a failure.

mod common;

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use beeline_signal_client::{SignalClient, SignalError, SignalKind, SignalMessage};
use beeline_test_support::postgres::{postgres_required, TestPostgres};
use common::{Running, TOKEN};
use tokio_util::sync::CancellationToken;

fn haproxy_binary() -> Option<PathBuf> {
    [
        "/usr/sbin/haproxy",
        "/usr/bin/haproxy",
        "/usr/local/sbin/haproxy",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|path| path.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// haproxy in the foreground (as `nobody` when we are root), round-robin
/// over `backends`, every request balanced on its own; killed on drop.
struct Balancer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Balancer {
    fn start(binary: &PathBuf, backends: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let addr = url.trim_start_matches("http://");
                format!("    server s{i} {addr} check inter 300ms fall 1 rise 1\n")
            })
            .collect();
        let config = format!(
            "global\n    maxconn 4000\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    \
             timeout server 60s\n    option http-server-close\n    option redispatch\n    \
             retries 3\n\
             frontend signal\n    bind 127.0.0.1:{port}\n    default_backend instances\n\
             backend instances\n    balance roundrobin\n{servers}"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        // setpriv changes user and execs: the child is haproxy itself, so
        // killing it on drop leaves nothing behind (runuser would fork and
        // leave haproxy running).
        let mut command = if is_root() {
            let id = |flag: &str| {
                let out = Command::new("id").args([flag, "nobody"]).output().unwrap();
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            };
            let mut command = Command::new("setpriv");
            command
                .arg(format!("--reuid={}", id("-u")))
                .arg(format!("--regid={}", id("-g")))
                .args(["--clear-groups", "--"])
                .arg(binary);
            command
        } else {
            Command::new(binary)
        };
        let child = command
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}/webrtc", self.port)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One signal-api process on the shared database.
fn instance(url: &str) -> (Running, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_signal-api"));
    command.env_clear().env("RUST_LOG", "info").args([
        "--listen",
        "127.0.0.1:0",
        "--db",
        url,
        "--home-token",
        TOKEN,
        "--browser-auth",
        "open",
        "--long-poll-timeout",
        "8",
        // The whole test comes from one address and one anonymous user.
        "--posts-per-session-per-minute",
        "0",
        "--posts-per-identity-per-minute",
        "0",
        "--sessions-per-ip-per-minute",
        "0",
        "--max-live-sessions-per-ip",
        "0",
        "--max-polls-per-identity",
        "0",
    ]);
    let mut running = Running::start(command);
    let base = running.bound_url();
    (running, base)
}

async fn metric(base: &str, series: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// The instance (index) whose metric `series` went up from `before`.
async fn which(bases: &[String], series: &str, before: &[u64]) -> usize {
    for _ in 0..100 {
        for (i, base) in bases.iter().enumerate() {
            if metric(base, series).await > before[i] {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no instance counted {series}");
}

async fn counts(bases: &[String], series: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for base in bases {
        out.push(metric(base, series).await);
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Polls through the balancer with the same cursor until stopped, retrying
/// every failure (a killed instance, a restarting database) after 100 ms.
async fn poll_everything(
    client: SignalClient,
    session: Option<String>,
    stop: Arc<AtomicBool>,
) -> (Vec<u64>, usize) {
    let (mut cursor, mut seen, mut retries) = (0, Vec::new(), 0);
    while !stop.load(Ordering::SeqCst) {
        match client.poll(session.as_deref(), cursor).await {
            Ok(poll) => {
                for msg in &poll.messages {
                    let seq = msg.seq.expect("messages carry their seq");
                    assert!(seq > cursor, "{seq} after cursor {cursor}");
                    seen.push(seq);
                    cursor = seq;
                }
                cursor = cursor.max(poll.cursor);
            }
            Err(_) => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    (seen, retries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_behind_haproxy_share_signaling_and_survive_failures() {
    let haproxy = haproxy_binary();
    if haproxy.is_none() {
        if postgres_required() {
            panic!("BEELINE_REQUIRE_POSTGRES is set but haproxy is not installed; run scripts/ensure-haproxy.sh");
        }
        eprintln!(
            "\n\n!!!!!!!! SKIPPED: three signal-api instances behind a balancer: haproxy is not \
             installed. Run scripts/ensure-haproxy.sh. !!!!!!!!\n\n"
        );
        return;
    }
    let Some(pg) = TestPostgres::start_or_skip("three signal-api instances on PostgreSQL") else {
        return;
    };
    let url = pg.create_database("multi");
    let mut running = Vec::new();
    let mut bases = Vec::new();
    for _ in 0..3 {
        let (process, base) = instance(&url);
        running.push(Some(process));
        bases.push(base);
    }
    let direct: Vec<String> = bases.iter().map(|b| format!("{b}/webrtc")).collect();
    let balancer = Balancer::start(haproxy.as_ref().unwrap(), &bases);
    let lb = balancer.base();
    let deadline = Instant::now() + Duration::from_secs(10);
    while reqwest::get(format!("http://127.0.0.1:{}/healthz", balancer.port))
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "haproxy never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 1. Session through the balancer; the home waits on another instance;
    //    the offer lands on the third.
    let browser = SignalClient::new(&lb).unwrap();
    let before = counts(&bases, "beeline_sessions_created_total").await;
    let session = browser.create_session().await.unwrap();
    let created_on = which(&bases, "beeline_sessions_created_total", &before).await;
    let waits_on = (created_on + 1) % 3;
    let offered_on = (created_on + 2) % 3;
    let home_poll = tokio::spawn({
        let home = SignalClient::new(&direct[waits_on])
            .unwrap()
            .with_bearer(TOKEN);
        async move { home.poll(None, 0).await.unwrap() }
    });
    while metric(&bases[waits_on], "beeline_longpolls_waiting").await == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let offer_seq = SignalClient::new(&direct[offered_on])
        .unwrap()
        .post(&SignalMessage::offer(&session.session_id, "v=0 offer"))
        .await
        .unwrap();
    let poll = home_poll.await.unwrap();
    assert_eq!(poll.messages.len(), 1);
    assert_eq!(poll.messages[0].kind, SignalKind::Offer);
    assert_eq!(poll.cursor, offer_seq);
    SignalClient::new(&lb)
        .unwrap()
        .with_bearer(TOKEN)
        .post(&SignalMessage::answer(&session.session_id, "v=0 answer"))
        .await
        .unwrap();
    let poll = browser.poll(Some(&session.session_id), 0).await.unwrap();
    assert_eq!(poll.messages[0].kind, SignalKind::Answer);
    eprintln!(
        "session created on instance {created_on}, home poll held on {waits_on}, offer posted to {offered_on}: answered"
    );

    // 2. A home peer and a Rust browser through the balancer: the channel
    //    opens though their requests are spread over the three instances.
    let stop_home = CancellationToken::new();
    {
        let upstream = Arc::new(beeline_bridge::HttpUpstream::new("http://127.0.0.1:9").unwrap());
        let signal = SignalClient::new(&lb).unwrap().with_bearer(TOKEN);
        let config = beeline_home::HomeConfig {
            peer: beeline_test_support::loopback_peer(),
            ..Default::default()
        };
        tokio::spawn(beeline_home::run(
            signal,
            upstream,
            config,
            stop_home.clone(),
        ));
    }
    let signals = |bases: Vec<String>| async move {
        let mut out = Vec::new();
        for base in &bases {
            let mut total = 0;
            for kind in ["offer", "answer", "candidate"] {
                total += metric(base, &format!("beeline_signals_total{{type=\"{kind}\"}}")).await;
            }
            out.push(total);
        }
        out
    };
    let before = signals(bases.clone()).await;
    let (peer, channel) = beeline_test_support::browser_connect(&lb).await;
    assert_eq!(channel.label(), "http");
    let after = signals(bases.clone()).await;
    let spread = before.iter().zip(&after).filter(|(b, a)| a > b).count();
    eprintln!("data channel open through the balancer; its offer, answer and candidates were posted to {spread} instances");
    drop(channel);
    peer.close().await;
    stop_home.cancel();

    // 3. Cross-instance wake-ups: the browser waits on one instance, the
    //    home posts to another.
    let session = browser.create_session().await.unwrap();
    let id = session.session_id.clone();
    let mut wakes = Vec::new();
    let mut cursor = 0;
    for round in 0..60 {
        let (waits, posts) = (round % 3, (round + 1) % 3);
        let waiter = SignalClient::new(&direct[waits]).unwrap();
        let poll = tokio::spawn({
            let id = id.clone();
            async move { waiter.poll(Some(&id), cursor).await.unwrap() }
        });
        while metric(&bases[waits], "beeline_longpolls_waiting").await == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let poster = SignalClient::new(&direct[posts])
            .unwrap()
            .with_bearer(TOKEN);
        let sent = Instant::now();
        poster
            .post(&SignalMessage::candidate(
                &id,
                serde_json::json!({"candidate": format!("c{round}")}),
            ))
            .await
            .unwrap();
        let poll = poll.await.unwrap();
        wakes.push(sent.elapsed());
        assert_eq!(poll.messages.len(), 1);
        cursor = poll.cursor;
    }
    wakes.sort();
    let (p50, p99) = (percentile(&wakes, 0.5), percentile(&wakes, 0.99));
    eprintln!(
        "cross-instance wake (post sent on one instance -> poll answered on another), {} rounds: p50 {:.2} ms, p99 {:.2} ms",
        wakes.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");

    // 4. SIGKILL the instance holding polls while posts flow.
    let session = browser.create_session().await.unwrap();
    let id = session.session_id.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let mut pollers = Vec::new();
    for _ in 0..3 {
        pollers.push(tokio::spawn(poll_everything(
            SignalClient::new(&lb).unwrap().with_bearer(TOKEN),
            None,
            stop.clone(),
        )));
        pollers.push(tokio::spawn(poll_everything(
            SignalClient::new(&lb).unwrap(),
            Some(id.clone()),
            stop.clone(),
        )));
    }
    let acknowledged = Arc::new(Mutex::new(BTreeMap::<u64, Side>::new()));
    let writer = tokio::spawn({
        let (lb, id, acknowledged) = (lb.clone(), id.clone(), acknowledged.clone());
        async move {
            let browser = SignalClient::new(&lb).unwrap();
            let home = SignalClient::new(&lb).unwrap().with_bearer(TOKEN);
            let mut failed = 0;
            for i in 0..120 {
                let (client, side) = if i % 2 == 0 {
                    (&browser, Side::Browser)
                } else {
                    (&home, Side::Home)
                };
                let msg = SignalMessage::candidate(
                    &id,
                    serde_json::json!({"candidate": format!("k{i}")}),
                );
                loop {
                    match client.post(&msg).await {
                        Ok(seq) => {
                            acknowledged.lock().unwrap().insert(seq, side);
                            break;
                        }
                        Err(SignalError::Http { .. } | SignalError::Transport(_)) => {
                            failed += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(other) => panic!("{other}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            failed
        }
    });
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let waiting = counts(&bases, "beeline_longpolls_waiting").await;
    let victim = (0..3).max_by_key(|&i| waiting[i]).unwrap();
    running[victim].take().unwrap().kill_hard();
    eprintln!(
        "SIGKILLed instance {victim}, which held {} polls",
        waiting[victim]
    );
    let failed_posts = writer.await.unwrap();
    // Let the pollers catch up, then stop them (held polls end within 8 s).
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.store(true, Ordering::SeqCst);
    let acknowledged = acknowledged.lock().unwrap().clone();
    let browser_sent: Vec<u64> = acknowledged
        .iter()
        .filter(|(_, side)| **side == Side::Browser)
        .map(|(seq, _)| *seq)
        .collect();
    let home_sent: Vec<u64> = acknowledged
        .iter()
        .filter(|(_, side)| **side == Side::Home)
        .map(|(seq, _)| *seq)
        .collect();
    let mut retries = 0;
    for (i, poller) in pollers.into_iter().enumerate() {
        let (seen, r) = tokio::time::timeout(Duration::from_secs(20), poller)
            .await
            .expect("pollers stop")
            .unwrap();
        retries += r;
        // Every poller read every acknowledged message of its side once, in
        // order (a post retried after a lost answer may add one more).
        let expected = if i % 2 == 0 {
            &browser_sent
        } else {
            &home_sent
        };
        let mut sorted = seen.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), seen.len(), "duplicates: {seen:?}");
        for seq in expected {
            assert!(seen.contains(seq), "poller {i} missed {seq}: {seen:?}");
        }
    }
    eprintln!(
        "after the SIGKILL: {} acknowledged posts all read once by 6 pollers ({retries} poll retries, {failed_posts} post retries)",
        acknowledged.len()
    );

    // 5. PostgreSQL restarts: 503 with Retry-After in the gap, nothing lost.
    pg.stop_server();
    let response = reqwest::Client::new()
        .post(format!("{lb}/signal"))
        .json(&serde_json::json!({"session_id": id, "type": "bye"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    pg.start_server();
    let deadline = Instant::now() + Duration::from_secs(20);
    let all: Vec<u64> = loop {
        match browser.poll(Some(&id), 0).await {
            Ok(poll) if !poll.messages.is_empty() => {
                break poll.messages.iter().filter_map(|m| m.seq).collect();
            }
            _ => {
                assert!(Instant::now() < deadline, "no answer after the restart");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    for seq in &home_sent {
        assert!(all.contains(seq), "{seq} lost across the restart");
    }
    eprintln!(
        "PostgreSQL restarted: 503 in the gap, all {} acknowledged home messages intact",
        home_sent.len()
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Browser,
    Home,
}
