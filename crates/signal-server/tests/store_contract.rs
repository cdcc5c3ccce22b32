//! The `SessionStore` contract, one suite run against both backends: SQLite
//! (a temporary file) and PostgreSQL (a throwaway cluster on loopback,
//! `beeline_test_support::postgres`). Every case gets a fresh database; the
//! cases that need two "instances" open the same database twice.
//!
//! Without PostgreSQL installed the PostgreSQL half is skipped with a loud
//! note, unless `BEELINE_REQUIRE_POSTGRES` is set (the `just` recipes set
//! it); `scripts/ensure-postgres.sh` installs it.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use beeline_signal_server::{
    open_store, Access, Database, MessageKind, NewMessage, PostgresOptions, PostgresStore,
    RemotePost, SessionStore, Side, StoreError,
};
use beeline_test_support::postgres::TestPostgres;

type Store = Arc<dyn SessionStore>;

/// Where a case's fresh databases come from.
enum Backend<'a> {
    Sqlite(tempfile::TempDir),
    Postgres(&'a TestPostgres),
}

impl Backend<'_> {
    /// A new, empty database.
    fn fresh(&self, name: &str) -> Database {
        match self {
            Backend::Sqlite(dir) => Database::from(dir.path().join(format!("{name}.db"))),
            Backend::Postgres(pg) => Database::from(pg.create_database(name)),
        }
    }
}

async fn open(database: &Database) -> Store {
    open_store(database, &PostgresOptions::default())
        .await
        .unwrap_or_else(|e| panic!("open {database:?}: {e}"))
}

fn offer(session_id: &str) -> NewMessage<'_> {
    NewMessage {
        session_id,
        side: Side::Browser,
        kind: MessageKind::Offer,
        sdp: Some("v=0"),
        candidate_json: None,
    }
}

fn candidate<'a>(session_id: &'a str, side: Side, json: &'a str) -> NewMessage<'a> {
    NewMessage {
        session_id,
        side,
        kind: MessageKind::Candidate,
        sdp: None,
        candidate_json: Some(json),
    }
}

const OWNER: Access<'static> = Access::Owner("alice");

async fn append_checks_existence_access_expiry_and_size(store: Store) {
    assert!(matches!(
        store.append(&offer("nope"), OWNER, 0, 0, 10).await,
        Err(StoreError::UnknownSession)
    ));
    store
        .create_session("s1", "home", "alice", 1_000)
        .await
        .unwrap();
    let (first, home) = store
        .append(&offer("s1"), OWNER, 1_000, 3, 1_001)
        .await
        .unwrap();
    assert_eq!(home, "home");
    let (second, _) = store
        .append(&offer("s1"), Access::Home("home"), 1_000, 3, 1_001)
        .await
        .unwrap();
    assert!(second > first);
    for stranger in [
        Access::Owner("bob"),
        Access::Owner(""),
        Access::Home("attic"),
    ] {
        assert!(matches!(
            store.append(&offer("s1"), stranger, 1_000, 3, 1_002).await,
            Err(StoreError::UnknownSession)
        ));
    }
    store
        .append(&offer("s1"), OWNER, 1_000, 3, 1_002)
        .await
        .unwrap();
    assert!(matches!(
        store.append(&offer("s1"), OWNER, 1_000, 3, 1_002).await,
        Err(StoreError::SessionFull { limit: 3 })
    ));
    assert!(matches!(
        store.append(&offer("s1"), OWNER, 1_001, 0, 1_002).await,
        Err(StoreError::ExpiredSession)
    ));
    let record = store.session("s1").await.unwrap().unwrap();
    assert_eq!(
        (
            record.home_id.as_str(),
            record.owner.as_str(),
            record.created_ms
        ),
        ("home", "alice", 1_000)
    );
    assert_eq!(store.session("nope").await.unwrap(), None);
    // Session ids are unique.
    assert!(store
        .create_session("s1", "home", "alice", 1_000)
        .await
        .is_err());
}

