//! Who is calling: home peers by bearer token, browsers by a pluggable
//! [`BrowserAuth`].
//!
//! A request whose `Authorization: Bearer` token matches a configured home
//! is that home peer. Every other request is a browser and is handed to the
//! server's [`BrowserAuth`], which either names its [`Identity`] or rejects
//! it (401). Three implementations ship with the crate — [`OpenAuth`],
//! [`JwtAuth`](crate::JwtAuth) and [`ProxyHeaderAuth`] — and [`ExtensionAuth`] lets an
//! embedding server reuse the identity its own middleware already found.

use std::{
    borrow::Cow,
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use http::{header, Extensions, HeaderMap, HeaderName};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::net::{is_trusted, IpNet};

/// The browser-side principal a session belongs to.
///
/// Sessions remember the subject of the identity that created them; only a
/// request with the same subject (or the session's home) may use them.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    subject: String,
    homes: Option<Vec<String>>,
}

impl Identity {
    /// An authenticated principal, e.g. a JWT `sub`. An empty subject is the
    /// [anonymous](Identity::anonymous) identity.
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            homes: None,
        }
    }

    /// The identity of every browser under [`OpenAuth`]: all anonymous
    /// callers share it, so the unguessable session id is what keeps one
    /// browser out of another's session. Per-identity limits then apply per
    /// client address instead.
    pub fn anonymous() -> Self {
        Self::new("")
    }

    /// Restricts the homes this identity may open sessions with (by name).
    /// Without it, every configured home is allowed.
    pub fn with_homes<I, S>(mut self, homes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.homes = Some(homes.into_iter().map(Into::into).collect());
        self
    }

    /// The subject, empty for the anonymous identity.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Whether this is the shared anonymous identity.
    pub fn is_anonymous(&self) -> bool {
        self.subject.is_empty()
    }

    /// Whether this identity may open a session with `home`.
    pub fn may_use_home(&self, home: &str) -> bool {
        self.homes
            .as_ref()
            .is_none_or(|homes| homes.iter().any(|h| h == home))
    }

    /// A short, stable, non-reversible tag for logs, so that log lines of
    /// one user can be correlated without writing the user's name down.
    pub fn log_tag(&self) -> String {
        if self.is_anonymous() {
            return "anonymous".to_owned();
        }
        let digest = Sha256::digest(self.subject.as_bytes());
        crate::turn::hex(&digest[..6])
    }
}

/// Subjects are personal data: debug output shows the log tag only.
impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("tag", &self.log_tag())
            .field("homes", &self.homes)
            .finish()
    }
}

/// What a [`BrowserAuth`] may look at.
#[derive(Debug)]
pub struct BrowserRequest<'a> {
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
    peer: Option<SocketAddr>,
    client_ip: Option<IpAddr>,
}

impl<'a> BrowserRequest<'a> {
    /// A request view; `peer` is the TCP peer, `client_ip` the client behind
    /// any trusted proxies.
    pub fn new(
        headers: &'a HeaderMap,
        extensions: &'a Extensions,
        peer: Option<SocketAddr>,
        client_ip: Option<IpAddr>,
    ) -> Self {
        Self {
            headers,
            extensions,
            peer,
            client_ip,
        }
    }

    /// The request headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The request extensions (where an embedder's middleware may have put
    /// its user).
    pub fn extensions(&self) -> &'a Extensions {
        self.extensions
    }

    /// The TCP peer, when the server was started with connect info
    /// (`into_make_service_with_connect_info::<SocketAddr>()`).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The client address behind trusted proxies, when the peer is known.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    /// The token of an `Authorization: Bearer` header, if there is one.
    pub fn bearer(&self) -> Option<&'a str> {
        bearer_token(self.headers).and_then(|token| std::str::from_utf8(token).ok())
    }

    /// The value of cookie `name`, if the request carries it.
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.trim_matches('"'))
    }
}

/// A browser request was not authenticated; answered with 401.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AuthRejection {
    message: Cow<'static, str>,
}

impl AuthRejection {
    /// A rejection with a message safe to show to the caller.
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message shown to the caller.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Decides who a browser request comes from.
///
/// Implement it to plug in an embedding server's own authentication; the
/// check runs before the request body is read.
pub trait BrowserAuth: Send + Sync + fmt::Debug + 'static {
    /// The identity behind `request`, or why it is refused (401).
    fn authenticate(&self, request: &BrowserRequest<'_>) -> Result<Identity, AuthRejection>;

    /// A short name for logs (`open`, `jwt`, ...).
    fn mode(&self) -> &'static str {
        "custom"
    }
}

/// No authentication: every browser is [`Identity::anonymous`].
///
/// For development, or behind access control of the operator's own. A
/// bearer token that matches no home is still refused, so that a home peer
/// with a wrong token learns it at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAuth;

impl BrowserAuth for OpenAuth {
    fn authenticate(&self, request: &BrowserRequest<'_>) -> Result<Identity, AuthRejection> {
        if bearer_token(request.headers).is_some() {
            return Err(AuthRejection::new("invalid bearer token"));
        }
        Ok(Identity::anonymous())
    }

    fn mode(&self) -> &'static str {
        "open"
    }
}

/// Trusts an identity header set by a fronting proxy (e.g. an OAuth proxy's
/// `X-Forwarded-User`), but only on connections from trusted proxy
/// addresses; anyone else is refused.
///
/// Needs the peer address: serve the router with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
#[derive(Debug, Clone)]
pub struct ProxyHeaderAuth {
    header: HeaderName,
    trusted: Arc<[IpNet]>,
}

