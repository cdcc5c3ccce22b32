//! The PostgreSQL backend: one database shared by several signal-api
//! instances.
//!
//! - A pool of connections ([`deadpool_postgres`]) serves the calls; a lost
//!   connection is replaced, and a call that cannot reach the database fails
//!   with [`StoreError::Unavailable`] (the server answers 503 with
//!   `Retry-After`).
//! - Versioned migrations run at start under an advisory lock, so several
//!   instances may start at once; a schema newer than this build is refused.
//! - A message's sequence number comes from one `bigserial`, and no reader
//!   can see a number before every lower one it may read: a post takes its
//!   session's row lock (and, for a browser message, its home's advisory
//!   lock, shared) before it draws the number and keeps them until it has
//!   committed, and a home's read takes the home's lock exclusively before
//!   it takes its snapshot. So a session's messages commit in number order,
//!   a home's read waits for the home's posts in flight, and a cursor never
//!   skips a message, whichever instance wrote it.
//! - Posts arriving at one instance together are written together, in one
//!   statement and one transaction ([`group_commit`]), and each is answered
//!   once that transaction has committed.
//! - The statement that writes a batch also announces its posts with
//!   `NOTIFY beeline_wake`, which PostgreSQL delivers when the batch commits
//!   and only then; every instance keeps one listening connection
//!   (reconnected with backoff) and passes other instances' posts on as
//!   [`RemotePost`]s.

use std::{error::Error as StdError, fmt, future::Future, str::FromStr, sync::Arc, time::Duration};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures::{future::BoxFuture, StreamExt as _};
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::{AsyncMessage, Config, NoTls, Row};
use tokio_util::sync::{CancellationToken, DropGuard};

mod group_commit;

use group_commit::GroupCommit;

use super::{
    redact_url, to_sql_int, Access, MessageKind, NewMessage, RemotePost, SessionRecord,
    SessionStore, Side, StoreError, StoredMessage, Swept, SWEEP_BATCH,
};

/// The channel posts are announced on.
const WAKE_CHANNEL: &str = "beeline_wake";

/// Key of the advisory lock migrations run under.
const MIGRATION_LOCK: i64 = 0x6265_656c_696e_6531; // "beeline1"

/// The schema, one step per version. Never edit a step that has shipped:
/// add the next one.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE beeline_sessions (
    id             TEXT PRIMARY KEY,
    home_id        TEXT NOT NULL,
    owner          TEXT NOT NULL DEFAULT '',
    created_ms     BIGINT NOT NULL,
    message_count  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX beeline_sessions_by_age ON beeline_sessions (created_ms);
CREATE TABLE beeline_messages (
    seq         BIGSERIAL PRIMARY KEY,
    session_id  TEXT NOT NULL,
    home_id     TEXT NOT NULL,
    side        TEXT NOT NULL CHECK (side IN ('browser', 'home')),
    kind        TEXT NOT NULL,
    sdp         TEXT,
    candidate   TEXT,
    created_ms  BIGINT NOT NULL
);
CREATE INDEX beeline_messages_by_session ON beeline_messages (session_id, side, seq);
CREATE INDEX beeline_messages_by_home ON beeline_messages (home_id, side, seq);
CREATE INDEX beeline_messages_by_age ON beeline_messages (created_ms);

