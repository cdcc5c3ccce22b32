//! Cursors: no gaps, no duplicates, and a retry with the same `after` sees
//! the same messages again.

mod common;

use std::time::Duration;

use beeline_signal_client::{SignalKind, SignalMessage};
use common::start;

#[tokio::test]
async fn paging_by_cursor_sees_every_message_once_in_order() {
    // The last, empty poll waits out the hold time; keep it short.
    let harness = start(|config| config.long_poll_timeout = Duration::from_millis(100)).await;
    let browser = harness.browser();
    let home = harness.home();
    let a = browser.create_session().await.unwrap().session_id;
    let b = browser.create_session().await.unwrap().session_id;

    // 150 browser messages over two sessions (more than one poll batch),
    // interleaved with home messages the home poll must not see.
    let mut expected = Vec::new();
    for i in 0..150 {
        let session = if i % 3 == 0 { &b } else { &a };
        let candidate = serde_json::json!({"candidate": format!("c{i}")});
        let seq = browser
            .post(&SignalMessage::candidate(session, candidate))
            .await
            .unwrap();
        expected.push((session.clone(), seq));
        if i % 10 == 0 {
            home.post(&SignalMessage::candidate(
                session,
                serde_json::json!({"candidate": "h"}),
            ))
            .await
            .unwrap();
        }
    }

    let mut seen = Vec::new();
    let mut cursor = 0;
    loop {
        let poll = home.poll(None, cursor).await.unwrap();
        // A retry with the same `after` (e.g. after a lost response) answers
        // the same messages, not fewer and not more.
        let retry = home.poll(None, cursor).await.unwrap();
        assert_eq!(retry, poll);
        if poll.messages.is_empty() {
            break;
        }
        assert!(poll.cursor > cursor);
        for msg in &poll.messages {
            seen.push((msg.session_id.clone(), msg.seq.unwrap()));
        }
        cursor = poll.cursor;
        assert_eq!(cursor, poll.messages.last().unwrap().seq.unwrap());
    }
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_session_poll_sees_only_the_other_side_of_that_session() {
    let harness = start(|_| {}).await;
    let browser = harness.browser();
    let home = harness.home();
    let mine = browser.create_session().await.unwrap().session_id;
    let other = browser.create_session().await.unwrap().session_id;

    browser
        .post(&SignalMessage::offer(&mine, "v=0 mine"))
        .await
        .unwrap();
    home.post(&SignalMessage::answer(&other, "v=0 other"))
        .await
        .unwrap();
    let first = home
        .post(&SignalMessage::answer(&mine, "v=0 a"))
        .await
        .unwrap();
    let second = home.post(&SignalMessage::bye(&mine)).await.unwrap();

    let poll = browser.poll(Some(&mine), 0).await.unwrap();
    let seqs: Vec<_> = poll.messages.iter().map(|m| m.seq.unwrap()).collect();
    assert_eq!(seqs, [first, second]);
    assert_eq!(poll.messages[1].kind, SignalKind::Bye);
    assert_eq!(poll.cursor, second);

    // The home can read one session's browser side by id, too.
    let poll = home.poll(Some(&mine), 0).await.unwrap();
    assert_eq!(poll.messages.len(), 1);
    assert_eq!(poll.messages[0].sdp.as_deref(), Some("v=0 mine"));
}
