//! Flags, environment and config file ([`Cli`] over [`FileConfig`]), mapped
//! onto the library's [`SignalConfig`] in one [`Settings`].
//!
//! Precedence is flag > environment > file > built-in default. clap handles
//! the first two (every flag has an `env`); the file's values fill whatever
//! is still unset. Secrets are read here (from files or the environment) and
//! never logged. What makes a configuration valid is the library's to say
//! (`SignalConfig::validate`, `JwtKey::from_public_pem`); this module only
//! refuses what is about flags themselves (a value and its file both given,
//! a mode without the setting it needs, a zero where a flag wants seconds).

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _};
use beeline_signal_server::{
    Database, HomeCredential, IpNet, JwtKey, Limits, SignalConfig, TurnSecrets, DEFAULT_HOME,
};
use clap::{parser::ValueSource, ArgMatches, Parser, ValueEnum};
use serde::Deserialize;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_DB: &str = "./signal.db";
const DEFAULT_BASE_PATH: &str = "/webrtc";
const DEFAULT_PROXY_USER_HEADER: &str = "x-forwarded-user";

/// How browsers prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum BrowserAuthMode {
    /// Anyone who can reach the server may create a session (development,
    /// or behind access control of your own). Logged as a loud warning.
    Open,
    /// A JWT (HS256 secret, or RS256/ES256 public key) as bearer or cookie.
    Jwt,
    /// An identity header set by a fronting proxy, trusted only from
    /// --trusted-proxy addresses.
    ProxyHeader,
}

/// Which sessions are handed their home's loopback listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum LoopbackOfferMode {
    /// None.
    Off,
    /// Browsers on the network the home's link comes from.
    SameNetwork,
    /// Every session.
    Always,
}

impl From<LoopbackOfferMode> for beeline_signal_server::LoopbackOffer {
    fn from(mode: LoopbackOfferMode) -> Self {
        match mode {
            LoopbackOfferMode::Off => Self::Off,
            LoopbackOfferMode::SameNetwork => Self::SameNetwork,
            LoopbackOfferMode::Always => Self::Always,
        }
    }
}

/// Algorithms accepted for browser JWTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum JwtAlgorithm {
    /// HMAC-SHA256 with --jwt-secret.
    Hs256,
    /// RSA PKCS#1 v1.5 SHA-256 with --jwt-public-key-file.
    Rs256,
    /// ECDSA P-256 SHA-256 with --jwt-public-key-file.
    Es256,
}