-- One statement per post, so its locks are held for one round trip plus the
-- commit. The session row lock orders a session's messages; the advisory
-- lock on the home orders the browser messages of all its sessions, which a
-- home reads with one cursor. Both are held until commit, so numbers are
-- drawn in commit order.
CREATE FUNCTION beeline_append(
    p_session TEXT, p_side TEXT, p_kind TEXT, p_sdp TEXT, p_candidate TEXT,
    p_owner TEXT, p_home TEXT, p_live_since BIGINT, p_max INTEGER, p_now BIGINT,
    OUT out_status TEXT, OUT out_seq BIGINT, OUT out_home TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    s beeline_sessions%ROWTYPE;
BEGIN
    SELECT * INTO s FROM beeline_sessions WHERE id = p_session FOR UPDATE;
    IF NOT FOUND
       OR (p_owner IS NOT NULL AND s.owner <> p_owner)
       OR (p_home IS NOT NULL AND s.home_id <> p_home) THEN
        out_status := 'unknown';
        RETURN;
    END IF;
    IF s.created_ms < p_live_since THEN
        out_status := 'expired';
        RETURN;
    END IF;
    IF p_max > 0 AND s.message_count >= p_max THEN
        out_status := 'full';
        RETURN;
    END IF;
    IF p_side = 'browser' THEN
        PERFORM pg_advisory_xact_lock(hashtextextended('beeline-home:' || s.home_id, 0));
    END IF;
    INSERT INTO beeline_messages (session_id, home_id, side, kind, sdp, candidate, created_ms)
        VALUES (p_session, s.home_id, p_side, p_kind, p_sdp, p_candidate, p_now)
        RETURNING seq INTO out_seq;
    UPDATE beeline_sessions SET message_count = message_count + 1 WHERE id = p_session;
    out_status := 'ok';
    out_home := s.home_id;
END
$$;
"#,
    ),
    (
        2,
        r#"
-- Browser posts of one home no longer commit one at a time: each takes the
-- home's advisory lock *shared*, so they commit together (group commit),
-- and a home's read takes it *exclusively*, which waits until every post
-- that already drew its number has committed and holds new ones back
-- while it reads. The read's snapshot is taken after the lock: it sees a
-- complete prefix of the home's messages, never a later number without an
-- earlier one. (A session's messages stay ordered by its row lock.)
CREATE OR REPLACE FUNCTION beeline_append(
    p_session TEXT, p_side TEXT, p_kind TEXT, p_sdp TEXT, p_candidate TEXT,
    p_owner TEXT, p_home TEXT, p_live_since BIGINT, p_max INTEGER, p_now BIGINT,
    OUT out_status TEXT, OUT out_seq BIGINT, OUT out_home TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    s beeline_sessions%ROWTYPE;
BEGIN
    SELECT * INTO s FROM beeline_sessions WHERE id = p_session FOR UPDATE;
    IF NOT FOUND
       OR (p_owner IS NOT NULL AND s.owner <> p_owner)
       OR (p_home IS NOT NULL AND s.home_id <> p_home) THEN
        out_status := 'unknown';
        RETURN;
    END IF;
    IF s.created_ms < p_live_since THEN
        out_status := 'expired';
        RETURN;
    END IF;
    IF p_max > 0 AND s.message_count >= p_max THEN
        out_status := 'full';
        RETURN;
    END IF;
    IF p_side = 'browser' THEN
        PERFORM pg_advisory_xact_lock_shared(hashtextextended('beeline-home:' || s.home_id, 0));
    END IF;
    INSERT INTO beeline_messages (session_id, home_id, side, kind, sdp, candidate, created_ms)
        VALUES (p_session, s.home_id, p_side, p_kind, p_sdp, p_candidate, p_now)
        RETURNING seq INTO out_seq;
    UPDATE beeline_sessions SET message_count = message_count + 1 WHERE id = p_session;
    out_status := 'ok';
    out_home := s.home_id;
END
$$;

CREATE FUNCTION beeline_home_messages(
    p_home TEXT, p_after BIGINT, p_live_since BIGINT, p_limit BIGINT)
RETURNS TABLE (r_seq BIGINT, r_session TEXT, r_side TEXT, r_kind TEXT, r_sdp TEXT, r_candidate TEXT)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('beeline-home:' || p_home, 0));
    -- A new statement: a new snapshot, taken with the lock held.
    RETURN QUERY
    SELECT m.seq, m.session_id, m.side, m.kind, m.sdp, m.candidate
    FROM beeline_messages m JOIN beeline_sessions s ON s.id = m.session_id
    WHERE m.home_id = p_home AND m.side = 'browser' AND m.seq > p_after
      AND s.created_ms >= p_live_since
      AND NOT (m.kind = 'offer' AND EXISTS (
          SELECT 1 FROM beeline_messages h
          WHERE h.session_id = m.session_id AND h.side = 'home' AND h.seq > m.seq))
    ORDER BY m.seq
    LIMIT p_limit;
END
$$;
"#,
    ),
    (
        3,
        r#"
-- The posts one instance receives together are written by one call, in one
-- transaction (group commit in signal-api): one round trip, one commit and
-- one WAL flush for all of them. The locks are beeline_append's, taken for
-- the whole batch before any number is drawn and always in the same order
-- (the sessions' rows by id, then the homes' advisory locks, shared, by
-- key), so that concurrent batches never wait for each other in a cycle.
-- Each post is then checked as if it were posted alone, in batch order: a
-- refused one (unknown, expired, full) does not stop the others, and a
-- session's limit counts the posts of the batch before it. The accepted
-- posts are numbered in batch order. One row per post, in order.
CREATE FUNCTION beeline_append_batch(
    p_session TEXT[], p_side TEXT[], p_kind TEXT[], p_sdp TEXT[], p_candidate TEXT[],
    p_owner TEXT[], p_home TEXT[], p_live_since BIGINT[], p_max INTEGER[], p_now BIGINT[])
RETURNS TABLE (r_status TEXT, r_seq BIGINT, r_home TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    k BIGINT;
BEGIN
    PERFORM 1 FROM beeline_sessions WHERE id = ANY (p_session) ORDER BY id FOR UPDATE;
    FOR k IN
        SELECT DISTINCT hashtextextended('beeline-home:' || locked.home_id, 0)
        FROM unnest(p_session, p_side) AS post(session_id, side)
        JOIN beeline_sessions locked ON locked.id = post.session_id
        WHERE post.side = 'browser'
        ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock_shared(k);
    END LOOP;
    -- A new statement: a snapshot taken with every lock held.
    RETURN QUERY
    WITH post AS (
        SELECT *
        FROM unnest(p_session, p_side, p_kind, p_sdp, p_candidate, p_owner, p_home,
                    p_live_since, p_max, p_now)
            WITH ORDINALITY AS p(session_id, side, kind, sdp, candidate, owner, home,
                                 live_since, max, now, n)
    ), checked AS (
        SELECT post.*, s.home_id AS s_home, s.message_count,
            CASE WHEN s.id IS NULL
                      OR (post.owner IS NOT NULL AND s.owner <> post.owner)
                      OR (post.home IS NOT NULL AND s.home_id <> post.home) THEN 'unknown'
                 WHEN s.created_ms < post.live_since THEN 'expired'
                 ELSE 'ok' END AS status
        FROM post LEFT JOIN beeline_sessions s ON s.id = post.session_id
    ), ranked AS (
        SELECT c.*,
            CASE WHEN c.status = 'ok' AND c.max > 0
                      AND c.message_count
                          + row_number() OVER (PARTITION BY c.session_id, c.status ORDER BY c.n)
                          > c.max THEN 'full'
                 ELSE c.status END AS outcome
        FROM checked c
    ), numbered AS (
        SELECT o.n, nextval('beeline_messages_seq_seq') AS seq
        FROM (SELECT r.n FROM ranked r WHERE r.outcome = 'ok' ORDER BY r.n) o
    ), inserted AS (
        INSERT INTO beeline_messages (seq, session_id, home_id, side, kind, sdp, candidate, created_ms)
        SELECT numbered.seq, r.session_id, r.s_home, r.side, r.kind, r.sdp, r.candidate, r.now
        FROM ranked r JOIN numbered ON numbered.n = r.n
    ), counted AS (
        UPDATE beeline_sessions s SET message_count = s.message_count + added.count
        FROM (SELECT r.session_id, count(*) AS count
              FROM ranked r WHERE r.outcome = 'ok' GROUP BY r.session_id) added
        WHERE s.id = added.session_id
    )
    SELECT r.outcome, numbered.seq, CASE WHEN r.outcome = 'ok' THEN r.s_home END
    FROM ranked r LEFT JOIN numbered ON numbered.n = r.n
    ORDER BY r.n;
END
$$;
"#,
    ),
];

/// The newest schema version this build knows.
const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// How the PostgreSQL backend uses its database.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// Most connections one instance keeps open for requests other than
    /// posts (besides the listening one and the one that writes posts).
    /// Default 16.
    pub pool_size: usize,
    /// How long a call waits for a connection (from the pool, or a new one)
    /// before it fails as unavailable. Default 3 s.
    pub connect_timeout: Duration,
    /// How long one call may take in all before it fails as unavailable.
    /// Default 10 s.
    pub query_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout: Duration::from_secs(3),
            query_timeout: Duration::from_secs(10),
        }
    }
}

