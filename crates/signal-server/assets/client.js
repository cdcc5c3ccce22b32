// beeline browser client: an optional direct WebRTC path to the home service.
//
// `createClient()` starts a WebRTC data-channel setup at page load (through the
// signaling endpoints under `signalBase`) and returns a client whose `fetch`
// sends same-origin requests over that channel once it is open. Until then,
// after a failed or timed-out setup, after the channel closes, and for any
// cross-origin request, `fetch` is simply the normal `fetch`. WebRTC problems
// never surface to the page: they only show up as `console.debug` lines and as
// `client.path` staying or becoming 'fallback'.
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
// Plain ES module with no dependencies and no build step; served by signal-api
// as `{signalBase}/client.js`. `codec` (the frame encoder/decoder) is exported
// for the golden-vector tests in tests/browser.

/** Highest version of the channel protocol this client speaks. */
export const PROTOCOL_VERSION = 2;

/** The protocol features this client asks for in `hello`. */
export const FEATURES = Object.freeze(['binary', 'cancel', 'credit', 'websocket']);

/** The feature that carries sealed cookie jars (docs/cookies.md); asked for only with a jar. */
export const COOKIES_FEATURE = 'cookies';

const DEFAULT_SIGNAL_BASE = '/webrtc';
const DEFAULT_BUDGET_MS = 8000;
const DEFAULT_NEGOTIATE_MS = 2000;
// How long a v2 request waits for its response head before it fails with a
// TimeoutError (createClient's `headTimeoutMs`; 0 waits for ever). Long
// enough for a non-streamed LLM completion; the home peer's own upstream
// idle limit is 300 s.
const DEFAULT_HEAD_TIMEOUT_MS = 120_000;
// Per-stream window granted to the home for response bodies (hello.window).
const DEFAULT_WINDOW = 256 * 1024;
// What to assume when the browser does not say how large a message may be.
const DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024;
// Chrome's own receive limit, used when the remote allows "any size".
const UNLIMITED_MAX_MESSAGE_SIZE = 256 * 1024;
// Chrome closes a data channel whose send buffer passes 16 MB; uploads pause
// above the high mark and resume when `bufferedamountlow` fires.
const BUFFERED_HIGH = 2 * 1024 * 1024;
const BUFFERED_LOW = 512 * 1024;
const DATA_CHANNEL_LABEL = 'http';
const INDICATOR_TEXT = '\u26a1 direct';
const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD']);
// Methods whose requests cannot have a body (the Request constructor refuses one).
const NO_BODY_METHODS = new Set(['GET', 'HEAD']);
// Methods sent with `content-length: 0` when their body is empty, as browsers do.
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH']);
// Statuses whose responses have no body.
const NULL_BODY_STATUSES = new Set([204, 205, 304]);
// Stream errors that mean the request never reached the upstream, so an
// idempotent request may be repeated over the normal path.
const RETRYABLE_ERRORS = new Set(['too_many_streams', 'shutting_down']);
// Sealed cookie jars (docs/cookies.md): the request header that carries the
// jar, the response header with sealed Set-Cookie lines, and the relay's
// mark on a normal-path response that set cookies.
const JAR_HEADER = 'x-beeline-jar';
// The query parameter a relayed WebSocket names its session with (signal-api
// removes it), so it reaches the home the session belongs to.
const SESSION_PARAM = '__beeline_session';
const SET_COOKIE_HEADER = 'x-beeline-set-cookie';
const COOKIES_CHANGED_HEADER = 'x-beeline-cookies-changed';
// The same mark as a Server-Timing metric name: unlike a header, it reaches
// this client for requests it never sees (the page's own fetch, XHR), through
// the resource timing entries a PerformanceObserver gets.
const COOKIES_CHANGED_TIMING = 'beeline-cookies-changed';
// A jar older than this is refreshed before the next channel request (the
// home peer refuses jars older than 12 h).
const JAR_REFRESH_MS = 6 * 60 * 60 * 1000;
// After a failed refresh, requests use the jar they have for this long
// before the client tries again.
const JAR_RETRY_MS = 10_000;
// How long a jar exchange or refresh may take: requests on the channel wait
// for it, and must not hang on a signal-api that does not answer.
const JAR_TIMEOUT_MS = 10_000;

/** The page's `document.cookie`, or undefined outside a document. */
function documentCookie() {
  try {
    const cookie = globalThis.document?.cookie;
    return typeof cookie === 'string' ? cookie : undefined;
  } catch {
    // A sandboxed document may refuse to tell.
    return undefined;
  }
}

function debug(...args) {
  if (typeof console !== 'undefined' && console.debug) console.debug('beeline:', ...args);
}

// ---- codec ------------------------------------------------------------------

/** Base64 of a byte array, in slices so large bodies do not overflow the call stack. */
export function encodeBase64(bytes) {
  let binary = '';
  const slice = 0x8000;
  for (let i = 0; i < bytes.length; i += slice) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + slice));
  }
  return btoa(binary);
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const BASE64_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** Bytes of canonical standard base64 (padded, no stray bits); null if it is not. */
export function decodeBase64(text) {
  if (typeof text !== 'string' || text.length % 4 !== 0 || !BASE64.test(text)) return null;
  const padding = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0;
  if (padding > 0) {
    // The bits after the last byte must be zero, as strict decoders require.
    const last = BASE64_ALPHABET.indexOf(text[text.length - padding - 1]);
    if ((padding === 2 ? last & 0x0f : last & 0x03) !== 0) return null;
  }
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/**
 * A frame that cannot be decoded: `code` is the protocol error code
 * (`bad_frame`), `id` the stream it belongs to when that could be told.
 */
export class FrameError extends Error {
  constructor(message, id) {
    super(message);
    this.name = 'FrameError';
    this.code = 'bad_frame';
    this.id = id;
  }
}

const BINARY_TYPES = Object.freeze({ request: 0x01, response: 0x02, data: 0x03, end: 0x04, cancel: 0x05, error: 0x06, credit: 0x07 });
const BINARY_NAMES = Object.freeze(Object.fromEntries(Object.entries(BINARY_TYPES).map(([name, code]) => [code, name])));
const BINARY_HEADER_BYTES = 5;
const U32_MAX = 0xffffffff;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const utf8Encoder = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
const lenientUtf8 = new TextDecoder();

function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function isU32(value) {
  return Number.isInteger(value) && value >= 0 && value <= U32_MAX;
}

// Field readers: each returns the checked value or throws a FrameError for
// stream `id`.
const field = {
  id(obj, numeric = false) {
    if (numeric ? isU32(obj.id) : typeof obj.id === 'string' && obj.id !== '') return obj.id;
    throw new FrameError(numeric ? '`id` is missing or not a u32' : '`id` is missing or not a non-empty string');
  },
  method(obj, id) {
    if (typeof obj.method === 'string' && TOKEN.test(obj.method)) return obj.method;
    throw new FrameError('`method` is missing or not an HTTP token', id);
  },
  path(obj, id) {
    const path = obj.path;
    if (typeof path === 'string' && path.startsWith('/') && !path.startsWith('//')) return path;
    throw new FrameError('`path` must start with a single /', id);
  },
  headers(obj, id, required) {
    if (obj.headers === undefined && !required) return undefined;
    if (!isObject(obj.headers)) throw new FrameError('`headers` must be an object', id);
    const headers = {};
    for (const [name, value] of Object.entries(obj.headers)) {
      if (typeof value !== 'string') throw new FrameError(`header \`${name}\` is not a string`, id);
      headers[name] = value;
    }
    return headers;
  },
  status(obj, id) {
    if (Number.isInteger(obj.status) && obj.status >= 100 && obj.status <= 999) return obj.status;
    throw new FrameError('`status` is missing or not a status code', id);
  },
  bytes(obj, id, name) {
    const bytes = decodeBase64(obj[name]);
    if (bytes === null) throw new FrameError(`\`${name}\` is not standard base64`, id);
    return bytes;
  },
  string(obj, id, name) {
    if (typeof obj[name] === 'string') return obj[name];
    throw new FrameError(`\`${name}\` is missing or not a string`, id);
  },
  u32(obj, id, name) {
    if (isU32(obj[name])) return obj[name];
    throw new FrameError(`\`${name}\` is missing or not an integer in 0..2^32`, id);
  },
  boolean(obj, id, name) {
    if (obj[name] === undefined) return false;
    if (typeof obj[name] === 'boolean') return obj[name];
    throw new FrameError(`\`${name}\` is not a boolean`, id);
  },
  features(obj) {
    if (Array.isArray(obj.features) && obj.features.every((f) => typeof f === 'string')) return [...obj.features];
    throw new FrameError('`features` must be an array of strings');
  },
};

/**
 * Checks a frame in its canonical JSON form (as parsed from a text message;
 * see tests/vectors/README.md) and returns it as a frame: known fields only,
 * `data`/`body` as Uint8Array, v2 `headers` always present, request `end`
 * only when true. Returns null for a `type` this client does not know.
 * `numericIds` reads the canonical form of a binary-framed stream frame.
 */
function frameFromObject(obj, numericIds = false) {
  if (!isObject(obj)) throw new FrameError('frame is not a JSON object');
  const type = obj.type;
  if (numericIds && BINARY_TYPES[type] === undefined) throw new FrameError(`\`${type}\` frames have no binary form`);
  const readId = (o) => field.id(o, numericIds);
  if (type === undefined) {
    // A v1 request: the only frame without a type.
    const id = readId(obj);
    const frame = { id, method: field.method(obj, id), path: field.path(obj, id) };
    const headers = field.headers(obj, id, false);
    if (headers !== undefined) frame.headers = headers;
    if (obj.body !== undefined) frame.body = field.bytes(obj, id, 'body');
    return frame;
  }
  if (typeof type !== 'string') throw new FrameError('`type` is not a string');
  switch (type) {
    case 'hello':
      return { type, version: field.u32(obj, undefined, 'version'), features: field.features(obj), window: field.u32(obj, undefined, 'window') };
    case 'agree': {
      const frame = { type, version: field.u32(obj, undefined, 'version'), features: field.features(obj), window: field.u32(obj, undefined, 'window') };
      for (const limit of ['max_streams', 'max_header_bytes', 'max_body_bytes', 'max_ws_message_bytes']) {
        if (obj[limit] === undefined) continue;
        if (!Number.isSafeInteger(obj[limit]) || obj[limit] < 0) throw new FrameError(`\`${limit}\` is not a count`);
        frame[limit] = obj[limit];
      }
      return frame;
    }
    case 'chunk': {
      const id = readId(obj);
      return { id, type, data: field.string(obj, id, 'data') };
    }
    case 'done': {
      const id = readId(obj);
      return { id, type, status: field.status(obj, id) };
    }
    case 'error': {
      const frame = { type };
      if (obj.id !== undefined) frame.id = readId(obj);
      frame.code = field.string(obj, frame.id, 'code');
      frame.message = field.string(obj, frame.id, 'message');
      return frame;
    }
    case 'request': {
      const id = readId(obj);
      return requestHead(type, id, obj);
    }
    case 'response': {
      const id = readId(obj);
      return { type, id, status: field.status(obj, id), headers: field.headers(obj, id, false) ?? {} };
    }
    case 'data': {
      const id = readId(obj);
      return { type, id, data: field.bytes(obj, id, 'data') };
    }
    case 'end':
    case 'cancel':
      return { type, id: readId(obj) };
    case 'credit': {
      const id = readId(obj);
      return { type, id, bytes: field.u32(obj, id, 'bytes') };
    }
    default:
      return null;
  }
}

function requestHead(type, id, obj) {
  const frame = { type, id, method: field.method(obj, id), path: field.path(obj, id), headers: field.headers(obj, id, false) ?? {} };
  if (typeof obj.scheme === 'string') frame.scheme = obj.scheme;
  if (typeof obj.upgrade === 'string') frame.upgrade = obj.upgrade;
  if (field.boolean(obj, id, 'end')) frame.end = true;
  return frame;
}

/** The canonical JSON form of a frame (the inverse of `frameFromObject`). */
function frameToObject(frame) {
  const obj = {};
  for (const [key, value] of Object.entries(frame)) {
    if (value === undefined) continue;
    if (key === 'end' && frame.type === 'request' && value !== true) continue;
    obj[key] = value instanceof Uint8Array ? encodeBase64(value) : value;
  }
  return obj;
}

/** Decodes one text message into a frame; null for an unknown `type`. */
function decodeJson(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    throw new FrameError('frame is not JSON');
  }
  return frameFromObject(value);
}