/// Longest identity value accepted from a proxy header.
const MAX_PROXY_IDENTITY: usize = 512;

impl ProxyHeaderAuth {
    /// Takes the identity from `header` on connections from `trusted`.
    pub fn new(header: HeaderName, trusted: Vec<IpNet>) -> Self {
        Self {
            header,
            trusted: trusted.into(),
        }
    }
}

impl BrowserAuth for ProxyHeaderAuth {
    fn authenticate(&self, request: &BrowserRequest<'_>) -> Result<Identity, AuthRejection> {
        let from_proxy = request
            .peer
            .is_some_and(|peer| is_trusted(&self.trusted, peer.ip()));
        if !from_proxy {
            return Err(AuthRejection::new(
                "authentication required: requests must come through the trusted proxy",
            ));
        }
        let value = request
            .headers
            .get(&self.header)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty() && value.len() <= MAX_PROXY_IDENTITY)
            .ok_or_else(|| {
                AuthRejection::new("authentication required: the proxy sent no user identity")
            })?;
        Ok(Identity::new(value))
    }

    fn mode(&self) -> &'static str {
        "proxy-header"
    }
}

/// Uses the [`Identity`] an embedding server's middleware inserted into the
/// request extensions; requests without one are refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtensionAuth;

impl BrowserAuth for ExtensionAuth {
    fn authenticate(&self, request: &BrowserRequest<'_>) -> Result<Identity, AuthRejection> {
        request
            .extensions
            .get::<Identity>()
            .cloned()
            .ok_or_else(|| AuthRejection::new("authentication required"))
    }

    fn mode(&self) -> &'static str {
        "extension"
    }
}

/// A named home peer and its bearer token.
#[derive(Clone)]
pub struct HomeCredential {
    /// The home's name, as browsers address it (`{"home": "name"}`).
    pub name: String,
    /// Its bearer token.
    pub token: String,
}

impl HomeCredential {
    /// Home `name` authenticated by `token`.
    pub fn new(name: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            token: token.into(),
        }
    }
}

impl fmt::Debug for HomeCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HomeCredential")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The configured homes, matched against presented bearer tokens.
///
/// Tokens are kept as SHA-256 digests and compared in constant time against
/// every home, so neither the timing nor an early exit tells how much of a
/// token, or which home, came close.
pub(crate) struct HomeTokens {
    homes: Vec<(Arc<str>, [u8; 32])>,
}

impl HomeTokens {
    pub(crate) fn new(homes: &[HomeCredential]) -> Self {
        Self {
            homes: homes
                .iter()
                .map(|home| (Arc::from(home.name.as_str()), digest(home.token.as_bytes())))
                .collect(),
        }
    }

    /// The home whose token is `presented`.
    pub(crate) fn find(&self, presented: &[u8]) -> Option<Arc<str>> {
        let presented = digest(presented);
        let mut found = None;
        for (name, token) in &self.homes {
            if bool::from(token.ct_eq(&presented)) {
                found = Some(name.clone());
            }
        }
        found
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.homes.iter().map(|(name, _)| name)
    }
}

impl fmt::Debug for HomeTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The raw token of an `Authorization: Bearer` header (scheme matched
/// case-insensitively, surrounding spaces ignored).
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    const SCHEME: &[u8] = b"bearer ";
    if value.len() < SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    Some(value[SCHEME.len()..].trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn request_with<'a>(headers: &'a HeaderMap, extensions: &'a Extensions) -> BrowserRequest<'a> {
        BrowserRequest::new(headers, extensions, None, None)
    }

    #[test]
    fn home_tokens_find_the_matching_home_only() {
        let tokens = HomeTokens::new(&[
            HomeCredential::new("kitchen", "tok-a"),
            HomeCredential::new("attic", "tok-b"),
        ]);
        assert_eq!(tokens.find(b"tok-b").as_deref(), Some("attic"));
        assert_eq!(tokens.find(b"tok-a").as_deref(), Some("kitchen"));
        assert!(tokens.find(b"tok-").is_none());
        assert!(tokens.find(b"").is_none());
    }

    #[test]
    fn bearer_and_cookie_are_read() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; beeline_jwt=\"xyz\"; b=2"),
        );
        let extensions = Extensions::new();
        let request = request_with(&headers, &extensions);
        assert_eq!(request.bearer(), Some("abc"));
        assert_eq!(request.cookie("beeline_jwt"), Some("xyz"));
        assert_eq!(request.cookie("missing"), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(request_with(&headers, &extensions).bearer(), None);
    }

    #[test]
    fn open_auth_refuses_unknown_bearers_only() {
        let mut headers = HeaderMap::new();
        let extensions = Extensions::new();
        assert!(OpenAuth
            .authenticate(&request_with(&headers, &extensions))
            .unwrap()
            .is_anonymous());
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dTpw"),
        );
        assert!(OpenAuth
            .authenticate(&request_with(&headers, &extensions))
            .is_ok());
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(OpenAuth
            .authenticate(&request_with(&headers, &extensions))
            .is_err());
    }

    #[test]
    fn identity_homes_and_log_tag() {
        let alice = Identity::new("alice@example.com").with_homes(["kitchen"]);
        assert!(alice.may_use_home("kitchen"));
        assert!(!alice.may_use_home("attic"));
        assert!(Identity::new("bob").may_use_home("attic"));
        let tag = alice.log_tag();
        assert_eq!(tag.len(), 12);
        assert!(!format!("{alice:?}").contains("alice"));
        assert_eq!(Identity::anonymous().log_tag(), "anonymous");
    }
}
