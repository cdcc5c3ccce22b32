//! Storage of sessions and their messages: the [`SessionStore`] contract
//! and its two backends.
//!
//! - [`SqliteStore`]: one file, one process (the default). Each call runs on
//!   the blocking pool and returns once SQLite has committed.
//! - [`PostgresStore`]: a database shared by several signal-api instances,
//!   with a connection pool, versioned migrations and wake-ups of the other
//!   instances through `LISTEN`/`NOTIFY`.
//!
//! Which one a [`SignalConfig`](crate::SignalConfig) opens is its
//! [`Database`]: a `postgres://` or `postgresql://` URL is PostgreSQL, any
//! other value a SQLite file path. Time is passed in by the caller as
//! milliseconds since the Unix epoch, so that expiry is decided in one place
//! and tests can pick the clock.

use std::{fmt, path::Path, path::PathBuf, sync::Arc};

use futures::future::BoxFuture;
use tokio::sync::broadcast;

mod postgres;
mod sqlite;

pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::SqliteStore;

/// Where the sessions are kept.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Database {
    /// A SQLite file, created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://user:password@host:port/db`).
    Postgres(String),
}

impl Database {
    /// A `postgres://` or `postgresql://` URL is PostgreSQL; anything else is
    /// the path of a SQLite file.
    pub fn parse(value: &str) -> Self {
        if is_postgres_url(value) {
            Database::Postgres(value.to_owned())
        } else {
            Database::Sqlite(PathBuf::from(value))
        }
    }

    /// The database as it may be shown in logs and errors: a URL's password
    /// is replaced by `***`.
    pub fn display(&self) -> String {
        match self {
            Database::Sqlite(path) => path.display().to_string(),
            Database::Postgres(url) => redact_url(url),
        }
    }
}

fn is_postgres_url(value: &str) -> bool {
    let lower = value.get(..14).unwrap_or(value).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// `scheme://user:secret@host/...` without the secret.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        // A password can also come as a query parameter.
        return format!("{scheme}://{authority}{}", redact_query(tail));
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    let shown = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        user.to_owned()
    };
    format!("{scheme}://{shown}@{host}{}", redact_query(tail))
}

fn redact_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Database::Postgres(url) => f.debug_tuple("Postgres").field(&redact_url(url)).finish(),
        }
    }
}

impl From<&str> for Database {
    fn from(value: &str) -> Self {
        Database::parse(value)
    }
}

impl From<String> for Database {
    fn from(value: String) -> Self {
        Database::parse(&value)
    }
}

impl From<&Path> for Database {
    fn from(path: &Path) -> Self {
        match path.to_str() {
            Some(text) => Database::parse(text),
            None => Database::Sqlite(path.to_owned()),
        }
    }
}

impl From<PathBuf> for Database {
    fn from(path: PathBuf) -> Self {
        Database::from(path.as_path())
    }
}

impl From<&PathBuf> for Database {
    fn from(path: &PathBuf) -> Self {
        Database::from(path.as_path())
    }
}

