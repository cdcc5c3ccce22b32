//! SQLite storage of sessions and their messages.
//!
//! The store is synchronous: each call takes an internal lock on one
//! connection and returns when SQLite has committed. Async callers run it on
//! a blocking thread (the [`SignalServer`](crate::SignalServer) does).
//! Time is passed in by the caller as milliseconds since the Unix epoch, so
//! that expiry is decided in one place and tests can pick the clock.

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use rusqlite::{params, Connection, OptionalExtension, Row};

/// How long a writer waits for a lock held by another connection to the same
/// file (another process, or a store reopened in a test).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id          TEXT PRIMARY KEY,
    home_id     TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
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
PRAGMA user_version = 1;
";

/// Errors from [`SessionStore`] operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file could not be opened or its schema created.
    #[error("could not open the signaling database {}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The session does not exist or has expired.
    #[error("unknown or expired session")]
    UnknownSession,
    /// A query failed.
    #[error("signaling database query failed")]
    Sqlite(#[from] rusqlite::Error),
}

/// Which peer wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The browser that created the session.
    Browser,
    /// The home peer the session is addressed to.
    Home,
}

impl Side {
    /// The column value, also used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Browser => "browser",
            Side::Home => "home",
        }
    }

    /// The peer on the other end.
    pub fn other(self) -> Side {
        match self {
            Side::Browser => Side::Home,
            Side::Home => Side::Browser,
        }
    }
}

/// The type of a signaling message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageKind {
    /// An SDP offer.
    Offer,
    /// An SDP answer.
    Answer,
    /// A trickled ICE candidate.
    Candidate,
    /// The sender leaves the session.
    Bye,
}

impl MessageKind {
    /// Every kind, in a fixed order (used for metrics).
    pub const ALL: [MessageKind; 4] = [
        MessageKind::Offer,
        MessageKind::Answer,
        MessageKind::Candidate,
        MessageKind::Bye,
    ];

    /// The wire name (`"offer"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Offer => "offer",
            MessageKind::Answer => "answer",
            MessageKind::Candidate => "candidate",
            MessageKind::Bye => "bye",
        }
    }

    /// Parses a wire name; `None` for anything unknown.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// A message to append to a session.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// The session it belongs to.
    pub session_id: &'a str,
    /// Who wrote it.
    pub side: Side,
    /// Its type.
    pub kind: MessageKind,
    /// SDP of an offer or answer.
    pub sdp: Option<&'a str>,
    /// The candidate as JSON text (`"null"` for an explicit null).
    pub candidate_json: Option<&'a str>,
}

/// A stored message, as returned by polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Store-wide, strictly increasing sequence number.
    pub seq: u64,
    /// The session it belongs to.
    pub session_id: String,
    /// Who wrote it.
    pub side: Side,
    /// Its type.
    pub kind: MessageKind,
    /// SDP of an offer or answer.
    pub sdp: Option<String>,
    /// The candidate as JSON text.
    pub candidate_json: Option<String>,
}

/// What [`SessionStore::sweep`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Swept {
    /// Deleted sessions.
    pub sessions: usize,
    /// Deleted messages.
    pub messages: usize,
}

/// Sessions and messages in one SQLite file (WAL mode).
///
/// Sequence numbers are one counter for the whole store, never reused (even
/// after a sweep or a reopen), so a cursor stays valid across sessions and
/// restarts. A session counts as live while `created_ms >= live_since_ms`,
/// the cutoff each call is given.
#[derive(Debug)]
pub struct SessionStore {
    conn: Mutex<Connection>,
}

