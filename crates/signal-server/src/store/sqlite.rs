//! The SQLite backend: one file, one process.
//!
//! [`Db`] is synchronous: each call takes an internal lock on one
//! connection and returns when SQLite has committed. [`SqliteStore`] runs
//! its calls on the blocking pool.

use std::{
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::future::BoxFuture;
use rusqlite::{params, Connection, OptionalExtension, Params, Row};

use super::{
    to_sql_int, Access, MessageKind, NewMessage, SessionRecord, SessionStore, Side, StoreError,
    StoredMessage, Swept, SWEEP_BATCH,
};

/// The SQL that selects [`read_message`]'s columns from the messages `m`
/// joined with their sessions `s`, `WHERE` the condition given (which goes on
/// with the order and limit).
macro_rules! select_messages {
    ($condition:literal) => {
        concat!(
            "SELECT m.seq, m.session_id, m.side, m.kind, m.sdp, m.candidate
             FROM messages m JOIN sessions s ON s.id = m.session_id
             WHERE ",
            $condition
        )
    };
}

/// How long a writer waits for a lock held by another connection to the same
/// file (another process, or a store reopened in a test).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The current schema. Sessions outlive their messages as tombstones
/// (`created_ms` past the live window) so that an expired id can be told
/// from one that never existed.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id             TEXT PRIMARY KEY,
    home_id        TEXT NOT NULL,
    owner          TEXT NOT NULL DEFAULT '',
    created_ms     INTEGER NOT NULL,
    message_count  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sessions_by_age ON sessions (created_ms);
CREATE TABLE IF NOT EXISTS messages (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  TEXT NOT NULL,
    side        TEXT NOT NULL CHECK (side IN ('browser', 'home')),
    kind        TEXT NOT NULL,
    sdp         TEXT,
    candidate   TEXT,
    created_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_session ON messages (session_id, seq);
CREATE INDEX IF NOT EXISTS messages_by_age ON messages (created_ms);
";

const SCHEMA_VERSION: i64 = 2;

/// From version 1 (one anonymous owner, no message count).
const MIGRATE_FROM_1: &str = "
ALTER TABLE sessions ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN message_count INTEGER NOT NULL DEFAULT 0;
UPDATE sessions SET message_count =
    (SELECT COUNT(*) FROM messages m WHERE m.session_id = sessions.id);
";

/// Sessions and messages in one SQLite file (WAL mode).
///
/// Sequence numbers are one counter for the whole store, never reused (even
/// after a sweep or a reopen), so a cursor stays valid across sessions and
/// restarts. A session counts as live while `created_ms >= live_since_ms`,
/// the cutoff each call is given.
#[derive(Debug)]
pub(crate) struct Db {
    conn: Mutex<Connection>,
}

impl Db {
    /// Opens (creating if needed) the database at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(open_error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        // `journal_mode` answers with the mode in force; insist on WAL so that
        // readers never block the writer.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(open_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(%mode, "SQLite refused WAL mode; continuing with it");
        }
        // In WAL mode NORMAL keeps every commit across a process crash; only
        // a power loss can drop the last moments, which signaling tolerates.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_error)?;
        // Space freed by sweeps goes back to the file system: incremental
        // auto-vacuum, turned on for a database made before it was (which
        // takes one VACUUM, once).
        let auto_vacuum: i64 = conn
            .query_row("PRAGMA auto_vacuum", [], |row| row.get(0))
            .map_err(open_error)?;
        if auto_vacuum != 2 {
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
                .map_err(open_error)?;
            conn.execute_batch("VACUUM").map_err(open_error)?;
        }
        // The WAL file shrinks back after checkpoints instead of keeping its
        // largest size.
        conn.pragma_update(None, "journal_size_limit", 8 * 1024 * 1024)
            .map_err(open_error)?;
        migrate(&conn, path)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done write behind
        // (an open transaction rolls back when dropped), so the connection is
        // still good.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a new session addressed to `home_id`, owned by `owner`.
    pub(crate) fn create_session(
        &self,
        id: &str,
        home_id: &str,
        owner: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.lock()
            .prepare_cached(
                "INSERT INTO sessions (id, home_id, owner, created_ms) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id, home_id, owner, to_sql_int(now_ms)])?;
        Ok(())
    }

    /// The session `id`, live or expired, if it is still remembered.
    pub(crate) fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached("SELECT home_id, owner, created_ms FROM sessions WHERE id = ?1")?;
        let record = stmt.query_row([id], read_session).optional()?;
        Ok(record)
    }

    /// Appends `msg` to its session once `access` is checked, and returns
    /// the message's sequence number and the session's home once committed.
    ///
    /// Fails with [`StoreError::UnknownSession`] when the session is unknown
    /// or `access` may not use it, [`StoreError::ExpiredSession`] when it was
    /// created before `live_since_ms`, and [`StoreError::SessionFull`] when
    /// it already holds `max_messages` (0: no limit).
    pub(crate) fn append(
        &self,
        msg: &NewMessage<'_>,
        access: Access<'_>,
        live_since_ms: u64,
        max_messages: u32,
        now_ms: u64,
    ) -> Result<(u64, String), StoreError> {
        let mut conn = self.lock();
        // IMMEDIATE: take the write lock before reading, so a second
        // connection to the file waits (busy timeout) instead of failing
        // to upgrade its read.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (session, count) = {
            let mut stmt = tx.prepare_cached(
                "SELECT home_id, owner, created_ms, message_count FROM sessions WHERE id = ?1",
            )?;
            stmt.query_row([msg.session_id], |row| {
                Ok((read_session(row)?, row.get::<_, i64>(3)?))
            })
            .optional()?
            .ok_or(StoreError::UnknownSession)?
        };
        if !access.allows(&session) {
            return Err(StoreError::UnknownSession);
        }
        if session.created_ms < live_since_ms {
            return Err(StoreError::ExpiredSession);
        }
        if max_messages != 0 && count >= i64::from(max_messages) {
            return Err(StoreError::SessionFull {
                limit: max_messages,
            });
        }
        tx.prepare_cached(
            "INSERT INTO messages (session_id, side, kind, sdp, candidate, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            msg.session_id,
            msg.side.as_str(),
            msg.kind.as_str(),
            msg.sdp,
            msg.candidate_json,
            to_sql_int(now_ms)
        ])?;
        let seq = tx.last_insert_rowid();
        tx.prepare_cached("UPDATE sessions SET message_count = message_count + 1 WHERE id = ?1")?
            .execute([msg.session_id])?;
        tx.commit()?;
        Ok((u64::try_from(seq).unwrap_or_default(), session.home_id))
    }

    /// Messages written by `from` in session `session_id` with `seq > after`,
    /// oldest first, at most `limit`. Empty if the session is not live.
    pub(crate) fn session_messages(
        &self,
        session_id: &str,
        from: Side,
        after: u64,
        live_since_ms: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.query_messages(
            select_messages!(
                "m.session_id = ?1 AND m.side = ?2 AND m.seq > ?3 AND s.created_ms >= ?4
                 ORDER BY m.seq LIMIT ?5"
            ),
            params![
                session_id,
                from.as_str(),
                to_sql_int(after),
                to_sql_int(live_since_ms),
                to_sql_int(limit as u64)
            ],
        )
    }

    /// Browser-written messages with `seq > after` of every live session
    /// addressed to `home_id`, oldest first, at most `limit`.
    pub(crate) fn home_messages(
        &self,
        home_id: &str,
        after: u64,
        live_since_ms: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.query_messages(
            // An offer the home has already answered (a home message of
            // the same session came after it) is not handed out again: a
            // restarted home peer must not answer it twice. A later offer
            // in the same session (an ICE restart) is new, and is.
            select_messages!(
                "s.home_id = ?1 AND m.side = 'browser' AND m.seq > ?2 AND s.created_ms >= ?3
                 AND NOT (m.kind = 'offer' AND EXISTS (
                     SELECT 1 FROM messages h
                     WHERE h.session_id = m.session_id AND h.side = 'home' AND h.seq > m.seq))
                 ORDER BY m.seq LIMIT ?4"
            ),
            params![
                home_id,
                to_sql_int(after),
                to_sql_int(live_since_ms),
                to_sql_int(limit as u64)
            ],
        )
    }

    /// The highest sequence number this store ever gave out (0 for a new
    /// store). Expiry deletes messages, never this: a cursor above it means
    /// the caller knew another store (the database was recreated).
    pub(crate) fn highest_seq(&self) -> Result<u64, StoreError> {
        let conn = self.lock();
        let seq: Option<i64> = conn
            .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'messages'")?
            .query_row([], |row| row.get(0))
            .optional()?;
        Ok(seq.map_or(0, |s| u64::try_from(s).unwrap_or(0)))
    }

    /// Runs a query made with [`select_messages!`] and reads every row.
    fn query_messages(
        &self,
        sql: &str,
        params: impl Params,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, read_message)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes the messages of sessions created before `live_since_ms` (and
    /// of sessions already gone), and forgets sessions created before
    /// `forget_before_ms` altogether. Sessions in between stay as
    /// tombstones, so they answer "expired" rather than "unknown".
    ///
    /// The work is done in batches of [`SWEEP_BATCH`] rows, each its own
    /// short transaction, so requests waiting for the store get it between
    /// batches instead of waiting for the whole sweep; then the freed pages
    /// are handed back to the file system (incremental vacuum), a batch at a
    /// time too.
    pub(crate) fn sweep(
        &self,
        live_since_ms: u64,
        forget_before_ms: u64,
    ) -> Result<Swept, StoreError> {
        let mut swept = Swept::default();
        let batch = i64::try_from(SWEEP_BATCH).unwrap_or(i64::MAX);
        loop {
            let deleted = self.lock().execute(
                "DELETE FROM messages WHERE seq IN (
                    SELECT seq FROM messages
                    WHERE created_ms < ?1
                       OR NOT EXISTS (SELECT 1 FROM sessions s
                                      WHERE s.id = messages.session_id AND s.created_ms >= ?1)
                    LIMIT ?2)",
                rusqlite::params![to_sql_int(live_since_ms), batch],
            )?;
            swept.messages += deleted;
            if deleted < SWEEP_BATCH {
                break;
            }
            // Let a waiting request have the store before the next batch.
            std::thread::yield_now();
        }
        loop {
            let deleted = self.lock().execute(
                "DELETE FROM sessions WHERE id IN (
                    SELECT id FROM sessions WHERE created_ms < ?1 LIMIT ?2)",
                rusqlite::params![to_sql_int(forget_before_ms), batch],
            )?;
            swept.sessions += deleted;
            if deleted < SWEEP_BATCH {
                break;
            }
            std::thread::yield_now();
        }
        if swept.messages + swept.sessions > 0 {
            self.reclaim()?;
        }
        Ok(swept)
    }

    /// Returns free pages to the file system, [`VACUUM_PAGES`] at a time.
    fn reclaim(&self) -> Result<(), StoreError> {
        loop {
            let conn = self.lock();
            let free: i64 = conn.query_row("PRAGMA freelist_count", [], |row| row.get(0))?;
            if free == 0 {
                return Ok(());
            }
            conn.execute_batch(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"))?;
        }
    }

    /// Bytes the database file takes (pages in use and free pages).
    pub(crate) fn file_bytes(&self) -> Result<u64, StoreError> {
        let conn = self.lock();
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |row| row.get(0))?;
        let size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
        Ok(u64::try_from(pages.saturating_mul(size)).unwrap_or_default())
    }
}

