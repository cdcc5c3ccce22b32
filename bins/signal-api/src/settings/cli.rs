//! The command line and environment: [`Cli`] (clap; every flag has an
//! `env`) and the modes its flags take, which the config file shares.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use beeline_signal_server::IpNet;
use clap::{Parser, ValueEnum};
use serde::Deserialize;

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
    pub(super) config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:8080].
    #[arg(
        long,
        env = "BEELINE_LISTEN",
        value_name = "ADDR",
        help_heading = "General"
    )]
    pub(super) listen: Option<SocketAddr>,
    /// SQLite database file (created if missing; WAL mode; one instance), or a
    /// postgres:// URL shared by several instances [default: ./signal.db].
    #[arg(
        long,
        env = "BEELINE_DB",
        value_name = "PATH|URL",
        help_heading = "General"
    )]
    pub(super) db: Option<PathBuf>,
    /// With a postgres:// --db: most connections this instance keeps open for requests (plus one that listens for the other instances' posts and one that writes posts) [default: 16].
    #[arg(
        long,
        env = "BEELINE_DB_POOL_SIZE",
        value_name = "N",
        help_heading = "General"
    )]
    pub(super) db_pool_size: Option<usize>,
    /// Path prefix of the signaling endpoints [default: /webrtc].
    #[arg(
        long,
        env = "BEELINE_BASE_PATH",
        value_name = "PATH",
        help_heading = "General"
    )]
    pub(super) base_path: Option<String>,
    /// Forward every unmatched request to this base URL and stream the answer back.
    #[arg(
        long,
        env = "BEELINE_RELAY_UPSTREAM",
        value_name = "URL",
        help_heading = "General"
    )]
    pub(super) relay_upstream: Option<String>,
    /// Request header the relay never passes on to --relay-upstream, on top of the forwarding and identity headers no client may set (e.g. the identity header an auth proxy in front of the home service trusts); repeat for more (env: comma-separated).
    #[arg(
        long = "strip-header",
        env = "BEELINE_STRIP_HEADERS",
        value_delimiter = ',',
        value_name = "NAME",
        help_heading = "General"
    )]
    pub(super) strip_headers: Vec<String>,
    /// Turn home links off: `GET <base>/link` refuses every home-peer and, without --relay-upstream, the normal path answers 404.
    #[arg(long, env = "BEELINE_NO_HOME_LINK", help_heading = "General")]
    pub(super) no_home_link: bool,
    /// Turn sealed cookie jars off: pages get no jar and `POST <base>/cookie` answers 404, so requests on the data channel carry no browser cookies (docs/cookies.md).
    #[arg(long, env = "BEELINE_NO_COOKIE_JAR", help_heading = "General")]
    pub(super) no_cookie_jar: bool,
    /// Which sessions get their home's loopback listener (URL and ticket) when home-peer states one on its link: browsers on the link's network (same IPv4 address or IPv6 /64), all, or none (docs/loopback.md). Default same-network.
    #[arg(
        long,
        env = "BEELINE_LOOPBACK_OFFER",
        value_enum,
        help_heading = "General"
    )]
    pub(super) loopback_offer: Option<LoopbackOfferMode>,
    /// Log as JSON lines instead of text (RUST_LOG sets the level; default info).
    #[arg(long, env = "BEELINE_LOG_JSON", help_heading = "General")]
    pub(super) log_json: bool,

    /// Bearer token of the home named "home" (prefer --home-token-file: flags show in `ps`).
    #[arg(
        long,
        env = "BEELINE_HOME_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = "Homes"
    )]
    pub(super) home_token: Option<String>,
    /// File holding the bearer token of the home named "home" (surrounding whitespace ignored).
    #[arg(
        long,
        env = "BEELINE_HOME_TOKEN_FILE",
        value_name = "PATH",
        help_heading = "Homes"
    )]
    pub(super) home_token_file: Option<PathBuf>,
    /// A named home and where its token is: NAME=file:PATH or NAME=env:VAR; repeat for more (env: comma-separated).
    #[arg(
        long = "home",
        env = "BEELINE_HOMES",
        value_delimiter = ',',
        value_name = "NAME=SOURCE",
        help_heading = "Homes"
    )]
    pub(super) homes: Vec<String>,
    /// Home of sessions whose request names none [default: the only home, if there is one].
    #[arg(
        long,
        env = "BEELINE_DEFAULT_HOME",
        value_name = "NAME",
        help_heading = "Homes"
    )]
    pub(super) default_home: Option<String>,

    /// How browsers are authenticated; required.
    #[arg(
        long,
        env = "BEELINE_BROWSER_AUTH",
        value_enum,
        value_name = "MODE",
        help_heading = "Browser auth"
    )]
    pub(super) browser_auth: Option<BrowserAuthMode>,
    /// jwt: HS256 shared secret (prefer --jwt-secret-file).
    #[arg(
        long,
        env = "BEELINE_JWT_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        help_heading = "Browser auth"
    )]
    pub(super) jwt_secret: Option<String>,
    /// jwt: file holding the HS256 shared secret.
    #[arg(
        long,
        env = "BEELINE_JWT_SECRET_FILE",
        value_name = "PATH",
        help_heading = "Browser auth"
    )]
    pub(super) jwt_secret_file: Option<PathBuf>,
    /// jwt: PEM public key (RS256 or ES256) that verifies tokens.
    #[arg(
        long,
        env = "BEELINE_JWT_PUBLIC_KEY_FILE",
        value_name = "PATH",
        help_heading = "Browser auth"
    )]
    pub(super) jwt_public_key_file: Option<PathBuf>,
    /// jwt: JWKS file (RFC 7517) of the keys that verify tokens, told apart by `kid`; re-read when it changes (checked every 2 s) and on SIGHUP, so keys rotate with no restart.
    #[arg(
        long,
        env = "BEELINE_JWT_JWKS_FILE",
        value_name = "PATH",
        help_heading = "Browser auth"
    )]
    pub(super) jwt_jwks_file: Option<PathBuf>,
    /// jwt: refuse tokens that live longer than this (exp - iat), and tokens without iat.
    #[arg(
        long,
        env = "BEELINE_JWT_MAX_LIFETIME_SECS",
        value_name = "SECS",
        help_heading = "Browser auth"
    )]
    pub(super) jwt_max_lifetime_secs: Option<u64>,
    /// jwt: the only accepted algorithm [default: hs256 with a secret, detected from the key otherwise].
    #[arg(
        long,
        env = "BEELINE_JWT_ALGORITHM",
        value_enum,
        value_name = "ALG",
        help_heading = "Browser auth"
    )]
    pub(super) jwt_algorithm: Option<JwtAlgorithm>,
    /// jwt: also read the token from this cookie when there is no bearer.
    #[arg(
        long,
        env = "BEELINE_JWT_COOKIE",
        value_name = "NAME",
        help_heading = "Browser auth"
    )]
    pub(super) jwt_cookie: Option<String>,
    /// jwt: required `iss` claim.
    #[arg(
        long,
        env = "BEELINE_JWT_ISSUER",
        value_name = "ISS",
        help_heading = "Browser auth"
    )]
    pub(super) jwt_issuer: Option<String>,
    /// jwt: required `aud` claim.
    #[arg(
        long,
        env = "BEELINE_JWT_AUDIENCE",
        value_name = "AUD",
        help_heading = "Browser auth"
    )]
    pub(super) jwt_audience: Option<String>,
    /// proxy-header: header carrying the user's identity [default: x-forwarded-user].
    #[arg(
        long,
        env = "BEELINE_PROXY_USER_HEADER",
        value_name = "NAME",
        help_heading = "Browser auth"
    )]
    pub(super) proxy_user_header: Option<String>,
    /// Proxy address or CIDR whose X-Forwarded-For (and, in proxy-header mode, identity header) is believed; repeat for more (env: comma-separated).
    #[arg(
        long = "trusted-proxy",
        env = "BEELINE_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR",
        help_heading = "Browser auth"
    )]
    pub(super) trusted_proxies: Vec<IpNet>,
    /// Origin allowed to call the signaling endpoints cross-origin, with credentials; repeat for more (env: comma-separated). Default: same origin only.
    #[arg(
        long = "cors-origin",
        env = "BEELINE_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN",
        help_heading = "Browser auth"
    )]
    pub(super) cors_origins: Vec<String>,

    /// coturn static-auth-secret that signs TURN credentials (prefer --turn-secret-file).
    #[arg(
        long,
        env = "BEELINE_TURN_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        help_heading = "TURN"
    )]
    pub(super) turn_secret: Option<String>,
    /// File holding the TURN secret (surrounding whitespace ignored).
    #[arg(
        long,
        env = "BEELINE_TURN_SECRET_FILE",
        value_name = "PATH",
        help_heading = "TURN"
    )]
    pub(super) turn_secret_file: Option<PathBuf>,
    /// The previous TURN secret during a rotation: kept (coturn has both), never used to sign.
    #[arg(
        long,
        env = "BEELINE_TURN_PREVIOUS_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        help_heading = "TURN"
    )]
    pub(super) turn_previous_secret: Option<String>,
    /// File holding the previous TURN secret.
    #[arg(
        long,
        env = "BEELINE_TURN_PREVIOUS_SECRET_FILE",
        value_name = "PATH",
        help_heading = "TURN"
    )]
    pub(super) turn_previous_secret_file: Option<PathBuf>,
    /// coturn host: announces stun:HOST:PORT, turn:HOST:PORT over UDP and TCP, and turns:HOST:TLS-PORT, unless --stun-url/--turn-url are given.
    #[arg(
        long,
        env = "BEELINE_TURN_HOST",
        value_name = "HOST",
        help_heading = "TURN"
    )]
    pub(super) turn_host: Option<String>,
    /// Plain STUN/TURN port for --turn-host [default: 3478].
    #[arg(
        long,
        env = "BEELINE_TURN_PORT",
        value_name = "PORT",
        help_heading = "TURN"
    )]
    pub(super) turn_port: Option<u16>,
    /// TURN-over-TLS port for --turn-host; 0 announces no turns: URL [default: 443].
    #[arg(
        long,
        env = "BEELINE_TURNS_PORT",
        value_name = "PORT",
        help_heading = "TURN"
    )]
    pub(super) turns_port: Option<u16>,
    /// STUN URL handed to browsers; repeat for more (env: comma-separated).
    #[arg(
        long = "stun-url",
        env = "BEELINE_STUN_URL",
        value_delimiter = ',',
        value_name = "URL",
        help_heading = "TURN"
    )]
    pub(super) stun_urls: Vec<String>,
    /// TURN URL handed to browsers with credentials; repeat for more (env: comma-separated).
    #[arg(
        long = "turn-url",
        env = "BEELINE_TURN_URL",
        value_delimiter = ',',
        value_name = "URL",
        help_heading = "TURN"
    )]
    pub(super) turn_urls: Vec<String>,
    /// Lifetime of TURN credentials in seconds [default: 300].
    #[arg(
        long,
        env = "BEELINE_CREDENTIAL_TTL",
        value_name = "SECS",
        help_heading = "TURN"
    )]
    pub(super) credential_ttl: Option<u64>,

    /// Seconds a poll with nothing to return is held [default: 10].
    #[arg(
        long,
        env = "BEELINE_LONG_POLL_TIMEOUT",
        value_name = "SECS",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    pub(super) long_poll_timeout: Option<u64>,
    /// Seconds after which a session expires, its messages are swept and it answers 410 [default: 600].
    #[arg(
        long,
        env = "BEELINE_SESSION_TTL",
        value_name = "SECS",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    pub(super) session_ttl: Option<u64>,
    /// Seconds an expired session is remembered to answer 410 instead of 404 [default: 3600].
    #[arg(
        long,
        env = "BEELINE_TOMBSTONE_TTL",
        value_name = "SECS",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    pub(super) tombstone_ttl: Option<u64>,
    /// Largest signaling request body, refused with 413 [default: 65536].
    #[arg(
        long,
        env = "BEELINE_MAX_BODY_BYTES",
        value_name = "BYTES",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    pub(super) max_body_bytes: Option<usize>,
    /// Largest SDP of an offer or answer, refused with 413 [default: 32768].
    #[arg(
        long,
        env = "BEELINE_MAX_SDP_BYTES",
        value_name = "BYTES",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    pub(super) max_sdp_bytes: Option<usize>,
    /// Messages one session may hold, both sides, then 429 [default: 200].
    #[arg(
        long,
        env = "BEELINE_MAX_MESSAGES_PER_SESSION",
        value_name = "N",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    pub(super) max_messages_per_session: Option<u32>,
    /// Largest ICE candidate of a candidate message, as JSON, refused with 413 [default: 2048].
    #[arg(
        long,
        env = "BEELINE_MAX_CANDIDATE_BYTES",
        value_name = "BYTES",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    pub(super) max_candidate_bytes: Option<usize>,
    /// Messages one side of one session may post per minute, then 429 with Retry-After [default: 120].
    #[arg(
        long,
        env = "BEELINE_POSTS_PER_SESSION_PER_MINUTE",
        value_name = "N",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    pub(super) posts_per_session_per_minute: Option<u32>,
    /// Messages one browser user (or anonymous client address, IPv6 by /64) may post per minute across its sessions, then 429 with Retry-After [default: 1200].
    #[arg(
        long,
        env = "BEELINE_POSTS_PER_IDENTITY_PER_MINUTE",
        value_name = "N",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    pub(super) posts_per_identity_per_minute: Option<u32>,
    /// Sessions one user may have live at once (created within --session-ttl), then 429 with Retry-After [default: 40].
    #[arg(
        long,
        env = "BEELINE_MAX_LIVE_SESSIONS_PER_IDENTITY",
        value_name = "N",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    pub(super) max_live_sessions_per_identity: Option<u32>,
    /// Sessions one client address (IPv6 by /64) may have live at once, then 429 with Retry-After [default: 120].
    #[arg(
        long,
        env = "BEELINE_MAX_LIVE_SESSIONS_PER_IP",
        value_name = "N",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    pub(super) max_live_sessions_per_ip: Option<u32>,
    /// Sessions one user may create per minute, then 429 with Retry-After [default: 20].
    #[arg(
        long,
        env = "BEELINE_SESSIONS_PER_IDENTITY_PER_MINUTE",
        value_name = "N",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    pub(super) sessions_per_identity_per_minute: Option<u32>,
    /// Sessions (and reports) one client address may create per minute, then 429 with Retry-After [default: 60].
    #[arg(
        long,
        env = "BEELINE_SESSIONS_PER_IP_PER_MINUTE",
        value_name = "N",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    pub(super) sessions_per_ip_per_minute: Option<u32>,
    /// Long-polls one user or home may hold at once, then 429 with Retry-After [default: 16].
    #[arg(
        long,
        env = "BEELINE_MAX_POLLS_PER_IDENTITY",
        value_name = "N",
        help_heading = "Sessions and limits (0 = no limit)"
    )]
    pub(super) max_polls_per_identity: Option<u32>,
}

impl Cli {
    pub(crate) fn config_path(&self) -> Option<&Path> {
        self.config.as_deref()
    }
}
