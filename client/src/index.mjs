// beeline browser client: optional nearer paths to the home service.
//
// `createClient()` starts a WebRTC data-channel setup at page load (through the
// signaling endpoints under `signalBase`) and returns a client whose `fetch`
// sends same-origin requests over that channel once it is open. When the
// session answer offers home-peer's loopback listener (the browser runs on
// the home machine), the client probes it at once, in parallel, and prefers
// it once the probe proves it is this home's (loopback.mjs). Until then,
// after a failed or timed-out setup, after the channel closes, and for any
// cross-origin request, `fetch` is simply the normal `fetch`. WebRTC and
// loopback problems never surface to the page: they only show up as
// `console.debug` lines and as `client.path` ('loopback' | 'direct' |
// 'relay' | 'normal') staying or becoming 'normal'.
//
// The channel protocol is docs/protocol.md. When the channel opens the client
// sends `hello` (version 2, features binary/cancel/credit). If the home peer
// answers `agree` within 2 s, requests use version 2: `fetch` resolves at the
// response head with the real status and headers, request headers and bodies
// (any size) go up, bodies are binary-safe both ways, aborting sends
// `cancel`, and per-stream credit keeps a page that stops reading from
// stalling anything but its own stream. A request body whose length is known
// (everything but a ReadableStream, which streams only in browsers that
// support request streams) goes with a `content-length` the home peer holds
// it to; the client never needs `Request.prototype.body`, which Firefox does
// not have. Otherwise, and for requests made
// before `agree` arrives, the client speaks version 1 (the specification's
// format): one JSON request frame with a base64 body, `chunk`/`done` back.
//
// Cookies (docs/cookies.md): the session answer carries `cookie_jar`, the
// browser's cookies sealed for the home peer. With a jar the client also asks
// for the `cookies` feature; when it is agreed, every v2 request carries the
// jar as `x-beeline-jar`, and a response's sealed `x-beeline-set-cookie` is
// handed to `POST {signalBase}/cookie` (which sets the real cookies and
// answers the new jar) before the page gets the response. The jar is
// refreshed before the next channel request when a normal-path response seen
// by `fetch` says `x-beeline-cookies-changed: 1` (or any response of the
// page, its own fetch and XHR included, carries `Server-Timing:
// beeline-cookies-changed`, seen through resource timing), when
// `document.cookie` changed, when it is older than 6 h, or when the page
// calls `cookiesChanged()` (after cookies changed where this client cannot
// see it). v1 requests carry no cookies.
//
// ES modules with no dependencies, bundled by client/scripts/build.mjs into
// the minified module signal-api serves as `{signalBase}/client.js`. `codec`
// (the frame encoder/decoder) is exported for the golden-vector tests in
// tests/browser.

import { BeelineClient } from './client.mjs';
import { DEFAULT_BUDGET_MS, DEFAULT_HEAD_TIMEOUT_MS, DEFAULT_NEGOTIATE_MS, DEFAULT_SIGNAL_BASE, DEFAULT_WINDOW, FEATURES } from './common.mjs';
import { installIndicator } from './indicator.mjs';
import { supportsRequestStreams } from './streams.mjs';