/** Encodes a frame as a JSON text message. */
function encodeJson(frame) {
  return JSON.stringify(frameToObject(frame));
}

function jsonPayload(payload, id) {
  let value;
  try {
    value = JSON.parse(strictUtf8.decode(payload));
  } catch {
    throw new FrameError('binary payload is not UTF-8 JSON', id);
  }
  if (!isObject(value)) throw new FrameError('binary payload is not a JSON object', id);
  return value;
}

function emptyPayload(payload, id, type) {
  if (payload.length !== 0) throw new FrameError(`binary ${type} frame has a payload`, id);
  return { type, id };
}

/** Decodes one binary message (ArrayBuffer or byte view) into a frame. */
function decodeBinary(message) {
  const bytes = message instanceof Uint8Array ? message : ArrayBuffer.isView(message) ? new Uint8Array(message.buffer, message.byteOffset, message.byteLength) : new Uint8Array(message);
  if (bytes.length < BINARY_HEADER_BYTES) throw new FrameError('binary message shorter than its 5-byte header');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const id = view.getUint32(1);
  const payload = bytes.subarray(BINARY_HEADER_BYTES);
  const type = BINARY_NAMES[bytes[0]];
  switch (type) {
    case 'request':
      return requestHead(type, id, jsonPayload(payload, id));
    case 'response': {
      const head = jsonPayload(payload, id);
      return { type, id, status: field.status(head, id), headers: field.headers(head, id, false) ?? {} };
    }
    case 'data':
      return { type, id, data: payload.slice() };
    case 'end':
    case 'cancel':
      return emptyPayload(payload, id, type);
    case 'error': {
      const body = jsonPayload(payload, id);
      return { type, id, code: field.string(body, id, 'code'), message: field.string(body, id, 'message') };
    }
    case 'credit':
      if (payload.length !== 4) throw new FrameError('binary credit payload is not 4 bytes', id);
      return { type, id, bytes: view.getUint32(BINARY_HEADER_BYTES) };
    default:
      throw new FrameError(`unknown binary frame type 0x${bytes[0].toString(16).padStart(2, '0')}`, id);
  }
}

/** Encodes a stream frame (numeric `id`) as a binary message. */
function encodeBinary(frame) {
  const code = BINARY_TYPES[frame.type];
  if (code === undefined) throw new TypeError(`frame type ${frame.type} has no binary form`);
  if (!isU32(frame.id)) throw new TypeError('a binary frame needs a u32 id');
  let payload;
  switch (frame.type) {
    case 'request': {
      // Compact JSON in this key order; `headers` always, `end` only when true.
      const head = { method: frame.method, path: frame.path, headers: frame.headers ?? {} };
      if (frame.scheme !== undefined) head.scheme = frame.scheme;
      if (frame.upgrade !== undefined) head.upgrade = frame.upgrade;
      if (frame.end === true) head.end = true;
      payload = utf8Encoder.encode(JSON.stringify(head));
      break;
    }
    case 'response':
      payload = utf8Encoder.encode(JSON.stringify({ status: frame.status, headers: frame.headers ?? {} }));
      break;
    case 'data':
      payload = frame.data;
      break;
    case 'error':
      payload = utf8Encoder.encode(JSON.stringify({ code: frame.code, message: frame.message }));
      break;
    case 'credit':
      payload = new Uint8Array(4);
      new DataView(payload.buffer).setUint32(0, frame.bytes);
      break;
    default:
      payload = new Uint8Array(0);
  }
  const message = new Uint8Array(BINARY_HEADER_BYTES + payload.length);
  message[0] = code;
  new DataView(message.buffer).setUint32(1, frame.id);
  message.set(payload, BINARY_HEADER_BYTES);
  return message;
}

/** Largest `data` payload that keeps a frame for stream `id` within `maxMessageSize`. */
function maxDataPayload(id, maxMessageSize) {
  if (typeof id === 'number') return maxMessageSize - BINARY_HEADER_BYTES;
  const overhead = encodeJson({ type: 'data', id, data: new Uint8Array(0) }).length;
  return Math.floor((maxMessageSize - overhead) / 4) * 3;
}

/**
 * The frame codec of docs/protocol.md, exported for the golden-vector tests.
 * Frames are plain objects in the canonical JSON form of
 * tests/vectors/README.md, except that `data` (and a v1 request's `body`) is
 * a Uint8Array; binary-framed streams have numeric ids.
 */
export const codec = Object.freeze({
  decodeJson,
  encodeJson,
  decodeBinary,
  encodeBinary,
  fromCanonical: frameFromObject,
  toCanonical: frameToObject,
  maxDataPayload,
  FrameError,
});

// ---- streams ----------------------------------------------------------------

/** The channel refused a message, so nothing was sent: the request may take the normal path. */
export class ChannelSendError extends Error {
  name = 'ChannelSendError';
}

function channelClosedError(detail) {
  return new TypeError(`beeline: direct channel closed ${detail}`);
}

function abortReason(signal) {
  if (signal.reason !== undefined) return signal.reason;
  return new DOMException('The operation was aborted.', 'AbortError');
}

/** A failed stream, as fetch reports network errors: a TypeError, with the protocol's `code`. */
function streamError(code, message) {
  const error = new TypeError(`beeline: ${code}${message ? `: ${message}` : ''}`);
  error.code = code;
  return error;
}

/**
 * The v1 requests in flight on one data channel, matched to `chunk`/`done`
 * frames by id.
 *
 * Knows nothing of WebRTC: it is given a `send(text)` function and fed each
 * received message through `receive`, so tests can drive it with a fake channel.
 */
export class ChannelRequests {
  #send;
  #inflight = new Map();
  #textEncoder = new TextEncoder();

  /** @param {(text: string) => void} send sends one text message; throws if it cannot. */
  constructor(send) {
    this.#send = send;
  }

  /** Number of requests whose response has not finished. */
  get size() {
    return this.#inflight.size;
  }

  /**
   * Sends one request and returns a promise of its `Response`.
   *
   * Throws synchronously (having sent nothing) when `send` throws, so the
   * caller may safely repeat the request on another path.
   *
   * @param {{method: string, path: string, headers: Object<string,string>, body?: Uint8Array}} request
   * @param {{signal?: AbortSignal, retry?: () => Promise<Response>}} [options]
   *   `retry` is called if the channel closes before the response starts;
   *   without it the promise rejects with a TypeError instead.
   */
  start(request, { signal, retry } = {}) {
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    const id = crypto.randomUUID();
    const frame = { id, method: request.method, path: request.path, headers: request.headers };
    if (request.body && request.body.length > 0) frame.body = encodeBase64(request.body);
    const text = JSON.stringify(frame);

    const entry = { id, started: false, controller: null, resolve: null, reject: null, retry, signal, onAbort: null };
    const promise = new Promise((resolve, reject) => {
      entry.resolve = resolve;
      entry.reject = reject;
    });
    entry.stream = new ReadableStream({
      start: (controller) => {
        entry.controller = controller;
      },
      cancel: () => this.#forget(entry),
    });
    this.#inflight.set(id, entry);
    try {
      this.#send(text);
    } catch (err) {
      this.#inflight.delete(id);
      throw err;
    }
    if (signal) {
      entry.onAbort = () => this.#abort(entry);
      signal.addEventListener('abort', entry.onAbort, { once: true });
    }
    return promise;
  }

  /**
   * Routes one received channel message (string or ArrayBuffer) to its
   * request. Several newline-separated frames in one message are accepted.
   */
  receive(message) {
    const text = typeof message === 'string' ? message : lenientUtf8.decode(message);
    for (const frame of parseTextFrames(text)) this.route(frame);
  }

  /** Routes one parsed `chunk` or `done` frame; anything else is ignored. */
  route(frame) {
    const entry = typeof frame.id === 'string' ? this.#inflight.get(frame.id) : undefined;
    if (!entry) return;
    if (frame.type === 'chunk') {
      const data = typeof frame.data === 'string' ? frame.data : '';
      if (!entry.started) this.#startResponse(entry, 200, entry.stream);
      entry.controller.enqueue(this.#textEncoder.encode(data));
    } else if (frame.type === 'done') {
      this.#forget(entry);
      if (entry.started) {
        entry.controller.close();
        return;
      }
      const status = frame.status;
      if (!Number.isInteger(status) || status < 200 || status > 599) {
        entry.reject(new TypeError(`beeline: invalid response status ${status}`));
        return;
      }
      // An empty body, as fetch gives; these statuses may not have one at all.
      entry.controller.close();
      this.#startResponse(entry, status, NULL_BODY_STATUSES.has(status) ? null : entry.stream);
    }
  }

  /**
   * Ends every request because the channel is gone: responses already
   * streaming error out; the others are retried if they were given a `retry`,
   * and reject with a TypeError otherwise.
   */
  closeAll() {
    const entries = [...this.#inflight.values()];
    for (const entry of entries) {
      this.#forget(entry);
      if (entry.started) {
        entry.controller.error(channelClosedError('while the response was streaming'));
      } else if (entry.retry) {
        entry.resolve(entry.retry());
      } else {
        entry.reject(channelClosedError('before the response started'));
      }
    }
  }

  #startResponse(entry, status, body) {
    entry.started = true;
    entry.resolve(new Response(body, { status, headers: { 'x-beeline-path': 'direct' } }));
  }

  #abort(entry) {
    if (!this.#inflight.has(entry.id)) return;
    this.#forget(entry);
    const reason = abortReason(entry.signal);
    if (entry.started) entry.controller.error(reason);
    else entry.reject(reason);
  }

  #forget(entry) {
    this.#inflight.delete(entry.id);
    if (entry.onAbort) entry.signal.removeEventListener('abort', entry.onAbort);
  }
}

/**
 * The JSON objects in one text message: the whole message when it is one
 * JSON value, else each newline-separated line that is (v1 peers may batch
 * frames). Anything that is not a JSON object is dropped.
 */
function parseTextFrames(text) {
  let values;
  try {
    values = [JSON.parse(text)];
  } catch {
    values = [];
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      try {
        values.push(JSON.parse(line));
      } catch {
        debug('ignoring a channel message that is not JSON');
      }
    }
  }
  return values.filter(isObject);
}

