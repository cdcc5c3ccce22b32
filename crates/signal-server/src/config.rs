//! Settings for a [`SignalServer`](crate::SignalServer).

use std::{fmt, sync::Arc, time::Duration};

use crate::{
    auth::{BrowserAuth, HomeCredential, OpenAuth},
    limits::Limits,
    net::IpNet,
    store::{Database, PostgresOptions},
    turn::TurnSecrets,
};

/// Everything a [`SignalServer`](crate::SignalServer) needs to know.
///
/// Build it with [`SignalConfig::new`] (one home) or
/// [`SignalConfig::with_homes`], then adjust the public fields. The library
/// never reads flags, environment variables or files itself.
#[derive(Clone)]
#[non_exhaustive]
pub struct SignalConfig {
    /// Path prefix of the signaling endpoints, e.g. `/webrtc` or
    /// `/jarvis-api/webrtc`. A trailing `/` is ignored.
    pub base_path: String,
    /// Where sessions are kept: a SQLite file (created if missing; one
    /// instance) or a PostgreSQL URL (several instances may share it).
    pub database: Database,
    /// Pool size and timeouts of a PostgreSQL [`database`](Self::database).
    pub postgres: PostgresOptions,
    /// The home peers, each with its own bearer token. Names must be unique
    /// and tokens non-empty and distinct.
    pub homes: Vec<HomeCredential>,
    /// The home a session goes to when the browser names none. Unset, it is
    /// the only home when there is exactly one.
    pub default_home: Option<String>,
    /// Decides who a browser is. Defaults to [`OpenAuth`]; an embedding
    /// server supplies its own.
    pub browser_auth: Arc<dyn BrowserAuth>,
    /// Proxies whose `X-Forwarded-For` is believed when finding the client
    /// address (for per-address limits and logs).
    pub trusted_proxies: Vec<IpNet>,
    /// Origins (`https://app.example.com`) allowed to call the signaling
    /// endpoints cross-origin, with credentials. Empty: same-origin only.
    /// A request whose `Origin` is neither the server's own nor listed is
    /// refused (403).
    pub cors_origins: Vec<String>,
    /// coturn `static-auth-secret`s; TURN URLs are only announced when set.
    pub turn_secrets: Option<TurnSecrets>,
    /// `stun:` URLs handed to browsers (no credentials).
    pub stun_urls: Vec<String>,
    /// `turn:`/`turns:` URLs handed to browsers with time-limited credentials.
    pub turn_urls: Vec<String>,
    /// Lifetime of TURN credentials (also the `ttl` of a session answer).
    pub credential_ttl: Duration,
    /// How long a poll with nothing to return is held open.
    pub long_poll_timeout: Duration,
    /// Age after which a session expires: its messages are swept and it
    /// answers 410.
    pub session_ttl: Duration,
    /// How long an expired session is remembered (without its messages) so
    /// that it answers 410 rather than 404.
    pub tombstone_ttl: Duration,
    /// How often expired rows are deleted from the database (and idle
    /// rate-limit entries forgotten); must be more than zero.
    pub sweep_interval: Duration,
    /// When set, every request no signaling route matches is forwarded to
    /// this base URL (e.g. `http://127.0.0.1:3000`) and streamed back.
    pub relay_upstream: Option<String>,
    /// Home links (`GET {base}/link`): home-peer keeps a WebSocket open to
    /// signal-api with its home token, and when no
    /// [`relay_upstream`](Self::relay_upstream) is set, the relay sends each
    /// request over the link of the request's home. On by default.
    pub home_link: bool,
    /// Extra request headers the relay never passes on (any case, every
    /// copy), on top of the forwarding and identity headers no client may
    /// set (`beeline_frame::proxy::ClientHeaderFilter`): for example the
    /// identity header an auth proxy in front of the home service trusts.
    pub strip_request_headers: Vec<String>,
    /// Sealed cookie jars (`docs/cookies.md`): a session hands the page its
    /// cookies sealed for the home peer, and `POST {base}/cookie` turns
    /// `Set-Cookie` lines the home peer sealed into real ones, so a
    /// cookie-authenticated home app works on the data channel. On by
    /// default.
    pub cookie_jar: bool,
    /// Which sessions are handed the home's loopback listener (URL and
    /// ticket), when home-peer states one on its link (`docs/loopback.md`).
    pub loopback: crate::LoopbackOffer,
    /// Abuse limits.
    pub limits: Limits,
}

