//! Two signaling servers on one PostgreSQL database, as two signal-api
//! instances behind a balancer would be: a poll held on one is woken by a
//! post on the other (LISTEN/NOTIFY, not database polling); cursors run on
//! across both; while the database is down requests get 503 with
//! `Retry-After`, and afterwards everything acknowledged before is still
//! there and wake-ups work again.
//!
//! Skipped with a loud note without PostgreSQL, unless
//! `BEELINE_REQUIRE_POSTGRES` is set.

mod common;

use std::time::{Duration, Instant};

use beeline_signal_client::{SignalKind, SignalMessage};
use beeline_signal_server::SignalConfig;
use beeline_test_support::postgres::TestPostgres;
use common::{start_with, HOME_TOKEN};

fn config(url: &str) -> SignalConfig {
    let mut config = SignalConfig::new(url, HOME_TOKEN);
    config.long_poll_timeout = Duration::from_secs(20);
    config
}

async fn post_status(base: &str, body: &serde_json::Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/signal"))
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_sessions_wake_each_other_and_survive_a_database_restart() {
    let Some(pg) = TestPostgres::start_or_skip("two signal-api instances on PostgreSQL") else {
        return;
    };
    let url = pg.create_database("instances");
    let a = start_with(config(&url)).await;
    let b = start_with(config(&url)).await;

    // A session made on A is B's too.
    let session = a.browser().create_session().await.unwrap();
    let id = session.session_id.clone();

    // The home waits on B; the browser's offer lands on A.
    let home_poll = tokio::spawn({
        let home = b.home();
        async move { home.poll(None, 0).await.unwrap() }
    });
    b.until_polls_waiting(1).await;
    let posted = Instant::now();
    let offer_seq = a
        .browser()
        .post(&SignalMessage::offer(&id, "v=0 offer"))
        .await
        .unwrap();
    let poll = home_poll.await.unwrap();
    let woken = posted.elapsed();
    assert_eq!(poll.messages.len(), 1);
    assert_eq!(poll.messages[0].kind, SignalKind::Offer);
    assert_eq!(poll.cursor, offer_seq);
    assert!(woken < Duration::from_secs(2), "woken after {woken:?}");

    // The browser waits on A; the answer lands on B.
    let browser_poll = tokio::spawn({
        let browser = a.browser();
        let id = id.clone();
        async move { browser.poll(Some(&id), 0).await.unwrap() }
    });
    a.until_polls_waiting(1).await;
    let posted = Instant::now();
    let answer_seq = b
        .home()
        .post(&SignalMessage::answer(&id, "v=0 answer"))
        .await
        .unwrap();
    let poll = browser_poll.await.unwrap();
    let woken = posted.elapsed();
    assert_eq!(poll.messages.len(), 1);
    assert_eq!(poll.messages[0].kind, SignalKind::Answer);
    assert!(answer_seq > offer_seq);
    assert!(woken < Duration::from_secs(2), "woken after {woken:?}");
    eprintln!("cross-instance wake-ups: {woken:?}");

    // The database goes away: requests fail clearly and may be retried.
    pg.stop_server();
    let candidate = serde_json::json!({
        "session_id": id, "type": "candidate", "candidate": {"candidate": "c"}
    });
    let refused = post_status(&a.base_url(), &candidate).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().get("retry-after").is_some());
    let refused = reqwest::get(format!("{}/signal?session_id={id}", b.base_url()))
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().get("retry-after").is_some());

    // It comes back: requests work again without restarting the instances.
    pg.start_server();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = post_status(&a.base_url(), &candidate).await;
        if response.status() == 200 {
            break;
        }
        assert_eq!(response.status(), 503);
        assert!(Instant::now() < deadline, "still 503 after the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Everything acknowledged before the outage is still there.
    // (The home is not handed the offer again: it is answered.)
    assert_eq!(
        pg.psql(
            "instances",
            &format!(
                "SELECT count(*) FROM beeline_messages WHERE seq IN ({offer_seq}, {answer_seq})"
            )
        ),
        "2"
    );
    let poll = b.browser().poll(Some(&id), 0).await.unwrap();
    assert_eq!(poll.messages[0].seq, Some(answer_seq));

    // And the wake-up connection is back: a poll on A is woken by B.
    let browser_poll = tokio::spawn({
        let browser = a.browser();
        let id = id.clone();
        async move { browser.poll(Some(&id), answer_seq).await.unwrap() }
    });
    a.until_polls_waiting(1).await;
    // The listener may still be reconnecting; its resync wakes the poll
    // too, which then finds nothing and waits on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let posted = Instant::now();
    b.home().post(&SignalMessage::bye(&id)).await.unwrap();
    let poll = browser_poll.await.unwrap();
    assert_eq!(poll.messages.len(), 1, "{:?}", poll.messages);
    assert_eq!(poll.messages[0].kind, SignalKind::Bye);
    assert!(posted.elapsed() < Duration::from_secs(3));

    a.stop().await;
    b.stop().await;
}
