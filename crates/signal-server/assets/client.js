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
// Channel protocol v1: every data-channel message is one JSON text frame
// (a trailing newline, or several newline-separated frames, are accepted).
//   request:  {"id", "method", "path", "headers": {lowercase: value}, "body"?: base64}
//   response: {"id", "type": "chunk", "data": text} ... {"id", "type": "done", "status"}
// Unknown frame types and fields are ignored.
//
// Plain ES module with no dependencies and no build step; served by signal-api
// as `{signalBase}/client.js`.

/** Version of the channel protocol this client speaks. */
export const PROTOCOL_VERSION = 1;

const DEFAULT_SIGNAL_BASE = '/webrtc';
const DEFAULT_BUDGET_MS = 8000;
const DATA_CHANNEL_LABEL = 'http';
const INDICATOR_TEXT = '\u26a1 direct';
const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD']);

function debug(...args) {
  if (typeof console !== 'undefined' && console.debug) console.debug('beeline:', ...args);
}

/** Base64 of a byte array, in slices so large bodies do not overflow the call stack. */
export function encodeBase64(bytes) {
  let binary = '';
  const slice = 0x8000;
  for (let i = 0; i < bytes.length; i += slice) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + slice));
  }
  return btoa(binary);
}

// The channel refused a message, so nothing was sent.
class ChannelSendError extends Error {}

function channelClosedError(detail) {
  return new TypeError(`beeline: direct channel closed ${detail}`);
}

function abortReason(signal) {
  if (signal.reason !== undefined) return signal.reason;
  return new DOMException('The operation was aborted.', 'AbortError');
}

/**
 * The requests in flight on one data channel, matched to response frames by id.
 *
 * Knows nothing of WebRTC: it is given a `send(text)` function and fed each
 * received message through `receive`, so tests can drive it with a fake channel.
 */
export class ChannelRequests {
  #send;
  #inflight = new Map();
  #textEncoder = new TextEncoder();
  #textDecoder = new TextDecoder();

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

  /** Routes one received channel message (string or ArrayBuffer) to its request. */
  receive(message) {
    const text = typeof message === 'string' ? message : this.#textDecoder.decode(message);
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      let frame;
      try {
        frame = JSON.parse(line);
      } catch {
        debug('ignoring a channel message that is not JSON');
        continue;
      }
      if (frame && typeof frame === 'object') this.#route(frame);
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

  #route(frame) {
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
      const nullBody = status === 204 || status === 205 || status === 304;
      this.#startResponse(entry, status, nullBody ? null : entry.stream);
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
 */
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
  #requests = null;
  #budgetTimer = null;
  #pollAbort = null;
  #signalQueue = Promise.resolve();

  constructor(opts) {
    super();
    this.#opts = opts;
    this.ready = new Promise((resolve) => {
      this.#resolveReady = resolve;
    });
    // Bound so `const { fetch } = client` works like the global one.
    this.fetch = (input, init) => this.#fetch(input, init);
    if (opts.enabled) {
      this.#startSetup();
    } else {
      this.#finishSetup('fallback', 'disabled');
    }
  }

  /** 'pending' | 'direct' | 'fallback' */
  get path() {
    return this.#path;
  }

  /** The signaling session id, once the session exists (for diagnostics). */
  get sessionId() {
    return this.#sessionId;
  }

  /** Shows "⚡ direct" in `element` (or selector) while the path is direct. */
  installIndicator(element) {
    installIndicator(this, element);
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
    if (outcome === 'fallback') debug(`using the normal path (${why})`);
    this.#setPath(outcome);
    this.#resolveReady(outcome);
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
    const fallback = () => this.#opts.fallbackFetch(input, init);
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
    const body = request.body ? new Uint8Array(await request.arrayBuffer()) : undefined;
    const frame = { method: request.method, path: url.pathname + url.search, headers, body };
    if (!this.#directUsable() || this.#tooLarge(frame)) return fallback();

    const signal = init?.signal ?? (input instanceof Request ? input.signal : undefined);
    const retry = IDEMPOTENT_METHODS.has(request.method) ? fallback : undefined;
    try {
      return await this.#requests.start(frame, { signal, retry });
    } catch (err) {
      // Nothing left the browser, so any method may safely go the normal way.
      if (err instanceof ChannelSendError) return fallback();
      throw err;
    }
  }

  #tooLarge(frame) {
    // Base64 grows the body by 4/3; SCTP rejects messages above its maximum.
    const max = this.#pc?.sctp?.maxMessageSize;
    if (!max || !Number.isFinite(max)) return false;
    const estimate = 512 + JSON.stringify(frame.headers).length + Math.ceil(((frame.body?.length ?? 0) * 4) / 3);
    return estimate > max;
  }

  // ---- setup -----------------------------------------------------------

  #startSetup() {
    this.#budgetTimer = setTimeout(() => this.#abandon(`no direct channel within ${this.#opts.budgetMs} ms`), this.#opts.budgetMs);
    this.#setup().catch((err) => this.#abandon(err?.message ?? String(err)));
  }

  async #setup() {
    const PeerConnection = this.#opts.RTCPeerConnection;
    if (typeof PeerConnection !== 'function') throw new Error('RTCPeerConnection is not available');

    const session = await this.#signalRequest('POST', '/session', {});
    if (!session || typeof session.session_id !== 'string') throw new Error('session response has no session_id');
    this.#sessionId = session.session_id;
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
    this.#requests = new ChannelRequests((text) => {
      if (channel.readyState !== 'open') throw new ChannelSendError('channel is not open');
      try {
        channel.send(text);
      } catch (err) {
        throw new ChannelSendError(err?.message ?? String(err));
      }
    });
    channel.onmessage = (event) => this.#requests.receive(event.data);
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
    this.#requests?.closeAll();
    this.#closePeer();
    if (this.#sessionId) this.#postSignal({ type: 'bye' });
  }

  #closePeer() {
    const channel = this.#channel;
    const pc = this.#pc;
    this.#channel = null;
    this.#pc = null;
    if (channel) {
      channel.onopen = channel.onclose = channel.onmessage = channel.onerror = null;
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
 * @param {Element|string} [options.indicator] element (or selector) showing "⚡ direct"
 * @param {typeof fetch} [options.fallbackFetch] the normal path (default: global fetch)
 * @param {typeof fetch} [options.signalFetch] used for signaling (default: global fetch)
 * @param {string} [options.baseUrl] what relative URLs resolve against and what
 *   counts as same-origin (default: `location.href`)
 * @param {typeof RTCPeerConnection} [options.RTCPeerConnection] for tests
 */
export function createClient(options = {}) {
  const globalFetch = typeof globalThis.fetch === 'function' ? globalThis.fetch.bind(globalThis) : undefined;
  const signalBase = (options.signalBase ?? DEFAULT_SIGNAL_BASE).replace(/\/+$/, '');
  const opts = {
    signalBase,
    enabled: options.enabled ?? globalThis.__WEBRTC_ENABLED__ === true,
    budgetMs: options.budgetMs ?? DEFAULT_BUDGET_MS,
    fallbackFetch: options.fallbackFetch ?? globalFetch,
    signalFetch: options.signalFetch ?? globalFetch,
    baseUrl: options.baseUrl ?? globalThis.location?.href,
    RTCPeerConnection: 'RTCPeerConnection' in options ? options.RTCPeerConnection : globalThis.RTCPeerConnection,
  };
  const client = new BeelineClient(opts);
  if (options.indicator) installIndicator(client, options.indicator);
  return client;
}