const AFTER_HELP: &str = "\
Precedence: flags > environment > config file (--config) > defaults. The config
file uses the long flag names in snake_case (e.g. browser_auth = \"jwt\",
stun_url = [\"stun:turn.example.com:3478\"]) and a [homes.NAME] table per home
(token_file = \"...\" or token_env = \"VAR\"); relative paths in it are relative
to the file. See docs/signal-api.md and docs/examples/signal-api.toml.

Homes: --home-token/--home-token-file define one home named \"home\"; --home
NAME=file:PATH or NAME=env:VAR adds named homes. Browsers choose one with
POST {base}/session {\"home\": \"NAME\"}; with one home, or --default-home, an
empty body is enough. Tokens are never logged.

Endpoints: POST {base}/session, POST|GET {base}/signal, POST {base}/report,
GET {base}/client.js, GET {base}/link (home-peer's home link), GET /healthz,
GET /metrics (Prometheus). Every other path is the normal path: it goes to
--relay-upstream when set, else over the home link of the request's home.

Examples:
  signal-api --listen 127.0.0.1:0 --db ./signal.db --home-token-file ./token \\
      --browser-auth open --relay-upstream http://127.0.0.1:3000
  signal-api --config /etc/beeline/signal-api.toml --log-json";

/// beeline's signaling server: long-poll WebRTC signaling between browsers
/// and home peers, TURN credentials for coturn, outcome metrics, and an
/// optional relay of the normal path.
#[derive(Debug, Parser)]
#[command(name = "signal-api", version, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    /// TOML config file with the same keys (snake_case); flags and env override it.
    #[arg(
        long,
        env = "BEELINE_CONFIG",
        value_name = "PATH",
        help_heading = "General"
    )]
    config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:8080].
    #[arg(
        long,
        env = "BEELINE_LISTEN",
        value_name = "ADDR",
        help_heading = "General"
    )]
    listen: Option<SocketAddr>,
    /// SQLite database file (created if missing; WAL mode; one instance), or a
    /// postgres:// URL shared by several instances [default: ./signal.db].
    #[arg(
        long,
        env = "BEELINE_DB",
        value_name = "PATH|URL",
        help_heading = "General"
    )]
    db: Option<PathBuf>,
    /// With a postgres:// --db: most connections this instance keeps open for requests (plus one that listens for the other instances' posts and one that writes posts) [default: 16].
    #[arg(
        long,
        env = "BEELINE_DB_POOL_SIZE",
        value_name = "N",
        help_heading = "General"
    )]
    db_pool_size: Option<usize>,
    /// Path prefix of the signaling endpoints [default: /webrtc].
    #[arg(
        long,
        env = "BEELINE_BASE_PATH",
        value_name = "PATH",
        help_heading = "General"
    )]
    base_path: Option<String>,
    /// Forward every unmatched request to this base URL and stream the answer back.
    #[arg(
        long,
        env = "BEELINE_RELAY_UPSTREAM",
        value_name = "URL",
        help_heading = "General"
    )]
    relay_upstream: Option<String>,
    /// Request header the relay never passes on to --relay-upstream, on top of the forwarding and identity headers no client may set (e.g. the identity header an auth proxy in front of the home service trusts); repeat for more (env: comma-separated).
    #[arg(
        long = "strip-header",
        env = "BEELINE_STRIP_HEADERS",
        value_delimiter = ',',
        value_name = "NAME",
        help_heading = "General"
    )]
    strip_headers: Vec<String>,
    /// Turn home links off: `GET <base>/link` refuses every home-peer and, without --relay-upstream, the normal path answers 404.
    #[arg(long, env = "BEELINE_NO_HOME_LINK", help_heading = "General")]
    no_home_link: bool,
    /// Turn sealed cookie jars off: pages get no jar and `POST <base>/cookie` answers 404, so requests on the data channel carry no browser cookies (docs/cookies.md).
    #[arg(long, env = "BEELINE_NO_COOKIE_JAR", help_heading = "General")]
    no_cookie_jar: bool,
    /// Which sessions get their home's loopback listener (URL and ticket) when home-peer states one on its link: browsers on the link's network (same IPv4 address or IPv6 /64), all, or none (docs/loopback.md). Default same-network.
    #[arg(
        long,
        env = "BEELINE_LOOPBACK_OFFER",
        value_enum,
        help_heading = "General"
    )]
    loopback_offer: Option<LoopbackOfferMode>,
    /// Log as JSON lines instead of text (RUST_LOG sets the level; default info).
    #[arg(long, env = "BEELINE_LOG_JSON", help_heading = "General")]
    log_json: bool,

    /// Bearer token of the home named "home" (prefer --home-token-file: flags show in `ps`).
    #[arg(
        long,
        env = "BEELINE_HOME_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = "Homes"
    )]
    home_token: Option<String>,
    /// File holding the bearer token of the home named "home" (surrounding whitespace ignored).
    #[arg(
        long,
        env = "BEELINE_HOME_TOKEN_FILE",
        value_name = "PATH",
        help_heading = "Homes"
    )]
    home_token_file: Option<PathBuf>,
    /// A named home and where its token is: NAME=file:PATH or NAME=env:VAR; repeat for more (env: comma-separated).
    #[arg(
        long = "home",
        env = "BEELINE_HOMES",
        value_delimiter = ',',
        value_name = "NAME=SOURCE",
        help_heading = "Homes"
    )]
    homes: Vec<String>,
    /// Home of sessions whose request names none [default: the only home, if there is one].
    #[arg(
        long,
        env = "BEELINE_DEFAULT_HOME",
        value_name = "NAME",
        help_heading = "Homes"
    )]
    default_home: Option<String>,

    /// How browsers are authenticated; required.
    #[arg(
        long,
        env = "BEELINE_BROWSER_AUTH",
        value_enum,
        value_name = "MODE",
        help_heading = "Browser auth"
    )]
    browser_auth: Option<BrowserAuthMode>,
    /// jwt: HS256 shared secret (prefer --jwt-secret-file).
    #[arg(
        long,
        env = "BEELINE_JWT_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        help_heading = "Browser auth"
    )]
    jwt_secret: Option<String>,
    /// jwt: file holding the HS256 shared secret.
    #[arg(
        long,
        env = "BEELINE_JWT_SECRET_FILE",
        value_name = "PATH",
        help_heading = "Browser auth"
    )]
    jwt_secret_file: Option<PathBuf>,
    /// jwt: PEM public key (RS256 or ES256) that verifies tokens.
    #[arg(
        long,
        env = "BEELINE_JWT_PUBLIC_KEY_FILE",
        value_name = "PATH",
        help_heading = "Browser auth"
    )]
    jwt_public_key_file: Option<PathBuf>,
    /// jwt: JWKS file (RFC 7517) of the keys that verify tokens, told apart by `kid`; re-read when it changes (checked every 2 s) and on SIGHUP, so keys rotate with no restart.
    #[arg(
        long,
        env = "BEELINE_JWT_JWKS_FILE",
        value_name = "PATH",
        help_heading = "Browser auth"
    )]
    jwt_jwks_file: Option<PathBuf>,
    /// jwt: refuse tokens that live longer than this (exp - iat), and tokens without iat.
    #[arg(
        long,
        env = "BEELINE_JWT_MAX_LIFETIME_SECS",
        value_name = "SECS",
        help_heading = "Browser auth"
    )]
    jwt_max_lifetime_secs: Option<u64>,
    /// jwt: the only accepted algorithm [default: hs256 with a secret, detected from the key otherwise].
    #[arg(
        long,
        env = "BEELINE_JWT_ALGORITHM",
        value_enum,
        value_name = "ALG",
        help_heading = "Browser auth"
    )]
    jwt_algorithm: Option<JwtAlgorithm>,
    /// jwt: also read the token from this cookie when there is no bearer.
    #[arg(
        long,
        env = "BEELINE_JWT_COOKIE",
        value_name = "NAME",
        help_heading = "Browser auth"
    )]
    jwt_cookie: Option<String>,
    /// jwt: required `iss` claim.
    #[arg(
        long,
        env = "BEELINE_JWT_ISSUER",
        value_name = "ISS",
        help_heading = "Browser auth"
    )]
    jwt_issuer: Option<String>,
    /// jwt: required `aud` claim.
    #[arg(
        long,
        env = "BEELINE_JWT_AUDIENCE",
        value_name = "AUD",
        help_heading = "Browser auth"
    )]
    jwt_audience: Option<String>,
    /// proxy-header: header carrying the user's identity [default: x-forwarded-user].
    #[arg(
        long,
        env = "BEELINE_PROXY_USER_HEADER",
        value_name = "NAME",
        help_heading = "Browser auth"
    )]
    proxy_user_header: Option<String>,
    /// Proxy address or CIDR whose X-Forwarded-For (and, in proxy-header mode, identity header) is believed; repeat for more (env: comma-separated).
    #[arg(
        long = "trusted-proxy",
        env = "BEELINE_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR",
        help_heading = "Browser auth"
    )]
    trusted_proxies: Vec<IpNet>,
    /// Origin allowed to call the signaling endpoints cross-origin, with credentials; repeat for more (env: comma-separated). Default: same origin only.
    #[arg(
        long = "cors-origin",
        env = "BEELINE_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN",
        help_heading = "Browser auth"
    )]
    cors_origins: Vec<String>,

    /// coturn static-auth-secret that signs TURN credentials (prefer --turn-secret-file).
    #[arg(
        long,
        env = "BEELINE_TURN_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        help_heading = "TURN"
    )]
    turn_secret: Option<String>,
    /// File holding the TURN secret (surrounding whitespace ignored).
    #[arg(
        long,
        env = "BEELINE_TURN_SECRET_FILE",
        value_name = "PATH",
        help_heading = "TURN"
    )]
    turn_secret_file: Option<PathBuf>,
    /// The previous TURN secret during a rotation: kept (coturn has both), never used to sign.
    #[arg(
        long,
        env = "BEELINE_TURN_PREVIOUS_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        help_heading = "TURN"
    )]
    turn_previous_secret: Option<String>,
    /// File holding the previous TURN secret.
    #[arg(
        long,
        env = "BEELINE_TURN_PREVIOUS_SECRET_FILE",
        value_name = "PATH",
        help_heading = "TURN"
    )]
    turn_previous_secret_file: Option<PathBuf>,
    /// coturn host: announces stun:HOST:PORT, turn:HOST:PORT over UDP and TCP, and turns:HOST:TLS-PORT, unless --stun-url/--turn-url are given.
    #[arg(
        long,
        env = "BEELINE_TURN_HOST",
        value_name = "HOST",
        help_heading = "TURN"
    )]
    turn_host: Option<String>,
    /// Plain STUN/TURN port for --turn-host [default: 3478].
    #[arg(
        long,
        env = "BEELINE_TURN_PORT",
        value_name = "PORT",
        help_heading = "TURN"
    )]
    turn_port: Option<u16>,
    /// TURN-over-TLS port for --turn-host; 0 announces no turns: URL [default: 443].
    #[arg(
        long,
        env = "BEELINE_TURNS_PORT",
        value_name = "PORT",
        help_heading = "TURN"
    )]
    turns_port: Option<u16>,
    /// STUN URL handed to browsers; repeat for more (env: comma-separated).
    #[arg(
        long = "stun-url",
        env = "BEELINE_STUN_URL",
        value_delimiter = ',',
        value_name = "URL",
        help_heading = "TURN"
    )]
    stun_urls: Vec<String>,
    /// TURN URL handed to browsers with credentials; repeat for more (env: comma-separated).
    #[arg(
        long = "turn-url",
        env = "BEELINE_TURN_URL",
        value_delimiter = ',',
        value_name = "URL",
        help_heading = "TURN"
    )]
    turn_urls: Vec<String>,
    /// Lifetime of TURN credentials in seconds [default: 300].
    #[arg(
        long,
        env = "BEELINE_CREDENTIAL_TTL",
        value_name = "SECS",
        help_heading = "TURN"
    )]
    credential_ttl: Option<u64>,

    /// Seconds a poll with nothing to return is held [default: 10].
    #[arg(
        long,
        env = "BEELINE_LONG_POLL_TIMEOUT",
        value_name = "SECS",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    long_poll_timeout: Option<u64>,
    /// Seconds after which a session expires, its messages are swept and it answers 410 [default: 600].
    #[arg(
        long,
        env = "BEELINE_SESSION_TTL",
        value_name = "SECS",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    session_ttl: Option<u64>,
    /// Seconds an expired session is remembered to answer 410 instead of 404 [default: 3600].
    #[arg(
        long,
        env = "BEELINE_TOMBSTONE_TTL",
        value_name = "SECS",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    tombstone_ttl: Option<u64>,
    /// Largest signaling request body, refused with 413 [default: 65536].
    #[arg(
        long,
        env = "BEELINE_MAX_BODY_BYTES",
        value_name = "BYTES",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    max_body_bytes: Option<usize>,
    /// Largest SDP of an offer or answer, refused with 413 [default: 32768].
    #[arg(
        long,
        env = "BEELINE_MAX_SDP_BYTES",
        value_name = "BYTES",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    max_sdp_bytes: Option<usize>,
    /// Messages one session may hold, both sides, then 429 [default: 200].
    #[arg(
        long,
        env = "BEELINE_MAX_MESSAGES_PER_SESSION",
        value_name = "N",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    max_messages_per_session: Option<u32>,
    /// Largest ICE candidate of a candidate message, as JSON, refused with 413 [default: 2048].
    #[arg(
        long,
        env = "BEELINE_MAX_CANDIDATE_BYTES",
        value_name = "BYTES",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    max_candidate_bytes: Option<usize>,
    /// Messages one side of one session may post per minute, then 429 with Retry-After [default: 120].
    #[arg(
        long,
        env = "BEELINE_POSTS_PER_SESSION_PER_MINUTE",
        value_name = "N",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    posts_per_session_per_minute: Option<u32>,
    /// Messages one browser user (or anonymous client address, IPv6 by /64) may post per minute across its sessions, then 429 with Retry-After [default: 1200].
    #[arg(
        long,
        env = "BEELINE_POSTS_PER_IDENTITY_PER_MINUTE",
        value_name = "N",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    posts_per_identity_per_minute: Option<u32>,
    /// Sessions one user may have live at once (created within --session-ttl), then 429 with Retry-After [default: 40].
    #[arg(
        long,
        env = "BEELINE_MAX_LIVE_SESSIONS_PER_IDENTITY",
        value_name = "N",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    max_live_sessions_per_identity: Option<u32>,
    /// Sessions one client address (IPv6 by /64) may have live at once, then 429 with Retry-After [default: 120].
    #[arg(
        long,
        env = "BEELINE_MAX_LIVE_SESSIONS_PER_IP",
        value_name = "N",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    max_live_sessions_per_ip: Option<u32>,
    /// Sessions one user may create per minute, then 429 with Retry-After [default: 20].
    #[arg(
        long,
        env = "BEELINE_SESSIONS_PER_IDENTITY_PER_MINUTE",
        value_name = "N",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    sessions_per_identity_per_minute: Option<u32>,
    /// Sessions (and reports) one client address may create per minute, then 429 with Retry-After [default: 60].
    #[arg(
        long,
        env = "BEELINE_SESSIONS_PER_IP_PER_MINUTE",
        value_name = "N",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    sessions_per_ip_per_minute: Option<u32>,
    /// Long-polls one user or home may hold at once, then 429 with Retry-After [default: 16].
    #[arg(
        long,
        env = "BEELINE_MAX_POLLS_PER_IDENTITY",
        value_name = "N",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    max_polls_per_identity: Option<u32>,
}

