//! `home-peer`: answers WebRTC offers from signal-api and serves the data
//! channels through an upstream HTTP service. Flags, env and config file are
//! read here and nowhere else.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use beeline_bridge::{BridgeConfig, ClientHeaderFilter, CookieKey, HttpUpstream};
use beeline_home::{
    bind_loopback, link_url, run_link, serve_loopback, HomeConfig, LinkConfig, LoopbackConfig,
    LoopbackKey, ResumeSessions, ResumeUpstream,
};

use beeline_signal_client::{SignalClient, TrustedRoots};
use beeline_transport::{AddressFilter, IceServer, PeerConfig};
use clap::Parser;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// Answers WebRTC offers posted to signal-api and carries HTTP requests over
/// the data channel to a local service.
///
/// Every flag can also be set by its environment variable or in the config
/// file's `[serve.webrtc]` table; flags win over env, env over the file.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Signaling base URL, e.g. https://example.com/webrtc.
    #[arg(long, env = "BEELINE_SIGNAL_URL")]
    signal_url: Option<String>,
    /// Bearer token that identifies this home to signal-api.
    #[arg(long, env = "BEELINE_HOME_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the bearer token (first line).
    #[arg(long, env = "BEELINE_HOME_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The local HTTP service requests are forwarded to, e.g. http://127.0.0.1:3000.
    #[arg(long, env = "BEELINE_UPSTREAM")]
    upstream: Option<String>,
    /// PEM file of certificate authorities trusted for an https:// signal
    /// URL (polls and the home link) besides the public roots (repeatable),
    /// e.g. the private CA of the TLS proxy in front of signal-api.
    #[arg(long = "signal-ca", env = "BEELINE_SIGNAL_CA", value_delimiter = ',')]
    signal_ca: Vec<PathBuf>,
    /// Restrict ICE to these addresses or CIDR networks (repeatable). Default: all.
    #[arg(long = "allow-ip", env = "BEELINE_ALLOW_IPS", value_delimiter = ',')]
    allow_ips: Vec<String>,
    /// Restrict ICE gathering to these interfaces (repeatable). Default: all.
    #[arg(
        long = "allow-interface",
        env = "BEELINE_ALLOW_INTERFACES",
        value_delimiter = ','
    )]
    allow_interfaces: Vec<String>,
    /// STUN server for this side's server-reflexive candidates (repeatable).
    #[arg(long = "stun-url", env = "BEELINE_STUN_URLS", value_delimiter = ',')]
    stun_urls: Vec<String>,
    /// Close a connection after this many seconds without traffic.
    #[arg(long, env = "BEELINE_IDLE_TIMEOUT_SECS")]
    idle_timeout_secs: Option<u64>,
    /// Most concurrent requests per data channel.
    #[arg(long, env = "BEELINE_MAX_STREAMS")]
    max_streams: Option<usize>,
    /// Browser sessions (peer connections) served at once; more offers are
    /// turned down with `bye`, so those pages fall back at once.
    #[arg(long, env = "BEELINE_MAX_SESSIONS")]
    max_sessions: Option<usize>,
    /// `http` data channels per peer connection (a page needs one); more
    /// are closed.
    #[arg(long, env = "BEELINE_MAX_CHANNELS_PER_PEER")]
    max_channels_per_peer: Option<usize>,
    /// Requests in flight per peer connection, across its channels; more
    /// get `too_many_streams` (429).
    #[arg(long, env = "BEELINE_MAX_STREAMS_PER_PEER")]
    max_streams_per_peer: Option<usize>,
    /// Largest request body forwarded, in bytes; more gets 413.
    #[arg(long, env = "BEELINE_MAX_BODY_BYTES")]
    max_body_bytes: Option<u64>,
    /// A request header no client may set for the home service to believe
    /// (repeatable), e.g. the identity header an auth proxy in front of the
    /// service trusts. Forwarding headers (`X-Forwarded-*`, `Forwarded`,
    /// `X-Real-IP`, ...) are always dropped from clients.
    #[arg(
        long = "strip-header",
        env = "BEELINE_STRIP_HEADERS",
        value_delimiter = ','
    )]
    strip_headers: Vec<String>,
    /// Do not open the home link (the WebSocket to signal-api over which it
    /// relays the normal path when it has no `--relay-upstream`).
    #[arg(long, env = "BEELINE_NO_HOME_LINK")]
    no_home_link: bool,
    /// Most requests and WebSockets in flight at once over the home link
    /// (every relayed page of this home shares it).
    #[arg(long, env = "BEELINE_LINK_MAX_STREAMS", default_value_t = 512)]
    link_max_streams: usize,
    /// Also serve pages on this machine at this loopback address, e.g.
    /// 127.0.0.1:33120 (docs/loopback.md): signal-api hands each session of
    /// a browser on the home's network the URL and a ticket. Loopback
    /// addresses only; needs the home link.
    #[arg(long, env = "BEELINE_LOOPBACK_LISTEN")]
    loopback_listen: Option<std::net::SocketAddr>,
    /// Page origin allowed to use the loopback listener (repeatable).
    /// Default: the origin of --signal-url.
    #[arg(
        long = "loopback-origin",
        env = "BEELINE_LOOPBACK_ORIGINS",
        value_delimiter = ','
    )]
    loopback_origins: Vec<String>,
    /// TOML config file with a `[serve.webrtc]` table.
    #[arg(long, env = "BEELINE_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long, env = "BEELINE_LOG_JSON")]
    log_json: bool,
    /// Runtime worker threads. The WebRTC stack's tasks hand every packet
    /// to each other, so more workers mostly move those hand-offs across
    /// cores: on two cores, two workers measured no faster than one for one
    /// busy connection or three at once (see docs/performance.md). Flag or
    /// environment only.
    #[arg(long, env = "BEELINE_WORKER_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    worker_threads: u16,
    /// UDP receive/send buffer asked of the kernel per ICE socket, in bytes
    /// (capped by net.core.rmem_max / wmem_max); 0 keeps the kernel default.
    /// Flag or environment only.
    #[arg(long, env = "BEELINE_UDP_BUFFER", default_value_t = beeline_transport::DEFAULT_SOCKET_BUFFER)]
    udp_buffer: usize,
    /// WebRTC implementation: `sansio` (the rtc-* crates, one task per
    /// connection; the default) or `0.17` (the webrtc-rs component crates).
    /// Flag or environment only.
    #[arg(long, env = "BEELINE_STACK", default_value_t = beeline_transport::Stack::default())]
    stack: beeline_transport::Stack,
}

