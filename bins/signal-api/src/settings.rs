//! Flags, environment and config file, merged into one [`Settings`].
//!
//! Precedence is flag > environment > file > built-in default. clap handles
//! the first two (every flag has an `env`); the file's values fill whatever
//! is still unset.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use clap::{parser::ValueSource, ArgMatches, Parser, ValueEnum};
use serde::Deserialize;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_DB: &str = "./signal.db";
const DEFAULT_BASE_PATH: &str = "/webrtc";

/// How browsers prove they may create sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BrowserAuth {
    /// Anyone who can reach the server may create a session.
    Open,
}

/// beeline's signaling server: long-poll WebRTC signaling between browsers
/// and the home peer, TURN credentials, and an optional relay.
#[derive(Debug, Parser)]
#[command(name = "signal-api", version)]
pub(crate) struct Cli {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "BEELINE_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// SQLite database file (created if missing) [default: ./signal.db].
    #[arg(long, env = "BEELINE_DB", value_name = "PATH")]
    db: Option<PathBuf>,
    /// Bearer token of the home peer.
    #[arg(
        long,
        env = "BEELINE_HOME_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    home_token: Option<String>,
    /// File holding the home peer's bearer token (surrounding whitespace ignored).
    #[arg(long, env = "BEELINE_HOME_TOKEN_FILE", value_name = "PATH")]
    home_token_file: Option<PathBuf>,
    /// How browsers are authenticated; required. Only `open` exists for now.
    #[arg(long, env = "BEELINE_BROWSER_AUTH", value_enum, value_name = "MODE")]
    browser_auth: Option<BrowserAuth>,
    /// Path prefix of the signaling endpoints [default: /webrtc].
    #[arg(long, env = "BEELINE_BASE_PATH", value_name = "PATH")]
    base_path: Option<String>,
    /// Forward every unmatched request to this base URL and stream the answer back.
    #[arg(long, env = "BEELINE_RELAY_UPSTREAM", value_name = "URL")]
    relay_upstream: Option<String>,
    /// coturn `static-auth-secret`; enables TURN credentials.
    #[arg(
        long,
        env = "BEELINE_TURN_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    turn_secret: Option<String>,
    /// File holding the TURN secret (surrounding whitespace ignored).
    #[arg(long, env = "BEELINE_TURN_SECRET_FILE", value_name = "PATH")]
    turn_secret_file: Option<PathBuf>,
    /// STUN URL handed to browsers; repeat for more (env: comma-separated).
    #[arg(
        long = "stun-url",
        env = "BEELINE_STUN_URL",
        value_delimiter = ',',
        value_name = "URL"
    )]
    stun_urls: Vec<String>,
    /// TURN URL handed to browsers with credentials; repeat for more (env: comma-separated).
    #[arg(
        long = "turn-url",
        env = "BEELINE_TURN_URL",
        value_delimiter = ',',
        value_name = "URL"
    )]
    turn_urls: Vec<String>,
    /// TOML file with the same keys (snake_case); flags and env override it.
    #[arg(long, env = "BEELINE_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "BEELINE_LOG_JSON")]
    log_json: bool,
}

impl Cli {
    pub(crate) fn config_path(&self) -> Option<&Path> {
        self.config.as_deref()
    }
}

/// The config file: the flags' keys in snake_case, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    listen: Option<SocketAddr>,
    db: Option<PathBuf>,
    home_token: Option<String>,
    home_token_file: Option<PathBuf>,
    browser_auth: Option<BrowserAuth>,
    base_path: Option<String>,
    relay_upstream: Option<String>,
    turn_secret: Option<String>,
    turn_secret_file: Option<PathBuf>,
    #[serde(alias = "stun_urls")]
    stun_url: Option<Vec<String>>,
    #[serde(alias = "turn_urls")]
    turn_url: Option<Vec<String>>,
    log_json: Option<bool>,
}

impl FileConfig {
    /// Reads `path`; relative paths inside it are taken relative to its folder.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read config file {}", path.display()))?;
        let mut file: FileConfig = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        let folder = path.parent().unwrap_or(Path::new(""));
        for relative in [
            &mut file.db,
            &mut file.home_token_file,
            &mut file.turn_secret_file,
        ]
        .into_iter()
        .flatten()
        {
            if relative.is_relative() {
                *relative = folder.join(&*relative);
            }
        }
        Ok(file)
    }
}

/// A secret given directly or as a file to read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Secret {
    Value(String),
    File(PathBuf),
}

impl Secret {
    fn read(self, what: &str) -> anyhow::Result<String> {
        let value = match self {
            Secret::Value(value) => value,
            Secret::File(path) => std::fs::read_to_string(&path)
                .with_context(|| format!("could not read the {what} file {}", path.display()))?
                .trim()
                .to_owned(),
        };
        if value.is_empty() {
            bail!("the {what} is empty");
        }
        Ok(value)
    }
}