/// The SQLite backend of [`SessionStore`]: sessions and messages in one
/// file (WAL mode), for one process.
///
/// Each call runs on Tokio's blocking pool and returns once SQLite has
/// committed. Sequence numbers are one counter for the whole file, never
/// reused (even after a sweep or a reopen).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    db: Arc<Db>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, on the blocking
    /// pool. Must be called inside a Tokio runtime.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_owned();
        let db = tokio::task::spawn_blocking(move || Db::open(&path))
            .await
            .map_err(StoreError::Interrupted)??;
        Ok(Self { db: Arc::new(db) })
    }

    /// Bytes the database file takes (pages in use and free pages).
    pub async fn file_bytes(&self) -> Result<u64, StoreError> {
        self.blocking(|db| db.file_bytes()).await
    }

    async fn blocking<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || op(&db))
            .await
            .map_err(StoreError::Interrupted)?
    }
}

impl SessionStore for SqliteStore {
    fn create_session<'a>(
        &'a self,
        id: &'a str,
        home_id: &'a str,
        owner: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (id, home_id, owner) = (id.to_owned(), home_id.to_owned(), owner.to_owned());
        Box::pin(self.blocking(move |db| db.create_session(&id, &home_id, &owner, now_ms)))
    }

    fn session<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>> {
        let id = id.to_owned();
        Box::pin(self.blocking(move |db| db.session(&id)))
    }

    fn append<'a>(
        &'a self,
        msg: &'a NewMessage<'a>,
        access: Access<'a>,
        live_since_ms: u64,
        max_messages: u32,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(u64, String), StoreError>> {
        let session_id = msg.session_id.to_owned();
        let (side, kind) = (msg.side, msg.kind);
        let sdp = msg.sdp.map(str::to_owned);
        let candidate = msg.candidate_json.map(str::to_owned);
        let (is_owner, who) = match access {
            Access::Owner(owner) => (true, owner.to_owned()),
            Access::Home(home) => (false, home.to_owned()),
        };
        Box::pin(self.blocking(move |db| {
            let access = if is_owner {
                Access::Owner(&who)
            } else {
                Access::Home(&who)
            };
            let msg = NewMessage {
                session_id: &session_id,
                side,
                kind,
                sdp: sdp.as_deref(),
                candidate_json: candidate.as_deref(),
            };
            db.append(&msg, access, live_since_ms, max_messages, now_ms)
        }))
    }

    fn session_messages<'a>(
        &'a self,
        session_id: &'a str,
        from: Side,
        after: u64,
        live_since_ms: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, StoreError>> {
        let session_id = session_id.to_owned();
        Box::pin(self.blocking(move |db| {
            db.session_messages(&session_id, from, after, live_since_ms, limit)
        }))
    }

    fn home_messages<'a>(
        &'a self,
        home_id: &'a str,
        after: u64,
        live_since_ms: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, StoreError>> {
        let home_id = home_id.to_owned();
        Box::pin(self.blocking(move |db| db.home_messages(&home_id, after, live_since_ms, limit)))
    }

    fn highest_seq(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.blocking(|db| db.highest_seq()))
    }

    fn sweep(
        &self,
        live_since_ms: u64,
        forget_before_ms: u64,
    ) -> BoxFuture<'_, Result<Swept, StoreError>> {
        Box::pin(self.blocking(move |db| db.sweep(live_since_ms, forget_before_ms)))
    }
}