impl Cli {
    pub(crate) fn config_path(&self) -> Option<&Path> {
        self.config.as_deref()
    }
}

/// One `[homes.NAME]` table of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHome {
    token: Option<String>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
}

/// The config file: the flags' keys in snake_case, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    listen: Option<SocketAddr>,
    db: Option<PathBuf>,
    db_pool_size: Option<usize>,
    base_path: Option<String>,
    relay_upstream: Option<String>,
    #[serde(alias = "strip_header")]
    strip_headers: Option<Vec<String>>,
    cookie_jar: Option<bool>,
    home_link: Option<bool>,
    loopback_offer: Option<LoopbackOfferMode>,
    log_json: Option<bool>,
    home_token: Option<String>,
    home_token_file: Option<PathBuf>,
    #[serde(default)]
    homes: BTreeMap<String, FileHome>,
    default_home: Option<String>,
    browser_auth: Option<BrowserAuthMode>,
    jwt_secret: Option<String>,
    jwt_secret_file: Option<PathBuf>,
    jwt_public_key_file: Option<PathBuf>,
    jwt_jwks_file: Option<PathBuf>,
    jwt_max_lifetime_secs: Option<u64>,
    jwt_algorithm: Option<JwtAlgorithm>,
    jwt_cookie: Option<String>,
    jwt_issuer: Option<String>,
    jwt_audience: Option<String>,
    proxy_user_header: Option<String>,
    #[serde(alias = "trusted_proxy")]
    trusted_proxies: Option<Vec<String>>,
    #[serde(alias = "cors_origin")]
    cors_origins: Option<Vec<String>>,
    turn_secret: Option<String>,
    turn_secret_file: Option<PathBuf>,
    turn_previous_secret: Option<String>,
    turn_previous_secret_file: Option<PathBuf>,
    turn_host: Option<String>,
    turn_port: Option<u16>,
    turns_port: Option<u16>,
    #[serde(alias = "stun_urls")]
    stun_url: Option<Vec<String>>,
    #[serde(alias = "turn_urls")]
    turn_url: Option<Vec<String>>,
    credential_ttl: Option<u64>,
    long_poll_timeout: Option<u64>,
    session_ttl: Option<u64>,
    tombstone_ttl: Option<u64>,
    max_body_bytes: Option<usize>,
    max_sdp_bytes: Option<usize>,
    max_messages_per_session: Option<u32>,
    max_candidate_bytes: Option<usize>,
    posts_per_session_per_minute: Option<u32>,
    posts_per_identity_per_minute: Option<u32>,
    max_live_sessions_per_identity: Option<u32>,
    max_live_sessions_per_ip: Option<u32>,
    sessions_per_identity_per_minute: Option<u32>,
    sessions_per_ip_per_minute: Option<u32>,
    max_polls_per_identity: Option<u32>,
}

