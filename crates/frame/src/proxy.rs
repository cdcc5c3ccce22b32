//! Reverse-proxy rules shared by every path into the home service: the
//! bridge at home and signal-api's relay apply the same ones, so the home
//! service is told the same things whichever path a request took.
//!
//! - [`ClientHeaderFilter`]: headers a client may never set for the home
//!   service to believe (forwarding and identity headers), matched without
//!   regard to case so no second spelling slips through.
//! - [`normalize_path`] and [`join_prefix`]: a request path resolved on its
//!   own, so it can never climb out of an upstream's configured path prefix.

/// Headers that describe one connection, not the message (RFC 9110
/// §7.6.1): never forwarded by any hop, nor any header `connection` names.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers that tell the home service who the client is or how it reached
/// it. Only a proxy sets them; every copy a client sends is dropped.
pub const FORWARDING_HEADERS: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-original-forwarded-for",
    "x-remote-user",
    "x-remote-addr",
    "remote-user",
    "x-user",
    "x-email",
];

/// Header name prefixes dropped the same way: every `x-forwarded-*`
/// (`-for`, `-proto`, `-host`, `-port`, `-prefix`, `-user`, `-email`,
/// `-groups`, `-access-token`, ...), the identity headers of common auth
/// proxies (oauth2-proxy's `x-auth-request-*`), and beeline's own
/// `x-beeline-*`, which only beeline's hops may set.
pub const FORWARDING_PREFIXES: &[&str] = &["x-forwarded-", "x-auth-request-", "x-beeline-"];

/// Decides which request headers a client may not set: the built-in
/// [`FORWARDING_HEADERS`] and [`FORWARDING_PREFIXES`], plus identity headers
/// the operator names (for example the one an auth proxy in front of the
/// home service trusts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHeaderFilter {
    extra: Vec<String>,
}

impl ClientHeaderFilter {
    /// The built-in rules plus `extra` header names (any case).
    pub fn new<I, S>(extra: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            extra: extra
                .into_iter()
                .map(|s| s.as_ref().trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }

    /// The extra names the operator gave, lowercased.
    pub fn extra(&self) -> &[String] {
        &self.extra
    }

    /// Whether a client-sent header called `name` must be dropped.
    pub fn forbids(&self, name: &str) -> bool {
        let name = name.trim().to_ascii_lowercase();
        FORWARDING_HEADERS.contains(&name.as_str())
            || FORWARDING_PREFIXES.iter().any(|p| name.starts_with(p))
            || self.extra.contains(&name)
    }
}

/// Why a request path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path does not start with a single `/`.
    #[error("path must be an absolute path starting with one '/'")]
    NotAbsolute,
    /// The path holds a control character, a space, a backslash or `#`.
    #[error("path holds a character that is not allowed there")]
    BadCharacter,
    /// A segment is a dot segment only once percent-decoded (`%2e%2e`), or
    /// decodes to one holding a slash: servers disagree on what it means.
    #[error("path holds an encoded dot segment or slash")]
    EncodedDotSegment,
    /// `..` segments climb above the root.
    #[error("path climbs above the root")]
    AboveRoot,
}

/// Resolves the dot segments of a request target (path and optional query)
/// on its own root, as RFC 3986 §5.2.4 does, and refuses what could be read
/// differently by the server behind: a path that climbs above `/`, a dot
/// segment spelled with percent escapes, encoded slashes inside a dot
/// segment, backslashes and control characters. The query is kept as it is.
///
/// `/a/./b/../c?x=../y` becomes `/a/c?x=../y`; `/../admin` and
/// `/%2e%2e/admin` are refused.
pub fn normalize_path(target: &str) -> Result<String, PathError> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if !path.starts_with('/') || path.starts_with("//") {
        return Err(PathError::NotAbsolute);
    }
    if target
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'#' || b == b'\\')
    {
        return Err(PathError::BadCharacter);
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                if i == last {
                    out.push("");
                }
            }
            s if s.contains('%') && is_encoded_trap(s) => return Err(PathError::EncodedDotSegment),
            s => out.push(s),
        }
    }
    let mut resolved = String::with_capacity(target.len());
    resolved.push('/');
    resolved.push_str(&out.join("/"));
    if let Some(query) = query {
        resolved.push('?');
        resolved.push_str(query);
    }
    Ok(resolved)
}