/// The certificate authorities of the `--signal-ca` files; none without.
fn read_roots(paths: &[PathBuf]) -> Result<TrustedRoots> {
    let mut roots = TrustedRoots::default();
    for path in paths {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading --signal-ca {}", path.display()))?;
        roots
            .add_pem(&pem)
            .with_context(|| format!("--signal-ca {}", path.display()))?;
    }
    Ok(roots)
}

/// The `[serve.webrtc]` table, shaped like the specification's config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    enabled: Option<bool>,
    signaling_url: Option<String>,
    bearer_token: Option<String>,
    bearer_token_file: Option<PathBuf>,
    upstream: Option<String>,
    #[serde(default)]
    signal_ca: Vec<PathBuf>,
    /// Accepted for compatibility with the specification; long-polling has no
    /// interval (the next poll starts as soon as one returns).
    #[allow(dead_code)]
    poll_interval: Option<String>,
    #[serde(default)]
    allow_ips: Vec<String>,
    #[serde(default)]
    allow_interfaces: Vec<String>,
    #[serde(default)]
    stun_urls: Vec<String>,
    idle_timeout_secs: Option<u64>,
    max_streams: Option<usize>,
    max_sessions: Option<usize>,
    max_channels_per_peer: Option<usize>,
    max_streams_per_peer: Option<usize>,
    max_body_bytes: Option<u64>,
    #[serde(default)]
    strip_headers: Vec<String>,
    home_link: Option<bool>,
    loopback_listen: Option<std::net::SocketAddr>,
    #[serde(default)]
    loopback_origins: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct FileRoot {
    #[serde(default)]
    serve: FileServe,
}

#[derive(Debug, Default, Deserialize)]
struct FileServe {
    #[serde(default)]
    webrtc: FileConfig,
}

fn read_file_config(path: &Option<PathBuf>) -> Result<FileConfig> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let root: FileRoot =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut file = root.serve.webrtc;
    file.resolve_paths(path.parent().unwrap_or(std::path::Path::new("")));
    Ok(file)
}