/** Response headers from a frame, plus `x-beeline-path: direct`; bad ones are dropped. */
function responseHeaders(fields) {
  const headers = new Headers();
  for (const [name, value] of Object.entries(fields)) {
    // Several set-cookie values travel joined with newlines.
    for (const one of name.toLowerCase() === 'set-cookie' ? value.split('\n') : [value]) {
      try {
        headers.append(name, one);
      } catch {
        debug(`dropping response header ${name}: not valid in a Response`);
      }
    }
  }
  headers.set('x-beeline-path', 'direct');
  return headers;
}

function requestHeadSize(request) {
  let size = request.path.length;
  for (const [name, value] of Object.entries(request.headers)) size += name.length + value.length;
  return size;
}

function isReadableStream(value) {
  return typeof ReadableStream === 'function' && value instanceof ReadableStream;
}

/** The whole body of a Request as the browser would send it (empty for none). */
async function readBody(request) {
  if (NO_BODY_METHODS.has(request.method)) return new Uint8Array(0);
  return new Uint8Array(await request.arrayBuffer());
}

/**
 * True when this browser takes a ReadableStream as a request body (streaming
 * uploads, with `duplex: 'half'`). Detected as the web platform suggests: a
 * browser that supports them reads the `duplex` member and sets no
 * content-type for a stream; one that does not (Firefox, Safari) ignores
 * `duplex` and turns the stream into the string "[object ReadableStream]",
 * typed text/plain.
 */
export function supportsRequestStreams() {
  if (typeof Request !== 'function' || typeof ReadableStream !== 'function') return false;
  let duplexRead = false;
  try {
    const probe = new Request('http://beeline.invalid/', {
      method: 'POST',
      body: new ReadableStream(),
      get duplex() {
        duplexRead = true;
        return 'half';
      },
    });
    return duplexRead && !probe.headers.has('content-type');
  } catch {
    return false;
  }
}

function asBytes(chunk) {
  if (chunk instanceof Uint8Array) return chunk;
  if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (chunk instanceof ArrayBuffer) return new Uint8Array(chunk);
  if (typeof chunk === 'string') return utf8Encoder.encode(chunk);
  throw new TypeError('beeline: request body chunks must be bytes');
}

/**
 * The version-2 streams on one data channel (docs/protocol.md §4–§5).
 *
 * Knows nothing of WebRTC: it is given a `link` and fed each decoded frame
 * through `receive`, so tests can drive it with a fake channel. The link is
 * `{ send(message), maxMessageSize, congested?(), drained?() }`: `send` sends
 * one text or binary message and throws a ChannelSendError when it cannot;
 * `congested()` is true while the channel's send buffer is too full for body
 * data, and `drained()` resolves when it may have emptied.
 */
export class ChannelStreams {
  #link;
  #binary;
  #cancel;
  #credit;
  #sendWindow;
  #recvWindow;
  #grantThreshold;
  #maxStreams;
  #maxHeaderBytes;
  #headTimeoutMs;
  #streams = new Map();
  #nextId = 1;
  #slots = 0; // streams open or about to be: at most maxStreams
  #slotWaiters = [];
  #closed = false;

  /**
   * @param {object} link see the class comment
   * @param {object} options what `hello`/`agree` settled
   * @param {boolean} [options.binary] binary framing (else JSON)
   * @param {boolean} [options.cancel] the `cancel` feature
   * @param {boolean} [options.credit] the `credit` feature
   * @param {number} [options.sendWindow] the home's window for request bodies (agree.window)
   * @param {number} [options.recvWindow] our window for response bodies (hello.window)
   * @param {number} [options.maxStreams] streams the home serves at once; more wait here
   * @param {number} [options.maxHeaderBytes] larger request heads are refused here
   * @param {number} [options.headTimeoutMs] a stream without its response head
   *   after this long fails with a TimeoutError (0: no limit)
   */
  constructor(link, { binary = false, cancel = false, credit = false, sendWindow = DEFAULT_WINDOW, recvWindow = DEFAULT_WINDOW, maxStreams = Infinity, maxHeaderBytes = Infinity, headTimeoutMs = DEFAULT_HEAD_TIMEOUT_MS } = {}) {
    this.#link = link;
    this.#headTimeoutMs = headTimeoutMs > 0 ? headTimeoutMs : 0;
    this.#binary = binary;
    this.#cancel = cancel;
    this.#credit = credit;
    this.#sendWindow = credit ? sendWindow : Infinity;
    this.#recvWindow = recvWindow;
    this.#grantThreshold = Math.max(1, Math.floor(recvWindow / 4));
    this.#maxStreams = maxStreams > 0 ? maxStreams : Infinity;
    this.#maxHeaderBytes = maxHeaderBytes > 0 ? maxHeaderBytes : Infinity;
  }

  /** True when streams use binary frames. */
  get binary() {
    return this.#binary;
  }

  /** Number of streams in flight (either direction unfinished). */
  get size() {
    return this.#streams.size;
  }

  /**
   * Opens a stream and resolves with its `Response` as soon as the response
   * head arrives; the body streams after it.
   *
   * Rejects with a ChannelSendError, having sent nothing, when the channel
   * refuses the request head, so the caller may repeat the request on
   * another path (a ReadableStream body has not been read then either).
   *
   * @param {{method: string, path: string, headers: Object<string,string>, body?: ReadableStream|Uint8Array|null}} request
   * @param {{signal?: AbortSignal, retry?: () => Promise<Response>}} [options]
   *   `retry` is called if the stream fails before its response starts in a
   *   way that means the upstream never saw it; else the promise rejects.
   */
  async start(request, { signal, retry } = {}) {
    if (signal?.aborted) throw abortReason(signal);
    if (requestHeadSize(request) > this.#maxHeaderBytes) throw new ChannelSendError('request head above the home peer\'s limit');
    await this.#acquireSlot(signal);
    try {
      if (this.#link.congested?.()) await this.#link.drained();
      if (signal?.aborted) throw abortReason(signal);
      if (this.#closed) throw new ChannelSendError('channel closed');
      return this.#open(request, signal, retry);
    } catch (err) {
      this.#releaseSlot();
      throw err;
    }
  }

  // Sends the head of a new stream (a slot is held) and returns its response promise.
  #open(request, signal, retry) {
    const id = this.#allocateId();
    const body = request.body instanceof Uint8Array ? (request.body.length > 0 ? request.body : null) : request.body ?? null;
    const head = { type: 'request', id, method: request.method, path: request.path, headers: request.headers ?? {} };
    // The scheme the page addressed, told to the home service as
    // x-forwarded-proto (docs/protocol.md §4.2).
    if (request.scheme === 'http' || request.scheme === 'https') head.scheme = request.scheme;
    if (request.upgrade) head.upgrade = request.upgrade;
    if (body === null) head.end = true;
    const message = this.#encode(head);
    if ((typeof message === 'string' ? utf8Encoder.encode(message).length : message.length) > this.#link.maxMessageSize) {
      throw new ChannelSendError('request head larger than a channel message');
    }

    const entry = {
      id,
      signal,
      retry,
      onAbort: null,
      resolve: null,
      reject: null,
      controller: null,
      stream: null,
      head: false, // the response head arrived
      settled: false, // the page has its outcome: a closed or errored body, or a rejection
      live: true, // the stream is open on the channel
      responseEnded: false,
      uploadDone: body === null,
      reader: null,
      pending: [], // response bytes received, not yet read by the page
      wantData: false, // the page is waiting for bytes
      recvRemaining: this.#recvWindow,
      owed: 0, // bytes read by the page and not yet granted back
      sendWindow: this.#sendWindow,
      wakeUpload: null,
      upgrade: Boolean(request.upgrade), // a WebSocket stream (§4.7)
    };
    const promise = new Promise((resolve, reject) => {
      entry.resolve = resolve;
      entry.reject = reject;
    });
    entry.stream = new ReadableStream(
      {
        start: (controller) => {
          entry.controller = controller;
        },
        pull: () => this.#pull(entry),
        cancel: () => this.#cancelByPage(entry),
      },
      // Nothing is queued ahead of the page's reads, so pulls track its pace.
      { highWaterMark: 0 },
    );
    this.#streams.set(id, entry);
    try {
      this.#link.send(message);
    } catch (err) {
      this.#streams.delete(id);
      throw err instanceof ChannelSendError ? err : new ChannelSendError(err?.message ?? String(err));
    }
    if (signal) {
      entry.onAbort = () => this.#abort(entry);
      signal.addEventListener('abort', entry.onAbort, { once: true });
    }
    if (body !== null) this.#upload(entry, body);
    if (this.#headTimeoutMs > 0) {
      entry.headTimer = setTimeout(() => this.#headTimedOut(entry), this.#headTimeoutMs);
      // Outside a browser (Node), the timer alone must not keep a process up.
      entry.headTimer?.unref?.();
    }
    return promise;
  }

  // No response head in time: the stream is cancelled (the home peer drops
  // the upstream request) and the page's promise rejects.
  #headTimedOut(entry) {
    if (entry.head || entry.settled) return;
    if (entry.live && this.#cancel) this.#sendQuietly({ type: 'cancel', id: entry.id });
    this.#end(entry);
    this.#settle(entry, new DOMException(`beeline: no response head within ${this.#headTimeoutMs} ms`, 'TimeoutError'));
  }

  /** Handles one decoded frame from the home peer. */
  receive(frame) {
    if (frame.type === 'error' && frame.id === undefined) {
      debug(`home peer reported ${frame.code}: ${frame.message}`);
      return;
    }
    const entry = this.#streams.get(frame.id);
    // Frames for streams that ended (cancelled, failed) are ignored.
    if (!entry) return;
    switch (frame.type) {
      case 'response':
        this.#onResponse(entry, frame);
        break;
      case 'data':
        this.#onData(entry, frame.data);
        break;
      case 'end':
        this.#onEnd(entry);
        break;
      case 'cancel':
        this.#end(entry);
        this.#settle(entry, new DOMException('The home peer cancelled the request.', 'AbortError'));
        break;
      case 'error':
        this.#end(entry);
        this.#settle(entry, streamError(frame.code, frame.message), RETRYABLE_ERRORS.has(frame.code));
        break;
      case 'credit':
        entry.sendWindow += frame.bytes;
        entry.wakeUpload?.();
        break;
      default:
        // A frame type the home peer should not send (request); ignore it.
        break;
    }
  }

  /** A frame from the home peer that could not be decoded. */
  receiveBad(error) {
    const entry = error.id === undefined ? undefined : this.#streams.get(error.id);
    if (!entry) {
      debug('ignoring a bad frame from the home peer:', error.message);
      return;
    }
    this.#protocolError(entry, 'bad_frame', error.message);
  }

  /**
   * Ends every stream because the channel is gone: bodies already streaming
   * error out; the others are retried if they were given a `retry`, and
   * reject with a TypeError otherwise.
   */
  closeAll() {
    this.#closed = true;
    for (const entry of [...this.#streams.values()]) {
      this.#end(entry);
      this.#settle(entry, channelClosedError(entry.head ? 'while the response was streaming' : 'before the response started'), true);
    }
    for (const wake of this.#slotWaiters.splice(0)) wake();
  }

  // -- sending --

  #encode(frame) {
    return typeof frame.id === 'number' ? encodeBinary(frame) : encodeJson(frame);
  }

  // Sends a control frame; a channel that is going away is handled by closeAll.
  #sendQuietly(frame) {
    try {
      this.#link.send(this.#encode(frame));
    } catch (err) {
      debug(`could not send ${frame.type}:`, err?.message ?? err);
    }
  }

  #allocateId() {
    for (;;) {
      const n = this.#nextId;
      this.#nextId = n >= U32_MAX ? 1 : n + 1;
      const id = this.#binary ? n : String(n);
      if (!this.#streams.has(id)) return id;
    }
  }

  // Takes one of the home's max_streams, waiting for one to free up.
  async #acquireSlot(signal) {
    while (!this.#closed && this.#slots >= this.#maxStreams) {
      await new Promise((resolve) => {
        this.#slotWaiters.push(resolve);
        signal?.addEventListener('abort', resolve, { once: true });
      });
      if (signal?.aborted) throw abortReason(signal);
    }
    this.#slots += 1;
  }

  // Wakes every waiter; each checks again, so one that was aborted meanwhile
  // cannot swallow the slot.
  #releaseSlot() {
    this.#slots -= 1;
    for (const wake of this.#slotWaiters.splice(0)) wake();
  }

  // Streams the request body in `data` frames within the home's window, the
  // channel's message size and its send buffer, then sends `end`.
  async #upload(entry, body) {
    const maxPayload = maxDataPayload(entry.id, this.#link.maxMessageSize);
    try {
      if (body instanceof Uint8Array) {
        await this.#sendBody(entry, body, maxPayload);
      } else {
        entry.reader = body.getReader();
        for (;;) {
          const { value, done } = await entry.reader.read();
          if (done || entry.uploadDone) break;
          await this.#sendBody(entry, asBytes(value), maxPayload);
        }
      }
      if (entry.uploadDone) return;
      entry.uploadDone = true;
      entry.reader = null;
      // The stream stays open until the response ends (which, had it come
      // first, would have stopped this upload).
      this.#link.send(this.#encode({ type: 'end', id: entry.id }));
      // A WebSocket's two directions end apart: this was the last.
      if (entry.upgrade && entry.responseEnded) this.#end(entry);
    } catch (err) {
      if (entry.uploadDone) return;
      // The page's body failed, or the channel went away mid-upload.
      debug('request body upload failed:', err?.message ?? err);
      if (entry.live && this.#cancel) this.#sendQuietly({ type: 'cancel', id: entry.id });
      this.#end(entry);
      this.#settle(entry, err instanceof TypeError ? err : streamError('upload_failed', err?.message ?? String(err)));
    }
  }

  async #sendBody(entry, bytes, maxPayload) {
    let offset = 0;
    while (offset < bytes.length) {
      // Wait for window and for room in the send buffer; the send below
      // follows the last check without yielding.
      for (;;) {
        if (entry.uploadDone) return;
        if (entry.sendWindow <= 0) {
          await new Promise((resolve) => {
            entry.wakeUpload = resolve;
          });
          entry.wakeUpload = null;
          continue;
        }
        if (this.#link.congested?.()) {
          await this.#link.drained();
          continue;
        }
        break;
      }
      const n = Math.min(bytes.length - offset, maxPayload, entry.sendWindow);
      this.#link.send(this.#encode({ type: 'data', id: entry.id, data: bytes.subarray(offset, offset + n) }));
      entry.sendWindow -= n;
      offset += n;
    }
  }

  // -- receiving --

  #onResponse(entry, frame) {
    clearTimeout(entry.headTimer);
    if (entry.head) {
      this.#protocolError(entry, 'bad_frame', 'second response head');
      return;
    }
    if (entry.upgrade && frame.status === 101) {
      // A WebSocket: no Response (101 cannot be one); the caller reads the
      // records from the body stream.
      entry.head = true;
      entry.resolve({ status: 101, headers: frame.headers, body: entry.stream });
      return;
    }
    if (frame.status < 200 || frame.status > 599) {
      this.#protocolError(entry, 'bad_frame', `response status ${frame.status} cannot be given to the page`);
      return;
    }
    entry.head = true;
    const nullBody = NULL_BODY_STATUSES.has(frame.status);
    try {
      entry.resolve(new Response(nullBody ? null : entry.stream, { status: frame.status, headers: responseHeaders(frame.headers) }));
    } catch (err) {
      this.#protocolError(entry, 'bad_frame', err?.message ?? String(err));
    }
  }

  #onData(entry, bytes) {
    if (!entry.head || entry.responseEnded) {
      this.#protocolError(entry, 'bad_frame', 'data outside a response');
      return;
    }
    if (this.#credit) {
      entry.recvRemaining -= bytes.length;
      if (entry.recvRemaining < 0) {
        this.#protocolError(entry, 'flow_control', 'data beyond the granted window');
        return;
      }
    }
    if (entry.settled || bytes.length === 0) return;
    if (entry.wantData) {
      entry.wantData = false;
      this.#hand(entry, bytes);
    } else {
      entry.pending.push(bytes);
    }
  }

