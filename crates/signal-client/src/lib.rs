//! Long-poll client for beeline's signaling endpoints.
//!
//! [`SignalClient`] speaks the HTTP contract served by `beeline-signal-server`
//! under a base URL such as `http://127.0.0.1:8080/webrtc`:
//!
//! - [`SignalClient::create_session`] / [`SignalClient::create_session_with`]:
//!   `POST {base}/session` (browser side only);
//! - [`SignalClient::post`]: `POST {base}/signal`, answered with the message's `seq`;
//! - [`SignalClient::poll`]: `GET {base}/signal?session_id=..&after=..`, which the
//!   server holds for up to ten seconds until a message from the *other* side
//!   arrives;
//! - [`SignalClient::report`]: `POST {base}/report`, a browser's connection
//!   outcome.
//!
//! A client built with [`SignalClient::with_bearer`] and a home's token acts
//! as that home peer; otherwise it acts as a browser, authenticated by
//! whatever the server's browser auth expects: a JWT as bearer
//! ([`SignalClient::with_bearer`]), a cookie ([`SignalClient::with_cookie`])
//! or any other header ([`SignalClient::with_header`]). The client never retries: every
//! failure is returned as a [`SignalError`] and the caller chooses the backoff.
//! Messages of a type this crate does not know are skipped by [`SignalClient::poll`]
//! (their `seq` still advances the returned cursor), so a newer server cannot
//! break an older peer.

mod roots;

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};

pub use roots::{RootsError, TrustedRoots};

/// How long one request may take in total. It must exceed the server's
/// long-poll hold (10 s by default) so that an idle poll is answered by the
/// server rather than cut by the client.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long establishing a TCP/TLS connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors returned by [`SignalClient`] operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// The base URL given to [`SignalClient::new`] is not an absolute http(s) URL.
    #[error("invalid signaling base URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The server answered with a non-success status.
    #[error("signaling server answered {status}: {message}")]
    Http {
        /// The HTTP status code.
        status: u16,
        /// The server's `error` message, or the raw body if it was not JSON.
        message: String,
    },
    /// The request could not be sent or its response could not be read.
    #[error("could not reach the signaling server")]
    Transport(#[source] reqwest::Error),
    /// The server's success response was not the expected JSON.
    #[error("could not decode the signaling server's response")]
    Decode(#[source] serde_json::Error),
    /// A header given to [`SignalClient::with_header`] is not valid HTTP.
    #[error("invalid header {name:?}")]
    InvalidHeader {
        /// The header name as given.
        name: String,
    },
}

/// The kind of a signaling message (serialized as the `type` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SignalKind {
    /// An SDP offer (browser to home).
    Offer,
    /// An SDP answer (home to browser).
    Answer,
    /// A trickled ICE candidate; `null` candidate means end of candidates.
    Candidate,
    /// The sender is leaving the session.
    Bye,
}

/// One signaling message, as posted and as returned by a poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalMessage {
    /// The session this message belongs to.
    pub session_id: String,
    /// What the message carries.
    #[serde(rename = "type")]
    pub kind: SignalKind,
    /// The SDP of an offer or answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp: Option<String>,
    /// The ICE candidate (an `RTCIceCandidateInit`-shaped object) of a
    /// candidate message; `Some(Value::Null)` posts an explicit `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<serde_json::Value>,
    /// The server-assigned sequence number; set on polled messages, ignored
    /// by the server on posted ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

impl SignalMessage {
    fn new(session_id: impl Into<String>, kind: SignalKind) -> Self {
        Self {
            session_id: session_id.into(),
            kind,
            sdp: None,
            candidate: None,
            seq: None,
        }
    }

    /// An offer carrying `sdp`.
    pub fn offer(session_id: impl Into<String>, sdp: impl Into<String>) -> Self {
        Self {
            sdp: Some(sdp.into()),
            ..Self::new(session_id, SignalKind::Offer)
        }
    }

    /// An answer carrying `sdp`.
    pub fn answer(session_id: impl Into<String>, sdp: impl Into<String>) -> Self {
        Self {
            sdp: Some(sdp.into()),
            ..Self::new(session_id, SignalKind::Answer)
        }
    }

