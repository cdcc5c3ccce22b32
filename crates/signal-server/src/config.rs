//! Settings for a [`SignalServer`](crate::SignalServer).

use std::{fmt, sync::Arc, time::Duration};

use axum::http::HeaderValue;

use crate::{
    auth::{BrowserAuth, HomeCredential, OpenAuth},
    errors::OpenError,
    limits::Limits,
    net::IpNet,
    store::{Database, PostgresOptions},
    turn::{check_ice_urls, TurnSecrets},
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
    /// coturn `static-auth-secret`s, which sign the credentials of the
    /// [`turn_urls`](Self::turn_urls); required when there are any.
    pub turn_secrets: Option<TurnSecrets>,
    /// `stun:` URLs handed to browsers (no credentials).
    pub stun_urls: Vec<String>,
    /// `turn:`/`turns:` URLs handed to browsers with time-limited credentials
    /// (signed with [`turn_secrets`](Self::turn_secrets)).
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

// --- validation, used by `SignalServer::open` ---

/// What [`SignalServer::open`](crate::SignalServer::open) takes from a
/// configuration that passed [`SignalConfig::validate`].
pub(crate) struct Checked {
    /// The base path without its trailing `/`.
    pub(crate) base_path: String,
    /// The home of sessions that name none.
    pub(crate) default_home: Option<Arc<str>>,
    /// The CORS allow-list, parsed once; the CORS layer uses exactly these.
    pub(crate) cors_allow: Vec<HeaderValue>,
}

impl SignalConfig {
    /// Checks everything [`SignalServer::open`](crate::SignalServer::open)
    /// checks before it opens the database: the base path, the homes (names,
    /// distinct non-empty tokens, the default home), the STUN and TURN URLs,
    /// that TURN URLs come with a TURN secret, the CORS origins and the
    /// sweep interval. A binary calls it to refuse a bad configuration
    /// before starting anything; `open` calls it again.
    pub fn validate(&self) -> Result<(), OpenError> {
        self.check().map(drop)
    }

    pub(crate) fn check(&self) -> Result<Checked, OpenError> {
        let base_path = normalize_base_path(&self.base_path)?;
        let default_home = check_homes(self)?;
        check_ice_urls(&self.stun_urls, &["stun", "stuns"]).map_err(OpenError::InvalidIceUrl)?;
        check_ice_urls(&self.turn_urls, &["turn", "turns"]).map_err(OpenError::InvalidIceUrl)?;
        let cors_allow = self
            .cors_origins
            .iter()
            .map(|origin| check_origin(origin))
            .collect::<Result<Vec<_>, _>>()?;
        if self.sweep_interval.is_zero() {
            return Err(OpenError::InvalidSweepInterval);
        }
        check_turn(self)?;
        Ok(Checked {
            base_path,
            default_home,
            cors_allow,
        })
    }
}

/// TURN URLs need a secret to sign their credentials: without one a
/// browser would be handed TURN servers it cannot use.
pub(crate) fn check_turn(config: &SignalConfig) -> Result<(), OpenError> {
    if config.turn_secrets.is_none() && !config.turn_urls.is_empty() {
        return Err(OpenError::TurnUrlsWithoutSecret);
    }
    Ok(())
}

pub(crate) fn normalize_base_path(raw: &str) -> Result<String, OpenError> {
    let trimmed = raw.trim_end_matches('/');
    let bad = |c: char| matches!(c, '{' | '}' | '?' | '#') || c.is_whitespace();
    if !(trimmed.is_empty() || trimmed.starts_with('/'))
        || trimmed.contains(bad)
        || trimmed.contains("//")
    {
        return Err(OpenError::InvalidBasePath(raw.to_owned()));
    }
    Ok(trimmed.to_owned())
}

/// Checks names and tokens, and picks the home of sessions that name none.
pub(crate) fn check_homes(config: &SignalConfig) -> Result<Option<Arc<str>>, OpenError> {
    let invalid = |why: String| Err(OpenError::InvalidHomes(why));
    if config.homes.is_empty() {
        return invalid("at least one home with a bearer token is required".to_owned());
    }
    for (i, home) in config.homes.iter().enumerate() {
        let good_name = !home.name.is_empty()
            && home.name.len() <= 64
            && home
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !good_name {
            return invalid(format!(
                "home name {:?} must be 1-64 letters, digits, '-', '_' or '.'",
                home.name
            ));
        }
        if home.token.trim().is_empty() {
            return invalid(format!("the token of home {:?} is empty", home.name));
        }
        for other in &config.homes[..i] {
            if other.name == home.name {
                return invalid(format!("home {:?} is configured twice", home.name));
            }
            if other.token == home.token {
                return invalid(format!(
                    "homes {:?} and {:?} share a token; each home needs its own",
                    other.name, home.name
                ));
            }
        }
    }
    match &config.default_home {
        Some(name) if !config.homes.iter().any(|h| &h.name == name) => {
            invalid(format!("the default home {name:?} is not configured"))
        }
        Some(name) => Ok(Some(name.as_str().into())),
        None if config.homes.len() == 1 => Ok(Some(config.homes[0].name.as_str().into())),
        None => Ok(None),
    }
}

pub(crate) fn check_origin(origin: &str) -> Result<HeaderValue, OpenError> {
    let invalid = || OpenError::InvalidOrigin(origin.to_owned());
    let (scheme, authority) = origin.split_once("://").ok_or_else(invalid)?;
    if !matches!(scheme, "http" | "https")
        || authority.is_empty()
        || authority.contains(['/', '?', '#', ' '])
    {
        return Err(invalid());
    }
    HeaderValue::from_str(origin).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::HomeCredential;

    #[test]
    fn base_path_is_normalized_and_validated() {
        assert_eq!(normalize_base_path("/webrtc/").unwrap(), "/webrtc");
        assert_eq!(
            normalize_base_path("/jarvis-api/webrtc").unwrap(),
            "/jarvis-api/webrtc"
        );
        assert_eq!(normalize_base_path("/").unwrap(), "");
        assert!(normalize_base_path("webrtc").is_err());
        assert!(normalize_base_path("/a/{id}").is_err());
        assert!(normalize_base_path("/a//b").is_err());
    }

    #[test]
    fn homes_are_validated_and_the_default_is_chosen() {
        let config = |homes: Vec<HomeCredential>, default: Option<&str>| {
            let mut config = SignalConfig::with_homes("x.db", homes);
            config.default_home = default.map(str::to_owned);
            config
        };
        let two = || {
            vec![
                HomeCredential::new("kitchen", "a"),
                HomeCredential::new("attic", "b"),
            ]
        };
        let one = check_homes(&SignalConfig::new("x.db", "t")).unwrap();
        assert_eq!(one.as_deref(), Some("home"));
        assert_eq!(check_homes(&config(two(), None)).unwrap(), None);
        assert_eq!(
            check_homes(&config(two(), Some("attic")))
                .unwrap()
                .as_deref(),
            Some("attic")
        );
        for bad in [
            config(vec![], None),
            config(two(), Some("cellar")),
            config(vec![HomeCredential::new("a b", "t")], None),
            config(vec![HomeCredential::new("h", " ")], None),
            config(
                vec![HomeCredential::new("h", "t"), HomeCredential::new("h", "u")],
                None,
            ),
            config(
                vec![HomeCredential::new("h", "t"), HomeCredential::new("g", "t")],
                None,
            ),
        ] {
            assert!(check_homes(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn origins_must_be_scheme_and_host() {
        assert!(check_origin("https://app.example.com").is_ok());
        assert!(check_origin("http://127.0.0.1:8080").is_ok());
        for bad in ["app.example.com", "https://", "https://a/b", "ftp://a", "*"] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn turn_urls_need_a_turn_secret() {
        let mut config = SignalConfig::new("x.db", "t");
        assert!(check_turn(&config).is_ok());
        config.turn_urls = vec!["turn:turn.example.com:3478".into()];
        assert!(matches!(
            check_turn(&config),
            Err(OpenError::TurnUrlsWithoutSecret)
        ));
        assert!(matches!(
            config.validate(),
            Err(OpenError::TurnUrlsWithoutSecret)
        ));
        config.turn_secrets = Some(TurnSecrets::new("s", None));
        assert!(check_turn(&config).is_ok());
        assert!(config.validate().is_ok());
        // A secret without URLs is harmless: nothing is announced.
        config.turn_urls.clear();
        assert!(config.validate().is_ok());
    }

    #[test]
    fn validate_makes_the_checks_of_open() {
        let ok = SignalConfig::new("x.db", "t");
        assert!(ok.validate().is_ok());
        let checked = ok.check().unwrap();
        assert_eq!(checked.base_path, "/webrtc");
        assert_eq!(checked.default_home.as_deref(), Some("home"));
        let bad: [fn(&mut SignalConfig); 6] = [
            |c| c.base_path = "webrtc".into(),
            |c| c.homes.clear(),
            |c| c.stun_urls = vec!["http://stun.example".into()],
            |c| c.turn_urls = vec!["stun:turn.example".into()],
            |c| c.cors_origins = vec!["*".into()],
            |c| c.sweep_interval = Duration::ZERO,
        ];
        for (i, spoil) in bad.iter().enumerate() {
            let mut config = SignalConfig::new("x.db", "t");
            spoil(&mut config);
            assert!(config.validate().is_err(), "case {i}: {config:?}");
        }
    }

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