/// Everything `main` needs, resolved.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) listen: SocketAddr,
    pub(crate) db: PathBuf,
    pub(crate) home_token: String,
    pub(crate) browser_auth: BrowserAuth,
    pub(crate) base_path: String,
    pub(crate) relay_upstream: Option<String>,
    pub(crate) turn_secret: Option<String>,
    pub(crate) stun_urls: Vec<String>,
    pub(crate) turn_urls: Vec<String>,
    pub(crate) log_json: bool,
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

fn non_empty(urls: Vec<String>) -> Option<Vec<String>> {
    (!urls.is_empty()).then_some(urls)
}

impl Settings {
    /// Merges flags/env (`cli`, parsed from `matches`) over `file`.
    pub(crate) fn resolve(
        cli: Cli,
        matches: &ArgMatches,
        file: FileConfig,
    ) -> anyhow::Result<Self> {
        let home_token = cli_secret(matches, "home_token", cli.home_token, "home_token_file", cli.home_token_file)?
            .or(file_secret(file.home_token, file.home_token_file, "home_token")?)
            .context(
                "no home token: pass --home-token or --home-token-file \
                 (or BEELINE_HOME_TOKEN / BEELINE_HOME_TOKEN_FILE, or home_token in the config file)",
            )?
            .read("home token")?;
        let turn_secret = cli_secret(
            matches,
            "turn_secret",
            cli.turn_secret,
            "turn_secret_file",
            cli.turn_secret_file,
        )?
        .or(file_secret(
            file.turn_secret,
            file.turn_secret_file,
            "turn_secret",
        )?)
        .map(|secret| secret.read("TURN secret"))
        .transpose()?;
        let browser_auth = cli.browser_auth.or(file.browser_auth).context(
            "choose how browsers are authenticated with --browser-auth \
             (or BEELINE_BROWSER_AUTH, or browser_auth in the config file). \
             The only mode today is `open`: anyone who can reach this server may create a \
             signaling session with the home peer, so put it behind your own access control; \
             pass `--browser-auth open` to accept that",
        )?;
        Ok(Self {
            listen: match cli.listen.or(file.listen) {
                Some(listen) => listen,
                None => DEFAULT_LISTEN.parse()?,
            },
            db: cli
                .db
                .or(file.db)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DB)),
            home_token,
            browser_auth,
            base_path: cli
                .base_path
                .or(file.base_path)
                .unwrap_or_else(|| DEFAULT_BASE_PATH.to_owned()),
            relay_upstream: cli.relay_upstream.or(file.relay_upstream),
            turn_secret,
            stun_urls: non_empty(cli.stun_urls)
                .or(file.stun_url)
                .unwrap_or_default(),
            turn_urls: non_empty(cli.turn_urls)
                .or(file.turn_url)
                .unwrap_or_default(),
            log_json: cli.log_json || file.log_json.unwrap_or(false),
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

    #[test]
    fn flags_override_the_file_and_the_file_fills_the_rest() {
        let (cli, matches) = parse(&[
            "--home-token",
            "flag-token",
            "--stun-url",
            "stun:a",
            "--stun-url",
            "stun:b",
        ]);
        let settings = Settings::resolve(
            cli,
            &matches,
            file(
                r#"
                home_token = "file-token"
                browser_auth = "open"
                base_path = "/jarvis-api/webrtc"
                stun_url = ["stun:file"]
                turn_urls = ["turn:file"]
                listen = "127.0.0.1:0"
                "#,
            ),
        )
        .unwrap();
        assert_eq!(settings.home_token, "flag-token");
        assert_eq!(settings.stun_urls, ["stun:a", "stun:b"]);
        assert_eq!(settings.turn_urls, ["turn:file"]);
        assert_eq!(settings.base_path, "/jarvis-api/webrtc");
        assert_eq!(settings.browser_auth, BrowserAuth::Open);
        assert_eq!(settings.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(settings.db, PathBuf::from(DEFAULT_DB));
    }

    #[test]
    fn browser_auth_is_required_and_explained() {
        let (cli, matches) = parse(&["--home-token", "t"]);
        let err = Settings::resolve(cli, &matches, FileConfig::default()).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("--browser-auth open"), "{text}");
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let (cli, matches) = parse(&[
            "--home-token-file",
            path.to_str().unwrap(),
            "--browser-auth",
            "open",
        ]);
        let settings = Settings::resolve(cli, &matches, file("home_token = \"ignored\"")).unwrap();
        assert_eq!(settings.home_token, "from-file");
    }

    #[test]
    fn token_and_token_file_on_the_command_line_conflict() {
        let (cli, matches) = parse(&[
            "--home-token",
            "a",
            "--home-token-file",
            "b",
            "--browser-auth",
            "open",
        ]);
        assert!(Settings::resolve(cli, &matches, FileConfig::default()).is_err());
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        assert!(toml::from_str::<FileConfig>("home_tokn = \"typo\"").is_err());
        assert!(toml::from_str::<FileConfig>("browser_auth = \"closed\"").is_err());
    }
}
