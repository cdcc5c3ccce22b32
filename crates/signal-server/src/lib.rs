//! beeline's signaling server: an axum [`Router`](axum::Router) and its
//! SQLite [`SessionStore`].
//!
//! Entry type: [`SignalServer`]. Open it with a [`SignalConfig`], serve
//! [`SignalServer::router`], and call [`SignalServer::shutdown`] before the
//! HTTP server drains.
//!
//! # Contract
//!
//! Under a base path (default `/webrtc`):
//!
//! - `POST {base}/session` — a browser creates a session and gets
//!   `{"session_id", "ice_servers", "ttl"}`. The id carries 128 random bits;
//!   TURN credentials follow coturn's REST scheme (see [`turn_credentials`]).
//!   The home peer may not create sessions (403).
//! - `POST {base}/signal` — `{"session_id", "type", "sdp"?, "candidate"?}`
//!   with `type` one of `offer`, `answer`, `candidate`, `bye`; answered with
//!   `{"seq"}` once the message is committed to SQLite.
//! - `GET {base}/signal?session_id=&after=` — long-poll for messages of the
//!   *other* side with `seq > after`, held until one arrives, the hold time
//!   passes (then `{"messages": [], "cursor": after}`) or the server shuts
//!   down. The home peer may omit `session_id` to receive browser messages of
//!   every session addressed to it.
//! - `GET {base}/client.js`, `GET /healthz`, `GET /metrics` (Prometheus).
//! - Anything else goes to the relay upstream when one is configured
//!   (streamed both ways, never buffered), else a 404.
//!
//! The side of a caller is decided by its credentials: `Authorization:
//! Bearer <home token>` is the home peer, no bearer is a browser, a wrong
//! bearer is refused (401). Every error is answered as `{"error": "..."}`.
//! Sequence numbers come from one store-wide counter, so cursors never skip
//! or repeat a message. Held polls are woken in-process the moment a message
//! is committed; nothing polls the database on a timer. Sessions and their
//! messages expire after [`SignalConfig::session_ttl`] and are swept
//! periodically.
//!
//! This crate reads no flags, environment or files beyond the database it is
//! pointed at.

mod config;
mod metrics;
mod relay;
mod server;
mod store;
mod turn;

pub use config::SignalConfig;
pub use relay::RelayConfigError;
pub use server::{OpenError, SignalServer, MAX_BODY_BYTES};
pub use store::{MessageKind, NewMessage, SessionStore, Side, StoreError, StoredMessage, Swept};
pub use turn::{turn_credential, turn_credentials, TurnCredentials};
