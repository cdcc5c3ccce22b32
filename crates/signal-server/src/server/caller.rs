//! Who calls: a home by its bearer token, else a browser as the configured
//! browser auth identifies it ([`Caller`], an axum extractor).

use std::{
    net::{IpAddr, SocketAddr},
    sync::{atomic::Ordering, Arc},
};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{request::Parts, StatusCode},
};

use crate::{
    auth::{bearer_token, BrowserRequest, Identity},
    limits::address_key,
    net::client_ip,
    store::{Access, Side},
};

use super::{ApiError, Shared};

/// Who is calling.
#[derive(Debug, Clone)]
pub(crate) enum Who {
    /// A browser, as its [`BrowserAuth`](crate::BrowserAuth) identified it.
    Browser(Identity),
    /// The home peer with this name.
    Home(Arc<str>),
}

/// The authenticated caller of a signaling request and its address.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) who: Who,
    pub(crate) client_ip: Option<IpAddr>,
}

impl Caller {
    pub(crate) fn side(&self) -> Side {
        match self.who {
            Who::Browser(_) => Side::Browser,
            Who::Home(_) => Side::Home,
        }
    }

    pub(crate) fn access(&self) -> Access<'_> {
        match &self.who {
            Who::Browser(identity) => Access::Owner(identity.subject()),
            Who::Home(name) => Access::Home(name),
        }
    }

    /// The key per-identity limits count under. Anonymous browsers are
    /// counted per client address, so that one cannot starve the rest.
    pub(crate) fn limit_key(&self) -> String {
        match &self.who {
            Who::Home(name) => format!("home:{name}"),
            Who::Browser(identity) if identity.is_anonymous() => match self.client_ip {
                Some(ip) => format!("ip:{}", address_key(ip)),
                None => "anonymous".to_owned(),
            },
            Who::Browser(identity) => format!("user:{}", identity.subject()),
        }
    }

    /// For logs: the home's name or the browser identity's tag.
    pub(crate) fn log_tag(&self) -> String {
        match &self.who {
            Who::Home(name) => format!("home:{name}"),
            Who::Browser(identity) => identity.log_tag(),
        }
    }
}

/// A bearer token that matches a home is that home; anything else is a
/// browser, authenticated by the configured [`BrowserAuth`](crate::BrowserAuth).
impl FromRequestParts<Arc<Shared>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<Shared>) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        let client_ip =
            peer.map(|peer| client_ip(peer.ip(), &parts.headers, &shared.config.trusted_proxies));
        if let Some(home) = bearer_token(&parts.headers).and_then(|token| shared.homes.find(token))
        {
            return Ok(Self {
                who: Who::Home(home),
                client_ip,
            });
        }
        let request = BrowserRequest::new(&parts.headers, &parts.extensions, peer, client_ip);
        match shared.config.browser_auth.authenticate(&request) {
            Ok(identity) => Ok(Self {
                who: Who::Browser(identity),
                client_ip,
            }),
            Err(rejection) => {
                shared
                    .metrics
                    .auth_rejections
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(client = ?client_ip, reason = rejection.message(), "request refused: not authenticated");
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    rejection.message().to_owned(),
                ))
            }
        }
    }
}