    /// A trickled ICE candidate (`serde_json::Value::Null` for end of candidates).
    pub fn candidate(session_id: impl Into<String>, candidate: serde_json::Value) -> Self {
        Self {
            candidate: Some(candidate),
            ..Self::new(session_id, SignalKind::Candidate)
        }
    }

    /// A goodbye: the sender leaves the session.
    pub fn bye(session_id: impl Into<String>) -> Self {
        Self::new(session_id, SignalKind::Bye)
    }
}

/// A STUN or TURN server, shaped like the browser's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:` / `turn:` / `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username (absent for STUN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential (absent for STUN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A freshly created session, as returned by [`SignalClient::create_session`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The unguessable session id.
    pub session_id: String,
    /// The home the session is addressed to (absent from older servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    /// ICE servers to hand to the peer connection.
    pub ice_servers: Vec<IceServer>,
    /// How many seconds the TURN credentials stay valid.
    pub ttl: u64,
    /// The browser's cookies sealed for the home peer, when the server
    /// keeps cookie jars (`docs/cookies.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_jar: Option<String>,
    /// The home takes a resumable frame connection for this session
    /// (`GET {base}/frames`, `docs/protocol.md` §4.8).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resume: bool,
}

/// How a browser's connection attempt ended, for [`SignalClient::report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ConnectionOutcome {
    /// The data channel opened on a direct path.
    Direct,
    /// The data channel opened through a TURN relay.
    RelayCandidate,
    /// No channel; requests use the normal path.
    Fallback,
}

/// A browser's once-per-page-load outcome report (`POST {base}/report`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionReport {
    /// How setup ended.
    pub outcome: ConnectionOutcome,
    /// For a fallback: `timeout`, `disabled`, `unsupported`, `signaling`,
    /// `ice-failed`, `bye`, `closed` or `other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Free text for the log (the server keeps 200 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Milliseconds from the start of setup to its outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_ms: Option<f64>,
    /// The session, if one was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// The answer to one [`SignalClient::poll`].
#[derive(Debug, Clone, PartialEq)]
pub struct Poll {
    /// Messages from the other side, oldest first (unknown kinds skipped).
    pub messages: Vec<SignalMessage>,
    /// The `after` value for the next poll.
    pub cursor: u64,
}

/// The wire shape of a poll answer; messages are decoded one by one so that
/// an unknown kind skips that message instead of failing the poll.
#[derive(Deserialize)]
struct RawPoll {
    messages: Vec<serde_json::Value>,
    cursor: u64,
}

impl RawPoll {
    fn into_poll(self) -> Poll {
        let messages = self
            .messages
            .into_iter()
            .filter_map(|value| match serde_json::from_value::<SignalMessage>(value) {
                Ok(msg) => Some(msg),
                Err(error) => {
                    tracing::debug!(%error, "skipping a signaling message this client cannot read");
                    None
                }
            })
            .collect();
        Poll {
            messages,
            cursor: self.cursor,
        }
    }
}

#[derive(Deserialize)]
struct PostAck {
    seq: u64,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// The WebSocket URL of `endpoint` under the signaling base URL
/// `signal_url`: `http://h/webrtc` and `link` give `ws://h/webrtc/link`,
/// `https://` gives `wss://`. `None` when `signal_url` is neither
/// `http://` nor `https://`.
pub fn websocket_url(signal_url: &str, endpoint: &str) -> Option<String> {
    let base = signal_url.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("https://") {
        Some(format!("wss://{rest}/{endpoint}"))
    } else {
        base.strip_prefix("http://")
            .map(|rest| format!("ws://{rest}/{endpoint}"))
    }
}

/// A cheap-to-clone client for one signaling base URL.
#[derive(Debug, Clone)]
pub struct SignalClient {
    http: reqwest::Client,
    session_url: Url,
    signal_url: Url,
    report_url: Url,
    bearer: Option<String>,
    headers: reqwest::header::HeaderMap,
}

/// The HTTP client every request goes through.
fn http_client(roots: &TrustedRoots) -> Result<reqwest::Client, SignalError> {
    roots
        .add_to_reqwest(reqwest::Client::builder())
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(SignalError::Transport)
}

impl SignalClient {
    /// A client for `base_url`, e.g. `http://127.0.0.1:8080/webrtc`.
    pub fn new(base_url: &str) -> Result<Self, SignalError> {
        let invalid = |reason: &str| SignalError::InvalidUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let base = Url::parse(base_url).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("scheme must be http or https"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("must not have a query or fragment"));
        }
        let trimmed = base.as_str().trim_end_matches('/').to_owned();
        let join = |leaf: &str| {
            Url::parse(&format!("{trimmed}/{leaf}")).map_err(|e| invalid(&e.to_string()))
        };
        Ok(Self {
            http: http_client(&TrustedRoots::default())?,
            session_url: join("session")?,
            signal_url: join("signal")?,
            report_url: join("report")?,
            bearer: None,
            headers: reqwest::header::HeaderMap::new(),
        })
    }

