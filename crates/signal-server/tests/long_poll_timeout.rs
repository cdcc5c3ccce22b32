//! An idle long-poll is held for the configured time, then answered empty;
//! shutdown answers held polls at once.

mod common;

use std::time::{Duration, Instant};

use common::start;

#[tokio::test]
async fn idle_poll_returns_empty_after_the_hold_time() {
    let hold = Duration::from_millis(300);
    let harness = start(|config| config.long_poll_timeout = hold).await;
    let session = harness.browser().create_session().await.unwrap();

    let started = Instant::now();
    let poll = harness
        .browser()
        .poll(Some(&session.session_id), 42)
        .await
        .unwrap();
    let held = started.elapsed();

    assert!(poll.messages.is_empty());
    assert_eq!(poll.cursor, 42, "an empty answer keeps the caller's cursor");
    assert!(
        held >= hold,
        "answered after {held:?}, before the hold time"
    );
    assert!(held < hold + Duration::from_secs(1), "held for {held:?}");
    assert_eq!(harness.metric("beeline_longpolls_waiting").await, 0);
}

#[tokio::test]
async fn queued_messages_are_answered_without_waiting() {
    let harness = start(|_| {}).await; // default 10 s hold
    let session = harness.browser().create_session().await.unwrap();
    harness
        .browser()
        .post(&beeline_signal_client::SignalMessage::offer(
            &session.session_id,
            "v=0",
        ))
        .await
        .unwrap();
    let started = Instant::now();
    let poll = harness.home().poll(None, 0).await.unwrap();
    assert_eq!(poll.messages.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn shutdown_answers_held_polls_immediately() {
    let harness = start(|_| {}).await; // default 10 s hold
    let home = harness.home();
    let waiting = tokio::spawn(async move { home.poll(None, 0).await });
    harness.until_polls_waiting(1).await;

    let started = Instant::now();
    harness.stop().await;
    let poll = waiting.await.unwrap().unwrap();
    assert!(poll.messages.is_empty());
    assert_eq!(poll.cursor, 0);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_home_cursor_ahead_of_the_store_comes_back_at_once() {
    // As after the database was recreated: the home's cursor is from the old
    // one. It must learn the new store's cursor now, not wait for ever.
    let harness = start(|_| {}).await; // default 10 s hold
    let session = harness.browser().create_session().await.unwrap();
    harness
        .browser()
        .post(&beeline_signal_client::SignalMessage::offer(
            session.session_id.clone(),
            "v=0",
        ))
        .await
        .unwrap();
    let started = Instant::now();
    let poll = harness.home().poll(None, 5_000).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "held {:?}",
        started.elapsed()
    );
    assert!(poll.messages.is_empty());
    assert_eq!(poll.cursor, 1, "the store's highest sequence number");
    // From there the home sees what it missed.
    let poll = harness.home().poll(None, 0).await.unwrap();
    assert_eq!(poll.messages.len(), 1);
}
