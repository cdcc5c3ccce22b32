//! Messages are committed before the POST is acknowledged, so they survive
//! a restart on the same database file; cursors stay valid across it.

mod common;

use beeline_signal_client::{SignalKind, SignalMessage};
use common::start_at;

#[tokio::test]
async fn messages_survive_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("signal.db");

    let first = start_at(&db, |_| {}).await;
    let session = first.browser().create_session().await.unwrap();
    let offer_seq = first
        .browser()
        .post(&SignalMessage::offer(
            &session.session_id,
            "v=0 before restart",
        ))
        .await
        .unwrap();
    first.stop().await;

    let second = start_at(&db, |_| {}).await;
    let poll = second.home().poll(None, 0).await.unwrap();
    assert_eq!(poll.messages.len(), 1);
    assert_eq!(poll.messages[0].kind, SignalKind::Offer);
    assert_eq!(poll.messages[0].sdp.as_deref(), Some("v=0 before restart"));
    assert_eq!(poll.cursor, offer_seq);

    // The session is still usable, and numbering continues past the old rows.
    let answer_seq = second
        .home()
        .post(&SignalMessage::answer(
            &session.session_id,
            "v=0 after restart",
        ))
        .await
        .unwrap();
    assert!(answer_seq > offer_seq);
    let poll = second
        .browser()
        .poll(Some(&session.session_id), 0)
        .await
        .unwrap();
    assert_eq!(poll.messages.len(), 1);
    assert_eq!(poll.messages[0].seq, Some(answer_seq));
}