/**
 * Creates the client and, when enabled, starts the direct-channel setup.
 *
 * @param {object} [options]
 * @param {string} [options.signalBase='/webrtc'] where the signaling endpoints live
 * @param {boolean} [options.enabled] defaults to `globalThis.__WEBRTC_ENABLED__ === true`
 * @param {number} [options.budgetMs=8000] how long setup may take before it is abandoned
 * @param {number} [options.negotiateMs=2000] how long to wait for `agree` before speaking v1
 * @param {number} [options.headTimeoutMs=120000] how long a request over the
 *   channel waits for its response head before `fetch` rejects with a
 *   TimeoutError (0: no limit)
 * @param {number} [options.window=262144] per-stream window for response bodies (v2 credit)
 * @param {string[]} [options.features] the v2 features to ask for (default: all of FEATURES)
 * @param {boolean} [options.cookies=true] carry the session's sealed cookie
 *   jar (docs/cookies.md); the `cookies` feature is asked for whenever
 *   signal-api gave a jar
 * @param {Element|string} [options.indicator] element (or selector) showing the path (installIndicator)
 * @param {typeof fetch} [options.fallbackFetch] the normal path (default: global fetch)
 * @param {typeof fetch} [options.signalFetch] used for signaling (default: global fetch)
 * @param {string} [options.baseUrl] what relative URLs resolve against and what
 *   counts as same-origin (default: `location.href`)
 * @param {typeof RTCPeerConnection} [options.RTCPeerConnection] for tests
 * @param {typeof WebSocket} [options.WebSocket] the normal path's WebSocket (default: the browser's)
 * @param {boolean} [options.loopback=true] use home-peer's loopback listener when the session offers one and its probe succeeds
 * @param {typeof fetch} [options.loopbackFetch] what loopback requests and the probe use (default: global fetch)
 * @param {boolean|'auto'} [options.resume='auto'] run requests and WebSockets
 *   on one resumable connection when the session offers it (docs/protocol.md
 *   §4.8): it starts on the frame connection through signal-api's home link
 *   and moves to the data channel and back, streams in flight included.
 *   'auto' does so where signal-api's normal path is the home link (no
 *   `--relay-upstream`); true also where it is a tunnel; false never
 * @param {number} [options.directAfterMs=0] start setting up the direct path
 *   this long after the session exists (the setup budget starts then), e.g.
 *   for pages that mostly make one request
 * @param {boolean} [options.requestStreams] whether a ReadableStream request
 *   body streams up (default: whether this browser supports request streams;
 *   tests set it to act like a browser that does not)
 */
export function createClient(options = {}) {
  const globalFetch = typeof globalThis.fetch === 'function' ? globalThis.fetch.bind(globalThis) : undefined;
  const signalBase = (options.signalBase ?? DEFAULT_SIGNAL_BASE).replace(/\/+$/, '');
  const opts = {
    signalBase,
    enabled: options.enabled ?? globalThis.__WEBRTC_ENABLED__ === true,
    budgetMs: options.budgetMs ?? DEFAULT_BUDGET_MS,
    negotiateMs: options.negotiateMs ?? DEFAULT_NEGOTIATE_MS,
    headTimeoutMs: options.headTimeoutMs ?? DEFAULT_HEAD_TIMEOUT_MS,
    window: options.window ?? DEFAULT_WINDOW,
    features: options.features ?? FEATURES,
    cookies: options.cookies ?? true,
    fallbackFetch: options.fallbackFetch ?? globalFetch,
    signalFetch: options.signalFetch ?? globalFetch,
    baseUrl: options.baseUrl ?? globalThis.location?.href,
    RTCPeerConnection: 'RTCPeerConnection' in options ? options.RTCPeerConnection : globalThis.RTCPeerConnection,
    requestStreams: options.requestStreams ?? supportsRequestStreams(),
    NativeWebSocket: options.WebSocket ?? globalThis.WebSocket,
    loopback: options.loopback ?? true,
    loopbackFetch: options.loopbackFetch ?? globalFetch,
    resume: options.resume ?? 'auto',
    directAfterMs: options.directAfterMs ?? 0,
  };
  const client = new BeelineClient(opts);
  if (options.indicator) installIndicator(client, options.indicator);
  return client;
}

export { COOKIES_FEATURE, ChannelSendError, FEATURES, PROTOCOL_VERSION } from './common.mjs';
export { FrameError, codec, decodeBase64, encodeBase64 } from './codec.mjs';
export { ChannelProtocol, ChannelRequests, ChannelStreams, supportsRequestStreams } from './streams.mjs';
export { BeelineWebSocket, RecordError, RecordReader, encodeCloseRecord, encodeRecord } from './websocket.mjs';
export { PATH_LABELS, describeTiming, installIndicator } from './indicator.mjs';
export { LOOPBACK_CACHE_MS, LOOPBACK_PROBE_MS, parseLoopbackOffer } from './loopback.mjs';
export { EnvelopeError, ResumableLink, decodeEnvelope, encodeAck, encodeData } from './resume.mjs';