  #onEnd(entry) {
    if (!entry.head) {
      this.#protocolError(entry, 'bad_frame', 'end before the response head');
      return;
    }
    entry.responseEnded = true;
    if (entry.upgrade && !entry.uploadDone) {
      // The home closed its direction; ours stays open for our close.
      if (entry.pending.length === 0) this.#closeBody(entry);
      return;
    }
    if (!entry.uploadDone) {
      // The home answered without taking the whole body; stop sending it.
      if (this.#cancel) this.#sendQuietly({ type: 'cancel', id: entry.id });
    }
    this.#end(entry);
    if (entry.pending.length === 0) this.#closeBody(entry);
  }

  // The page wants more of the body.
  #pull(entry) {
    if (entry.settled) return;
    const bytes = entry.pending.shift();
    if (bytes === undefined) {
      entry.wantData = true;
      return;
    }
    this.#hand(entry, bytes);
    if (entry.pending.length === 0 && entry.responseEnded) this.#closeBody(entry);
  }

  // Gives bytes to the page, and grants the window back once enough was read.
  #hand(entry, bytes) {
    entry.controller.enqueue(bytes);
    if (!this.#credit || !entry.live) return;
    entry.owed += bytes.length;
    if (entry.owed >= this.#grantThreshold) {
      const grant = entry.owed;
      entry.owed = 0;
      entry.recvRemaining += grant;
      this.#sendQuietly({ type: 'credit', id: entry.id, bytes: grant });
    }
  }

  // -- ending --

  #abort(entry) {
    if (entry.settled) return;
    if (entry.live && this.#cancel) this.#sendQuietly({ type: 'cancel', id: entry.id });
    this.#end(entry);
    this.#settle(entry, abortReason(entry.signal));
  }

  #cancelByPage(entry) {
    if (entry.live && this.#cancel) this.#sendQuietly({ type: 'cancel', id: entry.id });
    this.#end(entry);
    entry.settled = true;
    entry.pending = [];
    this.#forgetSignal(entry);
  }

  // Reports a home peer's protocol violation on its stream and fails it.
  #protocolError(entry, code, message) {
    debug(`stream ${entry.id}: ${code}: ${message}`);
    if (entry.live) this.#sendQuietly({ type: 'error', id: entry.id, code, message });
    this.#end(entry);
    this.#settle(entry, streamError(code, message));
  }

  // Ends the stream on the channel: no more frames are sent or accepted for it.
  #end(entry) {
    clearTimeout(entry.headTimer);
    if (!entry.live) return;
    entry.live = false;
    this.#streams.delete(entry.id);
    this.#releaseSlot();
    if (!entry.uploadDone) {
      entry.uploadDone = true;
      entry.reader?.cancel().catch(() => {});
      entry.reader = null;
    }
    entry.wakeUpload?.();
  }

  // Gives the page its outcome when the stream failed.
  #settle(entry, error, retryable = false) {
    if (entry.settled) return;
    entry.settled = true;
    entry.pending = [];
    this.#forgetSignal(entry);
    if (entry.head) {
      entry.controller.error(error);
    } else if (retryable && entry.retry) {
      entry.resolve(entry.retry());
    } else {
      entry.reject(error);
    }
  }

  #closeBody(entry) {
    if (entry.settled) return;
    entry.settled = true;
    this.#forgetSignal(entry);
    entry.controller.close();
  }

  #forgetSignal(entry) {
    if (entry.onAbort) entry.signal.removeEventListener('abort', entry.onAbort);
    entry.onAbort = null;
  }
}

/**
 * One data channel's protocol: sends `hello` when the channel opens, speaks
 * v1 until `agree` arrives (or for good when none comes within the
 * negotiation timeout), and routes every received message to the v1 requests
 * or the v2 streams.
 *
 * Knows nothing of WebRTC: it is given the same `link` as ChannelStreams.
 */
export class ChannelProtocol {
  #link;
  #window;
  #features;
  #timeoutMs;
  #headTimeoutMs;
  #timer = null;
  #state = 'idle'; // 'idle' | 'negotiating' | 'settled' | 'closed'
  #resolveNegotiated;
  #info = null;

  /** The v1 requests (always available: a v2 home peer serves v1 too). */
  requests;
  /** The v2 streams, once `agree` arrived; else null. */
  streams = null;
  /** Resolves with `info` once negotiation settles (`{version: 1}` when it never does). */
  negotiated;

  /**
   * @param {object} link `{ send(message), maxMessageSize, congested?(), drained?() }`
   * @param {object} [options]
   * @param {number} [options.window] hello.window: our per-stream window for response bodies
   * @param {string[]} [options.features] the features to ask for
   * @param {number} [options.timeoutMs] how long to wait for `agree` before settling on v1
   */
  constructor(link, { window = DEFAULT_WINDOW, features = FEATURES, timeoutMs = DEFAULT_NEGOTIATE_MS, headTimeoutMs = DEFAULT_HEAD_TIMEOUT_MS } = {}) {
    this.#link = link;
    this.#headTimeoutMs = headTimeoutMs;
    this.#window = window;
    this.#features = [...features];
    this.#timeoutMs = timeoutMs;
    this.requests = new ChannelRequests((text) => link.send(text));
    this.negotiated = new Promise((resolve) => {
      this.#resolveNegotiated = resolve;
    });
  }

  /**
   * What was agreed: `{version: 1}` or `{version: 2, features, binary}`;
   * null while negotiating.
   */
  get info() {
    return this.#info;
  }

  /** The version new requests use: 2 once agreed, else 1. */
  get version() {
    return this.streams ? 2 : 1;
  }

  /** Starts negotiation: call once, when the channel opens. */
  open() {
    if (this.#state !== 'idle') return;
    this.#state = 'negotiating';
    try {
      this.#link.send(encodeJson({ type: 'hello', version: PROTOCOL_VERSION, features: this.#features, window: this.#window }));
    } catch (err) {
      debug('could not send hello; speaking v1:', err?.message ?? err);
      this.#settle({ version: 1 });
      return;
    }
    this.#timer = setTimeout(() => {
      debug(`no agree within ${this.#timeoutMs} ms; speaking v1`);
      this.#settle({ version: 1 });
    }, this.#timeoutMs);
  }

