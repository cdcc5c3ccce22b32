//! The state of one signaling server: [`SignalServer`] (what an embedder
//! holds) and [`Shared`] (what every handler sees: configuration, store,
//! wake-ups, limits, metrics, home links), opened from a validated
//! [`SignalConfig`], with the background tasks it runs (the sweep of expired
//! rows, and wake-ups from other instances sharing the store). It also
//! builds the [`Relay`] and tells it where homes are ([`ServerHomes`]), so
//! the relay itself knows nothing of this module.

use std::{
    sync::{Arc, Weak},
    time::Instant,
};

use axum::http::HeaderValue;
use beeline_bridge::{BodyStream, ClientError, ResponseHandle, Upgrade};
use beeline_frame::v2::RequestHead;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::HomeTokens,
    config::{Checked, SignalConfig},
    cookies::CookieKeys,
    errors::{stored, OpenError},
    home_link::{HomeLinks, Link},
    limits::{LiveSessions, PollSlots, RateLimiter},
    metrics::Metrics,
    relay::{HomeLink, Homes, Relay, RelayConfig, RelayError},
    server::{live_since_ms, millis},
    store::{open_store, RemotePost, SessionStore, Side},
    wake::{Topic, Wakeups},
};

/// State shared by every handler of one server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: SignalConfig,
    pub(crate) homes: HomeTokens,
    pub(crate) default_home: Option<Arc<str>>,
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) metrics: Metrics,
    /// Home-peers' links, which the relay uses when no upstream is set.
    pub(crate) links: HomeLinks,
    /// Per-home keys for sealed cookie jars (empty when they are off).
    pub(crate) cookie_keys: CookieKeys,
    /// Per-home keys for loopback tickets.
    pub(crate) loopback_keys: crate::loopback::LoopbackKeys,
    pub(crate) wakeups: Wakeups,
    pub(crate) sessions_per_identity: RateLimiter,
    pub(crate) sessions_per_ip: RateLimiter,
    pub(crate) reports_per_ip: RateLimiter,
    pub(crate) posts_per_session: RateLimiter,
    pub(crate) posts_per_identity: RateLimiter,
    pub(crate) live_per_identity: LiveSessions,
    pub(crate) live_per_ip: LiveSessions,
    pub(crate) polls: PollSlots,
    pub(crate) shutdown: CancellationToken,
    /// The validated CORS allow-list.
    pub(crate) cors_allow: Vec<HeaderValue>,
}

impl Shared {
    pub(crate) fn config(&self) -> &SignalConfig {
        &self.config
    }

    pub(crate) fn store(&self) -> &dyn SessionStore {
        &*self.store
    }

    pub(crate) fn links(&self) -> &HomeLinks {
        &self.links
    }

    /// The configured home called `name`.
    pub(crate) fn home_named(&self, name: &str) -> Option<Arc<str>> {
        self.homes.names().find(|home| ***home == *name).cloned()
    }

    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// A signaling server: configuration, store, wake-ups, limits and metrics.
///
/// Cheap to clone; all clones share one state. Serve [`SignalServer::router`]
/// with axum — with connect info (`into_make_service_with_connect_info::<SocketAddr>()`)
/// so that per-address limits and proxy-header auth see the peer — and call
/// [`SignalServer::shutdown`] before waiting for the server to drain, so that
/// held long-polls are answered at once.
#[derive(Debug, Clone)]
pub struct SignalServer {
    pub(crate) shared: Arc<Shared>,
    /// The router's fallback, relaying to the upstream or over home links.
    pub(crate) relay: Relay,
}

impl SignalServer {
    /// Validates `config` ([`SignalConfig::validate`]), opens the store
    /// (SQLite, or PostgreSQL for a `postgres://` URL), starts the periodic
    /// sweep of expired rows and, with a shared store, the wake-ups from
    /// other instances. Must be called inside a Tokio runtime.
    pub async fn open(mut config: SignalConfig) -> Result<Self, OpenError> {
        let Checked {
            base_path,
            default_home,
            cors_allow,
        } = config.check()?;
        config.base_path = base_path;
        let relay = Relay::new(RelayConfig {
            upstream: config.relay_upstream.clone(),
            home_link: config.home_link,
            strip_request_headers: config.strip_request_headers.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
        })?;
        let store = open_store(&config.database, &config.postgres).await?;
        let limits = &config.limits;
        let shared = Arc::new(Shared {
            homes: HomeTokens::new(&config.homes),
            default_home,
            store,
            metrics: Metrics::new(relay.stats()),
            links: HomeLinks::default(),
            cookie_keys: if config.cookie_jar {
                CookieKeys::new(&config.homes)
            } else {
                CookieKeys::default()
            },
            loopback_keys: crate::loopback::LoopbackKeys::new(&config.homes),
            wakeups: Wakeups::default(),
            sessions_per_identity: RateLimiter::new(limits.sessions_per_identity_per_minute),
            sessions_per_ip: RateLimiter::new(limits.sessions_per_ip_per_minute),
            reports_per_ip: RateLimiter::new(limits.sessions_per_ip_per_minute),
            posts_per_session: RateLimiter::new(limits.posts_per_session_per_minute),
            posts_per_identity: RateLimiter::new(limits.posts_per_identity_per_minute),
            live_per_identity: LiveSessions::new(
                limits.max_live_sessions_per_identity,
                config.session_ttl,
            ),
            live_per_ip: LiveSessions::new(limits.max_live_sessions_per_ip, config.session_ttl),
            polls: PollSlots::new(limits.max_polls_per_identity),
            shutdown: CancellationToken::new(),
            cors_allow,
            config,
        });
        spawn_sweeper(&shared);
        spawn_remote_wakeups(&shared);
        let relay = relay.with_homes(Arc::new(ServerHomes(Arc::clone(&shared))));
        Ok(Self { shared, relay })
    }