/// Whether a segment with percent escapes decodes to something a server
/// might treat as a dot segment or a path separator.
fn is_encoded_trap(segment: &str) -> bool {
    let decoded = percent_decode(segment);
    decoded
        .split(['/', '\\'])
        .any(|piece| piece == "." || piece == "..")
        || decoded.contains('\\')
        || (decoded.contains('/') && decoded.contains('.'))
}

/// Percent-decodes repeatedly (a double-encoded `%252e` is a dot to a
/// server that decodes twice), up to a few rounds.
fn percent_decode(text: &str) -> String {
    let mut current = text.to_owned();
    for _ in 0..3 {
        let bytes = current.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = |b: u8| (b as char).to_digit(16);
                if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        let next = String::from_utf8_lossy(&out).into_owned();
        if next == current {
            break;
        }
        current = next;
    }
    current
}

/// Puts a normalized request target under an upstream's path prefix:
/// `join_prefix("/api/", "/v1/x?y")` is `/api/v1/x?y`. A prefix of `""` or
/// `/` leaves the target alone.
pub fn join_prefix(prefix: &str, normalized: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    format!("{prefix}{normalized}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_resolve_within_the_root() {
        for (input, want) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/b/../../c?x=../../y", "/c?x=../../y"),
            ("/v1/chat?q=%2e%2e", "/v1/chat?q=%2e%2e"),
            ("/files/a%20b", "/files/a%20b"),
            ("/group%2Fproject", "/group%2Fproject"),
            ("/a..b/c", "/a..b/c"),
        ] {
            assert_eq!(normalize_path(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn escapes_are_refused() {
        for (input, want) in [
            ("/../admin", PathError::AboveRoot),
            ("/a/../../admin", PathError::AboveRoot),
            ("/%2e%2e/admin", PathError::EncodedDotSegment),
            ("/%2E%2E/admin", PathError::EncodedDotSegment),
            ("/.%2e/admin", PathError::EncodedDotSegment),
            ("/%2e/admin", PathError::EncodedDotSegment),
            ("/%252e%252e/admin", PathError::EncodedDotSegment),
            ("/x%2f..%2fadmin", PathError::EncodedDotSegment),
            ("/x%5cadmin", PathError::EncodedDotSegment),
            ("/..\\admin", PathError::BadCharacter),
            ("//evil.example/x", PathError::NotAbsolute),
            ("admin", PathError::NotAbsolute),
            ("/x\r\nHost: evil", PathError::BadCharacter),
            ("/x#frag", PathError::BadCharacter),
        ] {
            assert_eq!(normalize_path(input), Err(want), "{input}");
        }
    }

    proptest::proptest! {
        /// Whatever a client sends: refused, or a stable absolute path with
        /// no dot segment, that stays under any prefix.
        #[test]
        fn normalized_paths_stay_put(target in "(/|[a-z]|\\.|%|2|e|E|f|5|c|\\?|#| |\\\\){0,24}") {
            if let Ok(path) = normalize_path(&target) {
                proptest::prop_assert!(path.starts_with('/') && !path.starts_with("//"));
                proptest::prop_assert_eq!(normalize_path(&path), Ok(path.clone()));
                let only_path = path.split('?').next().unwrap_or_default();
                proptest::prop_assert!(!only_path.split('/').any(|s| s == ".." || s == "."));
                proptest::prop_assert!(join_prefix("/api/", &path).starts_with("/api/"));
            }
        }
    }

    #[test]
    fn prefix_join() {
        assert_eq!(join_prefix("/api/", "/v1/x?y=1"), "/api/v1/x?y=1");
        assert_eq!(join_prefix("/api", "/"), "/api/");
        assert_eq!(join_prefix("/", "/x"), "/x");
        assert_eq!(join_prefix("", "/x"), "/x");
    }

    #[test]
    fn every_spelling_of_a_forwarding_header_is_forbidden() {
        let filter = ClientHeaderFilter::new(["X-Auth-Token", " remote-email "]);
        for name in [
            "X-Forwarded-For",
            "x-forwarded-proto",
            "X-FORWARDED-PROTO",
            "X-Forwarded-Host",
            "X-Forwarded-User",
            "x-forwarded-email",
            "Forwarded",
            "FORWARDED",
            "X-Real-IP",
            "x-real-ip",
            "X-Auth-Request-User",
            "x-auth-token",
            "Remote-Email",
            "x-beeline-user",
        ] {
            assert!(filter.forbids(name), "{name}");
        }
        for name in ["content-type", "authorization", "cookie", "x-request-id"] {
            assert!(!filter.forbids(name), "{name}");
        }
    }
}