  // Hands the frame `decode` returns to the streams; a malformed frame is
  // reported to them instead (it fails its own stream, if it names one).
  #deliver(decode) {
    let frame;
    try {
      frame = decode();
    } catch (err) {
      if (err instanceof FrameError) this.streams.receiveBad(err);
      else throw err;
      return;
    }
    this.streams.receive(frame);
  }

  /** Handles one message from the channel (string, ArrayBuffer or byte view). */
  receive(message) {
    if (typeof message !== 'string') {
      if (this.streams?.binary) {
        this.#deliver(() => decodeBinary(message));
        return;
      }
      // Before binary framing is agreed, a binary message is UTF-8 JSON text.
      message = lenientUtf8.decode(message);
    }
    for (const obj of parseTextFrames(message)) this.#route(obj);
  }

  /** Fails or retries everything in flight; the channel is gone. */
  closeAll() {
    clearTimeout(this.#timer);
    if (this.#state !== 'settled') this.#settle({ version: 1 });
    this.#state = 'closed';
    this.requests.closeAll();
    this.streams?.closeAll();
  }

  #route(obj) {
    switch (obj.type) {
      case 'chunk':
      case 'done':
        this.requests.route(obj);
        return;
      case 'agree':
        this.#onAgree(obj);
        return;
      case 'response':
      case 'data':
      case 'end':
      case 'cancel':
      case 'error':
      case 'credit': {
        if (!this.streams) {
          if (obj.type === 'error') debug(`home peer reported ${obj.code}: ${obj.message}`);
          return;
        }
        this.#deliver(() => frameFromObject(obj));
        return;
      }
      default:
        // Unknown types (and v1 requests, which a home never sends) are ignored.
        return;
    }
  }

  #onAgree(obj) {
    if (this.#state !== 'negotiating') {
      debug('ignoring an agree that came too late or twice');
      return;
    }
    let agree;
    try {
      agree = frameFromObject(obj);
    } catch (err) {
      debug('ignoring a malformed agree; speaking v1:', err?.message ?? err);
      this.#settle({ version: 1 });
      return;
    }
    clearTimeout(this.#timer);
    if (agree.version < 2) {
      this.#settle({ version: 1 });
      return;
    }
    const features = this.#features.filter((f) => agree.features.includes(f));
    const has = (f) => features.includes(f);
    this.streams = new ChannelStreams(this.#link, {
      binary: has('binary'),
      cancel: has('cancel'),
      credit: has('credit'),
      sendWindow: agree.window,
      recvWindow: this.#window,
      maxStreams: agree.max_streams,
      maxHeaderBytes: agree.max_header_bytes,
      headTimeoutMs: this.#headTimeoutMs,
    });
    this.#settle({ version: 2, features, binary: has('binary'), window: agree.window, maxStreams: agree.max_streams, maxWsMessage: agree.max_ws_message_bytes || DEFAULT_MAX_WS_MESSAGE });
  }

  #settle(info) {
    if (this.#state === 'settled' || this.#state === 'closed') return;
    this.#state = 'settled';
    this.#info = Object.freeze(info);
    this.#resolveNegotiated(this.#info);
  }
}

// ---- WebSockets (docs/protocol.md §4.7) -------------------------------------

const RECORD_HEADER_BYTES = 5;
const RECORD_KINDS = Object.freeze({ text: 1, binary: 2, close: 8, ping: 9, pong: 10 });
const DEFAULT_MAX_WS_MESSAGE = 16 * 1024 * 1024;

/** One WebSocket message as a record: `[kind u8][length u32][payload]`. */
export function encodeRecord(kind, payload) {
  const record = new Uint8Array(RECORD_HEADER_BYTES + payload.length);
  record[0] = kind;
  new DataView(record.buffer).setUint32(1, payload.length);
  record.set(payload, RECORD_HEADER_BYTES);
  return record;
}

/** A close record: empty, or the code then the UTF-8 reason. */
export function encodeCloseRecord(code, reason = '') {
  if (code === undefined) return encodeRecord(RECORD_KINDS.close, new Uint8Array(0));
  const text = utf8Encoder.encode(reason);
  const payload = new Uint8Array(2 + text.length);
  new DataView(payload.buffer).setUint16(0, code);
  payload.set(text, 2);
  return encodeRecord(RECORD_KINDS.close, payload);
}

/** A record kind or length this client refuses; `code` is the close code. */
export class RecordError extends Error {
  name = 'RecordError';
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

/**
 * Turns the bytes of a WebSocket stream, as they arrive in `data` frames,
 * into messages `{kind: 'text'|'binary'|'close'|'ping'|'pong', data, code?, reason?}`.
 */
export class RecordReader {
  #chunks = [];
  #size = 0;
  #limit;

  constructor(limit = DEFAULT_MAX_WS_MESSAGE) {
    this.#limit = limit;
  }

  push(bytes) {
    if (bytes.length === 0) return;
    this.#chunks.push(bytes);
    this.#size += bytes.length;
  }

  #peek(n) {
    const out = new Uint8Array(n);
    let at = 0;
    for (const chunk of this.#chunks) {
      const take = Math.min(chunk.length, n - at);
      out.set(chunk.subarray(0, take), at);
      at += take;
      if (at === n) break;
    }
    return out;
  }