impl FileConfig {
    /// Reads `path`; relative paths inside it are taken relative to its folder.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read config file {}", path.display()))?;
        let mut file: FileConfig = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        let folder = path.parent().unwrap_or(Path::new(""));
        // A PostgreSQL URL is no path.
        if let Some(db) = &mut file.db {
            if matches!(Database::from(&*db), Database::Sqlite(_)) && db.is_relative() {
                *db = folder.join(&*db);
            }
        }
        let relative_paths = [
            &mut file.home_token_file,
            &mut file.turn_secret_file,
            &mut file.turn_previous_secret_file,
            &mut file.jwt_secret_file,
            &mut file.jwt_public_key_file,
            &mut file.jwt_jwks_file,
        ]
        .into_iter()
        .chain(file.homes.values_mut().map(|home| &mut home.token_file));
        for relative in relative_paths.flatten() {
            if relative.is_relative() {
                *relative = folder.join(&*relative);
            }
        }
        Ok(file)
    }
}

/// A secret given directly, as a file to read, or as an environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Secret {
    Value(String),
    File(PathBuf),
    Env(String),
}

impl Secret {
    fn read(self, what: &str) -> anyhow::Result<String> {
        let value = match self {
            Secret::Value(value) => value,
            Secret::File(path) => std::fs::read_to_string(&path)
                .with_context(|| format!("could not read the {what} file {}", path.display()))?
                .trim()
                .to_owned(),
            Secret::Env(var) => std::env::var(&var)
                .with_context(|| format!("the {what} variable {var} is not set"))?
                .trim()
                .to_owned(),
        };
        if value.is_empty() {
            bail!("the {what} is empty");
        }
        Ok(value)
    }

    /// `file:PATH` or `env:VAR`.
    fn parse_source(source: &str) -> anyhow::Result<Self> {
        match source.split_once(':') {
            Some(("file", path)) if !path.is_empty() => Ok(Secret::File(path.into())),
            Some(("env", var)) if !var.is_empty() => Ok(Secret::Env(var.to_owned())),
            _ => bail!("a home's token source must be file:PATH or env:VAR, not {source:?}"),
        }
    }
}

/// How browsers are authenticated, resolved.
pub(crate) enum BrowserAuth {
    Open,
    Jwt {
        key: JwtKeySource,
        cookie: Option<String>,
        issuer: Option<String>,
        audience: Option<String>,
        max_lifetime: Option<std::time::Duration>,
    },
    ProxyHeader {
        header: String,
    },
}

/// Where the keys that verify browser JWTs come from.
pub(crate) enum JwtKeySource {
    /// One key, for tokens without a `kid`.
    Key(JwtKey),
    /// A JWKS file, re-read when it changes.
    Jwks(PathBuf),
}

/// Everything `main` needs, resolved: the library's [`SignalConfig`] and
/// what only the binary uses. Holds secrets: never log it whole.
pub(crate) struct Settings {
    pub(crate) listen: SocketAddr,
    pub(crate) log_json: bool,
    /// The library configuration, browser auth aside (`main` builds it from
    /// [`Settings::browser_auth`], since a JWKS file is watched while the
    /// server runs).
    pub(crate) config: SignalConfig,
    pub(crate) browser_auth: BrowserAuth,
}

/// Only what is safe to show (`SignalConfig` redacts its secrets).
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Picks between a direct value and a file flag given through clap: the one
/// from the stronger source (command line over environment) wins; both from
/// the same source is ambiguous.
fn cli_secret(
    matches: &ArgMatches,
    value_id: &str,
    value: Option<String>,
    file_id: &str,
    file: Option<PathBuf>,
) -> anyhow::Result<Option<Secret>> {
    match (value, file) {
        (None, None) => Ok(None),
        (Some(value), None) => Ok(Some(Secret::Value(value))),
        (None, Some(path)) => Ok(Some(Secret::File(path))),
        (Some(value), Some(path)) => {
            let rank = |id: &str| {
                matches
                    .value_source(id)
                    .unwrap_or(ValueSource::DefaultValue)
            };
            match rank(value_id).cmp(&rank(file_id)) {
                std::cmp::Ordering::Greater => Ok(Some(Secret::Value(value))),
                std::cmp::Ordering::Less => Ok(Some(Secret::File(path))),
                std::cmp::Ordering::Equal => bail!(
                    "--{} and --{} were both given; use one",
                    value_id.replace('_', "-"),
                    file_id.replace('_', "-")
                ),
            }
        }
    }
}