/// Pages one incremental-vacuum step returns at most.
const VACUUM_PAGES: u32 = 256;

/// Creates or upgrades the schema in one transaction.
fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let open_error = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    conn.execute_batch("BEGIN IMMEDIATE").map_err(open_error)?;
    let result = (|| {
        let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Ok(Some(version));
        }
        if version == 1 {
            conn.execute_batch(MIGRATE_FROM_1)?;
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(None)
    })();
    match result {
        Ok(None) => conn.execute_batch("COMMIT").map_err(open_error),
        Ok(Some(found)) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(StoreError::NewerSchema {
                database: path.display().to_string(),
                found,
                known: SCHEMA_VERSION,
            })
        }
        Err(source) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(open_error(source))
        }
    }
}

fn read_session(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        home_id: row.get(0)?,
        owner: row.get(1)?,
        created_ms: u64::try_from(row.get::<_, i64>(2)?).unwrap_or_default(),
    })
}

fn read_message(row: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    let bad_text = |column: usize, value: String| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Text,
            format!("unexpected value {value:?}").into(),
        )
    };
    let side = match row.get::<_, String>(2)?.as_str() {
        "browser" => Side::Browser,
        "home" => Side::Home,
        other => return Err(bad_text(2, other.to_owned())),
    };
    let kind_name: String = row.get(3)?;
    let kind = MessageKind::parse(&kind_name).ok_or_else(|| bad_text(3, kind_name.clone()))?;
    Ok(StoredMessage {
        seq: u64::try_from(row.get::<_, i64>(0)?).unwrap_or_default(),
        session_id: row.get(1)?,
        side,
        kind,
        sdp: row.get(4)?,
        candidate_json: row.get(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: Access<'static> = Access::Owner("alice");

    fn offer(session_id: &str) -> NewMessage<'_> {
        NewMessage {
            session_id,
            side: Side::Browser,
            kind: MessageKind::Offer,
            sdp: Some("v=0"),
            candidate_json: None,
        }
    }

    fn open(dir: &tempfile::TempDir) -> Db {
        Db::open(&dir.path().join("s.db")).unwrap()
    }

    #[test]
    fn append_checks_existence_access_expiry_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        assert!(matches!(
            store.append(&offer("nope"), OWNER, 0, 0, 10),
            Err(StoreError::UnknownSession)
        ));
        store.create_session("s1", "home", "alice", 1_000).unwrap();
        let (_, home) = store.append(&offer("s1"), OWNER, 1_000, 3, 1_001).unwrap();
        assert_eq!(home, "home");
        store
            .append(&offer("s1"), Access::Home("home"), 1_000, 3, 1_001)
            .unwrap();
        // Someone else's session does not exist for them.
        for stranger in [
            Access::Owner("bob"),
            Access::Owner(""),
            Access::Home("attic"),
        ] {
            assert!(matches!(
                store.append(&offer("s1"), stranger, 1_000, 3, 1_002),
                Err(StoreError::UnknownSession)
            ));
        }
        assert!(store.append(&offer("s1"), OWNER, 1_000, 3, 1_002).is_ok());
        assert!(matches!(
            store.append(&offer("s1"), OWNER, 1_000, 3, 1_002),
            Err(StoreError::SessionFull { limit: 3 })
        ));
        assert!(matches!(
            store.append(&offer("s1"), OWNER, 1_001, 0, 1_002),
            Err(StoreError::ExpiredSession)
        ));
    }

    /// A flood of candidates (64 KiB each was once possible) expires: the
    /// sweep deletes it in short batches, so a request in the meantime gets
    /// the store between them, and the file gives the space back.
    #[test]
    fn a_sweep_is_batched_and_gives_the_space_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(open(&dir));
        let candidate = format!("{{\"candidate\":\"{}\"}}", "x".repeat(2_000));
        for s in 0..40 {
            let id = format!("flood{s}");
            store.create_session(&id, "home", "", 1_000).unwrap();
            for _ in 0..100 {
                let msg = NewMessage {
                    session_id: &id,
                    side: Side::Browser,
                    kind: MessageKind::Candidate,
                    sdp: None,
                    candidate_json: Some(&candidate),
                };
                store.append(&msg, Access::Owner(""), 0, 0, 1_000).unwrap();
            }
        }
        let full = store.file_bytes().unwrap();
        assert!(full > 8_000_000, "{full}");

        // A writer keeps creating sessions while the sweep runs; some of
        // its writes land between the sweep's batches.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                let mut during = 0;
                for i in 0.. {
                    if done.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    store
                        .create_session(&format!("live{i}"), "home", "", 5_000)
                        .unwrap();
                    during += 1;
                    std::thread::yield_now();
                }
                during
            })
        };
        let swept = store.sweep(2_000, 1_500).unwrap();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let during = writer.join().unwrap();
        assert_eq!(swept.messages, 4_000);
        assert_eq!(swept.sessions, 40);
        assert!(
            during > 4_000 / SWEEP_BATCH,
            "only {during} writes got in during the sweep"
        );
        let after = store.file_bytes().unwrap();
        assert!(
            after < full / 4,
            "the file kept its space: {full} -> {after} bytes"
        );
    }

    #[test]
    fn sweep_keeps_tombstones_then_forgets_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store.create_session("old", "home", "", 1_000).unwrap();
        let first = store
            .append(&offer("old"), Access::Owner(""), 0, 0, 1_000)
            .unwrap()
            .0;
        let swept = store.sweep(2_000, 500).unwrap();
        assert_eq!(
            swept,
            Swept {
                sessions: 0,
                messages: 1
            }
        );
        // Expired but remembered.
        assert_eq!(store.session("old").unwrap().unwrap().created_ms, 1_000);
        let swept = store.sweep(2_000, 1_500).unwrap();
        assert_eq!(
            swept,
            Swept {
                sessions: 1,
                messages: 0
            }
        );
        assert_eq!(store.session("old").unwrap(), None);

        store.create_session("new", "home", "", 3_000).unwrap();
        let second = store
            .append(&offer("new"), Access::Owner(""), 0, 0, 3_000)
            .unwrap()
            .0;
        assert!(second > first, "{second} must follow {first}");
    }

    #[test]
    fn polls_see_only_the_requested_side_and_live_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store.create_session("a", "home", "", 5_000).unwrap();
        store.create_session("b", "home", "", 1_000).unwrap();
        store.create_session("c", "attic", "", 5_000).unwrap();
        let anyone = Access::Owner("");
        store.append(&offer("a"), anyone, 0, 0, 5_000).unwrap();
        store.append(&offer("b"), anyone, 0, 0, 5_000).unwrap();
        store.append(&offer("c"), anyone, 0, 0, 5_000).unwrap();
        let answer = NewMessage {
            side: Side::Home,
            kind: MessageKind::Answer,
            ..offer("a")
        };
        store
            .append(&answer, Access::Home("home"), 0, 0, 5_001)
            .unwrap();

        let home = store.home_messages("home", 0, 2_000, 100).unwrap();
        assert!(
            home.is_empty(),
            "a's offer is answered (a restarted home must not answer it again); expired b and attic's c are hidden: {home:?}"
        );
        // A later offer in the same session (an ICE restart) is new.
        store.append(&offer("a"), anyone, 0, 0, 5_002).unwrap();
        let home = store.home_messages("home", 0, 2_000, 100).unwrap();
        assert_eq!(home.len(), 1, "{home:?}");
        assert_eq!(home[0].session_id, "a");
        assert_eq!(home[0].kind, MessageKind::Offer);
        assert_eq!(store.highest_seq().unwrap(), 5);

        let browser = store
            .session_messages("a", Side::Home, 0, 2_000, 100)
            .unwrap();
        assert_eq!(browser.len(), 1);
        assert_eq!(browser[0].kind, MessageKind::Answer);
    }

    #[test]
    fn version_1_databases_are_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE sessions (id TEXT PRIMARY KEY, home_id TEXT NOT NULL, created_ms INTEGER NOT NULL);
                 CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL,
                     side TEXT NOT NULL CHECK (side IN ('browser', 'home')), kind TEXT NOT NULL,
                     sdp TEXT, candidate TEXT, created_ms INTEGER NOT NULL);
                 INSERT INTO sessions VALUES ('s', 'home', 1000);
                 INSERT INTO messages (session_id, side, kind, sdp, created_ms) VALUES ('s', 'browser', 'offer', 'v=0', 1000);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let store = Db::open(&path).unwrap();
        let session = store.session("s").unwrap().unwrap();
        assert_eq!(session.owner, "");
        assert_eq!(store.home_messages("home", 0, 0, 10).unwrap().len(), 1);
        // The existing message counts toward the limit.
        store
            .append(&offer("s"), Access::Owner(""), 0, 2, 1_001)
            .unwrap();
        assert!(matches!(
            store.append(&offer("s"), Access::Owner(""), 0, 2, 1_002),
            Err(StoreError::SessionFull { .. })
        ));
        drop(store);
        // Reopening a current database is a no-op.
        Db::open(&path).unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            Db::open(&path),
            Err(StoreError::NewerSchema { found: 99, .. })
        ));
    }
}