    /// Trusts `roots` too for an `https://` base URL, besides the public
    /// roots (a signal-api behind a proxy with a private CA's certificate).
    pub fn with_roots(mut self, roots: &TrustedRoots) -> Result<Self, SignalError> {
        self.http = http_client(roots)?;
        Ok(self)
    }

    /// Sends `Authorization: Bearer <token>` with every request: a home's
    /// token makes this client that home peer; a browser JWT authenticates a
    /// browser.
    pub fn with_bearer(mut self, token: impl Into<String>) -> Self {
        self.bearer = Some(token.into());
        self
    }

    /// Sends header `name: value` with every request (e.g. an identity
    /// header in a test of proxy-header auth).
    pub fn with_header(mut self, name: &str, value: &str) -> Result<Self, SignalError> {
        use reqwest::header::{HeaderName, HeaderValue};
        let invalid = || SignalError::InvalidHeader {
            name: name.to_owned(),
        };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let value = HeaderValue::from_str(value).map_err(|_| invalid())?;
        self.headers.append(name, value);
        Ok(self)
    }

    /// Sends cookie `name=value` with every request, as a browser would
    /// send a session cookie.
    pub fn with_cookie(self, name: &str, value: &str) -> Result<Self, SignalError> {
        self.with_header("cookie", &format!("{name}={value}"))
    }

    /// Creates a browser session with the server's default home
    /// (`POST {base}/session` with `{}`).
    pub async fn create_session(&self) -> Result<SessionInfo, SignalError> {
        self.create_session_body("{}".to_owned()).await
    }

    /// Creates a browser session with the home named `home`.
    pub async fn create_session_with(&self, home: &str) -> Result<SessionInfo, SignalError> {
        let body = serde_json::json!({ "home": home }).to_string();
        self.create_session_body(body).await
    }

