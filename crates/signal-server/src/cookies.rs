//! Sealed cookie jars (`docs/cookies.md`): what signal-api does so that a
//! cookie-authenticated home app behaves the same on the data channel as on
//! the normal path. The sealing itself is `beeline_seal`; this module holds
//! the per-home keys and the two exchanges:
//!
//! - at `POST {base}/session`, the browser's `Cookie` header becomes the
//!   session's first sealed jar;
//! - at `POST {base}/cookie`, `Set-Cookie` lines the home peer sealed are
//!   opened and answered as real `Set-Cookie` headers, with the jar as it
//!   stands after them (or, with nothing to open, the jar as the browser's
//!   cookies stand now).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use beeline_seal::{apply_set_cookies, CookieKey, SealError};
use http::HeaderMap;

use crate::auth::HomeCredential;

/// How old sealed `Set-Cookie` lines may be when the page hands them in: it
/// does so right after the response head arrives.
pub(crate) const SET_COOKIE_MAX_AGE_SECS: u64 = 120;

/// One key per home, derived from its token.
#[derive(Debug, Default)]
pub(crate) struct CookieKeys(HashMap<Arc<str>, CookieKey>);

impl CookieKeys {
    pub(crate) fn new(homes: &[HomeCredential]) -> Self {
        Self(per_home(homes, CookieKey::from_home_token))
    }

    pub(crate) fn get(&self, home: &str) -> Option<&CookieKey> {
        self.0.get(home)
    }
}

/// A key per home, derived from its token by `derive`.
pub(crate) fn per_home<K>(homes: &[HomeCredential], derive: fn(&str) -> K) -> HashMap<Arc<str>, K> {
    homes
        .iter()
        .map(|h| (Arc::from(h.name.as_str()), derive(&h.token)))
        .collect()
}

/// Every `Cookie` header of a request, joined as one.
pub(crate) fn cookie_header(headers: &HeaderMap) -> String {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `Set-Cookie` lines to answer with and the jar after them.
pub(crate) fn exchange(
    key: &CookieKey,
    session: &str,
    browser_cookies: &str,
    sealed_set_cookie: Option<&str>,
) -> Result<(Vec<String>, String), SealError> {
    let now = now_secs();
    let lines = match sealed_set_cookie {
        Some(sealed) => key.open_set_cookies(session, sealed, now, SET_COOKIE_MAX_AGE_SECS)?,
        None => Vec::new(),
    };
    let jar = key.seal_jar(session, &apply_set_cookies(browser_cookies, &lines), now);
    Ok((lines, jar))
}