  #take(n) {
    const out = this.#peek(n);
    let left = n;
    while (left > 0) {
      const chunk = this.#chunks[0];
      if (chunk.length <= left) {
        this.#chunks.shift();
        left -= chunk.length;
      } else {
        this.#chunks[0] = chunk.subarray(left);
        left = 0;
      }
    }
    this.#size -= n;
    return out;
  }

  /** The next whole message, or null when more bytes are needed; throws RecordError. */
  next() {
    if (this.#size < RECORD_HEADER_BYTES) return null;
    const header = this.#peek(RECORD_HEADER_BYTES);
    const kind = header[0];
    const length = new DataView(header.buffer).getUint32(1);
    const control = kind === RECORD_KINDS.close || kind === RECORD_KINDS.ping || kind === RECORD_KINDS.pong;
    if (kind === RECORD_KINDS.text || kind === RECORD_KINDS.binary) {
      if (length > this.#limit) throw new RecordError(`a ${length}-byte message is over the ${this.#limit}-byte limit`, 1009);
    } else if (!control) {
      throw new RecordError(`unknown record kind ${kind}`, 1002);
    } else if (length > 125 || (kind === RECORD_KINDS.close && length === 1)) {
      throw new RecordError('malformed control record', 1002);
    }
    if (this.#size < RECORD_HEADER_BYTES + length) return null;
    this.#take(RECORD_HEADER_BYTES);
    const payload = this.#take(length);
    switch (kind) {
      case RECORD_KINDS.text: {
        let data;
        try {
          data = strictUtf8.decode(payload);
        } catch {
          throw new RecordError('a text message is not valid UTF-8', 1007);
        }
        return { kind: 'text', data };
      }
      case RECORD_KINDS.binary:
        return { kind: 'binary', data: payload };
      case RECORD_KINDS.ping:
        return { kind: 'ping', data: payload };
      case RECORD_KINDS.pong:
        return { kind: 'pong', data: payload };
      default: {
        if (payload.length === 0) return { kind: 'close', code: 1005, reason: '' };
        const code = new DataView(payload.buffer, payload.byteOffset).getUint16(0);
        let reason;
        try {
          reason = strictUtf8.decode(payload.subarray(2));
        } catch {
          throw new RecordError('a close reason is not valid UTF-8', 1007);
        }
        return { kind: 'close', code, reason };
      }
    }
  }
}

const WS_CONNECTING = 0;
const WS_OPEN = 1;
const WS_CLOSING = 2;
const WS_CLOSED = 3;

function makeEvent(type, init = {}) {
  if (type === 'message' && typeof MessageEvent === 'function') return new MessageEvent('message', init);
  if (type === 'close' && typeof CloseEvent === 'function') return new CloseEvent('close', init);
  const event = new Event(type);
  for (const [key, value] of Object.entries(init)) Object.defineProperty(event, key, { value, enumerable: true });
  return event;
}

/**
 * A WebSocket-compatible object (`client.websocket(url, protocols)`). Over
 * the data channel when it is open and the home agreed `websocket`; over
 * the normal path otherwise: a browser WebSocket to the same URL, which
 * signal-api relays to the home. A socket stays on the path it opened on;
 * when that path dies the page gets a close (1006 on the channel, 1011
 * from the relay) and may open a new one. `path` says which: 'direct' or
 * 'relay'.
 */
export class BeelineWebSocket extends EventTarget {
  static CONNECTING = WS_CONNECTING;
  static OPEN = WS_OPEN;
  static CLOSING = WS_CLOSING;
  static CLOSED = WS_CLOSED;
  CONNECTING = WS_CONNECTING;
  OPEN = WS_OPEN;
  CLOSING = WS_CLOSING;
  CLOSED = WS_CLOSED;

  onopen = null;
  onmessage = null;
  onerror = null;
  onclose = null;

  #url;
  #readyState = WS_CONNECTING;
  #protocol = '';
  #binaryType = 'blob';
  #buffered = 0;
  #path;
  #native = null;
  #controller = null; // our direction of the stream
  #closeSent = false;
  #closeReceived = null;
  #closedOnce = false;

  /**
   * @param {string} url absolute ws(s):// URL (what `url` reports)
   * @param {string[]} protocols requested subprotocols
   * @param {{streams?: ChannelStreams, maxMessage?: number, relayUrl: string, path: string, headers: Object<string,string>, NativeWebSocket?: typeof WebSocket}} how
   */
  constructor(url, protocols, how) {
    super();
    this.#url = url;
    if (how.streams) {
      this.#path = 'direct';
      this.#openDirect(how.streams, how.path, protocols, how.headers, how.maxMessage ?? DEFAULT_MAX_WS_MESSAGE, how.fallback);
    } else {
      this.#path = 'relay';
      this.#openNative(how.NativeWebSocket ?? globalThis.WebSocket, how.relayUrl, protocols);
    }
  }

  get url() { return this.#url; }
  get readyState() { return this.#native ? this.#native.readyState : this.#readyState; }
  get protocol() { return this.#native ? this.#native.protocol : this.#protocol; }
  get extensions() { return this.#native ? this.#native.extensions : ''; }
  get bufferedAmount() { return this.#native ? this.#native.bufferedAmount : this.#buffered; }
  get binaryType() { return this.#binaryType; }
  set binaryType(value) {
    if (value !== 'blob' && value !== 'arraybuffer') return;
    this.#binaryType = value;
    if (this.#native) this.#native.binaryType = value;
  }
  /** 'direct' (the data channel) or 'relay' (the normal path). */
  get path() { return this.#path; }

  #emit(type, init) {
    const event = makeEvent(type, init);
    const handler = this[`on${type}`];
    if (typeof handler === 'function') {
      try {
        handler.call(this, event);
      } catch (err) {
        setTimeout(() => { throw err; });
      }
    }
    this.dispatchEvent(event);
  }

  // ---- the normal path ----

  #openNative(NativeWebSocket, relayUrl, protocols) {
    const native = protocols.length > 0 ? new NativeWebSocket(relayUrl, protocols) : new NativeWebSocket(relayUrl);
    native.binaryType = this.#binaryType;
    this.#native = native;
    native.onopen = () => this.#emit('open');
    native.onmessage = (e) => this.#emit('message', { data: e.data, origin: new URL(this.#url).origin });
    native.onerror = () => this.#emit('error');
    native.onclose = (e) => this.#emit('close', { code: e.code, reason: e.reason, wasClean: e.wasClean });
  }

  // ---- the data channel ----

  async #openDirect(streams, path, protocols, headers, maxMessage, fallback) {
    const outgoing = new ReadableStream({
      start: (controller) => {
        this.#controller = controller;
      },
    });
    const head = { ...headers };
    if (protocols.length > 0) head['sec-websocket-protocol'] = protocols.join(', ');
    let answer;
    try {
      answer = await streams.start({ method: 'GET', path, headers: head, upgrade: 'websocket', body: outgoing });
    } catch (err) {
      if (err instanceof ChannelSendError && fallback) {
        // Nothing was sent: the normal path it is.
        this.#path = 'relay';
        this.#openNative(fallback.NativeWebSocket ?? globalThis.WebSocket, fallback.relayUrl, protocols);
        return;
      }
      debug('WebSocket over the channel failed:', err?.message ?? err);
      this.#fail(1006, '');
      return;
    }
    if (answer.status !== 101) {
      // The home service refused the handshake, as a browser sees it: an
      // error, then close 1006.
      answer.body?.cancel?.().catch?.(() => {});
      this.#fail(1006, '');
      return;
    }
    const chosen = answer.headers?.['sec-websocket-protocol'];
    if (chosen && !protocols.includes(chosen)) {
      this.#fail(1006, '');
      return;
    }
    if (this.#readyState === WS_CLOSING) {
      // close() was called while connecting.
      this.#sendRecord(encodeCloseRecord(1000, ''));
      this.#finishSending();
    } else {
      this.#readyState = WS_OPEN;
    }
    this.#protocol = chosen ?? '';
    if (this.#readyState === WS_OPEN) this.#emit('open');
    this.#readLoop(answer.body.getReader(), new RecordReader(maxMessage));
  }

  async #readLoop(reader, records) {
    try {
      for (;;) {
        let message;
        while ((message = records.next()) !== null) {
          if (message.kind === 'close') {
            this.#closeReceived = message;
            if (!this.#closeSent) {
              // Answer with the same code, as a browser does.
              const code = message.code === 1005 ? undefined : message.code;
              this.#sendRecord(encodeCloseRecord(code, ''));
              this.#finishSending();
            }
            this.#readyState = WS_CLOSING;
          } else if (message.kind === 'text' || message.kind === 'binary') {
            if (this.#readyState !== WS_OPEN) continue;
            const data = message.kind === 'text'
              ? message.data
              : this.#binaryType === 'arraybuffer'
                ? message.data.buffer.slice(message.data.byteOffset, message.data.byteOffset + message.data.length)
                : new Blob([message.data]);
            this.#emit('message', { data, origin: new URL(this.#url).origin });
          }
          // Pings and pongs are not a page's business.
        }
        const { value, done } = await reader.read();
        if (done) break;
        records.push(value);
      }
    } catch (err) {
      if (err instanceof RecordError) {
        this.#sendRecord(encodeCloseRecord(err.code, err.message.slice(0, 100)));
        this.#finishSending();
        reader.cancel().catch(() => {});
        this.#fail(err.code, err.message.slice(0, 100));
        return;
      }
      debug('WebSocket stream failed:', err?.message ?? err);
      this.#fail(1006, '');
      return;
    }
    // The home ended its direction.
    const close = this.#closeReceived;
    if (close) {
      this.#finishSending();
      this.#closed(close.code, close.reason, true);
    } else {
      this.#fail(1006, '');
    }
  }

  #sendRecord(record) {
    if (this.#closeSent || !this.#controller) return;
    if (record[0] === RECORD_KINDS.close) this.#closeSent = true;
    try {
      this.#controller.enqueue(record);
    } catch {
      // The stream is gone; the read side reports it.
    }
  }

  #finishSending() {
    try {
      this.#controller?.close();
    } catch {
      // Already closed.
    }
  }

  #fail(code, reason) {
    if (this.#closedOnce) return;
    this.#emit('error');
    this.#closed(code, reason, false);
  }

  #closed(code, reason, wasClean) {
    if (this.#closedOnce) return;
    this.#closedOnce = true;
    this.#readyState = WS_CLOSED;
    this.#finishSending();
    this.#emit('close', { code, reason, wasClean });
  }

  /** Sends a string, ArrayBuffer, typed array, DataView or Blob. */
  send(data) {
    if (this.#native) return this.#native.send(data);
    if (this.#readyState === WS_CONNECTING) throw new DOMException('WebSocket is still connecting', 'InvalidStateError');
    if (this.#readyState !== WS_OPEN) return;
    if (typeof data === 'string') {
      this.#queue(Promise.resolve(encodeRecord(RECORD_KINDS.text, utf8Encoder.encode(data))));
    } else if (data instanceof ArrayBuffer) {
      this.#queue(Promise.resolve(encodeRecord(RECORD_KINDS.binary, new Uint8Array(data.slice(0)))));
    } else if (ArrayBuffer.isView(data)) {
      const copy = new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
      this.#queue(Promise.resolve(encodeRecord(RECORD_KINDS.binary, copy)));
    } else if (typeof Blob === 'function' && data instanceof Blob) {
      this.#queue(data.arrayBuffer().then((buffer) => encodeRecord(RECORD_KINDS.binary, new Uint8Array(buffer))));
    } else {
      this.#queue(Promise.resolve(encodeRecord(RECORD_KINDS.text, utf8Encoder.encode(String(data)))));
    }
  }

  // Keeps messages in order even when a Blob must be read first.
  #sendChain = Promise.resolve();

  #queue(recordPromise) {
    this.#sendChain = this.#sendChain.then(async () => {
      const record = await recordPromise;
      this.#buffered += record.length;
      this.#sendRecord(record);
      // Handed to the stream's upload, which sends within the window.
      this.#buffered -= record.length;
    });
  }

  /** Closes with `code` (1000 or 3000–4999) and `reason` (at most 123 bytes). */
  close(code, reason) {
    if (code !== undefined && code !== 1000 && (code < 3000 || code > 4999 || !Number.isInteger(code))) {
      throw new DOMException(`The close code must be 1000 or in 3000-4999; ${code} is neither.`, 'InvalidAccessError');
    }
    const text = reason === undefined ? '' : String(reason);
    if (utf8Encoder.encode(text).length > 123) throw new DOMException('The close reason is longer than 123 bytes.', 'SyntaxError');
    if (this.#native) return this.#native.close(code, reason);
    if (this.#readyState === WS_CLOSING || this.#readyState === WS_CLOSED) return;
    if (this.#readyState === WS_CONNECTING) {
      this.#readyState = WS_CLOSING;
      return;
    }
    this.#readyState = WS_CLOSING;
    this.#sendChain = this.#sendChain.then(() => {
      this.#sendRecord(encodeCloseRecord(code ?? (reason === undefined ? undefined : 1000), text));
      this.#finishSending();
    });
  }
}

/** The link ChannelProtocol and ChannelStreams use, over an RTCDataChannel. */
function dataChannelLink(channel, pc) {
  const waiters = [];
  const wake = () => {
    for (const resolve of waiters.splice(0)) resolve();
  };
  channel.bufferedAmountLowThreshold = BUFFERED_LOW;
  channel.onbufferedamountlow = wake;
  return {
    get maxMessageSize() {
      const max = pc.sctp?.maxMessageSize;
      if (typeof max !== 'number' || Number.isNaN(max) || max <= 0) return DEFAULT_MAX_MESSAGE_SIZE;
      return Number.isFinite(max) ? max : UNLIMITED_MAX_MESSAGE_SIZE;
    },
    send(message) {
      if (channel.readyState !== 'open') throw new ChannelSendError('channel is not open');
      try {
        channel.send(message);
      } catch (err) {
        throw new ChannelSendError(err?.message ?? String(err));
      }
    },
    congested() {
      return channel.readyState === 'open' && channel.bufferedAmount > BUFFERED_HIGH;
    },
    // Resolves on `bufferedamountlow`, or after a while in case it was missed.
    drained() {
      return new Promise((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 250);
      });
    },
    close: wake,
  };
}

/**
 * Shows "⚡ direct" in `element` while the client's path is direct, and hides
 * it otherwise. `element` may be an element or a selector.
 */
export function installIndicator(client, element) {
  const el = typeof element === 'string' ? globalThis.document?.querySelector(element) : element;
  if (!el) return;
  const update = () => {
    if (client.path === 'direct') {
      el.textContent = INDICATOR_TEXT;
      el.title = 'Connected directly to home over WebRTC';
      el.hidden = false;
    } else {
      el.hidden = true;
    }
  };
  client.addEventListener('pathchange', update);
  update();
}

/**
 * A fetch-compatible client that prefers a direct WebRTC data channel.
 *
 * `path` is 'pending' while the channel is being set up, 'direct' while it is
 * open and usable, and 'fallback' otherwise. Every change fires a
 * `pathchange` event (detail: `{path}`) and calls `onpathchange`.
 * `ready` resolves to 'direct' or 'fallback' once setup ends; it never rejects.
 * `negotiated` resolves once the channel's protocol version is settled, with
 * `protocol` (`{version: 1}` or `{version: 2, features, binary, ...}`), or
 * with null when no channel opened.
 */
/** Maps why setup gave up to the reasons signal-api counts. */
function reportReason(why) {
  const w = String(why ?? '');
  if (w.startsWith('no direct channel within')) return 'timeout';
  if (w.includes('not available')) return 'unsupported';
  if (w.includes('said bye')) return 'bye';
  if (w.includes('closed by the page')) return 'closed';
  if (w.includes('connection failed')) return 'ice-failed';
  if (/session|signal|posting|poll|HTTP/i.test(w)) return 'signaling';
  return 'other';
}

class BeelineClient extends EventTarget {
  /** Called with the new path on every path change. */
  onpathchange = null;

  #opts;
  #path = 'pending';
  #resolveReady;
  #setupDone = false;
  #sessionId = null;
  #pc = null;
  #channel = null;
  #link = null;
  #protocol = null;
  #resolveNegotiated;
  #budgetTimer = null;
  #setupStarted = 0;
  #pollAbort = null;
  #signalQueue = Promise.resolve();
  // Sealed cookie jar: `{value, madeAt, epoch, documentCookie}` or null.
  #jar = null;
  // Bumped each time cookies changed where the jar cannot follow (a
  // normal-path response with x-beeline-cookies-changed, cookiesChanged()).
  #cookieEpoch = 0;
  // Jar exchanges and refreshes run one at a time, in this chain.
  #jarChain = Promise.resolve();
  #refreshing = null;
  #jarRetryAt = 0;
  #timingObserver = null;

  constructor(opts) {
    super();
    this.#opts = opts;
    this.ready = new Promise((resolve) => {
      this.#resolveReady = resolve;
    });
    this.negotiated = new Promise((resolve) => {
      this.#resolveNegotiated = resolve;
    });
    // Bound so `const { fetch } = client` works like the global one.
    this.fetch = (input, init) => this.#fetch(input, init);
    if (opts.enabled) {
      if (opts.cookies) this.#watchCookieTimings();
      this.#startSetup();
    } else {
      this.#finishSetup('fallback', 'disabled');
    }
  }

  /** 'pending' | 'direct' | 'fallback' */
  get path() {
    return this.#path;
  }

  /** What the channel's `hello`/`agree` settled, or null (no channel, or still negotiating). */
  get protocol() {
    return this.#protocol?.info ?? null;
  }

  /** The signaling session id, once the session exists (for diagnostics). */
  get sessionId() {
    return this.#sessionId;
  }

  /**
   * A WebSocket to `url` on the home service (`protocols`: a string or an
   * array of subprotocols): over the data channel when it is open, else
   * through signal-api's relay. See BeelineWebSocket.
   */
  websocket(url, protocols = []) {
    const list = typeof protocols === 'string' ? [protocols] : [...protocols];
    const target = new URL(String(url), this.#opts.baseUrl ?? globalThis.location?.href);
    if (target.protocol === 'http:') target.protocol = 'ws:';
    if (target.protocol === 'https:') target.protocol = 'wss:';
    if (target.protocol !== 'ws:' && target.protocol !== 'wss:') {
      throw new DOMException(`The URL's scheme must be ws, wss, http or https, not ${target.protocol}`, 'SyntaxError');
    }
    const relay = new URL(target);
    if (this.#sessionId) relay.searchParams.set(SESSION_PARAM, this.#sessionId);
    const pageOrigin = new URL(this.#opts.baseUrl ?? globalThis.location?.href ?? target.href);
    const sameOrigin = target.host === pageOrigin.host;
    const streams = this.#protocol?.streams;
    const agreed = this.#protocol?.info?.features?.includes('websocket');
    const fallback = { relayUrl: sameOrigin ? relay.href : target.href, NativeWebSocket: this.#opts.NativeWebSocket };
    if (sameOrigin && this.#directUsable() && streams && agreed) {
      const headers = { host: target.host };
      return new BeelineWebSocket(target.href, list, {
        streams,
        path: target.pathname + target.search,
        headers,
        maxMessage: this.#protocol.info.maxWsMessage,
        fallback,
      });
    }
    return new BeelineWebSocket(target.href, list, fallback);
  }

  /** Shows "⚡ direct" in `element` (or selector) while the path is direct. */
  installIndicator(element) {
    installIndicator(this, element);
  }

  /**
   * Tells the client that the page's cookies changed in a way it cannot see
   * (e.g. a login through the page's own `fetch` or an XHR, whose response
   * this client never reads, when the relay does not mark it with
   * `Server-Timing: beeline-cookies-changed`): the sealed jar is refreshed
   * before the next request on the channel. Responses that go through
   * `client.fetch` need no such call.
   */
  cookiesChanged() {
    this.#cookieEpoch += 1;
  }

  /** Closes the direct path for good; later requests use the fallback path. */
  close() {
    if (!this.#setupDone) {
      this.#abandon('closed by the page');
    } else {
      this.#teardown('closed by the page');
    }
  }

  #setPath(path) {
    if (this.#path === path) return;
    this.#path = path;
    this.dispatchEvent(new CustomEvent('pathchange', { detail: { path } }));
    if (typeof this.onpathchange === 'function') {
      try {
        this.onpathchange(path);
      } catch (err) {
        debug('onpathchange threw', err);
      }
    }
  }

  #finishSetup(outcome, why) {
    if (this.#setupDone) return;
    this.#setupDone = true;
    clearTimeout(this.#budgetTimer);
    this.#pollAbort?.abort();
    if (outcome === 'fallback') {
      debug(`using the normal path (${why})`);
      this.#resolveNegotiated(null);
    }
    this.#setPath(outcome);
    this.#resolveReady(outcome);
    if (why !== 'disabled') this.#report(outcome, why);
  }

  // Tells signal-api once per page load how setup went, so operators can see
  // the direct-connection success rate. Never affects the page.
  async #report(outcome, why) {
    try {
      const body = { outcome, setup_ms: Date.now() - this.#setupStarted };
      if (this.#sessionId) body.session_id = this.#sessionId;
      if (outcome === 'fallback') {
        body.reason = reportReason(why);
        body.detail = String(why ?? '').slice(0, 200);
      } else if (await this.#usesRelay()) {
        body.outcome = 'relay-candidate';
      }
      await this.#opts.signalFetch(this.#opts.signalBase + '/report', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        keepalive: true,
      });
    } catch (err) {
      debug('outcome report not sent', err?.message ?? err);
    }
  }

  // True when the selected candidate pair goes through a TURN relay.
  async #usesRelay() {
    const stats = await this.#pc?.getStats?.();
    if (!stats) return false;
    let pair = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) stats.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
    const local = pair && stats.get(pair.localCandidateId);
    const remote = pair && stats.get(pair.remoteCandidateId);
    return local?.candidateType === 'relay' || remote?.candidateType === 'relay';
  }

  // ---- request routing -------------------------------------------------

  #directUsable() {
    return this.#path === 'direct' && this.#channel?.readyState === 'open';
  }

  #sameOrigin(url) {
    const base = this.#opts.baseUrl;
    if (!base) return false;
    return url.origin === new URL(base).origin;
  }

  async #fetch(input, init) {
    const fallback = () => this.#normalFetch(input, init);
    if (!this.#directUsable()) return fallback();

    let request;
    try {
      const url = new URL(input instanceof Request ? input.url : String(input), this.#opts.baseUrl);
      if (!this.#sameOrigin(url)) return fallback();
      // A clone, so the page's own Request keeps its body for the normal path.
      request = new Request(input instanceof Request ? input.clone() : url, init);
    } catch (err) {
      // Something this client does not understand, or invalid: let fetch decide.
      debug('sending over the normal path:', err?.message ?? err);
      return fallback();
    }

    const url = new URL(request.url);
    const headers = {};
    request.headers.forEach((value, name) => {
      headers[name] = value;
    });
    const path = url.pathname + url.search;
    const signal = init?.signal ?? (input instanceof Request ? input.signal : undefined);
    let retried = false;
    const retry = IDEMPOTENT_METHODS.has(request.method)
      ? () => {
          retried = true;
          return fallback();
        }
      : undefined;
    const protocol = this.#protocol;
    try {
      if (protocol.streams) {
        // v2. The browser sets Host itself on the normal path; here the home
        // peer forwards it as x-forwarded-host.
        if (!('host' in headers)) headers.host = url.host;
        const body = await this.#streamBody(request, init);
        if (body.length !== undefined && (body.length > 0 || BODY_METHODS.has(request.method))) {
          headers['content-length'] = String(body.length);
        }
        if (this.#cookiesAgreed()) {
          // Our jar, never one the page set itself.
          for (const name of Object.keys(headers)) if (name.toLowerCase() === JAR_HEADER) delete headers[name];
          const jar = await this.#currentJar();
          if (jar) headers[JAR_HEADER] = jar;
        }
        if (signal?.aborted) throw abortReason(signal);
        const scheme = url.protocol.replace(/:$/, '');
        const response = await protocol.streams.start({ method: request.method, path, headers, scheme, body: body.source }, { signal, retry });
        return retried ? response : await this.#takeSetCookie(response);
      }
      const bytes = await readBody(request);
      const frame = { method: request.method, path, headers, body: bytes.length > 0 ? bytes : undefined };
      if (signal?.aborted) throw abortReason(signal);
      if (!this.#directUsable() || this.#tooLarge(frame)) return fallback();
      return await protocol.requests.start(frame, { signal, retry });
    } catch (err) {
      // Nothing left the browser, so any method may safely go the normal way.
      if (err instanceof ChannelSendError) return fallback();
      throw err;
    }
  }

  // The body of a v2 request and its length when known (then sent as
  // content-length, which the home peer holds the body to):
  // - a ReadableStream in `init.body` streams as the page produces it, with
  //   no length, where the browser takes streams as request bodies
  //   (`requestStreams`); where it does not, the browser has already turned
  //   it into whatever its own fetch would send, read below like any body;
  // - a Blob streams from the Blob, whose size is its length;
  // - everything else (string, ArrayBuffer, typed array, FormData,
  //   URLSearchParams, a Request's own body) is read whole, serialised by the
  //   browser exactly as its fetch would send it, with the content-type the
  //   Request constructor derived from it. This needs no
  //   `Request.prototype.body`, which Firefox does not have.
  async #streamBody(request, init) {
    if (NO_BODY_METHODS.has(request.method)) return { source: null, length: undefined };
    const given = init?.body;
    if (isReadableStream(given) && this.#opts.requestStreams) return { source: request.body, length: undefined };
    if (typeof Blob === 'function' && given instanceof Blob && given.size > 0 && typeof given.stream === 'function') {
      return { source: given.stream(), length: given.size };
    }
    const bytes = await readBody(request);
    return { source: bytes.length > 0 ? bytes : null, length: bytes.length };
  }

  #tooLarge(frame) {
    // Base64 grows the body by 4/3; SCTP rejects messages above its maximum.
    const max = this.#pc?.sctp?.maxMessageSize;
    if (!max || !Number.isFinite(max)) return false;
    const estimate = 512 + JSON.stringify(frame.headers).length + Math.ceil(((frame.body?.length ?? 0) * 4) / 3);
    return estimate > max;
  }

  // ---- cookies (docs/cookies.md) ----------------------------------------

  // The normal path: the page's own fetch, noting whether the relay said
  // the response set cookies (then the jar is stale).
  async #normalFetch(input, init) {
    const response = await this.#opts.fallbackFetch(input, init);
    try {
      if (response?.headers?.get(COOKIES_CHANGED_HEADER) === '1') this.#cookieEpoch += 1;
    } catch {
      // Not a real Response: nothing to note.
    }
    return response;
  }

  // Notes `Server-Timing: beeline-cookies-changed` on any response of the
  // page, including those of its own fetch and XHR. Started before the
  // session is asked for, so nothing after the jar's making is missed.
  #watchCookieTimings() {
    const Observer = globalThis.PerformanceObserver;
    if (typeof Observer !== 'function') return;
    try {
      const observer = new Observer((list) => this.#noteTimings(list.getEntries()));
      observer.observe({ type: 'resource' });
      this.#timingObserver = observer;
    } catch (err) {
      debug('cannot watch resource timings:', err?.message ?? err);
    }
  }

  #noteTimings(entries) {
    for (const entry of entries) {
      if (Array.isArray(entry?.serverTiming) && entry.serverTiming.some((t) => t?.name === COOKIES_CHANGED_TIMING)) this.#cookieEpoch += 1;
    }
  }

  #stopWatchingTimings() {
    this.#timingObserver?.disconnect();
    this.#timingObserver = null;
  }

  #cookiesAgreed() {
    return this.#jar !== null && this.#protocol?.info?.features?.includes(COOKIES_FEATURE) === true;
  }

  // What a jar made from a request sent now must be compared with later.
  #jarMark() {
    return { epoch: this.#cookieEpoch, madeAt: Date.now() };
  }

  #storeJar(value, mark) {
    if (typeof value !== 'string' || value === '') return;
    // document.cookie is read after the answer, which the browser has
    // already applied any Set-Cookie of.
    this.#jar = { value, madeAt: mark.madeAt, epoch: mark.epoch, documentCookie: documentCookie() };
  }

  #jarStale() {
    const jar = this.#jar;
    if (jar === null || Date.now() < this.#jarRetryAt) return false;
    if (jar.epoch < this.#cookieEpoch) return true;
    if (Date.now() - jar.madeAt > JAR_REFRESH_MS) return true;
    const now = documentCookie();
    return now !== undefined && now !== jar.documentCookie;
  }

  // Runs `task` after every jar exchange or refresh before it; its failure
  // is logged, never thrown.
  #jarTask(what, task) {
    const run = this.#jarChain.then(task).catch((err) => {
      debug(`${what} failed:`, err?.message ?? err);
      return false;
    });
    this.#jarChain = run;
    return run;
  }

  // The jar to send with a channel request: after any exchange in flight,
  // refreshed first when it is stale.
  async #currentJar() {
    await this.#jarChain;
    // Entries recorded but not yet delivered to the observer count too.
    if (this.#timingObserver) this.#noteTimings(this.#timingObserver.takeRecords());
    if (this.#jarStale()) await this.#refreshJar();
    return this.#jar?.value ?? null;
  }

  // One refresh at a time; requests that find the jar stale meanwhile wait
  // for the one in flight.
  #refreshJar() {
    if (this.#refreshing) return this.#refreshing;
    const refresh = this.#jarTask('refreshing the cookie jar', async () => {
      const mark = this.#jarMark();
      try {
        const reply = await this.#cookieRequest({ session_id: this.#sessionId });
        this.#storeJar(reply?.cookie_jar, mark);
        return true;
      } catch (err) {
        this.#jarRetryAt = Date.now() + JAR_RETRY_MS;
        throw err;
      }
    });
    this.#refreshing = refresh.finally(() => {
      this.#refreshing = null;
    });
    return this.#refreshing;
  }

  // POST {signalBase}/cookie, given up after JAR_TIMEOUT_MS.
  async #cookieRequest(body) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new Error(`no answer within ${JAR_TIMEOUT_MS} ms`)), JAR_TIMEOUT_MS);
    try {
      return await this.#signalRequest('POST', '/cookie', body, abort.signal);
    } finally {
      clearTimeout(timer);
    }
  }

  // A channel response whose Set-Cookie lines the home peer sealed: has
  // signal-api set them (same origin, so the browser stores them as it would
  // from the home app) and keeps the new jar, then gives the page the
  // response without the sealed header. If the exchange fails the response
  // still goes to the page, but its cookies are not set.
  async #takeSetCookie(response) {
    const sealed = response.headers.get(SET_COOKIE_HEADER);
    if (sealed === null) return response;
    try {
      response.headers.delete(SET_COOKIE_HEADER);
    } catch {
      // Headers the page may not change: hand it a copy without the header.
      const headers = new Headers(response.headers);
      headers.delete(SET_COOKIE_HEADER);
      response = new Response(response.body, { status: response.status, statusText: response.statusText, headers });
    }
    await this.#jarTask('setting the cookies of a channel response', async () => {
      const mark = this.#jarMark();
      const reply = await this.#cookieRequest({ session_id: this.#sessionId, set_cookie: sealed });
      this.#storeJar(reply?.cookie_jar, mark);
    });
    return response;
  }

  // ---- setup -----------------------------------------------------------

  #startSetup() {
    this.#setupStarted = Date.now();
    this.#budgetTimer = setTimeout(() => this.#abandon(`no direct channel within ${this.#opts.budgetMs} ms`), this.#opts.budgetMs);
    this.#setup().catch((err) => this.#abandon(err?.message ?? String(err)));
  }

  async #setup() {
    const PeerConnection = this.#opts.RTCPeerConnection;
    if (typeof PeerConnection !== 'function') throw new Error('RTCPeerConnection is not available');

    const jarMark = this.#jarMark();
    const session = await this.#signalRequest('POST', '/session', {});
    if (!session || typeof session.session_id !== 'string') throw new Error('session response has no session_id');
    this.#sessionId = session.session_id;
    // Servers without sealed cookie jars (older ones, --no-cookie-jar) send none.
    if (this.#opts.cookies) this.#storeJar(session.cookie_jar, jarMark);
    if (this.#jar === null) this.#stopWatchingTimings();
    if (this.#setupDone) {
      // Abandoned while the session was being created: release it.
      this.#postSignal({ type: 'bye' });
      return;
    }

    const iceServers = Array.isArray(session.ice_servers) ? session.ice_servers : [];
    const pc = new PeerConnection({ iceServers });
    this.#pc = pc;
    const channel = pc.createDataChannel(DATA_CHANNEL_LABEL);
    channel.binaryType = 'arraybuffer';
    this.#channel = channel;
    this.#link = dataChannelLink(channel, pc);
    // The cookies feature only with a jar to send.
    const features = this.#opts.features.filter((f) => f !== COOKIES_FEATURE);
    if (this.#jar !== null) features.push(COOKIES_FEATURE);
    const protocol = new ChannelProtocol(this.#link, { window: this.#opts.window, features, timeoutMs: this.#opts.negotiateMs, headTimeoutMs: this.#opts.headTimeoutMs });
    this.#protocol = protocol;
    protocol.negotiated.then((info) => {
      debug(`speaking protocol v${info.version}${info.version >= 2 ? ` (${info.features.join(', ') || 'no features'})` : ''}`);
      this.#resolveNegotiated(info);
    });
    channel.onmessage = (event) => protocol.receive(event.data);
    channel.onopen = () => this.#onChannelOpen();
    channel.onclose = () => this.#onChannelLost('data channel closed');
    channel.onerror = (event) => debug('data channel error', event?.error ?? event);
    pc.onconnectionstatechange = () => this.#onConnectionState(pc.connectionState);

    // Candidates may be gathered before the offer is posted; hold them until
    // it is, so the home peer always sees the offer first.
    let offerQueued = false;
    const heldCandidates = [];
    pc.onicecandidate = (event) => {
      const candidate = event.candidate ? event.candidate.toJSON() : null;
      if (offerQueued) this.#postSignal({ type: 'candidate', candidate });
      else heldCandidates.push(candidate);
    };

    const offer = await pc.createOffer();
    if (this.#setupDone) return;
    await pc.setLocalDescription(offer);
    if (this.#setupDone) return;
    this.#postSignal({ type: 'offer', sdp: pc.localDescription.sdp });
    offerQueued = true;
    for (const candidate of heldCandidates) this.#postSignal({ type: 'candidate', candidate });

    await this.#pollSignals(pc);
  }

  async #pollSignals(pc) {
    let cursor = 0;
    let remoteDescriptionSet = false;
    const earlyCandidates = [];
    while (!this.#setupDone) {
      this.#pollAbort = new AbortController();
      const query = `?session_id=${encodeURIComponent(this.#sessionId)}&after=${encodeURIComponent(cursor)}`;
      let reply;
      try {
        reply = await this.#signalRequest('GET', `/signal${query}`, undefined, this.#pollAbort.signal);
      } catch (err) {
        if (this.#setupDone) return;
        throw err;
      }
      if (this.#setupDone) return;
      if (reply && reply.cursor !== undefined && reply.cursor !== null) cursor = reply.cursor;
      const messages = Array.isArray(reply?.messages) ? reply.messages : [];
      // An empty reply normally means the server held the poll to its limit;
      // pause briefly anyway so a server that answers at once cannot spin us.
      if (messages.length === 0) await new Promise((resolve) => setTimeout(resolve, 100));
      for (const message of messages) {
        if (this.#setupDone) return;
        if (message?.type === 'answer' && !remoteDescriptionSet) {
          await pc.setRemoteDescription({ type: 'answer', sdp: message.sdp });
          remoteDescriptionSet = true;
          for (const candidate of earlyCandidates.splice(0)) await this.#addRemoteCandidate(pc, candidate);
        } else if (message?.type === 'candidate') {
          if (remoteDescriptionSet) await this.#addRemoteCandidate(pc, message.candidate);
          else earlyCandidates.push(message.candidate);
        } else if (message?.type === 'bye') {
          this.#abandon('home peer said bye', { sendBye: false });
          return;
        }
      }
    }
  }

  async #addRemoteCandidate(pc, candidate) {
    if (candidate === null || candidate === undefined) return;
    const init = typeof candidate === 'string' ? { candidate, sdpMLineIndex: 0 } : candidate;
    if (!init.candidate) return;
    try {
      await pc.addIceCandidate(init);
    } catch (err) {
      debug('ignoring a remote candidate', err?.message ?? err);
    }
  }

  #onChannelOpen() {
    if (this.#setupDone) return;
    this.#protocol.open();
    this.#finishSetup('direct');
  }

  #onConnectionState(state) {
    if (state === 'failed' || state === 'closed') {
      this.#onChannelLost(`connection ${state}`);
      return;
    }
    if (!this.#setupDone || this.#channel === null) return;
    // A 'disconnected' connection may come back: route new requests the normal
    // way meanwhile, and go direct again if it recovers.
    if (state === 'disconnected' && this.#path === 'direct') {
      debug('connection disconnected; using the normal path for now');
      this.#setPath('fallback');
    } else if (state === 'connected' && this.#path === 'fallback' && this.#channel.readyState === 'open') {
      this.#setPath('direct');
    }
  }

  #onChannelLost(why) {
    if (!this.#setupDone) {
      this.#abandon(why);
      return;
    }
    this.#teardown(why);
  }

  // Ends an attempt that never opened a channel. Never retried in this page load.
  #abandon(why, { sendBye = true } = {}) {
    if (this.#setupDone) return;
    this.#finishSetup('fallback', why);
    this.#closePeer();
    if (sendBye && this.#sessionId) this.#postSignal({ type: 'bye' });
  }

  // Ends a channel that was open: later requests take the normal path.
  #teardown(why) {
    if (this.#channel === null && this.#pc === null) return;
    debug(`direct channel lost (${why}); using the normal path`);
    this.#setPath('fallback');
    this.#protocol?.closeAll();
    this.#link?.close();
    this.#closePeer();
    if (this.#sessionId) this.#postSignal({ type: 'bye' });
  }

  #closePeer() {
    this.#stopWatchingTimings();
    const channel = this.#channel;
    const pc = this.#pc;
    this.#channel = null;
    this.#pc = null;
    if (channel) {
      channel.onopen = channel.onclose = channel.onmessage = channel.onerror = channel.onbufferedamountlow = null;
    }
    if (pc) {
      pc.onicecandidate = pc.onconnectionstatechange = null;
      try {
        pc.close();
      } catch {
        // Already closed.
      }
    }
  }

  // ---- signaling -------------------------------------------------------

  // Posts one signaling message; posts go out one at a time, in order.
  #postSignal(message) {
    const body = { session_id: this.#sessionId, ...message };
    this.#signalQueue = this.#signalQueue
      .then(() => this.#signalRequest('POST', '/signal', body, undefined, message.type === 'bye'))
      .catch((err) => {
        debug(`posting ${message.type} failed:`, err?.message ?? err);
        if (message.type !== 'bye') this.#abandon(`posting ${message.type} failed`);
      });
  }

  async #signalRequest(method, path, body, signal, keepalive = false) {
    const init = { method, headers: { accept: 'application/json' }, signal, keepalive, credentials: 'same-origin' };
    if (body !== undefined) {
      init.headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await this.#opts.signalFetch(this.#opts.signalBase + path, init);
    if (!res.ok) throw new Error(`${method} ${path.split('?')[0]} answered ${res.status}`);
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }
}

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
 * @param {Element|string} [options.indicator] element (or selector) showing "⚡ direct"
 * @param {typeof fetch} [options.fallbackFetch] the normal path (default: global fetch)
 * @param {typeof fetch} [options.signalFetch] used for signaling (default: global fetch)
 * @param {string} [options.baseUrl] what relative URLs resolve against and what
 *   counts as same-origin (default: `location.href`)
 * @param {typeof RTCPeerConnection} [options.RTCPeerConnection] for tests
 * @param {typeof WebSocket} [options.WebSocket] the normal path's WebSocket (default: the browser's)
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
  };
  const client = new BeelineClient(opts);
  if (options.indicator) installIndicator(client, options.indicator);
  return client;
}