/// The name of the home created by [`SignalConfig::new`].
pub const DEFAULT_HOME: &str = "home";

impl SignalConfig {
    /// A configuration with one home, named [`DEFAULT_HOME`] and
    /// authenticated by `home_token`, and the contract's defaults: base path
    /// `/webrtc`, open browser auth, 300 s credentials, 10 s long-poll hold,
    /// 600 s sessions remembered for an hour after expiry, a sweep every
    /// 30 s, default [`Limits`], no ICE servers and no relay.
    pub fn new(database: impl Into<Database>, home_token: impl Into<String>) -> Self {
        Self::with_homes(
            database,
            vec![HomeCredential::new(DEFAULT_HOME, home_token)],
        )
    }

    /// Like [`SignalConfig::new`], with several named homes. A
    /// `postgres://` URL as `database` is PostgreSQL, anything else a SQLite
    /// file path.
    pub fn with_homes(database: impl Into<Database>, homes: Vec<HomeCredential>) -> Self {
        Self {
            base_path: "/webrtc".to_owned(),
            database: database.into(),
            postgres: PostgresOptions::default(),
            homes,
            default_home: None,
            browser_auth: Arc::new(OpenAuth),
            trusted_proxies: Vec::new(),
            cors_origins: Vec::new(),
            turn_secrets: None,
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
            credential_ttl: Duration::from_secs(300),
            long_poll_timeout: Duration::from_secs(10),
            session_ttl: Duration::from_secs(600),
            tombstone_ttl: Duration::from_secs(3600),
            sweep_interval: Duration::from_secs(30),
            relay_upstream: None,
            home_link: true,
            strip_request_headers: Vec::new(),
            cookie_jar: true,
            loopback: crate::LoopbackOffer::default(),
            limits: Limits::default(),
        }
    }
}

/// Secrets are redacted so that logging a configuration cannot leak them.
impl fmt::Debug for SignalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalConfig")
            .field("base_path", &self.base_path)
            .field("database", &self.database)
            .field("postgres", &self.postgres)
            .field("homes", &self.homes)
            .field("default_home", &self.default_home)
            .field("browser_auth", &self.browser_auth)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("cors_origins", &self.cors_origins)
            .field("turn_secrets", &self.turn_secrets)
            .field("stun_urls", &self.stun_urls)
            .field("turn_urls", &self.turn_urls)
            .field("credential_ttl", &self.credential_ttl)
            .field("long_poll_timeout", &self.long_poll_timeout)
            .field("session_ttl", &self.session_ttl)
            .field("tombstone_ttl", &self.tombstone_ttl)
            .field("sweep_interval", &self.sweep_interval)
            .field("relay_upstream", &self.relay_upstream)
            .field("home_link", &self.home_link)
            .field("strip_request_headers", &self.strip_request_headers)
            .field("loopback", &self.loopback)
            .field("limits", &self.limits)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_redacts_secrets() {
        let mut config = SignalConfig::new("x.db", "home-token-value");
        config.turn_secrets = Some(TurnSecrets::new(
            "turn-secret-value",
            Some("old-turn-secret".into()),
        ));
        let shown = format!("{config:?}");
        assert!(!shown.contains("home-token-value"), "{shown}");
        assert!(!shown.contains("turn-secret-value"), "{shown}");
        assert!(!shown.contains("old-turn-secret"), "{shown}");
        assert!(shown.contains("\"home\""), "{shown}");
    }
}