/// Errors from [`SessionStore`] operations and from opening a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The SQLite file could not be opened or its schema created.
    #[error("could not open the signaling database {}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer version of this crate.
    #[error("the signaling database {database} has schema version {found}; this build knows up to {known}: upgrade signal-api (or point it at another database)")]
    NewerSchema {
        /// The database (a URL's password is hidden).
        database: String,
        /// Its schema version.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// The PostgreSQL URL cannot be used.
    #[error("invalid PostgreSQL URL {url}: {reason}; expected postgres://user:password@host:port/database")]
    InvalidUrl {
        /// The URL (password hidden).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// PostgreSQL could not be reached, or refused us, when the store was
    /// opened.
    #[error("could not connect to the signaling database {url}")]
    Connect {
        /// The URL (password hidden).
        url: String,
        /// What the driver said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The PostgreSQL schema could not be created or upgraded.
    #[error("could not create or upgrade the schema of the signaling database {url}")]
    Migrate {
        /// The URL (password hidden).
        url: String,
        /// What the server said.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A row holds a value this build cannot read.
    #[error("the signaling database holds an unexpected value {0:?}")]
    Corrupt(String),
    /// The database cannot be reached right now (connection lost, server
    /// restarting, pool exhausted); the request may be retried.
    #[error("the signaling database is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The session does not exist, or the caller may not use it.
    #[error("unknown session")]
    UnknownSession,
    /// The session existed but has expired.
    #[error("expired session")]
    ExpiredSession,
    /// The session already holds the most messages it may.
    #[error("the session holds its maximum of {limit} messages")]
    SessionFull {
        /// The limit.
        limit: u32,
    },
    /// A SQLite query failed.
    #[error("signaling database query failed")]
    Sqlite(#[from] rusqlite::Error),
    /// A PostgreSQL query failed.
    #[error("signaling database query failed")]
    Postgres(#[source] tokio_postgres::Error),
    /// The blocking task running a SQLite call did not finish.
    #[error("a signaling database task was interrupted")]
    Interrupted(#[source] tokio::task::JoinError),
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

    /// Parses a column value.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "browser" => Some(Side::Browser),
            "home" => Some(Side::Home),
            _ => None,
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

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The home it is addressed to.
    pub home_id: String,
    /// The subject of the browser identity that created it (empty for the
    /// anonymous identity).
    pub owner: String,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// Who is asking to use a session; anyone else is told it does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// The browser identity with this subject.
    Owner(&'a str),
    /// The home with this name.
    Home(&'a str),
}

impl Access<'_> {
    /// Whether this caller may use `session`.
    pub fn allows(&self, session: &SessionRecord) -> bool {
        match self {
            Access::Owner(owner) => session.owner == *owner,
            Access::Home(home) => session.home_id == *home,
        }
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
    /// Sessions forgotten (past their tombstone time).
    pub sessions: usize,
    /// Deleted messages.
    pub messages: usize,
}

/// A message another process committed to a shared store, so that this
/// process can wake the polls waiting for it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemotePost {
    /// A message was committed in `session_id` (addressed to `home_id`) by
    /// `side`.
    Message {
        /// Its session.
        session_id: Arc<str>,
        /// The session's home.
        home_id: Arc<str>,
        /// Who wrote it.
        side: Side,
    },
    /// Announcements may have been missed (the listening connection was
    /// lost, or this process fell behind): every waiter should read again.
    Resync,
}

/// The storage contract the signaling server is written against.
///
/// Both backends pass the same test suite (`tests/store_contract.rs`):
///
/// - a message is committed before [`append`](Self::append) returns, and
///   its sequence number is store-wide and never reused (across restarts,
///   sweeps and instances);
/// - reads return messages with `seq > after` in sequence order, and a
///   message with a lower sequence number is never committed after a read
///   has returned a higher one of the same home (browser side) or session
///   (home side), so a cursor never skips a message, even with several
///   writers;
/// - a session counts as live while `created_ms >= live_since_ms`, the
///   cutoff each call is given; an expired session is remembered (a
///   tombstone) until a [`sweep`](Self::sweep) forgets it;
/// - a session is visible only through [`Access`] of its owner or its home.
pub trait SessionStore: Send + Sync + fmt::Debug + 'static {
    /// Records a new session addressed to `home_id`, owned by `owner`.
    fn create_session<'a>(
        &'a self,
        id: &'a str,
        home_id: &'a str,
        owner: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The session `id`, live or expired, if it is still remembered.
    fn session<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>>;

    /// Appends `msg` to its session once `access` is checked, and returns
    /// the message's sequence number and the session's home once committed.
    ///
    /// Fails with [`StoreError::UnknownSession`] when the session is unknown
    /// or `access` may not use it, [`StoreError::ExpiredSession`] when it was
    /// created before `live_since_ms`, and [`StoreError::SessionFull`] when
    /// it already holds `max_messages` (0: no limit).
    fn append<'a>(
        &'a self,
        msg: &'a NewMessage<'a>,
        access: Access<'a>,
        live_since_ms: u64,
        max_messages: u32,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(u64, String), StoreError>>;

    /// Messages written by `from` in session `session_id` with `seq > after`,
    /// oldest first, at most `limit`. Empty if the session is not live.
    fn session_messages<'a>(
        &'a self,
        session_id: &'a str,
        from: Side,
        after: u64,
        live_since_ms: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, StoreError>>;

    /// Browser-written messages with `seq > after` of every live session
    /// addressed to `home_id`, oldest first, at most `limit`. An offer the
    /// home has already answered (a home message of the same session came
    /// after it) is left out: a restarted home peer must not answer it
    /// twice. A later offer in the same session (an ICE restart) is new.
    fn home_messages<'a>(
        &'a self,
        home_id: &'a str,
        after: u64,
        live_since_ms: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, StoreError>>;

    /// The highest sequence number this store ever gave out (0 for a new
    /// store). Expiry deletes messages, never this: a cursor above it means
    /// the caller knew another store (the database was recreated).
    fn highest_seq(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Deletes the messages of sessions created before `live_since_ms` (and
    /// of sessions already gone), and forgets sessions created before
    /// `forget_before_ms` altogether. Sessions in between stay as
    /// tombstones. Done in short batches, and safe while other processes
    /// use (and sweep) the same database.
    fn sweep(
        &self,
        live_since_ms: u64,
        forget_before_ms: u64,
    ) -> BoxFuture<'_, Result<Swept, StoreError>>;

    /// For a store other processes write too: their commits, announced as
    /// they happen. `None` (the default) for a store only this process
    /// writes.
    fn remote_posts(&self) -> Option<broadcast::Receiver<RemotePost>> {
        None
    }
}

/// Opens the store `database` names: SQLite on the blocking pool, or
/// PostgreSQL with `options`.
pub async fn open_store(
    database: &Database,
    options: &PostgresOptions,
) -> Result<Arc<dyn SessionStore>, StoreError> {
    Ok(match database {
        Database::Sqlite(path) => Arc::new(SqliteStore::open(path).await?),
        Database::Postgres(url) => Arc::new(PostgresStore::connect(url, options.clone()).await?),
    })
}

/// Rows one sweep transaction deletes at most.
pub(crate) const SWEEP_BATCH: usize = 500;

/// Integers in both databases are signed; values past `i64::MAX` (never
/// reached by real clocks or sequence numbers) saturate.
pub(crate) fn to_sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_postgres_and_everything_else_a_file() {
        assert_eq!(
            Database::parse("postgres://u@h/db"),
            Database::Postgres("postgres://u@h/db".into())
        );
        assert!(matches!(
            Database::parse("PostgreSQL://h/db"),
            Database::Postgres(_)
        ));
        assert_eq!(
            Database::from(PathBuf::from("./signal.db")),
            Database::Sqlite("./signal.db".into())
        );
        assert!(matches!(
            Database::parse("postgres.db"),
            Database::Sqlite(_)
        ));
    }

    #[test]
    fn passwords_are_never_shown() {
        let db =
            Database::parse("postgres://beeline:s3cret@db.example:5432/signal?sslmode=disable");
        assert_eq!(
            db.display(),
            "postgres://beeline:***@db.example:5432/signal?sslmode=disable"
        );
        assert!(!format!("{db:?}").contains("s3cret"));
        assert_eq!(
            redact_url("postgresql://h/db?user=u&password=pw"),
            "postgresql://h/db?user=u&password=***"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
