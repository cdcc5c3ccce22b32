//! beeline's signaling server: an axum [`Router`](axum::Router) and its
//! [`SessionStore`] (SQLite for one instance, PostgreSQL for several).
//!
//! Entry type: [`SignalServer`]. Open it with a [`SignalConfig`], serve
//! [`SignalServer::router`] (with connect info, so per-address limits see the
//! peer), and call [`SignalServer::shutdown`] before the HTTP server drains.
//!
//! # Contract
//!
//! Under a base path (default `/webrtc`):
//!
//! - `POST {base}/session` — a browser creates a session with one home and
//!   gets `{"session_id", "home", "ice_servers", "ttl"}`. The body is empty,
//!   `{}`, or `{"home": "name"}`; without a name the session goes to the
//!   default home (the only one, when there is one). The id carries 128
//!   random bits; TURN credentials follow coturn's REST scheme (see
//!   [`TurnSecrets`]). A home peer may not create sessions (403).
//! - `POST {base}/signal` — `{"session_id", "type", "sdp"?, "candidate"?}`
//!   with `type` one of `offer`, `answer`, `candidate`, `bye`; answered with
//!   `{"seq"}` once the message is committed to the database.
//! - `GET {base}/signal?session_id=&after=` — long-poll for messages of the
//!   *other* side with `seq > after`, held until one arrives, the hold time
//!   passes (then `{"messages": [], "cursor": after}`) or the server shuts
//!   down. A home peer may omit `session_id` to receive browser messages of
//!   every session addressed to it.
//! - `POST {base}/report` — a browser's once-per-page-load outcome
//!   `{"outcome": "direct"|"relay-candidate"|"fallback", "reason"?, "detail"?,
//!   "setup_ms"?, "session_id"?}`, counted in metrics and logged; 204.
//! - `GET {base}/client.js`, `GET /healthz`, `GET /metrics` (Prometheus).
//! - Anything else goes to the relay upstream when one is configured
//!   (streamed both ways, never buffered), else a 404.
//!
//! # Who may do what
//!
//! `Authorization: Bearer <token>` matching a configured home is that home
//! peer (tokens are compared in constant time). Every other request is a
//! browser, identified by the configured [`BrowserAuth`] ([`OpenAuth`],
//! [`JwtAuth`], [`ProxyHeaderAuth`], [`ExtensionAuth`] or the embedder's
//! own) or refused with 401. A session belongs to the identity that created
//! it and to its home; to anyone else it does not exist (404, never 403, so
//! ids cannot be probed). An expired session answers 410 to those who may
//! see it. Cross-origin calls need the origin on the CORS allow-list.
//!
//! # Guarantees
//!
//! Every error is answered as `{"error": "..."}`; a database that cannot be
//! reached is a 503 with `Retry-After`. Sequence numbers come from one
//! store-wide counter, so cursors never skip or repeat a message, across
//! restarts and instances too. Held polls are woken the moment a message is
//! committed (in-process, and across instances sharing a PostgreSQL
//! database through `LISTEN`/`NOTIFY`); nothing polls the database on a
//! timer.
//! Sessions expire after [`SignalConfig::session_ttl`]: their messages are
//! swept, and the session itself is remembered for
//! [`SignalConfig::tombstone_ttl`] to answer 410. [`Limits`] bound body and
//! SDP sizes (413, refused before the body is read when its declared length
//! is too large), messages per session, sessions per identity and per
//! address per minute, and concurrent polls per identity (429, with
//! `Retry-After` for the rates and polls).
//!
//! This crate reads no flags, environment or files beyond the database it is
//! pointed at.

mod auth;
mod config;
mod cookies;
mod errors;
mod frames;
mod home_link;
mod jwt;
mod limits;
mod loopback;
mod metrics;
mod net;
mod relay;
mod server;
mod state;
mod store;
mod turn;
mod wake;

pub use auth::{
    AuthRejection, BrowserAuth, BrowserRequest, ExtensionAuth, HomeCredential, Identity, OpenAuth,
    ProxyHeaderAuth,
};
pub use config::{SignalConfig, DEFAULT_HOME};
pub use frames::RESUME_PATH;
pub use home_link::{LINK_MESSAGE_SIZE, LINK_SILENCE, PING_EVERY};
pub use jwt::{JwtAuth, JwtKey, JwtKeyError, JwtKeys};
pub use limits::Limits;
pub use loopback::LoopbackOffer;
pub use net::{IpNet, IpNetParseError};
pub use relay::{RelayConfigError, SESSION_HEADER, SESSION_PARAM};
pub use server::{OpenError, SignalServer, MAX_BODY_BYTES};
pub use store::{
    open_store, Access, Database, MessageKind, NewMessage, PostgresOptions, PostgresStore,
    RemotePost, SessionRecord, SessionStore, Side, SqliteStore, StoreError, StoredMessage, Swept,
};
pub use turn::{
    ice_urls_for_host, turn_credential, turn_credentials, TurnCredentials, TurnSecrets,
};