    async fn create_session_body(&self, body: String) -> Result<SessionInfo, SignalError> {
        let request = self
            .request(Method::POST, self.session_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(request).await
    }

    /// Reports how this page load's connection attempt ended
    /// (`POST {base}/report`).
    pub async fn report(&self, report: &ConnectionReport) -> Result<(), SignalError> {
        let body = serde_json::to_vec(report).map_err(SignalError::Decode)?;
        let request = self
            .request(Method::POST, self.report_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let response = request.send().await.map_err(SignalError::Transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.bytes().await.map_err(SignalError::Transport)?;
        Err(http_error(status, &body))
    }

    /// Posts one message (`POST {base}/signal`) and returns its `seq`.
    pub async fn post(&self, msg: &SignalMessage) -> Result<u64, SignalError> {
        let body = serde_json::to_vec(msg).map_err(SignalError::Decode)?;
        let request = self
            .request(Method::POST, self.signal_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let ack: PostAck = self.send(request).await?;
        Ok(ack.seq)
    }

    /// Long-polls for messages from the other side with `seq > after`
    /// (`GET {base}/signal`).
    ///
    /// The browser side must pass its `session_id`; the home side may pass
    /// `None` to receive browser messages of every session addressed to it.
    /// Returns an empty [`Poll`] with `cursor == after` when the server's hold
    /// expires with nothing new.
    pub async fn poll(&self, session_id: Option<&str>, after: u64) -> Result<Poll, SignalError> {
        let mut url = self.signal_url.clone();
        {
            let mut query = url.query_pairs_mut();
            if let Some(id) = session_id {
                query.append_pair("session_id", id);
            }
            query.append_pair("after", &after.to_string());
        }
        let raw: RawPoll = self.send(self.request(Method::GET, url)).await?;
        Ok(raw.into_poll())
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url).headers(self.headers.clone());
        match &self.bearer {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, SignalError> {
        let response = request.send().await.map_err(SignalError::Transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(SignalError::Transport)?;
        if !status.is_success() {
            return Err(http_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(SignalError::Decode)
    }
}

fn http_error(status: StatusCode, body: &[u8]) -> SignalError {
    let message = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => parsed.error,
        Err(_) => String::from_utf8_lossy(body).chars().take(512).collect(),
    };
    SignalError::Http {
        status: status.as_u16(),
        message,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn websocket_urls_follow_the_scheme() {
        assert_eq!(
            super::websocket_url("http://h:1/webrtc/", "link").as_deref(),
            Some("ws://h:1/webrtc/link")
        );
        assert_eq!(
            super::websocket_url("https://h/webrtc", "frames").as_deref(),
            Some("wss://h/webrtc/frames")
        );
        assert_eq!(super::websocket_url("ftp://h/webrtc", "link"), None);
    }

    use super::*;

    #[test]
    fn message_serializes_with_type_field_and_omits_absent_parts() {
        let json = serde_json::to_value(SignalMessage::offer("abc", "v=0")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"session_id": "abc", "type": "offer", "sdp": "v=0"})
        );
        let json =
            serde_json::to_value(SignalMessage::candidate("abc", serde_json::Value::Null)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"session_id": "abc", "type": "candidate", "candidate": null})
        );
    }

    #[test]
    fn poll_skips_unknown_kinds_but_keeps_the_rest() {
        let raw: RawPoll = serde_json::from_value(serde_json::json!({
            "messages": [
                {"session_id": "a", "type": "renegotiate", "seq": 3},
                {"session_id": "a", "type": "answer", "sdp": "v=0", "seq": 4}
            ],
            "cursor": 4
        }))
        .unwrap();
        let poll = raw.into_poll();
        assert_eq!(poll.cursor, 4);
        assert_eq!(poll.messages.len(), 1);
        assert_eq!(poll.messages[0].kind, SignalKind::Answer);
        assert_eq!(poll.messages[0].seq, Some(4));
    }

    #[test]
    fn base_url_is_validated_and_joined() {
        let client = SignalClient::new("http://127.0.0.1:8080/jarvis-api/webrtc/").unwrap();
        assert_eq!(
            client.signal_url.as_str(),
            "http://127.0.0.1:8080/jarvis-api/webrtc/signal"
        );
        assert!(matches!(
            SignalClient::new("ftp://example.invalid/webrtc"),
            Err(SignalError::InvalidUrl { .. })
        ));
        assert!(matches!(
            SignalClient::new("not a url"),
            Err(SignalError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn report_serializes_in_the_server_shape() {
        let report = ConnectionReport {
            outcome: ConnectionOutcome::RelayCandidate,
            reason: None,
            detail: None,
            setup_ms: Some(412.0),
            session_id: Some("abc".into()),
        };
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            serde_json::json!({"outcome": "relay-candidate", "setup_ms": 412.0, "session_id": "abc"})
        );
    }

    #[test]
    fn bad_headers_are_refused() {
        let client = SignalClient::new("http://127.0.0.1:8080/webrtc").unwrap();
        assert!(matches!(
            client.clone().with_header("bad name", "x"),
            Err(SignalError::InvalidHeader { .. })
        ));
        assert!(client.with_cookie("beeline_jwt", "a.b.c").is_ok());
    }

    #[test]
    fn error_body_message_is_extracted() {
        let err = http_error(StatusCode::NOT_FOUND, br#"{"error":"unknown session"}"#);
        assert!(matches!(
            err,
            SignalError::Http { status: 404, ref message } if message == "unknown session"
        ));
    }
}