fn file_secret(
    value: Option<String>,
    file: Option<PathBuf>,
    what: &str,
) -> anyhow::Result<Option<Secret>> {
    match (value, file) {
        (Some(_), Some(_)) => bail!("the config file sets both {what} and {what}_file; use one"),
        (Some(value), None) => Ok(Some(Secret::Value(value))),
        (None, Some(path)) => Ok(Some(Secret::File(path))),
        (None, None) => Ok(None),
    }
}

/// The secret setting `id` (a value, or a file under `{id}_file`): from the
/// flags/env if given there (see [`cli_secret`]), else from the config file,
/// read and described as `what` in errors.
fn read_secret(
    matches: &ArgMatches,
    id: &str,
    (cli_value, cli_file): (Option<String>, Option<PathBuf>),
    (file_value, file_file): (Option<String>, Option<PathBuf>),
    what: &str,
) -> anyhow::Result<Option<String>> {
    cli_secret(matches, id, cli_value, &format!("{id}_file"), cli_file)?
        .or(file_secret(file_value, file_file, id)?)
        .map(|secret| secret.read(what))
        .transpose()
}

fn non_empty<T>(values: Vec<T>) -> Option<Vec<T>> {
    (!values.is_empty()).then_some(values)
}

/// Homes from the file, then the command line/env by name on top.
fn resolve_homes(
    cli: &mut Cli,
    matches: &ArgMatches,
    file: &mut FileConfig,
) -> anyhow::Result<Vec<HomeCredential>> {
    let mut sources: BTreeMap<String, Secret> = BTreeMap::new();
    for (name, home) in std::mem::take(&mut file.homes) {
        let given = [
            home.token.map(Secret::Value),
            home.token_file.map(Secret::File),
            home.token_env.map(Secret::Env),
        ];
        let mut given = given.into_iter().flatten();
        let (Some(source), None) = (given.next(), given.next()) else {
            bail!("[homes.{name}] in the config file needs exactly one of token, token_file or token_env");
        };
        sources.insert(name, source);
    }
    if let Some(source) = file_secret(
        file.home_token.take(),
        file.home_token_file.take(),
        "home_token",
    )? {
        sources.insert(DEFAULT_HOME.to_owned(), source);
    }
    for entry in std::mem::take(&mut cli.homes) {
        let (name, source) = entry.split_once('=').with_context(|| {
            format!("--home takes NAME=file:PATH or NAME=env:VAR, not {entry:?}")
        })?;
        sources.insert(name.to_owned(), Secret::parse_source(source)?);
    }
    if let Some(source) = cli_secret(
        matches,
        "home_token",
        cli.home_token.take(),
        "home_token_file",
        cli.home_token_file.take(),
    )? {
        sources.insert(DEFAULT_HOME.to_owned(), source);
    }
    if sources.is_empty() {
        bail!(
            "no home token: pass --home-token-file PATH (or --home-token, BEELINE_HOME_TOKEN[_FILE], \
             home_token_file in the config file), or name homes with --home NAME=file:PATH"
        );
    }
    sources
        .into_iter()
        .map(|(name, source)| {
            let token = source.read(&format!("token of home {name:?}"))?;
            Ok(HomeCredential::new(name, token))
        })
        .collect()
}

fn resolve_browser_auth(
    cli: &mut Cli,
    matches: &ArgMatches,
    file: &mut FileConfig,
    trusted: &[IpNet],
) -> anyhow::Result<BrowserAuth> {
    let mode = cli.browser_auth.or(file.browser_auth).context(
        "choose how browsers are authenticated with --browser-auth MODE \
         (or BEELINE_BROWSER_AUTH, or browser_auth in the config file):\n  \
         jwt           verify a JWT from the Authorization header or a cookie \
         (--jwt-secret-file for HS256, --jwt-public-key-file for RS256/ES256)\n  \
         proxy-header  trust an identity header from your fronting proxy \
         (--proxy-user-header, --trusted-proxy)\n  \
         open          anyone who can reach this server may create a signaling session with \
         the home peer; for development or behind your own access control; \
         pass `--browser-auth open` to accept that",
    )?;
    match mode {
        BrowserAuthMode::Open => Ok(BrowserAuth::Open),
        BrowserAuthMode::ProxyHeader => {
            if trusted.is_empty() {
                bail!(
                    "--browser-auth proxy-header needs the proxy's address: pass --trusted-proxy \
                     (e.g. 127.0.0.1 when the proxy runs on this machine)"
                );
            }
            let header = cli
                .proxy_user_header
                .take()
                .or(file.proxy_user_header.take())
                .unwrap_or_else(|| DEFAULT_PROXY_USER_HEADER.to_owned());
            Ok(BrowserAuth::ProxyHeader { header })
        }
        BrowserAuthMode::Jwt => {
            let secret = read_secret(
                matches,
                "jwt_secret",
                (cli.jwt_secret.take(), cli.jwt_secret_file.take()),
                (file.jwt_secret.take(), file.jwt_secret_file.take()),
                "JWT secret",
            )?;
            let public_key = cli
                .jwt_public_key_file
                .take()
                .or(file.jwt_public_key_file.take())
                .map(|path| {
                    std::fs::read(&path).with_context(|| {
                        format!("could not read the JWT public key {}", path.display())
                    })
                })
                .transpose()?;
            let algorithm = cli.jwt_algorithm.or(file.jwt_algorithm);
            let jwks = cli.jwt_jwks_file.take().or(file.jwt_jwks_file.take());
            let max_lifetime = cli
                .jwt_max_lifetime_secs
                .or(file.jwt_max_lifetime_secs)
                .map(std::time::Duration::from_secs);
            let cookie = cli.jwt_cookie.take().or(file.jwt_cookie.take());
            let issuer = cli.jwt_issuer.take().or(file.jwt_issuer.take());
            let audience = cli.jwt_audience.take().or(file.jwt_audience.take());
            if let Some(jwks) = jwks {
                if secret.is_some() || public_key.is_some() || algorithm.is_some() {
                    bail!(
                        "--jwt-jwks-file names every key and its algorithm: give no JWT secret, \
                         public key or algorithm with it"
                    );
                }
                return Ok(BrowserAuth::Jwt {
                    key: JwtKeySource::Jwks(jwks),
                    cookie,
                    issuer,
                    audience,
                    max_lifetime,
                });
            }
            let key = match (secret, public_key, algorithm) {
                (Some(_), Some(_), _) => bail!(
                    "give either a JWT secret (HS256) or a JWT public key (RS256/ES256), not both"
                ),
                (Some(secret), None, None | Some(JwtAlgorithm::Hs256)) => {
                    JwtKey::Hs256(secret.into_bytes())
                }
                (Some(_), None, Some(other)) => {
                    bail!("--jwt-algorithm {other:?} needs --jwt-public-key-file, not a secret")
                }
                (None, Some(pem), Some(JwtAlgorithm::Rs256)) => JwtKey::Rs256Pem(pem),
                (None, Some(pem), Some(JwtAlgorithm::Es256)) => JwtKey::Es256Pem(pem),
                (None, Some(_), Some(JwtAlgorithm::Hs256)) => {
                    bail!("--jwt-algorithm hs256 needs --jwt-secret-file, not a public key")
                }
                // The library tells RS256 from ES256 by the key's type.
                (None, Some(pem), None) => JwtKey::from_public_pem(pem)?,
                (None, None, _) => bail!(
                    "--browser-auth jwt needs a key: --jwt-secret-file PATH (HS256), \
                     --jwt-public-key-file PATH (RS256/ES256) or --jwt-jwks-file PATH (keys by kid)"
                ),
            };
            Ok(BrowserAuth::Jwt {
                key: JwtKeySource::Key(key),
                cookie,
                issuer,
                audience,
                max_lifetime,
            })
        }
    }
}