impl SessionStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
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
        conn.execute_batch(SCHEMA).map_err(open_error)?;
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

    /// Records a new session addressed to `home_id`.
    pub fn create_session(&self, id: &str, home_id: &str, now_ms: u64) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO sessions (id, home_id, created_ms) VALUES (?1, ?2, ?3)",
            params![id, home_id, to_sql_int(now_ms)],
        )?;
        Ok(())
    }

    /// The home a live session is addressed to, or `None` if it is unknown
    /// or older than `live_since_ms`.
    pub fn session_home(&self, id: &str, live_since_ms: u64) -> Result<Option<String>, StoreError> {
        let home = self
            .lock()
            .query_row(
                "SELECT home_id FROM sessions WHERE id = ?1 AND created_ms >= ?2",
                params![id, to_sql_int(live_since_ms)],
                |row| row.get(0),
            )
            .optional()?;
        Ok(home)
    }

    /// Appends `msg` to its session if that session is live, and returns the
    /// message's sequence number once it is committed.
    pub fn append(
        &self,
        msg: &NewMessage<'_>,
        live_since_ms: u64,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let live: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM sessions WHERE id = ?1 AND created_ms >= ?2",
                params![msg.session_id, to_sql_int(live_since_ms)],
                |row| row.get(0),
            )
            .optional()?;
        if live.is_none() {
            return Err(StoreError::UnknownSession);
        }
        tx.execute(
            "INSERT INTO messages (session_id, side, kind, sdp, candidate, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                msg.session_id,
                msg.side.as_str(),
                msg.kind.as_str(),
                msg.sdp,
                msg.candidate_json,
                to_sql_int(now_ms)
            ],
        )?;
        let seq = tx.last_insert_rowid();
        tx.commit()?;
        Ok(u64::try_from(seq).unwrap_or_default())
    }

    /// Messages written by `from` in session `session_id` with `seq > after`,
    /// oldest first, at most `limit`. Empty if the session is not live.
    pub fn session_messages(
        &self,
        session_id: &str,
        from: Side,
        after: u64,
        live_since_ms: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT m.seq, m.session_id, m.side, m.kind, m.sdp, m.candidate
             FROM messages m JOIN sessions s ON s.id = m.session_id
             WHERE m.session_id = ?1 AND m.side = ?2 AND m.seq > ?3 AND s.created_ms >= ?4
             ORDER BY m.seq LIMIT ?5",
        )?;
        let rows = stmt.query_map(
            params![
                session_id,
                from.as_str(),
                to_sql_int(after),
                to_sql_int(live_since_ms),
                to_sql_int(limit as u64)
            ],
            read_message,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Browser-written messages with `seq > after` of every live session
    /// addressed to `home_id`, oldest first, at most `limit`.
    pub fn home_messages(
        &self,
        home_id: &str,
        after: u64,
        live_since_ms: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT m.seq, m.session_id, m.side, m.kind, m.sdp, m.candidate
             FROM messages m JOIN sessions s ON s.id = m.session_id
             WHERE s.home_id = ?1 AND m.side = 'browser' AND m.seq > ?2 AND s.created_ms >= ?3
             ORDER BY m.seq LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![
                home_id,
                to_sql_int(after),
                to_sql_int(live_since_ms),
                to_sql_int(limit as u64)
            ],
            read_message,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes sessions and messages created before `cutoff_ms`, and messages
    /// whose session is gone.
    pub fn sweep(&self, cutoff_ms: u64) -> Result<Swept, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let cutoff = to_sql_int(cutoff_ms);
        let sessions = tx.execute("DELETE FROM sessions WHERE created_ms < ?1", [cutoff])?;
        let messages = tx.execute(
            "DELETE FROM messages
             WHERE created_ms < ?1 OR session_id NOT IN (SELECT id FROM sessions)",
            [cutoff],
        )?;
        tx.commit()?;
        Ok(Swept { sessions, messages })
    }
}

/// SQLite integers are signed; values past `i64::MAX` (never reached by
/// real clocks or sequence numbers) saturate.
fn to_sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
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

    fn offer(session_id: &str) -> NewMessage<'_> {
        NewMessage {
            session_id,
            side: Side::Browser,
            kind: MessageKind::Offer,
            sdp: Some("v=0"),
            candidate_json: None,
        }
    }

    #[test]
    fn append_to_unknown_or_expired_session_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::open(&dir.path().join("s.db")).unwrap();
        assert!(matches!(
            store.append(&offer("nope"), 0, 10),
            Err(StoreError::UnknownSession)
        ));
        store.create_session("s1", "home", 1_000).unwrap();
        assert!(store.append(&offer("s1"), 1_000, 1_001).is_ok());
        assert!(matches!(
            store.append(&offer("s1"), 1_001, 1_002),
            Err(StoreError::UnknownSession)
        ));
    }

    #[test]
    fn sequence_numbers_are_not_reused_after_a_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::open(&dir.path().join("s.db")).unwrap();
        store.create_session("old", "home", 1_000).unwrap();
        let first = store.append(&offer("old"), 0, 1_000).unwrap();
        let swept = store.sweep(2_000).unwrap();
        assert_eq!(
            swept,
            Swept {
                sessions: 1,
                messages: 1
            }
        );
        store.create_session("new", "home", 3_000).unwrap();
        let second = store.append(&offer("new"), 0, 3_000).unwrap();
        assert!(second > first, "{second} must follow {first}");
    }

    #[test]
    fn polls_see_only_the_requested_side_and_live_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::open(&dir.path().join("s.db")).unwrap();
        store.create_session("a", "home", 5_000).unwrap();
        store.create_session("b", "home", 1_000).unwrap();
        store.append(&offer("a"), 0, 5_000).unwrap();
        store.append(&offer("b"), 0, 5_000).unwrap();
        let answer = NewMessage {
            side: Side::Home,
            kind: MessageKind::Answer,
            ..offer("a")
        };
        store.append(&answer, 0, 5_001).unwrap();

        let home = store.home_messages("home", 0, 2_000, 100).unwrap();
        assert_eq!(home.len(), 1, "expired session b must be hidden");
        assert_eq!(home[0].session_id, "a");
        assert_eq!(home[0].kind, MessageKind::Offer);

        let browser = store
            .session_messages("a", Side::Home, 0, 2_000, 100)
            .unwrap();
        assert_eq!(browser.len(), 1);
        assert_eq!(browser[0].kind, MessageKind::Answer);
    }
}