impl FileConfig {
    /// Relative paths in the file are taken relative to its folder, as
    /// signal-api takes its own (a service's working directory is rarely
    /// the config file's).
    fn resolve_paths(&mut self, folder: &std::path::Path) {
        let paths = self.bearer_token_file.iter_mut().chain(&mut self.signal_ca);
        for path in paths {
            if path.is_relative() {
                *path = folder.join(&*path);
            }
        }
    }
}

fn read_token(path: &PathBuf) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading token file {}", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

/// `scheme://host[:port]` of `url`.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    (!authority.is_empty()).then(|| format!("{}://{authority}", scheme.to_ascii_lowercase()))
}

fn or_file<T>(flag: Vec<T>, file: Vec<T>) -> Vec<T> {
    if flag.is_empty() {
        file
    } else {
        flag
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_tracing(args.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads.into())
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("home-peer: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("home-peer: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The WebRTC stack's crates at ERROR, unless `RUST_LOG` names them.
fn quiet_stack(mut filter: tracing_subscriber::EnvFilter) -> tracing_subscriber::EnvFilter {
    let asked = std::env::var("RUST_LOG").unwrap_or_default();
    for directive in beeline_transport::quiet_stack_directives(&asked) {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

fn init_tracing(json: bool) {
    let filter = quiet_stack(
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        // Colours only on a terminal: not in a log file or the journal.
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

async fn run(args: Args) -> Result<()> {
    let file = read_file_config(&args.config)?;
    if file.enabled == Some(false) {
        tracing::info!("[serve.webrtc] enabled = false; nothing to do");
        return Ok(());
    }
    let signal_url = args
        .signal_url
        .or(file.signaling_url)
        .context("--signal-url is required")?;
    let token = match (
        args.token,
        args.token_file,
        file.bearer_token,
        file.bearer_token_file,
    ) {
        (Some(t), ..) => t,
        (None, Some(p), ..) => read_token(&p)?,
        (None, None, Some(t), _) => t,
        (None, None, None, Some(p)) => read_token(&p)?,
        _ => bail!("a bearer token is required: --token, --token-file or BEELINE_HOME_TOKEN"),
    };
    if token.is_empty() {
        bail!("the bearer token is empty");
    }
    let upstream_url = args
        .upstream
        .or(file.upstream)
        .context("--upstream is required")?;
    let roots = read_roots(&or_file(args.signal_ca, file.signal_ca))?;

    let mut filter = AddressFilter::allow_all();
    for ip in or_file(args.allow_ips, file.allow_ips) {
        filter
            .allow_network(&ip)
            .with_context(|| format!("--allow-ip {ip}"))?;
    }
    for iface in or_file(args.allow_interfaces, file.allow_interfaces) {
        filter.allow_interface(iface);
    }
    let stun_urls = or_file(args.stun_urls, file.stun_urls);
    let ice_servers = if stun_urls.is_empty() {
        Vec::new()
    } else {
        vec![IceServer {
            urls: stun_urls,
            ..Default::default()
        }]
    };

    let mut config = HomeConfig {
        peer: PeerConfig {
            stack: args.stack,
            ice_servers,
            address_filter: filter.clone(),
            socket_buffer: (args.udp_buffer > 0).then_some(args.udp_buffer),
            ..Default::default()
        },
        ..Default::default()
    };
    if let Some(secs) = args.idle_timeout_secs.or(file.idle_timeout_secs) {
        config.idle_timeout = Duration::from_secs(secs.max(1));
    }
    if let Some(n) = args.max_streams.or(file.max_streams) {
        config.bridge.max_concurrent_streams = n.max(1);
    }
    if let Some(n) = args.max_sessions.or(file.max_sessions) {
        config.max_sessions = n.max(1);
    }
    if let Some(n) = args.max_channels_per_peer.or(file.max_channels_per_peer) {
        config.max_channels_per_peer = n.max(1);
    }
    if let Some(n) = args.max_streams_per_peer.or(file.max_streams_per_peer) {
        config.max_streams_per_peer = n.max(1);
    }
    if let Some(n) = args.max_body_bytes.or(file.max_body_bytes) {
        config.bridge.max_body_bytes = n;
    }
    config.bridge.client_headers =
        ClientHeaderFilter::new(or_file(args.strip_headers, file.strip_headers));

    config.cookie_key = Some(CookieKey::from_home_token(&token));
    let upstream = Arc::new(HttpUpstream::new(&upstream_url)?);
    let home_name = Arc::default();
    let loopback = match args.loopback_listen.or(file.loopback_listen) {
        Some(addr) => {
            let listener = bind_loopback(addr)
                .await
                .with_context(|| format!("--loopback-listen {addr}"))?;
            let mut origins = or_file(args.loopback_origins, file.loopback_origins);
            if origins.is_empty() {
                origins.extend(origin_of(&signal_url));
            }
            let bound = listener.local_addr()?;
            let url = format!("http://{bound}");
            let config = LoopbackConfig {
                key: LoopbackKey::from_home_token(&token),
                home: Arc::clone(&home_name),
                origins,
                bridge: config.bridge.clone(),
                max_streams_per_session: config.max_streams_per_peer,
                max_sessions: config.max_sessions,
                session_idle: Duration::from_secs(120),
                cookie_key: config.cookie_key.clone(),
            };
            Some((listener, url, config))
        }
        None => None,
    };
    let home_link = !args.no_home_link && file.home_link != Some(false);
    if loopback.is_some() && !home_link {
        tracing::warn!("the loopback listener is unused without the home link: signal-api learns of it over the link");
    }
    let link = home_link
        .then(|| -> Result<LinkConfig> {
            Ok(LinkConfig {
                url: link_url(&signal_url)?,
                token: token.clone(),
                bridge: BridgeConfig {
                    max_concurrent_streams: args.link_max_streams.max(1),
                    // signal-api removed what browsers sent and states the
                    // true forwarding headers itself.
                    trust_forwarded_headers: true,
                    peer_streams: None,
                    cookies: None,
                    peer_addr: None,
                    ..config.bridge.clone()
                },
                backoff_initial: config.backoff_initial,
                backoff_max: config.backoff_max,
                loopback_url: loopback.as_ref().map(|(_, url, _)| url.clone()),
                home_name: Arc::clone(&home_name),
                resumable: true,
                roots: roots.clone(),
            })
        })
        .transpose()?;
    let signal = SignalClient::new(&signal_url)?
        .with_roots(&roots)?
        .with_bearer(token);
    tracing::info!(
        signal = %signal_url,
        upstream = %upstream_url,
        address_filter = if filter.is_open() { "none".to_owned() } else { format!("{filter:?}") },
        "home-peer starting"
    );

    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        on_signal.cancel();
    });
    let loopback_task = loopback.map(|(listener, url, config)| {
        tracing::info!(%url, origins = ?config.origins, "loopback listener up");
        tokio::spawn(serve_loopback(
            listener,
            Arc::clone(&upstream),
            config,
            shutdown.clone(),
        ))
    });
    // A page's streams move between its frame connection on the link and
    // its data channel (docs/protocol.md §4.8).
    let resume = ResumeSessions::new(
        Arc::clone(&upstream),
        config.bridge.clone(),
        config.cookie_key.clone(),
        config.max_sessions,
    );
    let link_task = link.map(|link| {
        tokio::spawn(run_link(
            link,
            Arc::new(ResumeUpstream::new(
                Arc::clone(&upstream),
                Arc::clone(&resume),
            )),
            Arc::default(),
            shutdown.clone(),
        ))
    });
    beeline_home::run_resumable(signal, upstream, config, Some(resume), shutdown).await;
    if let Some(task) = link_task {
        let _ = task.await;
    }
    if let Some(task) = loopback_task {
        if let Ok(Err(error)) = task.await {
            tracing::warn!(%error, "loopback listener failed");
        }
    }
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_resolves_its_relative_paths_against_its_folder() {
        let root: FileRoot = toml::from_str(
            r#"
            [serve.webrtc]
            bearer_token_file = "token"
            signal_ca = ["ca.pem", "/etc/ssl/other.pem"]
            "#,
        )
        .unwrap();
        let mut file = root.serve.webrtc;
        file.resolve_paths(std::path::Path::new("/etc/beeline"));
        assert_eq!(
            file.bearer_token_file.as_deref(),
            Some(std::path::Path::new("/etc/beeline/token"))
        );
        assert_eq!(
            file.signal_ca,
            [
                PathBuf::from("/etc/beeline/ca.pem"),
                PathBuf::from("/etc/ssl/other.pem")
            ]
        );
    }
}