/// The PostgreSQL backend of [`SessionStore`], for several instances
/// sharing one database (see the module documentation for the guarantees).
pub struct PostgresStore {
    pool: Pool,
    options: PostgresOptions,
    /// This process's name in announcements (the writer and the listener
    /// each hold a copy; kept here for `Debug`).
    instance: Arc<str>,
    remote: broadcast::Sender<RemotePost>,
    /// Writes posts in batches, and announces them.
    appends: GroupCommit,
    _listener: DropGuard,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("instance", &self.instance)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url`, creates or upgrades the schema and starts the
    /// listening connection. Fails at once on a malformed URL, an
    /// unreachable server or refused credentials, and on a schema newer
    /// than this build. Must be called inside a Tokio runtime.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let shown = redact_url(url);
        let invalid = |reason: String| StoreError::InvalidUrl {
            url: shown.clone(),
            reason,
        };
        let mut config = Config::from_str(url).map_err(|e| invalid(error_chain(&e)))?;
        if config.get_hosts().is_empty() {
            return Err(invalid("it names no host".to_owned()));
        }
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(invalid(
                "sslmode=require: this build connects without TLS; reach the database over a private network or a local TLS tunnel".to_owned(),
            ));
        }
        if config.get_application_name().is_none() {
            config.application_name("signal-api");
        }
        config.connect_timeout(options.connect_timeout);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));

        let connect_error = |source: Box<dyn StdError + Send + Sync>| StoreError::Connect {
            url: shown.clone(),
            source,
        };
        let (mut client, connection) =
            tokio::time::timeout(options.connect_timeout, config.connect(NoTls))
                .await
                .map_err(|_| connect_error("timed out".into()))?
                .map_err(|e| connect_error(Box::new(e)))?;
        let driver = tokio::spawn(connection);
        let migrated = migrate(&mut client, &shown).await;
        drop(client);
        let _ = driver.await;
        migrated?;

        let pool_of = |size: usize| {
            let manager = Manager::from_config(
                config.clone(),
                NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(size)
                .wait_timeout(Some(options.connect_timeout))
                .create_timeout(Some(options.connect_timeout))
                .recycle_timeout(Some(options.connect_timeout))
                .runtime(Runtime::Tokio1)
                .build()
                .map_err(|e| connect_error(Box::new(e)))
        };
        let pool = pool_of(options.pool_size.max(1))?;
        // The batches of posts have connections of their own, so that posts
        // never queue behind the reads of many polls woken at once.
        let writers = pool_of(group_commit::BATCHES_IN_FLIGHT)?;

        let instance: Arc<str> = crate::turn::hex(&rand::random::<[u8; 8]>()).into();
        let (remote, _) = broadcast::channel(4096);
        let stop = CancellationToken::new();
        tokio::spawn(listen(
            config,
            instance.clone(),
            remote.clone(),
            stop.clone(),
            shown,
        ));
        let appends = GroupCommit::start(writers, options.query_timeout, instance.clone());
        Ok(Self {
            appends,
            pool,
            options,
            instance,
            remote,
            _listener: stop.drop_guard(),
        })
    }

    /// Runs `call` with a pooled connection, within the query timeout.
    async fn with_client<'a, T, F, Fut>(&'a self, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(Object) -> Fut + Send + 'a,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'a,
    {
        let work = async { call(pooled(&self.pool).await?).await };
        tokio::time::timeout(self.options.query_timeout, work)
            .await
            .map_err(|_| self.timed_out())?
    }

    fn timed_out(&self) -> StoreError {
        StoreError::Unavailable(
            format!(
                "no answer within {} s",
                self.options.query_timeout.as_secs_f32()
            )
            .into(),
        )
    }
}

/// A connection from `pool`; failing to get one is
/// [`StoreError::Unavailable`].
async fn pooled(pool: &Pool) -> Result<Object, StoreError> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => classify(e),
        other => StoreError::Unavailable(Box::new(other)),
    })
}

/// Connection-level failures (the server is down, restarting, unreachable
/// or out of connections) are [`StoreError::Unavailable`]; anything else is
/// a failed query.
fn classify(error: tokio_postgres::Error) -> StoreError {
    let unavailable = error.is_closed()
        || match error.code() {
            Some(code) => {
                let code = code.code();
                code.starts_with("08") || code.starts_with("57P") || code == "53300"
            }
            None => {
                error.as_db_error().is_none()
                    && (error.source().is_some_and(|s| s.is::<std::io::Error>())
                        || error.to_string().contains("timeout")
                        || error.to_string().contains("connecting"))
            }
        };
    if unavailable {
        StoreError::Unavailable(Box::new(error))
    } else {
        StoreError::Postgres(error)
    }
}

fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Applies the missing migrations in one transaction, under an advisory
/// lock so that instances starting together take turns.
async fn migrate(client: &mut tokio_postgres::Client, shown: &str) -> Result<(), StoreError> {
    let failed = |e: tokio_postgres::Error| StoreError::Migrate {
        url: shown.to_owned(),
        source: e,
    };
    let tx = client.transaction().await.map_err(failed)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(failed)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS beeline_schema_migrations (
             version     BIGINT PRIMARY KEY,
             applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(failed)?;
    let found: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM beeline_schema_migrations",
            &[],
        )
        .await
        .map_err(failed)?
        .get(0);
    if found > SCHEMA_VERSION {
        // Dropping the transaction rolls it back.
        return Err(StoreError::NewerSchema {
            database: shown.to_owned(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tx.batch_execute(sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO beeline_schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(failed)?;
        tracing::info!(version, "signaling database schema upgraded");
    }
    tx.commit().await.map_err(failed)
}

/// Keeps one connection listening on [`WAKE_CHANNEL`] until `stop`,
/// reconnecting with backoff. After every (re)connection it sends
/// [`RemotePost::Resync`], since announcements made while it was away are
/// lost.
async fn listen(
    config: Config,
    instance: Arc<str>,
    remote: broadcast::Sender<RemotePost>,
    stop: CancellationToken,
    shown: String,
) {
    let mut backoff = Duration::from_millis(100);
    let mut lost = false;
    loop {
        let session = listen_once(&config, &instance, &remote, &mut backoff, &mut lost);
        let error = tokio::select! {
            _ = stop.cancelled() => return,
            error = session => error,
        };
        if !lost {
            tracing::warn!(database = %shown, error = %error_chain(&*error), "lost the signaling database's wake-up connection; reconnecting");
        }
        lost = true;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One listening connection, until it fails.
async fn listen_once(
    config: &Config,
    instance: &str,
    remote: &broadcast::Sender<RemotePost>,
    backoff: &mut Duration,
    lost: &mut bool,
) -> Box<dyn StdError + Send + Sync> {
    let (client, mut connection) = match config.connect(NoTls).await {
        Ok(pair) => pair,
        Err(error) => return Box::new(error),
    };
    let (notes, mut received) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(note)) => {
                    if notes.send(note).is_err() {
                        return None;
                    }
                }
                Ok(_) => {}
                Err(error) => return Some(error),
            }
        }
        None
    });
    if let Err(error) = client
        .batch_execute(&format!("LISTEN {WAKE_CHANNEL}"))
        .await
    {
        driver.abort();
        return Box::new(error);
    }
    if *lost {
        tracing::info!("the signaling database's wake-up connection is back");
    }
    *lost = false;
    *backoff = Duration::from_millis(100);
    let _ = remote.send(RemotePost::Resync);
    while let Some(note) = received.recv().await {
        for post in note
            .payload()
            .split('\n')
            .filter_map(|line| parse_wake(line, instance))
        {
            let _ = remote.send(post);
        }
    }
    drop(client);
    match driver.await {
        Ok(Some(error)) => Box::new(error),
        _ => "the connection closed".into(),
    }
}

/// One line of a payload, `instance|side|session|home` as
/// [`group_commit`] announces a post; `None` for our own announcements and
/// anything unreadable.
fn parse_wake(payload: &str, instance: &str) -> Option<RemotePost> {
    let mut parts = payload.splitn(4, '|');
    let (from, side, session_id, home_id) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if from == instance {
        return None;
    }
    Some(RemotePost::Message {
        session_id: session_id.into(),
        home_id: home_id.into(),
        side: Side::parse(side)?,
    })
}

const SELECT_MESSAGES: &str = "SELECT m.seq, m.session_id, m.side, m.kind, m.sdp, m.candidate
     FROM beeline_messages m JOIN beeline_sessions s ON s.id = m.session_id";

fn read_message(row: &Row) -> Result<StoredMessage, StoreError> {
    let side: &str = row.get(2);
    let kind: &str = row.get(3);
    let bad = |what: &str| StoreError::Corrupt(what.to_owned());
    Ok(StoredMessage {
        seq: u64::try_from(row.get::<_, i64>(0)).unwrap_or_default(),
        session_id: row.get(1),
        side: Side::parse(side).ok_or_else(|| bad(side))?,
        kind: MessageKind::parse(kind).ok_or_else(|| bad(kind))?,
        sdp: row.get(4),
        candidate_json: row.get(5),
    })
}

fn to_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl SessionStore for PostgresStore {
    fn create_session<'a>(
        &'a self,
        id: &'a str,
        home_id: &'a str,
        owner: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.with_client(move |client| async move {
            let statement = client
                .prepare_cached(
                    "INSERT INTO beeline_sessions (id, home_id, owner, created_ms) VALUES ($1, $2, $3, $4)",
                )
                .await
                .map_err(classify)?;
            client
                .execute(&statement, &[&id, &home_id, &owner, &to_sql_int(now_ms)])
                .await
                .map_err(classify)?;
            Ok(())
        }))
    }

    fn session<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>> {
        Box::pin(self.with_client(move |client| async move {
            let statement = client
                .prepare_cached(
                    "SELECT home_id, owner, created_ms FROM beeline_sessions WHERE id = $1",
                )
                .await
                .map_err(classify)?;
            let row = client
                .query_opt(&statement, &[&id])
                .await
                .map_err(classify)?;
            Ok(row.map(|row| SessionRecord {
                home_id: row.get(0),
                owner: row.get(1),
                created_ms: u64::try_from(row.get::<_, i64>(2)).unwrap_or_default(),
            }))
        }))
    }

    fn append<'a>(
        &'a self,
        msg: &'a NewMessage<'a>,
        access: Access<'a>,
        live_since_ms: u64,
        max_messages: u32,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(u64, String), StoreError>> {
        Box::pin(async move {
            let appended = self
                .appends
                .append(msg, access, live_since_ms, max_messages, now_ms);
            // Committed, and announced to the other instances by the same
            // statement. A lost announcement delays their waiters to the
            // end of their hold, never loses the message.
            tokio::time::timeout(self.options.query_timeout, appended)
                .await
                .map_err(|_| self.timed_out())?
        })
    }

    fn session_messages<'a>(
        &'a self,
        session_id: &'a str,
        from: Side,
        after: u64,
        live_since_ms: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, StoreError>> {
        Box::pin(self.with_client(move |client| async move {
            let statement = client
                .prepare_cached(&format!(
                    "{SELECT_MESSAGES}
                     WHERE m.session_id = $1 AND m.side = $2 AND m.seq > $3 AND s.created_ms >= $4
                     ORDER BY m.seq LIMIT $5"
                ))
                .await
                .map_err(classify)?;
            let rows = client
                .query(
                    &statement,
                    &[
                        &session_id,
                        &from.as_str(),
                        &to_sql_int(after),
                        &to_sql_int(live_since_ms),
                        &to_limit(limit),
                    ],
                )
                .await
                .map_err(classify)?;
            rows.iter().map(read_message).collect()
        }))
    }

    fn home_messages<'a>(
        &'a self,
        home_id: &'a str,
        after: u64,
        live_since_ms: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, StoreError>> {
        Box::pin(self.with_client(move |client| async move {
            // The function waits for the home's posts in flight (see
            // migration 2), then reads.
            let statement = client
                .prepare_cached(
                    "SELECT r_seq, r_session, r_side, r_kind, r_sdp, r_candidate
                     FROM beeline_home_messages($1, $2, $3, $4)",
                )
                .await
                .map_err(classify)?;
            let rows = client
                .query(
                    &statement,
                    &[
                        &home_id,
                        &to_sql_int(after),
                        &to_sql_int(live_since_ms),
                        &to_limit(limit),
                    ],
                )
                .await
                .map_err(classify)?;
            rows.iter().map(read_message).collect()
        }))
    }

    fn highest_seq(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.with_client(|client| async move {
            let statement = client
                .prepare_cached(
                    "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM beeline_messages_seq_seq",
                )
                .await
                .map_err(classify)?;
            let seq: i64 = client
                .query_one(&statement, &[])
                .await
                .map_err(classify)?
                .get(0);
            Ok(u64::try_from(seq).unwrap_or_default())
        }))
    }

    fn sweep(
        &self,
        live_since_ms: u64,
        forget_before_ms: u64,
    ) -> BoxFuture<'_, Result<Swept, StoreError>> {
        Box::pin(async move {
            let batch = to_limit(SWEEP_BATCH);
            let live_since = to_sql_int(live_since_ms);
            let forget_before = to_sql_int(forget_before_ms);
            let mut swept = Swept::default();
            // Each batch is its own statement (and transaction); rows another
            // instance is sweeping at the same moment are skipped, not
            // waited for.
            loop {
                let deleted = self
                    .with_client(|client| async move {
                        client
                            .execute(
                                "DELETE FROM beeline_messages WHERE seq IN (
                                     SELECT m.seq FROM beeline_messages m
                                     WHERE m.created_ms < $1
                                        OR NOT EXISTS (SELECT 1 FROM beeline_sessions s
                                                       WHERE s.id = m.session_id AND s.created_ms >= $1)
                                     LIMIT $2 FOR UPDATE SKIP LOCKED)",
                                &[&live_since, &batch],
                            )
                            .await
                            .map_err(classify)
                    })
                    .await?;
                swept.messages += usize::try_from(deleted).unwrap_or(usize::MAX);
                if deleted < SWEEP_BATCH as u64 {
                    break;
                }
            }
            loop {
                let deleted = self
                    .with_client(|client| async move {
                        client
                            .execute(
                                "DELETE FROM beeline_sessions WHERE id IN (
                                     SELECT id FROM beeline_sessions WHERE created_ms < $1
                                     LIMIT $2 FOR UPDATE SKIP LOCKED)",
                                &[&forget_before, &batch],
                            )
                            .await
                            .map_err(classify)
                    })
                    .await?;
                swept.sessions += usize::try_from(deleted).unwrap_or(usize::MAX);
                if deleted < SWEEP_BATCH as u64 {
                    break;
                }
            }
            Ok(swept)
        })
    }

    fn remote_posts(&self) -> Option<broadcast::Receiver<RemotePost>> {
        Some(self.remote.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_payloads_name_session_home_and_side_and_skip_our_own() {
        assert_eq!(
            parse_wake("b|browser|s1|kitchen", "a"),
            Some(RemotePost::Message {
                session_id: "s1".into(),
                home_id: "kitchen".into(),
                side: Side::Browser
            })
        );
        assert_eq!(parse_wake("a|browser|s1|kitchen", "a"), None);
        assert_eq!(parse_wake("b|sideways|s1|kitchen", "a"), None);
        assert_eq!(parse_wake("garbage", "a"), None);
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        for pair in MIGRATIONS.windows(2) {
            assert_eq!(pair[1].0, pair[0].0 + 1);
        }
        assert_eq!(MIGRATIONS[0].0, 1);
    }
}
