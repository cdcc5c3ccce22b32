//! Flags, environment and config file ([`Cli`] over [`FileConfig`]), mapped
//! onto the library's [`SignalConfig`] in one [`Settings`].
//!
//! `cli` declares the flags, `file` the config file, `secret` reads the
//! secrets either may name; this module resolves them into [`Settings`].
//!
//! Precedence is flag > environment > file > built-in default. clap handles
//! the first two (every flag has an `env`); the file's values fill whatever
//! is still unset. Secrets are read here (from files or the environment) and
//! never logged. What makes a configuration valid is the library's to say
//! (`SignalConfig::validate`, `JwtKey::from_public_pem`); this module only
//! refuses what is about flags themselves (a value and its file both given,
//! a mode without the setting it needs, a zero where a flag wants seconds).

mod cli;
mod file;
mod secret;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context as _};
use beeline_signal_server::{
    Database, HomeCredential, IpNet, JwtKey, Limits, SignalConfig, TurnSecrets, DEFAULT_HOME,
};
use clap::ArgMatches;

pub(crate) use self::cli::Cli;
use self::cli::{BrowserAuthMode, JwtAlgorithm, LoopbackOfferMode};
pub(crate) use self::file::FileConfig;
use self::secret::{cli_secret, file_secret, read_secret, Secret};

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_DB: &str = "./signal.db";
const DEFAULT_BASE_PATH: &str = "/webrtc";
const DEFAULT_PROXY_USER_HEADER: &str = "x-forwarded-user";

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
