//! `beeline-proxy`: the home service on a local port. Every HTTP/1.1
//! request to `--listen` becomes one protocol-v2 stream on a data channel
//! to the home peer (through `beeline_client`), so curl, editors and the
//! OpenAI SDKs (`OPENAI_BASE_URL=http://127.0.0.1:8000/v1`) take the direct
//! path. Flags and environment are read here and nowhere else.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse as _, Response};
use beeline_client::{
    connect, Auth, ClientConfig, ClientOptions, HomeClient, PathState, TrustedRoots,
};
use beeline_transport::{AddressFilter, IceServer, PeerConfig};
use clap::Parser;

/// Serves the home service on a local port over beeline's direct path.
///
/// Each flag has an environment variable. When the channel is down,
/// requests wait for it up to the setup budget, then take --relay-url if
/// given, or get a 502 with a JSON error saying why.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Signaling base URL, e.g. https://example.com/webrtc.
    #[arg(long, env = "BEELINE_SIGNAL_URL")]
    signal_url: String,
    /// Where to listen for HTTP requests.
    #[arg(long, env = "BEELINE_PROXY_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// A bearer token (JWT) for signal-api's browser auth.
    #[arg(long, env = "BEELINE_BEARER", hide_env_values = true)]
    bearer: Option<String>,
    /// A file holding the bearer token (first line).
    #[arg(long, env = "BEELINE_BEARER_FILE")]
    bearer_file: Option<PathBuf>,
    /// A header signal-api's trusted-proxy auth reads, as NAME:VALUE.
    #[arg(long, env = "BEELINE_AUTH_HEADER", hide_env_values = true)]
    auth_header: Option<String>,
    /// The public URL of the normal path (e.g. https://example.com), used
    /// while the direct path is down.
    #[arg(long, env = "BEELINE_RELAY_URL")]
    relay_url: Option<String>,
    /// Restrict ICE to these addresses or CIDR networks (repeatable). Default: all.
    #[arg(long = "allow-ip", env = "BEELINE_ALLOW_IPS", value_delimiter = ',')]
    allow_ips: Vec<String>,
    /// STUN server for server-reflexive candidates (repeatable).
    #[arg(long = "stun-url", env = "BEELINE_STUN_URLS", value_delimiter = ',')]
    stun_urls: Vec<String>,
    /// PEM file of certificate authorities trusted for `turns:` servers
    /// (TURN over TLS) besides the public ones (repeatable), e.g. the
    /// private CA of your coturn's certificate.
    #[arg(long = "turn-ca", env = "BEELINE_TURN_CA", value_delimiter = ',')]
    turn_ca: Vec<PathBuf>,
    /// PEM file of certificate authorities trusted for https:// signal and
    /// relay URLs besides the public ones (repeatable), e.g. the private CA
    /// of the TLS proxy in front of signal-api.
    #[arg(long = "signal-ca", env = "BEELINE_SIGNAL_CA", value_delimiter = ',')]
    signal_ca: Vec<PathBuf>,
    /// How long a connection attempt, or a request waiting for the channel,
    /// may take, in milliseconds.
    #[arg(long, env = "BEELINE_SETUP_BUDGET_MS", default_value_t = 8000)]
    setup_budget_ms: u64,
    /// UDP receive/send buffer asked of the kernel per ICE socket, in bytes;
    /// 0 keeps the kernel default.
    #[arg(long, env = "BEELINE_UDP_BUFFER", default_value_t = beeline_transport::DEFAULT_SOCKET_BUFFER)]
    udp_buffer: usize,
    /// Log as JSON lines.
    #[arg(long, env = "BEELINE_LOG_JSON")]
    log_json: bool,
    /// Flow-control window per response, in bytes: how much home-peer may
    /// send on one stream before the proxy has passed it on, and so what
    /// one stream can hold in memory here. Every piece must reach the
    /// local client's socket before it is granted again, so the proxy
    /// needs more than a client that reads in-process: on two cores 1 MiB
    /// moved 100 MB 35–50 % faster than 256 KiB, and 4 MiB about 6 % faster
    /// again (docs/performance.md). Chromium's HTTP/2 stream window is 6 MB.
    #[arg(long, env = "BEELINE_WINDOW", default_value_t = 4 * 1024 * 1024,
          value_parser = clap::value_parser!(u32).range(16 * 1024..=16 * 1024 * 1024))]
    window: u32,
    /// Runtime worker threads. One connection's transport is driven by one
    /// task, so the proxy, which shares the machine with the programs that
    /// call it, gains little from more: on two cores one worker moved
    /// 100 MB downloads 10–15 % faster than two, and took 100 concurrent
    /// requests as fast (see docs/performance.md).
    #[arg(long, env = "BEELINE_WORKER_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    worker_threads: u16,
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
            eprintln!("beeline-proxy: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("beeline-proxy: {e:#}");
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

fn auth(args: &Args) -> Result<Auth> {
    let bearer = match (&args.bearer, &args.bearer_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(text.lines().next().unwrap_or_default().trim().to_owned())
        }
        (None, None) => None,
    };
    Ok(match (bearer, &args.auth_header) {
        (Some(_), Some(_)) => bail!("give either a bearer token or --auth-header, not both"),
        (Some(t), None) if t.is_empty() => bail!("the bearer token is empty"),
        (Some(t), None) => Auth::Bearer(t),
        (None, Some(h)) => {
            let (name, value) = h
                .split_once(':')
                .context("--auth-header must be NAME:VALUE")?;
            Auth::Header {
                name: name.trim().to_owned(),
                value: value.trim().to_owned(),
            }
        }
        (None, None) => Auth::Open,
    })
}

async fn run(args: Args) -> Result<()> {
    let auth = auth(&args)?;
    let mut filter = AddressFilter::allow_all();
    for ip in &args.allow_ips {
        filter
            .allow_network(ip)
            .with_context(|| format!("--allow-ip {ip}"))?;
    }
    let ice_servers = if args.stun_urls.is_empty() {
        Vec::new()
    } else {
        vec![IceServer {
            urls: args.stun_urls.clone(),
            ..Default::default()
        }]
    };
    let mut turn_tls_roots = Vec::new();
    for path in &args.turn_ca {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("--turn-ca {}", path.display()))?;
        turn_tls_roots.push(pem);
    }
    let mut roots = TrustedRoots::default();
    for path in &args.signal_ca {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading --signal-ca {}", path.display()))?;
        roots
            .add_pem(&pem)
            .with_context(|| format!("--signal-ca {}", path.display()))?;
    }
    let config = ClientConfig {
        roots,
        peer: PeerConfig {
            ice_servers,
            address_filter: filter,
            turn_tls_roots,
            socket_buffer: (args.udp_buffer > 0).then_some(args.udp_buffer),
            ..Default::default()
        },
        setup_budget: Duration::from_millis(args.setup_budget_ms.max(1)),
        relay_url: args.relay_url.clone(),
        // The proxy's own listener speaks plain HTTP.
        scheme: Some("http".into()),
        options: ClientOptions {
            window: args.window,
            ..Default::default()
        },
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let home = connect(&args.signal_url, auth, config).await?;
    let path = match home.path() {
        PathState::Direct => "direct".to_owned(),
        PathState::Connecting => "connecting".to_owned(),
        PathState::Down(why) if args.relay_url.is_some() => format!("relay ({why})"),
        PathState::Down(why) => format!("none ({why})"),
        other => format!("{other:?}"),
    };
    tracing::info!(listen = %listener.local_addr()?, signal = %args.signal_url, %path, "beeline-proxy ready");
    let app = axum::Router::new().fallback(forward).with_state(home);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")?;
    Ok(())
}

async fn forward(State(home): State<HomeClient>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    match home.send(request).await {
        Ok(response) => response.map(Body::new),
        Err(error) => {
            tracing::debug!(%error, %method, %path, "request failed");
            let status = axum::http::StatusCode::from_u16(error.http_status())
                .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
            let body = serde_json::json!({
                "error": error.code(),
                "message": error.to_string(),
            });
            (status, axum::Json(body)).into_response()
        }
    }
}