    /// The normalized base path the routes live under (e.g. `/webrtc`).
    pub fn base_path(&self) -> &str {
        &self.shared.config.base_path
    }

    /// Answers every held long-poll (empty) now and every later one at once,
    /// and stops the sweeper. Requests in flight otherwise complete normally.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
        self.shared.links.close_all();
    }

    /// Whether `home`'s link is up and agreed, so that the relay and frame
    /// connections can reach it now. A home's own view
    /// (`beeline_home::LinkStatus`) turns true a round trip earlier, when
    /// its WebSocket opens.
    pub fn home_linked(&self, home: &str) -> bool {
        self.shared.links.get(home).is_some()
    }

    /// A token cancelled by [`SignalServer::shutdown`]; handy as the trigger
    /// of axum's graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }
}

/// The relay's view of this server's homes: sessions in the store, links
/// in [`HomeLinks`].
struct ServerHomes(Arc<Shared>);

impl Homes for ServerHomes {
    fn session_home<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<str>>, RelayError>> {
        Box::pin(async move {
            let shared = &self.0;
            let record = stored(shared, shared.store().session(id)).await?;
            Ok(record.and_then(|record| shared.home_named(&record.home_id)))
        })
    }

    fn default_home(&self) -> Option<Arc<str>> {
        self.0.default_home.clone()
    }

    fn link(&self, home: &str) -> Option<Arc<dyn HomeLink>> {
        self.0
            .links
            .get(home)
            .map(|link| -> Arc<dyn HomeLink> { link })
    }
}

impl HomeLink for Link {
    fn send(
        &self,
        head: RequestHead,
        body: Option<BodyStream>,
    ) -> BoxFuture<'_, Result<ResponseHandle, ClientError>> {
        Box::pin(self.client().send(head, body))
    }

    fn websocket(&self, head: RequestHead) -> BoxFuture<'_, Result<Upgrade, ClientError>> {
        Box::pin(self.client().websocket(head))
    }
}

/// Deletes expired rows and idle rate-limit entries every `sweep_interval`
/// until shutdown or until the server is dropped.
fn spawn_sweeper(shared: &Arc<Shared>) {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let stop = shared.shutdown.clone();
    let mut ticks = tokio::time::interval(shared.config.sweep_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let Some(shared) = weak.upgrade() else { break };
            let now = Instant::now();
            shared.sessions_per_identity.sweep(now);
            shared.sessions_per_ip.sweep(now);
            shared.reports_per_ip.sweep(now);
            shared.posts_per_session.sweep(now);
            shared.posts_per_identity.sweep(now);
            shared.live_per_identity.sweep(now);
            shared.live_per_ip.sweep(now);
            let live_since = live_since_ms(&shared.config);
            let forget_before = live_since.saturating_sub(millis(shared.config.tombstone_ttl));
            match stored(&shared, shared.store.sweep(live_since, forget_before)).await {
                Ok(swept) if swept.sessions + swept.messages > 0 => {
                    tracing::debug!(
                        sessions_forgotten = swept.sessions,
                        messages = swept.messages,
                        "swept expired signaling rows"
                    );
                }
                Ok(_) => {}
                // Already logged by `stored`; the next tick tries again.
                Err(_) => {}
            }
        }
    });
}

/// Passes other instances' posts (a shared store) on to the waiters here.
fn spawn_remote_wakeups(shared: &Arc<Shared>) {
    let Some(mut posts) = shared.store.remote_posts() else {
        return;
    };
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let stop = shared.shutdown.clone();
    tokio::spawn(async move {
        loop {
            let post = tokio::select! {
                _ = stop.cancelled() => break,
                post = posts.recv() => post,
            };
            let Some(shared) = weak.upgrade() else { break };
            let at = Instant::now();
            match post {
                Ok(RemotePost::Message {
                    session_id,
                    home_id,
                    side,
                }) => {
                    shared.wakeups.announce(
                        &Topic::Session {
                            id: session_id,
                            from: side,
                        },
                        at,
                    );
                    if side == Side::Browser {
                        shared.wakeups.announce(&Topic::Home(home_id), at);
                    }
                }
                // Announcements were missed: every waiter reads again.
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    shared.wakeups.announce_all(at);
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}