impl Settings {
    /// Merges flags/env (`cli`, parsed from `matches`) over `file`.
    pub(crate) fn resolve(
        mut cli: Cli,
        matches: &ArgMatches,
        mut file: FileConfig,
    ) -> anyhow::Result<Self> {
        let homes = resolve_homes(&mut cli, matches, &mut file)?;
        let trusted_proxies = match non_empty(std::mem::take(&mut cli.trusted_proxies)) {
            Some(proxies) => proxies,
            None => file
                .trusted_proxies
                .take()
                .unwrap_or_default()
                .iter()
                .map(|text| text.parse().map_err(anyhow::Error::from))
                .collect::<anyhow::Result<_>>()?,
        };
        let browser_auth = resolve_browser_auth(&mut cli, matches, &mut file, &trusted_proxies)?;
        let turn_secret = read_secret(
            matches,
            "turn_secret",
            (cli.turn_secret.take(), cli.turn_secret_file.take()),
            (file.turn_secret.take(), file.turn_secret_file.take()),
            "TURN secret",
        )?;
        let turn_previous_secret = read_secret(
            matches,
            "turn_previous_secret",
            (
                cli.turn_previous_secret.take(),
                cli.turn_previous_secret_file.take(),
            ),
            (
                file.turn_previous_secret.take(),
                file.turn_previous_secret_file.take(),
            ),
            "previous TURN secret",
        )?;
        if turn_previous_secret.is_some() && turn_secret.is_none() {
            bail!("a previous TURN secret was given without the current one (--turn-secret-file)");
        }

        let mut stun_urls = non_empty(cli.stun_urls)
            .or(file.stun_url)
            .unwrap_or_default();
        let mut turn_urls = non_empty(cli.turn_urls)
            .or(file.turn_url)
            .unwrap_or_default();
        if let Some(host) = cli.turn_host.or(file.turn_host) {
            let port = cli.turn_port.or(file.turn_port).unwrap_or(3478);
            let tls_port = cli.turns_port.or(file.turns_port).unwrap_or(443);
            let (stun, turn) = beeline_signal_server::ice_urls_for_host(
                &host,
                port,
                (tls_port != 0).then_some(tls_port),
            );
            if stun_urls.is_empty() {
                stun_urls = stun;
            }
            if turn_urls.is_empty() {
                turn_urls = turn;
            }
        }
        // TURN URLs without a secret: refused by the library's validation
        // (`SignalConfig::validate`, called by `main`).

        // Each limit: flag/env, else the file, else Limits' default.
        let mut limits = Limits::default();
        macro_rules! set_limits {
            ($($field:ident),+) => {
                $(if let Some(value) = cli.$field.or(file.$field) {
                    limits.$field = value;
                })+
            };
        }
        set_limits!(
            max_body_bytes,
            max_sdp_bytes,
            max_messages_per_session,
            max_candidate_bytes,
            posts_per_session_per_minute,
            posts_per_identity_per_minute,
            max_live_sessions_per_identity,
            max_live_sessions_per_ip,
            sessions_per_identity_per_minute,
            sessions_per_ip_per_minute,
            max_polls_per_identity
        );
        let seconds = |value: Option<u64>, what: &str| -> anyhow::Result<Option<Duration>> {
            match value {
                Some(0) => bail!("--{what} must be above 0"),
                other => Ok(other.map(Duration::from_secs)),
            }
        };

        let db = cli
            .db
            .or(file.db)
            .map_or_else(|| Database::from(DEFAULT_DB), Database::from);
        let mut config = SignalConfig::with_homes(db, homes);
        match cli.db_pool_size.or(file.db_pool_size) {
            Some(0) => bail!("--db-pool-size must be above 0"),
            Some(size) => config.postgres.pool_size = size,
            None => {}
        }
        config.base_path = cli
            .base_path
            .or(file.base_path)
            .unwrap_or_else(|| DEFAULT_BASE_PATH.to_owned());
        config.default_home = cli.default_home.or(file.default_home);
        config.trusted_proxies = trusted_proxies;
        config.cors_origins = non_empty(cli.cors_origins)
            .or(file.cors_origins)
            .unwrap_or_default();
        config.turn_secrets =
            turn_secret.map(|current| TurnSecrets::new(current, turn_previous_secret));
        config.stun_urls = stun_urls;
        config.turn_urls = turn_urls;
        let durations = [
            (
                &mut config.credential_ttl,
                seconds(cli.credential_ttl.or(file.credential_ttl), "credential-ttl")?,
            ),
            (
                &mut config.long_poll_timeout,
                seconds(
                    cli.long_poll_timeout.or(file.long_poll_timeout),
                    "long-poll-timeout",
                )?,
            ),
            (
                &mut config.session_ttl,
                seconds(cli.session_ttl.or(file.session_ttl), "session-ttl")?,
            ),
            (
                &mut config.tombstone_ttl,
                cli.tombstone_ttl
                    .or(file.tombstone_ttl)
                    .map(Duration::from_secs),
            ),
        ];
        for (field, value) in durations {
            if let Some(value) = value {
                *field = value;
            }
        }
        config.relay_upstream = cli.relay_upstream.or(file.relay_upstream);
        config.strip_request_headers = non_empty(cli.strip_headers)
            .or(file.strip_headers)
            .unwrap_or_default();
        config.cookie_jar = !cli.no_cookie_jar && file.cookie_jar.unwrap_or(true);
        config.home_link = !cli.no_home_link && file.home_link.unwrap_or(true);
        config.loopback = cli
            .loopback_offer
            .or(file.loopback_offer)
            .unwrap_or(LoopbackOfferMode::SameNetwork)
            .into();
        config.limits = limits;

        Ok(Self {
            listen: match cli.listen.or(file.listen) {
                Some(listen) => listen,
                None => DEFAULT_LISTEN.parse()?,
            },
            log_json: cli.log_json || file.log_json.unwrap_or(false),
            config,
            browser_auth,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, FromArgMatches as _};

    use super::*;

    fn parse(args: &[&str]) -> (Cli, ArgMatches) {
        let matches = Cli::command()
            .try_get_matches_from(std::iter::once("signal-api").chain(args.iter().copied()))
            .unwrap();
        (Cli::from_arg_matches(&matches).unwrap(), matches)
    }

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    fn resolve(args: &[&str], text: &str) -> anyhow::Result<Settings> {
        let (cli, matches) = parse(args);
        Settings::resolve(cli, &matches, file(text))
    }

    fn home<'a>(settings: &'a Settings, name: &str) -> &'a str {
        &settings
            .config
            .homes
            .iter()
            .find(|h| h.name == name)
            .unwrap()
            .token
    }

