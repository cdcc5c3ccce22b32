// Constants and small helpers every module shares.


/** Highest version of the channel protocol this client speaks. */
export const PROTOCOL_VERSION = 2;

/** The protocol features this client asks for in `hello`. */
export const FEATURES = Object.freeze(['binary', 'cancel', 'credit', 'websocket']);

/** The feature that carries sealed cookie jars (docs/cookies.md); asked for only with a jar. */
export const COOKIES_FEATURE = 'cookies';

export const DEFAULT_SIGNAL_BASE = '/webrtc';
export const DEFAULT_BUDGET_MS = 8000;
export const DEFAULT_NEGOTIATE_MS = 2000;
// How long a v2 request waits for its response head before it fails with a
// TimeoutError (createClient's `headTimeoutMs`; 0 waits for ever). Long
// enough for a non-streamed LLM completion; the home peer's own upstream
// idle limit is 300 s.
export const DEFAULT_HEAD_TIMEOUT_MS = 120_000;
// Per-stream window granted to the home for response bodies (hello.window).
export const DEFAULT_WINDOW = 256 * 1024;
// What to assume when the browser does not say how large a message may be.
export const DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024;
// Chrome's own receive limit, used when the remote allows "any size".
export const UNLIMITED_MAX_MESSAGE_SIZE = 256 * 1024;
// Chrome closes a data channel whose send buffer passes 16 MB; uploads pause
// above the high mark and resume when `bufferedamountlow` fires.
export const BUFFERED_HIGH = 2 * 1024 * 1024;
export const BUFFERED_LOW = 512 * 1024;
export const DATA_CHANNEL_LABEL = 'http';
/** The label of a resumable session's data channel (docs/protocol.md §4.8). */
export const RESUME_CHANNEL_LABEL = 'resume';
/** The request header naming the page's session on the normal path (so a server with several homes knows whose it is). */
export const SESSION_HEADER = 'x-beeline-session';
export const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD']);
// Methods whose requests cannot have a body (the Request constructor refuses one).
export const NO_BODY_METHODS = new Set(['GET', 'HEAD']);
// Methods sent with `content-length: 0` when their body is empty, as browsers do.
export const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH']);
// Statuses whose responses have no body.
export const NULL_BODY_STATUSES = new Set([204, 205, 304]);
// Stream errors that mean the request never reached the upstream, so an
// idempotent request may be repeated over the normal path.
export const RETRYABLE_ERRORS = new Set(['too_many_streams', 'shutting_down']);
// Sealed cookie jars (docs/cookies.md): the request header that carries the
// jar, the response header with sealed Set-Cookie lines, and the relay's
// mark on a normal-path response that set cookies.
export const JAR_HEADER = 'x-beeline-jar';
// The query parameter a relayed WebSocket names its session with (signal-api
// removes it), so it reaches the home the session belongs to.
export const SESSION_PARAM = '__beeline_session';
export const SET_COOKIE_HEADER = 'x-beeline-set-cookie';
export const COOKIES_CHANGED_HEADER = 'x-beeline-cookies-changed';
// The same mark as a Server-Timing metric name: unlike a header, it reaches
// this client for requests it never sees (the page's own fetch, XHR), through
// the resource timing entries a PerformanceObserver gets.
export const COOKIES_CHANGED_TIMING = 'beeline-cookies-changed';
// A jar older than this is refreshed before the next channel request (the
// home peer refuses jars older than 12 h).
export const JAR_REFRESH_MS = 6 * 60 * 60 * 1000;
// After a failed refresh, requests use the jar they have for this long
// before the client tries again.
export const JAR_RETRY_MS = 10_000;
// How long a jar exchange or refresh may take: requests on the channel wait
// for it, and must not hang on a signal-api that does not answer.
export const JAR_TIMEOUT_MS = 10_000;

/** The page's `document.cookie`, or undefined outside a document. */
export function documentCookie() {
  try {
    const cookie = globalThis.document?.cookie;
    return typeof cookie === 'string' ? cookie : undefined;
  } catch {
    // A sandboxed document may refuse to tell.
    return undefined;
  }
}

export function debug(...args) {
  if (typeof console !== 'undefined' && console.debug) console.debug('beeline:', ...args);
}

export const DEFAULT_MAX_WS_MESSAGE = 16 * 1024 * 1024;

/** The channel refused a message, so nothing was sent: the request may take the normal path. */
export class ChannelSendError extends Error {
  name = 'ChannelSendError';
}
