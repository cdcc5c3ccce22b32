//! Killing signal-api with SIGKILL between a post and its read, then
//! restarting it on the same database file, loses no acknowledged message;
//! sessions and cursors stay valid. SIGTERM answers held polls before exit.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use beeline_signal_client::{SignalClient, SignalKind, SignalMessage};
use common::{command, Running, TOKEN};
use serde_json::json;

fn start(dir: &std::path::Path) -> (Running, String) {
    let mut cmd = command(dir);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--home-token",
        TOKEN,
        "--browser-auth",
        "open",
        "--sessions-per-ip-per-minute",
        "0",
    ]);
    let mut running = Running::start(cmd);
    let url = running.bound_url();
    (running, format!("{url}/webrtc"))
}

#[tokio::test]
async fn sigkill_mid_stream_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let (running, base) = start(dir.path());
    let browser = SignalClient::new(&base).unwrap();
    let session = browser.create_session().await.unwrap().session_id;
    let offer_seq = browser
        .post(&SignalMessage::offer(&session, "v=0 before the crash"))
        .await
        .unwrap();

    // Post candidates as fast as acknowledgements come, on four connections,
    // and kill the server mid-stream without warning.
    let acked = Arc::new(std::sync::Mutex::new(vec![offer_seq]));
    let stop = Arc::new(AtomicBool::new(false));
    let posters: Vec<_> = (0..4)
        .map(|worker| {
            let browser = SignalClient::new(&base).unwrap();
            let (session, acked, stop) = (session.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                for i in 0..1_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let candidate = json!({"candidate": format!("w{worker}-{i}")});
                    match browser
                        .post(&SignalMessage::candidate(&session, candidate))
                        .await
                    {
                        Ok(seq) => acked.lock().unwrap().push(seq),
                        Err(_) => break, // the server is gone
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 60 {
        assert!(Instant::now() < deadline, "posting stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.kill_hard();
    stop.store(true, Ordering::Relaxed);
    for poster in posters {
        poster.await.unwrap();
    }
    let mut acked = acked.lock().unwrap().clone();
    acked.sort_unstable();
    assert!(acked.len() >= 60);

    // Restarted on the same file, the home reads every acknowledged message.
    let (running, base) = start(dir.path());
    let home = SignalClient::new(&base).unwrap().with_bearer(TOKEN);
    let mut seen = Vec::new();
    let mut cursor = 0;
    for _ in 0..100 {
        let poll = tokio::time::timeout(Duration::from_secs(15), home.poll(None, cursor))
            .await
            .unwrap()
            .unwrap();
        if poll.messages.is_empty() {
            break;
        }
        seen.extend(poll.messages.iter().map(|m| m.seq.unwrap()));
        cursor = poll.cursor;
        if seen.len() >= acked.len() && seen.last() >= acked.last() {
            break;
        }
    }
    let missing: Vec<_> = acked.iter().filter(|seq| !seen.contains(seq)).collect();
    assert!(missing.is_empty(), "lost after SIGKILL: {missing:?}");
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(unique, seen, "a message was delivered twice");

    // The session survived too: the home answers, the browser reads it.
    let answer_seq = home
        .post(&SignalMessage::answer(&session, "v=0 after the crash"))
        .await
        .unwrap();
    assert!(answer_seq > *acked.last().unwrap());
    let browser = SignalClient::new(&base).unwrap();
    let poll = browser.poll(Some(&session), 0).await.unwrap();
    assert_eq!(poll.messages.len(), 1);
    assert_eq!(poll.messages[0].kind, SignalKind::Answer);
    let (clean, log) = running.terminate();
    assert!(clean, "{log:#?}");
}

#[tokio::test]
async fn sigterm_answers_held_polls_before_exiting() {
    let dir = tempfile::tempdir().unwrap();
    let (mut running, base) = start(dir.path());
    let home = SignalClient::new(&base).unwrap().with_bearer(TOKEN);
    let held = tokio::spawn(async move {
        let started = Instant::now();
        (home.poll(None, 0).await, started.elapsed())
    });
    // Wait until the poll is held.
    let metrics_url = base.replace("/webrtc", "/metrics");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.lines().any(|l| l == "beeline_longpolls_waiting 1") {
            break;
        }
        assert!(Instant::now() < deadline, "the poll was never held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.log.clear();
    let (clean, log) = running.terminate();
    let (poll, held_for) = held.await.unwrap();
    let poll = poll.expect("the held poll must be answered, not cut");
    assert!(poll.messages.is_empty());
    assert_eq!(poll.cursor, 0);
    assert!(
        held_for < Duration::from_secs(5),
        "answered after {held_for:?}"
    );
    assert!(clean, "{log:#?}");
    assert!(log.iter().any(|l| l.contains("shutting down")), "{log:#?}");
}