    #[test]
    fn flags_override_the_file_and_the_file_fills_the_rest() {
        let settings = resolve(
            &[
                "--home-token",
                "flag-token",
                "--stun-url",
                "stun:a",
                "--stun-url",
                "stun:b",
                "--max-polls-per-identity",
                "3",
            ],
            r#"
                home_token = "file-token"
                browser_auth = "open"
                base_path = "/jarvis-api/webrtc"
                stun_url = ["stun:file"]
                turn_urls = ["turn:file"]
                turn_secret = "s"
                listen = "127.0.0.1:0"
                max_polls_per_identity = 9
                sessions_per_ip_per_minute = 7
                "#,
        )
        .unwrap();
        assert_eq!(home(&settings, DEFAULT_HOME), "flag-token");
        assert_eq!(settings.config.homes.len(), 1);
        assert_eq!(settings.config.stun_urls, ["stun:a", "stun:b"]);
        assert_eq!(settings.config.turn_urls, ["turn:file"]);
        assert!(settings.config.turn_secrets.is_some());
        assert_eq!(settings.config.base_path, "/jarvis-api/webrtc");
        assert!(matches!(settings.browser_auth, BrowserAuth::Open));
        assert_eq!(
            settings.listen,
            "127.0.0.1:0".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(settings.config.database, Database::from(DEFAULT_DB));
        assert_eq!(settings.config.limits.max_polls_per_identity, 3);
        assert_eq!(settings.config.limits.sessions_per_ip_per_minute, 7);
        assert_eq!(settings.config.limits.max_messages_per_session, 200);
    }

    #[test]
    fn browser_auth_is_required_and_explained() {
        let err = resolve(&["--home-token", "t"], "").unwrap_err();
        let text = format!("{err:#}");
        for mode in ["--browser-auth open", "jwt", "proxy-header"] {
            assert!(text.contains(mode), "{text}");
        }
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let settings = resolve(
            &[
                "--home-token-file",
                path.to_str().unwrap(),
                "--browser-auth",
                "open",
            ],
            "home_token = \"ignored\"",
        )
        .unwrap();
        assert_eq!(home(&settings, DEFAULT_HOME), "from-file");
    }

    #[test]
    fn token_and_token_file_on_the_command_line_conflict() {
        assert!(resolve(
            &[
                "--home-token",
                "a",
                "--home-token-file",
                "b",
                "--browser-auth",
                "open"
            ],
            ""
        )
        .is_err());
    }

    #[test]
    fn named_homes_come_from_files_env_and_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let kitchen = dir.path().join("kitchen");
        std::fs::write(&kitchen, "kitchen-token\n").unwrap();
        std::env::set_var("BEELINE_TEST_ATTIC_TOKEN", "attic-token");
        let settings = resolve(
            &[
                "--home",
                &format!("kitchen=file:{}", kitchen.display()),
                "--home",
                "attic=env:BEELINE_TEST_ATTIC_TOKEN",
                "--browser-auth",
                "open",
                "--default-home",
                "kitchen",
            ],
            r#"
                [homes.kitchen]
                token = "overridden-by-the-flag"
                [homes.cellar]
                token = "cellar-token"
            "#,
        )
        .unwrap();
        assert_eq!(home(&settings, "kitchen"), "kitchen-token");
        assert_eq!(home(&settings, "attic"), "attic-token");
        assert_eq!(home(&settings, "cellar"), "cellar-token");
        assert_eq!(settings.config.default_home.as_deref(), Some("kitchen"));
        assert!(resolve(&["--home", "kitchen", "--browser-auth", "open"], "").is_err());
        assert!(resolve(&["--home", "k=ftp:x", "--browser-auth", "open"], "").is_err());
        assert!(resolve(
            &["--browser-auth", "open"],
            "[homes.k]\ntoken = \"a\"\ntoken_env = \"B\""
        )
        .is_err());
    }

