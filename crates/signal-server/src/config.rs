//! Settings for a [`SignalServer`](crate::SignalServer).

use std::{fmt, path::PathBuf, time::Duration};

/// Everything a [`SignalServer`](crate::SignalServer) needs to know.
///
/// Build it with [`SignalConfig::new`], then adjust the public fields. The
/// library never reads flags, environment variables or files itself.
#[derive(Clone)]
#[non_exhaustive]
pub struct SignalConfig {
    /// Path prefix of the signaling endpoints, e.g. `/webrtc` or
    /// `/jarvis-api/webrtc`. A trailing `/` is ignored.
    pub base_path: String,
    /// SQLite database file; created if missing.
    pub db_path: PathBuf,
    /// Bearer token that identifies the home peer.
    pub home_token: String,
    /// coturn `static-auth-secret`; TURN URLs are only announced when set.
    pub turn_secret: Option<String>,
    /// `stun:` URLs handed to browsers (no credentials).
    pub stun_urls: Vec<String>,
    /// `turn:`/`turns:` URLs handed to browsers with time-limited credentials.
    pub turn_urls: Vec<String>,
    /// Lifetime of TURN credentials (also the `ttl` of a session answer).
    pub credential_ttl: Duration,
    /// How long a poll with nothing to return is held open.
    pub long_poll_timeout: Duration,
    /// Age after which a session and its messages are unknown and swept.
    pub session_ttl: Duration,
    /// How often expired rows are deleted from the database.
    pub sweep_interval: Duration,
    /// When set, every request no signaling route matches is forwarded to
    /// this base URL (e.g. `http://127.0.0.1:3000`) and streamed back.
    pub relay_upstream: Option<String>,
}

impl SignalConfig {
    /// A configuration with the contract's defaults: base path `/webrtc`,
    /// 300 s credentials, 10 s long-poll hold, 600 s sessions, a sweep every
    /// 30 s, no ICE servers and no relay.
    pub fn new(db_path: impl Into<PathBuf>, home_token: impl Into<String>) -> Self {
        Self {
            base_path: "/webrtc".to_owned(),
            db_path: db_path.into(),
            home_token: home_token.into(),
            turn_secret: None,
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
            credential_ttl: Duration::from_secs(300),
            long_poll_timeout: Duration::from_secs(10),
            session_ttl: Duration::from_secs(600),
            sweep_interval: Duration::from_secs(30),
            relay_upstream: None,
        }
    }
}

/// Secrets are redacted so that logging a configuration cannot leak them.
impl fmt::Debug for SignalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalConfig")
            .field("base_path", &self.base_path)
            .field("db_path", &self.db_path)
            .field("home_token", &"<redacted>")
            .field(
                "turn_secret",
                &self.turn_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("stun_urls", &self.stun_urls)
            .field("turn_urls", &self.turn_urls)
            .field("credential_ttl", &self.credential_ttl)
            .field("long_poll_timeout", &self.long_poll_timeout)
            .field("session_ttl", &self.session_ttl)
            .field("sweep_interval", &self.sweep_interval)
            .field("relay_upstream", &self.relay_upstream)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_redacts_secrets() {
        let mut config = SignalConfig::new("x.db", "home-token-value");
        config.turn_secret = Some("turn-secret-value".to_owned());
        let shown = format!("{config:?}");
        assert!(!shown.contains("home-token-value"));
        assert!(!shown.contains("turn-secret-value"));
    }
}