async fn polls_see_only_the_requested_side_and_live_sessions(store: Store) {
    assert_eq!(store.highest_seq().await.unwrap(), 0);
    store.create_session("a", "home", "", 5_000).await.unwrap();
    store.create_session("b", "home", "", 1_000).await.unwrap();
    store.create_session("c", "attic", "", 5_000).await.unwrap();
    let anyone = Access::Owner("");
    store
        .append(&offer("a"), anyone, 0, 0, 5_000)
        .await
        .unwrap();
    store
        .append(&offer("b"), anyone, 0, 0, 5_000)
        .await
        .unwrap();
    store
        .append(&offer("c"), anyone, 0, 0, 5_000)
        .await
        .unwrap();
    let answer = NewMessage {
        side: Side::Home,
        kind: MessageKind::Answer,
        ..offer("a")
    };
    store
        .append(&answer, Access::Home("home"), 0, 0, 5_001)
        .await
        .unwrap();

    let home = store.home_messages("home", 0, 2_000, 100).await.unwrap();
    assert!(
        home.is_empty(),
        "a's offer is answered; expired b and attic's c are hidden: {home:?}"
    );
    // A later offer in the same session (an ICE restart) is new.
    store
        .append(&offer("a"), anyone, 0, 0, 5_002)
        .await
        .unwrap();
    let home = store.home_messages("home", 0, 2_000, 100).await.unwrap();
    assert_eq!(home.len(), 1, "{home:?}");
    assert_eq!(home[0].session_id, "a");
    assert_eq!(home[0].kind, MessageKind::Offer);
    assert_eq!(home[0].sdp.as_deref(), Some("v=0"));
    let highest = store.highest_seq().await.unwrap();
    assert_eq!(highest, home[0].seq);
    // Strictly after the cursor.
    assert!(store
        .home_messages("home", highest, 2_000, 100)
        .await
        .unwrap()
        .is_empty());

    let browser = store
        .session_messages("a", Side::Home, 0, 2_000, 100)
        .await
        .unwrap();
    assert_eq!(browser.len(), 1);
    assert_eq!(browser[0].kind, MessageKind::Answer);
    assert_eq!(browser[0].side, Side::Home);
    // Candidates keep their JSON text, explicit null included; limits hold.
    for json in [r#"{"candidate":"x"}"#, "null"] {
        store
            .append(
                &candidate("a", Side::Home, json),
                Access::Home("home"),
                0,
                0,
                5_003,
            )
            .await
            .unwrap();
    }
    let all = store
        .session_messages("a", Side::Home, 0, 2_000, 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[2].candidate_json.as_deref(), Some("null"));
    let two = store
        .session_messages("a", Side::Home, 0, 2_000, 2)
        .await
        .unwrap();
    assert_eq!(two, all[..2]);
    // Nothing for a session that is no longer live.
    assert!(store
        .session_messages("a", Side::Home, 0, 6_000, 100)
        .await
        .unwrap()
        .is_empty());
}

async fn sweep_keeps_tombstones_then_forgets_them(store: Store) {
    store
        .create_session("old", "home", "", 1_000)
        .await
        .unwrap();
    let first = store
        .append(&offer("old"), Access::Owner(""), 0, 0, 1_000)
        .await
        .unwrap()
        .0;
    store
        .create_session("live", "home", "", 3_000)
        .await
        .unwrap();
    store
        .append(&offer("live"), Access::Owner(""), 0, 0, 3_000)
        .await
        .unwrap();
    let swept = store.sweep(2_000, 500).await.unwrap();
    assert_eq!((swept.sessions, swept.messages), (0, 1));
    assert_eq!(
        store.session("old").await.unwrap().unwrap().created_ms,
        1_000,
        "expired but remembered"
    );
    let swept = store.sweep(2_000, 1_500).await.unwrap();
    assert_eq!((swept.sessions, swept.messages), (1, 0));
    assert_eq!(store.session("old").await.unwrap(), None);
    assert_eq!(
        store
            .home_messages("home", 0, 2_000, 10)
            .await
            .unwrap()
            .len(),
        1,
        "the live session keeps its messages"
    );
    store
        .create_session("new", "home", "", 3_000)
        .await
        .unwrap();
    let second = store
        .append(&offer("new"), Access::Owner(""), 0, 0, 3_000)
        .await
        .unwrap()
        .0;
    assert!(
        second > first,
        "numbers are never reused: {second} <= {first}"
    );
    assert!(store.highest_seq().await.unwrap() >= second);

    // Big sweeps go in batches and finish.
    for s in 0..3 {
        let id = format!("flood{s}");
        store.create_session(&id, "home", "", 1_000).await.unwrap();
        for _ in 0..400 {
            store
                .append(
                    &candidate(&id, Side::Browser, "{}"),
                    Access::Owner(""),
                    0,
                    0,
                    1_000,
                )
                .await
                .unwrap();
        }
    }
    let swept = store.sweep(2_000, 1_500).await.unwrap();
    assert_eq!((swept.sessions, swept.messages), (3, 1_200));
}