    #[test]
    fn jwt_and_proxy_modes_need_their_settings() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("jwt");
        std::fs::write(&secret, "shh\n").unwrap();
        let base = ["--home-token", "t", "--browser-auth"];
        let with = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            resolve(&args, "")
        };
        let err = format!("{:#}", with(&["jwt"]).err().unwrap());
        assert!(err.contains("--jwt-secret-file"), "{err}");
        let ok = with(&[
            "jwt",
            "--jwt-secret-file",
            secret.to_str().unwrap(),
            "--jwt-cookie",
            "c",
        ])
        .unwrap();
        assert!(
            matches!(ok.browser_auth, BrowserAuth::Jwt { key: JwtKeySource::Key(JwtKey::Hs256(ref k)), cookie: Some(_), .. } if k == b"shh")
        );
        let err = format!("{:#}", with(&["proxy-header"]).err().unwrap());
        assert!(err.contains("--trusted-proxy"), "{err}");
        let ok = with(&[
            "proxy-header",
            "--trusted-proxy",
            "127.0.0.1",
            "--trusted-proxy",
            "10.0.0.0/8",
        ])
        .unwrap();
        assert_eq!(ok.config.trusted_proxies.len(), 2);
        assert!(
            matches!(ok.browser_auth, BrowserAuth::ProxyHeader { ref header } if header == DEFAULT_PROXY_USER_HEADER)
        );
    }

    /// A public key without --jwt-algorithm is taken as the library
    /// detects it (`JwtKey::from_public_pem`); with one, as it says.
    #[test]
    fn a_public_key_file_gives_the_key_of_its_type() {
        let fixtures = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../crates/signal-server/tests/fixtures"
        );
        let key = |file: &str, algorithm: Option<&str>| -> anyhow::Result<JwtKey> {
            let path = format!("{fixtures}/{file}");
            let mut args = vec![
                "--home-token",
                "t",
                "--browser-auth",
                "jwt",
                "--jwt-public-key-file",
                &path,
            ];
            if let Some(algorithm) = algorithm {
                args.extend(["--jwt-algorithm", algorithm]);
            }
            match resolve(&args, "")?.browser_auth {
                BrowserAuth::Jwt {
                    key: JwtKeySource::Key(key),
                    ..
                } => Ok(key),
                _ => panic!("not a JWT key"),
            }
        };
        assert!(matches!(
            key("rs256-public.pem", None),
            Ok(JwtKey::Rs256Pem(_))
        ));
        assert!(matches!(
            key("es256-public.pem", None),
            Ok(JwtKey::Es256Pem(_))
        ));
        assert!(matches!(
            key("es256-public.pem", Some("es256")),
            Ok(JwtKey::Es256Pem(_))
        ));
        let error = key("README.md", None).unwrap_err();
        assert!(
            format!("{error:#}").contains("neither an RSA nor an EC"),
            "{error:#}"
        );
    }

    #[test]
    fn turn_host_expands_to_udp_tcp_and_tls_urls() {
        let settings = resolve(
            &[
                "--home-token",
                "t",
                "--browser-auth",
                "open",
                "--turn-host",
                "turn.example.com",
                "--turn-secret",
                "s",
            ],
            "",
        )
        .unwrap();
        assert_eq!(settings.config.stun_urls, ["stun:turn.example.com:3478"]);
        assert_eq!(
            settings.config.turn_urls,
            [
                "turn:turn.example.com:3478?transport=udp",
                "turn:turn.example.com:3478?transport=tcp",
                "turns:turn.example.com:443?transport=tcp",
            ]
        );
    }

    #[test]
    fn headers_to_strip_come_from_flags_or_the_file() {
        let text = r#"
            home_token = "t"
            browser_auth = "open"
            strip_header = ["X-Auth-Token"]
        "#;
        let from_file = resolve(&[], text).unwrap();
        assert_eq!(from_file.config.strip_request_headers, ["X-Auth-Token"]);
        let from_flags = resolve(
            &[
                "--strip-header",
                "Remote-Email",
                "--strip-header",
                "x-user-id,x-groups",
            ],
            text,
        )
        .unwrap();
        assert_eq!(
            from_flags.config.strip_request_headers,
            ["Remote-Email", "x-user-id", "x-groups"]
        );
        let none = resolve(&["--home-token", "t", "--browser-auth", "open"], "").unwrap();
        assert!(none.config.strip_request_headers.is_empty());
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        assert!(toml::from_str::<FileConfig>("home_tokn = \"typo\"").is_err());
        assert!(toml::from_str::<FileConfig>("browser_auth = \"closed\"").is_err());
        assert!(toml::from_str::<FileConfig>("browser_auth = \"proxy-header\"").is_ok());
    }

    #[test]
    fn the_example_config_parses() {
        let example = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/examples/signal-api.toml"
        );
        let file = FileConfig::load(Path::new(example)).unwrap();
        assert_eq!(file.browser_auth, Some(BrowserAuthMode::Jwt));
        assert!(file.turn_secret_file.is_some());
    }

    /// A PostgreSQL URL in the file is a URL, not a path to put under the
    /// file's folder; a relative file path still is.
    #[test]
    fn a_database_url_in_the_file_stays_a_url() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signal-api.toml");
        let url = "postgres://beeline:pw@db.internal:5432/beeline";
        std::fs::write(&path, format!("db = \"{url}\"\ndb_pool_size = 4\n")).unwrap();
        let loaded = FileConfig::load(&path).unwrap();
        assert_eq!(loaded.db.as_deref(), Some(Path::new(url)));
        let (cli, matches) = parse(&["--home-token", "t", "--browser-auth", "open"]);
        let settings = Settings::resolve(cli, &matches, loaded).unwrap();
        assert_eq!(settings.config.database, Database::Postgres(url.into()));
        assert_eq!(settings.config.postgres.pool_size, 4);
        std::fs::write(&path, "db = \"signal.db\"\n").unwrap();
        let loaded = FileConfig::load(&path).unwrap();
        assert_eq!(loaded.db, Some(dir.path().join("signal.db")));
        assert!(resolve(
            &[
                "--home-token",
                "t",
                "--browser-auth",
                "open",
                "--db-pool-size",
                "0"
            ],
            ""
        )
        .is_err());
    }
}
