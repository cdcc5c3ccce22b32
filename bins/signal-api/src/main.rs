//! `signal-api`: serves `beeline-signal-server` over HTTP.
//!
//! Glue only: reads flags, environment and an optional TOML file, sets up
//! tracing, opens the [`SignalServer`], and drains it on SIGINT/SIGTERM.
//! Once bound it logs `listening on http://ADDR:PORT` (to stderr), with the
//! real port when started with `--listen 127.0.0.1:0`.

mod jwks;
mod settings;

use std::{
    future::IntoFuture as _, io::IsTerminal as _, net::SocketAddr, process::ExitCode, sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use beeline_signal_server::{
    JwtAuth, JwtKeys, OpenAuth, OpenError, ProxyHeaderAuth, SignalConfig, SignalServer,
};
use clap::{CommandFactory as _, FromArgMatches as _};
use settings::{BrowserAuth, Cli, FileConfig, JwtKeySource, Settings};
use tracing_subscriber::EnvFilter;

/// How long open connections (relayed streams, mostly) may take to finish
/// after a shutdown signal before the process exits anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> ExitCode {
    let mut settings = match load_settings() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("signal-api: {err:#}");
            return ExitCode::from(2);
        }
    };
    init_tracing(settings.log_json);
    // A configuration the library refuses is a usage error too.
    let config = match signal_config(&mut settings) {
        Ok(config) => config,
        Err(err) => {
            tracing::error!("{err:#}");
            return ExitCode::from(2);
        }
    };
    match run(settings, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_settings() -> anyhow::Result<Settings> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    let file = match cli.config_path() {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    Settings::resolve(cli, &matches, file)
}

fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// The library configuration of `settings`, with its browser auth built
/// (a JWKS file is read, and watched from now on), checked by the library
/// ([`SignalConfig::validate`]).
fn signal_config(settings: &mut Settings) -> anyhow::Result<SignalConfig> {
    let mut config = settings.config.clone();
    config.browser_auth = match std::mem::replace(&mut settings.browser_auth, BrowserAuth::Open) {
        BrowserAuth::Open => {
            tracing::warn!(
                "browser auth is OPEN: anyone who can reach this server can create signaling \
                 sessions and send offers to the home peer; put access control in front of it \
                 or use --browser-auth jwt|proxy-header"
            );
            Arc::new(OpenAuth)
        }
        BrowserAuth::Jwt {
            key,
            cookie,
            issuer,
            audience,
            max_lifetime,
        } => {
            let mut auth = match key {
                JwtKeySource::Key(key) => JwtAuth::new(key).context("invalid JWT key")?,
                JwtKeySource::Jwks(path) => {
                    let keys = JwtKeys::default();
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("could not read the JWKS {}", path.display()))?;
                    keys.replace_from_jwks(&text)
                        .with_context(|| format!("invalid JWKS {}", path.display()))?;
                    tracing::info!(kids = keys.kids().join(","), "JWT keys loaded");
                    tokio::spawn(jwks::watch(path, keys.clone()));
                    JwtAuth::with_keys(keys)
                }
            };
            if let Some(max) = max_lifetime {
                auth = auth.with_max_lifetime(max);
            }
            if let Some(cookie) = cookie {
                auth = auth.with_cookie(cookie);
            }
            if let Some(issuer) = issuer {
                auth = auth.with_issuer(&issuer);
            }
            if let Some(audience) = audience {
                auth = auth.with_audience(&audience);
            }
            Arc::new(auth)
        }
        BrowserAuth::ProxyHeader { header } => {
            let header = header
                .parse()
                .with_context(|| format!("invalid proxy user header {header:?}"))?;
            Arc::new(ProxyHeaderAuth::new(header, config.trusted_proxies.clone()))
        }
    };
    validate(&config)?;
    Ok(config)
}

/// The library's verdict on `config`, naming the flag that fixes it where
/// there is one.
fn validate(config: &SignalConfig) -> anyhow::Result<()> {
    config.validate().map_err(|error| match error {
        OpenError::TurnUrlsWithoutSecret => anyhow::anyhow!(
            "{error}: pass --turn-secret-file (turn_secret_file in the config file)"
        ),
        error => anyhow::Error::new(error).context("invalid configuration"),
    })
}

async fn run(settings: Settings, config: SignalConfig) -> anyhow::Result<()> {
    // Logged below; the secrets themselves never are.
    let homes: Vec<String> = config.homes.iter().map(|home| home.name.clone()).collect();
    let browser_auth = config.browser_auth.mode();
    let turn_enabled = config.turn_secrets.is_some() && !config.turn_urls.is_empty();
    let server = SignalServer::open(config)
        .await
        .context("could not start the signaling server")?;

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("could not listen on {}", settings.listen))?;
    let addr = listener
        .local_addr()
        .context("could not read the bound address")?;
    tracing::info!(
        db = %settings.config.database.display(),
        base_path = server.base_path(),
        homes = homes.join(","),
        browser_auth,
        relay = match (&settings.config.relay_upstream, settings.config.home_link) {
            (Some(upstream), _) => upstream.as_str(),
            (None, true) => "home link",
            (None, false) => "none",
        },
        turn = turn_enabled,
        "signaling server ready"
    );
    tracing::info!("listening on http://{addr}");

    let stopping = server.shutdown_token();
    tokio::spawn({
        let server = server.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("shutting down: answering held polls and draining connections");
            server.shutdown();
        }
    });

    // Small writes go out at once: a relayed response over the home link is
    // many small WebSocket messages, which Nagle's algorithm and the peer's
    // delayed ACK would hold for 40 ms each.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    });
    let serve = axum::serve(
        listener,
        server
            .router()
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopping.clone().cancelled_owned())
    .into_future();
    tokio::select! {
        served = serve => served.context("HTTP server failed")?,
        _ = async {
            stopping.cancelled().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; exiting anyway"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, FromArgMatches as _};

    use super::*;

    fn settings(args: &[&str]) -> Settings {
        let matches = Cli::command()
            .try_get_matches_from(std::iter::once("signal-api").chain(args.iter().copied()))
            .unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        Settings::resolve(cli, &matches, FileConfig::default()).unwrap()
    }

    /// The library refuses TURN URLs without a TURN secret; the binary
    /// names the flag that fixes it.
    #[test]
    fn turn_urls_without_a_secret_are_refused_with_the_flag_to_pass() {
        let base = ["--home-token", "t", "--browser-auth", "open"];
        let with = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            signal_config(&mut settings(&args))
        };
        let error = format!("{:#}", with(&["--turn-host", "h"]).unwrap_err());
        assert!(error.contains("no TURN secret"), "{error}");
        assert!(error.contains("--turn-secret-file"), "{error}");
        let error = format!("{:#}", with(&["--turn-url", "turn:h:3478"]).unwrap_err());
        assert!(error.contains("--turn-secret-file"), "{error}");
        let config = with(&["--turn-host", "h", "--turn-secret", "s"]).unwrap();
        assert_eq!(config.turn_urls.len(), 3);
        // Other refusals carry the library's own words.
        let error = format!("{:#}", with(&["--base-path", "no-slash"]).unwrap_err());
        assert!(error.contains("invalid base path"), "{error}");
    }
}