/// Many writers at once, through two "instances" of the same database,
/// while a home and a browser read with their cursors: every message is
/// read exactly once, in order, whatever order the writers committed in.
async fn concurrent_writers_never_make_a_cursor_skip(a: Store, b: Store) {
    const WRITERS: usize = 8;
    const EACH: usize = 40;
    for w in 0..WRITERS {
        a.create_session(&format!("w{w}"), "home", "", 1_000)
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = if w % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let id = format!("w{w}");
            let mut seqs = Vec::new();
            for i in 0..EACH {
                let json = format!("{{\"i\":{i}}}");
                // Browser messages (the home reads them across sessions),
                // and home messages into session w0 (its browser reads them).
                let (seq, _) = store
                    .append(
                        &candidate(&id, Side::Browser, &json),
                        Access::Owner(""),
                        0,
                        0,
                        1_000,
                    )
                    .await
                    .unwrap();
                seqs.push(seq);
                let (seq, _) = store
                    .append(
                        &candidate("w0", Side::Home, &json),
                        Access::Home("home"),
                        0,
                        0,
                        1_000,
                    )
                    .await
                    .unwrap();
                seqs.push(seq);
            }
            seqs
        }));
    }
    let home_reader = {
        let store = b.clone();
        tokio::spawn(async move {
            let (mut cursor, mut seen) = (0, Vec::new());
            while seen.len() < WRITERS * EACH {
                let batch = store.home_messages("home", cursor, 0, 7).await.unwrap();
                for msg in &batch {
                    assert!(msg.seq > cursor, "{} after cursor {cursor}", msg.seq);
                    cursor = msg.seq;
                    seen.push(msg.seq);
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    let browser_reader = {
        let store = a.clone();
        tokio::spawn(async move {
            let (mut cursor, mut seen) = (0, Vec::new());
            while seen.len() < WRITERS * EACH {
                let batch = store
                    .session_messages("w0", Side::Home, cursor, 0, 5)
                    .await
                    .unwrap();
                for msg in &batch {
                    cursor = msg.seq;
                    seen.push(msg.seq);
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    let mut written = BTreeSet::new();
    for task in tasks {
        for seq in task.await.unwrap() {
            assert!(written.insert(seq), "seq {seq} given out twice");
        }
    }
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        let mut read = home_reader.await.unwrap();
        read.extend(browser_reader.await.unwrap());
        read
    })
    .await
    .expect("the readers did not see every message within 60 s: a cursor skipped one");
    let read: Vec<u64> = read;
    let unique: BTreeSet<u64> = read.iter().copied().collect();
    assert_eq!(unique.len(), read.len(), "a message was read twice");
    assert_eq!(unique, written, "a message was skipped");
}

/// Posts of one moment (which the PostgreSQL store writes together, in one
/// transaction) are each checked as if posted alone: a session's message
/// limit holds exactly, and a post refused as unknown or expired fails
/// alone.
async fn posts_of_one_moment_are_checked_one_by_one(store: Store) {
    const LIMIT: u32 = 10;
    store
        .create_session("crowded", "home", "alice", 1_000)
        .await
        .unwrap();
    store
        .create_session("roomy", "home", "alice", 1_000)
        .await
        .unwrap();
    store
        .create_session("stale", "home", "alice", 100)
        .await
        .unwrap();
    let posts: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let json = format!("{{\"i\":{i}}}");
                // 20 posts to a session with room for 10, 10 to one with
                // room for all of them, 5 by a stranger, 5 to an expired
                // session; interleaved.
                let (session, access) = match i % 8 {
                    0 | 1 | 4 | 5 => ("crowded", OWNER),
                    2 | 6 => ("roomy", OWNER),
                    3 => ("roomy", Access::Owner("mallory")),
                    _ => ("stale", OWNER),
                };
                let posted = store
                    .append(
                        &candidate(session, Side::Browser, &json),
                        access,
                        500,
                        LIMIT,
                        1_000,
                    )
                    .await;
                (session, access, posted)
            })
        })
        .collect();
    let (mut accepted, mut full, mut unknown, mut expired) = (Vec::new(), 0, 0, 0);
    for post in posts {
        match post.await.unwrap() {
            (session, _, Ok((seq, home))) => {
                assert_eq!(home, "home");
                accepted.push((session, seq));
            }
            ("crowded", _, Err(StoreError::SessionFull { limit: LIMIT })) => full += 1,
            ("roomy", Access::Owner("mallory"), Err(StoreError::UnknownSession)) => unknown += 1,
            ("stale", _, Err(StoreError::ExpiredSession)) => expired += 1,
            (session, access, Err(error)) => panic!("{session} {access:?}: {error:?}"),
        }
    }
    assert_eq!((full, unknown, expired), (10, 5, 5));
    let seqs: BTreeSet<u64> = accepted.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(seqs.len(), 20, "a number was given out twice");
    for session in ["crowded", "roomy"] {
        let stored: Vec<u64> = store
            .session_messages(session, Side::Browser, 0, 500, 100)
            .await
            .unwrap()
            .iter()
            .map(|msg| msg.seq)
            .collect();
        let mut acked: Vec<u64> = accepted
            .iter()
            .filter(|(s, _)| *s == session)
            .map(|(_, seq)| *seq)
            .collect();
        acked.sort_unstable();
        assert_eq!(
            stored, acked,
            "{session}: what was acknowledged is what is stored"
        );
        assert_eq!(stored.len(), 10);
    }
}

async fn run_contract(backend: &Backend<'_>) {
    append_checks_existence_access_expiry_and_size(open(&backend.fresh("c_append")).await).await;
    polls_see_only_the_requested_side_and_live_sessions(open(&backend.fresh("c_polls")).await)
        .await;
    sweep_keeps_tombstones_then_forgets_them(open(&backend.fresh("c_sweep")).await).await;
    posts_of_one_moment_are_checked_one_by_one(open(&backend.fresh("c_moment")).await).await;
    let shared = backend.fresh("c_concurrent");
    let (a, b) = (open(&shared).await, open(&shared).await);
    concurrent_writers_never_make_a_cursor_skip(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_keeps_the_store_contract() {
    run_contract(&Backend::Sqlite(tempfile::tempdir().unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_keeps_the_store_contract() {
    let Some(pg) = TestPostgres::start_or_skip("the store contract on PostgreSQL") else {
        return;
    };
    run_contract(&Backend::Postgres(&pg)).await;
    postgres_specifics(&pg).await;
}

/// What only the shared backend does: migrations once for concurrent
/// starters, a newer schema and bad URLs refused at start, and posts
/// announced to the other instances.
async fn postgres_specifics(pg: &TestPostgres) {
    let url = pg.create_database("specifics");
    // Three instances starting at once migrate once.
    let opened = futures::future::join_all(
        (0..3).map(|_| PostgresStore::connect(&url, PostgresOptions::default())),
    )
    .await;
    let stores: Vec<PostgresStore> = opened.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        pg.psql(
            "specifics",
            "SELECT count(*) || ' ' || max(version) FROM beeline_schema_migrations"
        ),
        "3 3"
    );

    // A post on one instance reaches the others' listeners, not its own.
    let mut elsewhere = stores[1].remote_posts().unwrap();
    let mut own = stores[0].remote_posts().unwrap();
    stores[0]
        .create_session("n1", "kitchen", "", 1_000)
        .await
        .unwrap();
    stores[0]
        .append(&offer("n1"), Access::Owner(""), 0, 0, 1_000)
        .await
        .unwrap();
    let expected = RemotePost::Message {
        session_id: "n1".into(),
        home_id: "kitchen".into(),
        side: Side::Browser,
    };
    let received = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match elsewhere.recv().await.unwrap() {
                RemotePost::Resync => continue,
                post => return post,
            }
        }
    })
    .await
    .expect("the other instance was told");
    assert_eq!(received, expected);
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(post) = own.try_recv() {
        assert_eq!(
            post,
            RemotePost::Resync,
            "an instance is not told its own posts"
        );
    }
    drop(stores);

    posts_of_one_moment_share_a_transaction(pg).await;

    // A schema from a newer build is refused, not used.
    pg.psql(
        "specifics",
        "INSERT INTO beeline_schema_migrations (version) VALUES (99)",
    );
    let error = PostgresStore::connect(&url, PostgresOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::NewerSchema { found: 99, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("upgrade"), "{error}");

    // Bad URLs fail at once, saying why, without showing the password.
    let error = PostgresStore::connect(
        "postgres://u:hunter2@127.0.0.1:notaport/x",
        PostgresOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, StoreError::InvalidUrl { .. }), "{error:?}");
    assert!(!error.to_string().contains("hunter2"), "{error}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let started = std::time::Instant::now();
    let error = PostgresStore::connect(
        &format!("postgres://u:hunter2@127.0.0.1:{port}/x"),
        PostgresOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, StoreError::Connect { .. }), "{error:?}");
    assert!(
        !format!("{error} {error:?}").contains("hunter2"),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Posts arriving at one instance together are written in one transaction
/// (group commit) and announced to the other instances, however many
/// notification payloads that takes; a post the database refuses in such a
/// batch fails alone: the other posts of its moment are stored and
/// acknowledged.
async fn posts_of_one_moment_share_a_transaction(pg: &TestPostgres) {
    const POSTS: usize = 64;
    // Long session ids: a batch's announcements need several payloads.
    let id = |i: usize| format!("g{i}-{}", "x".repeat(600));
    let url = pg.create_database("group_commit");
    let store: Store = Arc::new(
        PostgresStore::connect(&url, PostgresOptions::default())
            .await
            .unwrap(),
    );
    let other = PostgresStore::connect(&url, PostgresOptions::default())
        .await
        .unwrap();
    let mut announced = other.remote_posts().unwrap();
    for i in 0..POSTS {
        store
            .create_session(&id(i), "home", "", 1_000)
            .await
            .unwrap();
    }
    // `bad`: the post PostgreSQL refuses (it stores no NUL in text), if any.
    let post_at_once = |bad: Option<usize>| {
        let posts: Vec<_> = (0..POSTS)
            .map(|i| {
                let store = store.clone();
                let id = id(i);
                tokio::spawn(async move {
                    let sdp = if Some(i) == bad { "v=0\0" } else { "v=0" };
                    let message = NewMessage {
                        sdp: Some(sdp),
                        ..offer(&id)
                    };
                    store.append(&message, Access::Owner(""), 0, 0, 1_000).await
                })
            })
            .collect();
        async move {
            let mut outcomes = Vec::new();
            for post in posts {
                outcomes.push(post.await.unwrap());
            }
            outcomes
        }
    };

    for (i, outcome) in post_at_once(None).await.iter().enumerate() {
        assert!(outcome.is_ok(), "post {i}: {outcome:?}");
    }
    // The other instance was told of every post, once.
    let mut told = std::collections::BTreeSet::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while told.len() < POSTS {
            if let RemotePost::Message {
                session_id,
                home_id,
                side,
            } = announced.recv().await.unwrap()
            {
                assert_eq!((&*home_id, side), ("home", Side::Browser));
                assert!(told.insert(session_id.to_string()), "told twice");
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the other instance was told of {} posts of {POSTS}",
            told.len()
        )
    });
    assert_eq!(told, (0..POSTS).map(id).collect());
    // Each row's xmin is the transaction that wrote it.
    let transactions: usize = pg
        .psql(
            "group_commit",
            "SELECT count(DISTINCT xmin::text) FROM beeline_messages",
        )
        .parse()
        .unwrap();
    assert!(
        transactions <= POSTS / 4,
        "{POSTS} posts of one moment took {transactions} transactions"
    );

    let bad = POSTS / 2;
    for (i, outcome) in post_at_once(Some(bad)).await.iter().enumerate() {
        if i == bad {
            assert!(
                matches!(outcome, Err(StoreError::Postgres(_))),
                "the bad post: {outcome:?}"
            );
        } else {
            assert!(outcome.is_ok(), "post {i}: {outcome:?}");
        }
    }
    assert_eq!(
        pg.psql("group_commit", "SELECT count(*) FROM beeline_messages"),
        (2 * POSTS - 1).to_string()
    );
}
