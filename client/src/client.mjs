// BeelineClient: setup, request routing, cookies.

import { BODY_METHODS, BUFFERED_LOW, ChannelSendError, COOKIES_CHANGED_HEADER, COOKIES_CHANGED_TIMING, COOKIES_FEATURE, DATA_CHANNEL_LABEL, IDEMPOTENT_METHODS, JAR_HEADER, JAR_REFRESH_MS, JAR_RETRY_MS, JAR_TIMEOUT_MS, NO_BODY_METHODS, RESUME_CHANNEL_LABEL, SESSION_HEADER, SESSION_PARAM, SET_COOKIE_HEADER, debug, documentCookie } from './common.mjs';
import { installIndicator } from './indicator.mjs';
import { dataChannelLink } from './link.mjs';
import { Loopback, parseLoopbackOffer } from './loopback.mjs';
import { RESUME_LINGER_MS, ResumableLink, UNKNOWN_CONNECTION_CLOSE } from './resume.mjs';
import { ChannelProtocol, abortReason, isReadableStream, readBody } from './streams.mjs';
import { BeelineWebSocket } from './websocket.mjs';

/** Maps why setup gave up to the reasons signal-api counts. */
export function reportReason(why) {
  const w = String(why ?? '');
  if (w.startsWith('no direct channel within')) return 'timeout';
  if (w.includes('not available')) return 'unsupported';
  if (w.includes('said bye')) return 'bye';
  if (w.includes('closed by the page')) return 'closed';
  if (w.includes('connection failed')) return 'ice-failed';
  if (/session|signal|posting|poll|HTTP/i.test(w)) return 'signaling';
  return 'other';
}

// ICE restart (see BeelineClient#scheduleIceRestart).
const ICE_RESTART_AFTER_MS = 1000;
const ICE_RESTART_ATTEMPTS = 3;
const ICE_RESTART_BUDGET_MS = 10_000;

const now = () => (typeof performance !== 'undefined' && typeof performance.now === 'function' ? performance.now() : Date.now());

/**
 * A fetch-compatible client that prefers the nearest path to home.
 *
 * `path` is the way requests go now: 'loopback' (home-peer's loopback
 * listener on this machine, when the session offered one and its probe
 * proved it is this home's), 'direct' (the data channel), 'relay' (the
 * data channel through a TURN relay), or 'normal' (the public server:
 * while the channel is being set up, when it failed, and after it closed).
 * Every change fires a `pathchange` event (detail: `{path, previous,
 * rttMs, setupMs}`) and calls `onpathchange(path)`; a new measurement fires
 * `timingchange`. `timing` is the current path's measured round trip and
 * setup time.
 * `ready` resolves with the path once it is chosen (the loopback probe
 * settled and the channel opened or setup ended); it never rejects.
 * `negotiated` resolves once the channel's protocol version is settled, with
 * `protocol` (`{version: 1}` or `{version: 2, features, binary, ...}`), or
 * with null when no channel opened.
 *
 * With `resume` on and a session that offers it (docs/protocol.md §4.8),
 * requests and WebSockets run on one resumable connection instead: it
 * starts on the frame connection through signal-api's home link (path
 * 'normal'), moves to the `resume` data channel when it opens ('direct' or
 * 'relay') and back when the channel's path dies, and streams in flight
 * carry on across both moves, nothing lost, duplicated or reordered.
 * `resume` tells its state.
 */
export class BeelineClient extends EventTarget {
  /** Called with the new path on every path change. */
  onpathchange = null;

  #opts;
  // The public path, recomputed from the state below by #updatePath.
  #path = 'normal';
  // The data channel: 'pending' while it is being set up, 'direct' while it
  // is open and usable, 'fallback' otherwise.
  #channelState = 'pending';
  // True when the channel's selected candidate pair goes through TURN.
  #viaTurn = false;
  #turnChecked = false;
  // The session's loopback listener (a Loopback), or null.
  #loopback = null;
  // Measurements, in ms: the normal path's round trip (POST /session), the
  // channel's (hello -> agree) and setup, the loopback probe's and setup.
  #timings = { normal: {}, direct: {}, loopback: {} };
  #resolveReady;
  #readyResolved = false;
  #setupDone = false;
  #sessionId = null;
  #pc = null;
  #channel = null;
  #link = null;
  #protocol = null;
  #resolveNegotiated;
  #budgetTimer = null;
  #setupStarted = 0;
  #setupStartedAt = 0;
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
  // The resumable connection (docs/protocol.md §4.8), when the session
  // offers one and `resume` is on: a ResumableLink over the frame
  // connection (#frames, a WebSocket through the home link) and the
  // `resume` data channel (#channel, carrier id #channelCarrier).
  #resumable = null;
  #frames = null;
  #channelCarrier = null;
  #framesRetries = 0;
  // Signaling: where the session's message list was read up to.
  #cursor = 0;
  // ICE restarts (see #scheduleIceRestart): the pending timer, whether one
  // is under way, and how many this outage has had.
  #restartTimer = null;
  #restarting = false;
  #restartAttempts = 0;

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

  /** 'loopback' | 'direct' | 'relay' | 'normal' */
  get path() {
    return this.#path;
  }

  /**
   * The current path's measurements: `{path, rttMs, setupMs}` (ms, null
   * when not measured). The round trip is the loopback probe's, the
   * channel's hello/agree exchange, or the normal path's session request;
   * setup is the time from the client's start to the path being usable.
   */
  get timing() {
    const path = this.#path;
    const t = this.#timings[path === 'relay' ? 'direct' : path] ?? {};
    return { path, rttMs: t.rttMs ?? null, setupMs: t.setupMs ?? null };
  }

  /** What the channel's `hello`/`agree` settled, or null (no channel, or still negotiating). */
  get protocol() {
    return this.#protocol?.info ?? null;
  }

  /**
   * The resumable connection, when requests run on one (see above):
   * `{carrier, switches}`, where `carrier` is what it writes to now
   * ('channel', 'link', or null while it has none) and `switches` counts
   * its moves; null otherwise.
   */
  get resume() {
    const link = this.#resumable;
    if (!link || link.closed) return null;
    return { carrier: link.carrier, switches: link.switches };
  }

  /** The signaling session id, once the session exists (for diagnostics). */
  get sessionId() {
    return this.#sessionId;
  }

  /**
   * A WebSocket to `url` on the home service (`protocols`: a string or an
   * array of subprotocols): over the loopback listener when it is the path,
   * over the data channel when it is open (chosen once hello/agree settles,
   * if that is still under way), else through signal-api's relay. See
   * BeelineWebSocket.
   */
  websocket(url, protocols = []) {
    const list = typeof protocols === 'string' ? [protocols] : [...protocols];
    const target = new URL(String(url), this.#opts.baseUrl ?? globalThis.location?.href);
    if (target.protocol === 'http:') target.protocol = 'ws:';
    if (target.protocol === 'https:') target.protocol = 'wss:';
    if (target.protocol !== 'ws:' && target.protocol !== 'wss:') {
      throw new DOMException(`The URL's scheme must be ws, wss, http or https, not ${target.protocol}`, 'SyntaxError');
    }
    const pageOrigin = new URL(this.#opts.baseUrl ?? globalThis.location?.href ?? target.href);
    const sameOrigin = target.host === pageOrigin.host;
    const protocol = this.#protocol;
    if (sameOrigin && !this.#loopbackUsable() && (this.#directUsable() || this.#resumeCarried()) && protocol && protocol.info === null) {
      // The channel is open but hello/agree is still under way (a page that
      // opens a socket as soon as `ready` resolves): choose once it settles.
      return new BeelineWebSocket(target.href, list, { later: protocol.negotiated.then(() => this.#websocketPath(target, sameOrigin)) });
    }
    return new BeelineWebSocket(target.href, list, this.#websocketPath(target, sameOrigin));
  }

  // How a WebSocket to `target` goes now: the loopback listener, the
  // channel (when the home agreed `websocket`), or the relay.
  #websocketPath(target, sameOrigin, { loopback = true } = {}) {
    const relay = new URL(target);
    if (this.#sessionId) relay.searchParams.set(SESSION_PARAM, this.#sessionId);
    const streams = this.#protocol?.streams;
    const agreed = this.#protocol?.info?.features?.includes('websocket');
    const fallback = { relayUrl: sameOrigin ? relay.href : target.href, NativeWebSocket: this.#opts.NativeWebSocket };
    if (loopback && sameOrigin && this.#loopbackUsable()) {
      const listener = this.#loopback;
      // A socket the listener never opened: the next path, and a probe to
      // tell a listener that is gone from a refusal of the home service.
      const retry = () => {
        listener.verify();
        return this.#websocketPath(target, sameOrigin, { loopback: false });
      };
      return { relayUrl: listener.websocketUrl(target.pathname + target.search), NativeWebSocket: this.#opts.NativeWebSocket, label: 'loopback', retry };
    }
    if (sameOrigin && (this.#directUsable() || this.#resumeUsable()) && streams && agreed) {
      return { streams, path: target.pathname + target.search, headers: { host: target.host }, maxMessage: this.#protocol.info.maxWsMessage, fallback };
    }
    return fallback;
  }

  /** Shows the path in `element` (or selector); see installIndicator. */
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

  /** Closes the direct and loopback paths (and the resumable connection) for good; later requests use the normal path. */
  close() {
    this.#resumable?.close('closed by the page');
    if (this.#loopback) {
      this.#loopback = null;
      this.#updatePath();
    }
    if (!this.#setupDone) {
      this.#abandon('closed by the page');
    } else {
      this.#teardown('closed by the page');
    }
  }

  #setChannelState(state) {
    this.#channelState = state;
    this.#updatePath();
  }

  // The path requests take now, from the loopback and channel states.
  #currentPath() {
    if (this.#loopback?.alive) return 'loopback';
    if (this.#channelState === 'direct') return this.#viaTurn ? 'relay' : 'direct';
    return 'normal';
  }

  #updatePath() {
    const path = this.#currentPath();
    const previous = this.#path;
    if (path !== previous) {
      this.#path = path;
      const { rttMs, setupMs } = this.timing;
      this.dispatchEvent(new CustomEvent('pathchange', { detail: { path, previous, rttMs, setupMs } }));
      if (typeof this.onpathchange === 'function') {
        try {
          this.onpathchange(path);
        } catch (err) {
          debug('onpathchange threw', err);
        }
      }
    }
    this.#maybeReady();
  }

  // `ready` resolves once the choice is made: the loopback probe (if any)
  // settled and the channel either opened or setup ended.
  #maybeReady() {
    if (this.#readyResolved) return;
    if (this.#loopback?.state === 'probing') return;
    if (!this.#loopback?.alive && this.#channelState === 'pending') return;
    this.#readyResolved = true;
    this.#resolveReady(this.#path);
  }

  #measured(path, values) {
    Object.assign(this.#timings[path], values);
    this.dispatchEvent(new CustomEvent('timingchange', { detail: this.timing }));
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
    this.#setChannelState(outcome);
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
      } else if (this.#viaTurn || (await this.#usesRelay())) {
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
    return this.#channelState === 'direct' && this.#channel?.readyState === 'open';
  }

  // The resumable connection has a carrier to write to.
  #resumeCarried() {
    const link = this.#resumable;
    return link !== null && !link.closed && link.carrier !== null;
  }

  // ...and its streams are agreed: requests may go on it.
  #resumeUsable() {
    return this.#resumeCarried() && Boolean(this.#protocol?.streams);
  }

  #loopbackUsable() {
    const loopback = this.#loopback;
    if (!loopback) return false;
    loopback.maybeRevive();
    return loopback.alive;
  }

  #sameOrigin(url) {
    const base = this.#opts.baseUrl;
    if (!base) return false;
    return url.origin === new URL(base).origin;
  }

  // `loopback: false` for a request the listener sent back (it stays the
  // path for the others).
  async #fetch(input, init, { loopback = true } = {}) {
    const fallback = () => this.#normalFetch(input, init);
    if (loopback && this.#loopbackUsable()) return this.#loopbackFetch(input, init);
    if (!this.#directUsable() && !this.#resumeUsable()) return fallback();

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

  // A request to home-peer's loopback listener. Its body is read whole
  // first, so that when the listener turns out to be gone (the connection
  // fails before any response) or refuses the ticket, the same request goes
  // on over the channel or the normal path without the page seeing an error.
  async #loopbackFetch(input, init) {
    const loopback = this.#loopback;
    let request;
    let url;
    try {
      url = new URL(input instanceof Request ? input.url : String(input), this.#opts.baseUrl);
      if (!this.#sameOrigin(url)) return this.#normalFetch(input, init);
      request = new Request(input instanceof Request ? input.clone() : url, init);
    } catch (err) {
      debug('sending over the normal path:', err?.message ?? err);
      return this.#normalFetch(input, init);
    }
    const signal = init?.signal ?? (input instanceof Request ? input.signal : undefined);
    const bytes = await readBody(request);
    const jar = this.#jar !== null ? await this.#currentJar() : null;
    if (signal?.aborted) throw abortReason(signal);
    const response = await loopback.send({
      method: request.method,
      path: url.pathname + url.search,
      headers: request.headers,
      body: NO_BODY_METHODS.has(request.method) ? null : bytes,
      signal,
      cache: request.cache,
      redirect: request.redirect,
      jar,
    });
    if (response !== null) return this.#takeSetCookie(response);
    // The listener is gone (marked dead, so the path changed) or sent this
    // request back: the next path.
    const replay = { ...init };
    if (!NO_BODY_METHODS.has(request.method)) replay.body = bytes;
    delete replay.duplex;
    return this.#fetch(input, replay, { loopback: false });
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
    const response = await this.#opts.fallbackFetch(...this.#namingSession(input, init));
    try {
      if (response?.headers?.get(COOKIES_CHANGED_HEADER) === '1') this.#cookieEpoch += 1;
    } catch {
      // Not a real Response: nothing to note.
    }
    return response;
  }

  // The request with x-beeline-session added when it goes to this origin
  // and the session exists, so a signal-api serving several homes relays it
  // to this page's home.
  #namingSession(input, init) {
    if (this.#sessionId === null) return [input, init];
    try {
      const url = new URL(input instanceof Request ? input.url : String(input), this.#opts.baseUrl);
      if (!this.#sameOrigin(url)) return [input, init];
      const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
      if (headers.has(SESSION_HEADER)) return [input, init];
      headers.set(SESSION_HEADER, this.#sessionId);
      return [input, { ...init, headers }];
    } catch {
      return [input, init];
    }
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
    this.#setupStartedAt = now();
    this.#budgetTimer = setTimeout(() => this.#abandon(`no direct channel within ${this.#opts.budgetMs} ms`), this.#opts.budgetMs);
    this.#setup().catch((err) => this.#abandon(err?.message ?? String(err)));
  }

  async #setup() {
    const PeerConnection = this.#opts.RTCPeerConnection;
    if (typeof PeerConnection !== 'function') throw new Error('RTCPeerConnection is not available');

    const jarMark = this.#jarMark();
    const asked = now();
    const session = await this.#signalRequest('POST', '/session', {});
    if (!session || typeof session.session_id !== 'string') throw new Error('session response has no session_id');
    this.#measured('normal', { rttMs: now() - asked });
    this.#sessionId = session.session_id;
    this.#startLoopback(session);
    // Servers without sealed cookie jars (older ones, --no-cookie-jar) send none.
    if (this.#opts.cookies) this.#storeJar(session.cookie_jar, jarMark);
    if (this.#jar === null) this.#stopWatchingTimings();
    if (this.#setupDone) {
      // Abandoned while the session was being created: release it.
      this.#postSignal({ type: 'bye' });
      return;
    }

    // 'auto': where the normal path already runs through home-peer (the
    // home link, no tunnel), so only resumability is added.
    const wanted = this.#opts.resume === 'auto' ? session.normal_path === 'home-link' : this.#opts.resume === true;
    const resume = wanted && session.resume === true;
    if (resume) this.#startResumable();
    if (this.#opts.directAfterMs > 0) {
      // The page asked for the direct path later; the setup budget starts then.
      await new Promise((resolve) => setTimeout(resolve, this.#opts.directAfterMs));
      if (this.#setupDone) return;
      clearTimeout(this.#budgetTimer);
      this.#budgetTimer = setTimeout(() => this.#abandon(`no direct channel within ${this.#opts.budgetMs} ms`), this.#opts.budgetMs);
    }

    const iceServers = Array.isArray(session.ice_servers) ? session.ice_servers : [];
    const pc = new PeerConnection({ iceServers });
    this.#pc = pc;
    if (resume) {
      this.#openResumeChannel(pc);
    } else {
      const channel = pc.createDataChannel(DATA_CHANNEL_LABEL);
      channel.binaryType = 'arraybuffer';
      this.#channel = channel;
      this.#link = dataChannelLink(channel, pc);
      const protocol = this.#newProtocol(this.#link);
      channel.onmessage = (event) => protocol.receive(event.data);
      channel.onopen = () => this.#onChannelOpen();
      channel.onclose = () => this.#onChannelLost('data channel closed');
      channel.onerror = (event) => debug('data channel error', event?.error ?? event);
    }
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

  // The protocol over `link`, asking for the configured features (cookies
  // only with a jar to send); it becomes the client's.
  #newProtocol(link) {
    const features = this.#opts.features.filter((f) => f !== COOKIES_FEATURE);
    if (this.#jar !== null) features.push(COOKIES_FEATURE);
    const protocol = new ChannelProtocol(link, { window: this.#opts.window, features, timeoutMs: this.#opts.negotiateMs, headTimeoutMs: this.#opts.headTimeoutMs });
    this.#protocol = protocol;
    protocol.negotiated.then((info) => {
      debug(`speaking protocol v${info.version}${info.version >= 2 ? ` (${info.features.join(', ') || 'no features'})` : ''}`);
      this.#resolveNegotiated(info);
    });
    return protocol;
  }

  // ---- the resumable connection (docs/protocol.md §4.8) -----------------

  // Starts the resumable connection on the frame connection; the data
  // channel joins it when it opens.
  #startResumable() {
    const link = new ResumableLink();
    this.#resumable = link;
    const protocol = this.#newProtocol(link);
    link.onmessage = (message) => protocol.receive(message);
    link.oncarrier = (carrier) => {
      debug(`resumable connection now on ${carrier ?? 'no carrier'}`);
      if (carrier === 'channel') this.#setChannelState('direct');
      else if (this.#channelState === 'direct') this.#setChannelState('fallback');
      else this.#updatePath();
    };
    link.onclose = (reason) => {
      debug(`resumable connection ended (${reason}); using the normal path`);
      if (this.#resumable === link) this.#resumable = null;
      protocol.closeAll();
      this.#frames?.close();
      this.#frames = null;
      if (this.#setupDone) this.#teardown(reason);
      else this.#abandon(reason);
    };
    this.#openFrames(link);
  }

  // The frame connection: a WebSocket to {signalBase}/frames, reopened
  // while the connection lingers (it keeps everything unacknowledged).
  #openFrames(link) {
    const NativeWebSocket = this.#opts.NativeWebSocket;
    if (typeof NativeWebSocket !== 'function' || link.closed) return;
    let url;
    try {
      url = new URL(`${this.#opts.signalBase}/frames`, this.#opts.baseUrl ?? globalThis.location?.href);
      url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
      url.searchParams.set('session_id', this.#sessionId);
      // The home answers a resume of a connection it no longer has with
      // UNKNOWN_CONNECTION_CLOSE, rather than starting a new one.
      if (link.started) url.searchParams.set('resume', '1');
    } catch (err) {
      debug('no frame connection:', err?.message ?? err);
      return;
    }
    const socket = new NativeWebSocket(url.href);
    socket.binaryType = 'arraybuffer';
    this.#frames = socket;
    let id = null;
    socket.onopen = () => {
      if (link.closed) {
        socket.close();
        return;
      }
      // The frame connection reopened under a live channel only joins the
      // carriers; writing stays on the channel.
      const write = link.carrier !== 'channel';
      const carrier = {
        name: 'link',
        // A new WebSocket: nothing from before can arrive on it.
        fresh: true,
        send(bytes) {
          // A closing socket would drop it (and the browser logs an error).
          if (socket.readyState !== 1) throw new Error('the frame connection is closing');
          socket.send(bytes);
        },
        get bufferedAmount() {
          return socket.bufferedAmount;
        },
        close: () => socket.close(),
      };
      id = link.attach(carrier, { write });
      this.#protocol?.open();
    };
    socket.onmessage = (event) => {
      this.#framesRetries = 0;
      if (id !== null && typeof event.data !== 'string') link.receive(id, event.data);
    };
    socket.onclose = (event) => {
      debug(`frame connection closed (${event.code}${event.reason ? ` ${event.reason}` : ''})`);
      if (this.#frames === socket) this.#frames = null;
      if (event.code === UNKNOWN_CONNECTION_CLOSE) {
        link.close(`the home no longer has this connection (${event.reason || 'home-peer restarted?'})`);
        return;
      }
      if (id !== null) link.carrierEnded(id);
      if (link.closed || this.#resumable !== link) return;
      // Back off: 0.25 s, 0.5 s, 1 s, ... 4 s, within the linger time.
      const delay = Math.min(4000, 250 * 2 ** this.#framesRetries);
      this.#framesRetries += 1;
      if (this.#framesRetries * 4000 > RESUME_LINGER_MS + 4000) return;
      setTimeout(() => this.#openFrames(link), delay);
    };
  }

  // A `resume` data channel on `pc`, joining the connection when it opens.
  #openResumeChannel(pc) {
    const link = this.#resumable;
    const channel = pc.createDataChannel(RESUME_CHANNEL_LABEL);
    channel.binaryType = 'arraybuffer';
    channel.bufferedAmountLowThreshold = BUFFERED_LOW;
    this.#channel = channel;
    let id = null;
    channel.onbufferedamountlow = () => link.wake();
    // Read until the channel ends, even after it stopped being written to.
    channel.onmessage = (event) => {
      if (id !== null && typeof event.data !== 'string') link.receive(id, event.data);
    };
    channel.onopen = () => {
      if (link.closed || this.#channel !== channel) return;
      id = link.attach({ name: 'channel', send: (bytes) => channel.send(bytes), get bufferedAmount() { return channel.bufferedAmount; }, close: () => channel.close() });
      this.#channelCarrier = id;
      this.#protocol?.open();
      this.#onChannelOpen();
    };
    channel.onclose = () => {
      if (id !== null) link.carrierEnded(id);
      if (this.#channel !== channel) return;
      this.#channel = null;
      this.#channelCarrier = null;
      const state = this.#pc?.connectionState;
      if (this.#setupDone && state === 'connected') {
        // home-peer gave up the channel (its side of the path went
        // disconnected); the path is back, so a new one.
        this.#openResumeChannel(this.#pc);
      } else if (state !== 'disconnected') {
        this.#onChannelLost('data channel closed');
      }
    };
    channel.onerror = (event) => debug('resume channel error', event?.error ?? event);
  }

  async #pollSignals(pc) {
    let remoteDescriptionSet = false;
    const earlyCandidates = [];
    while (!this.#setupDone) {
      this.#pollAbort = new AbortController();
      let messages;
      try {
        messages = await this.#readSignals(this.#pollAbort.signal);
      } catch (err) {
        if (this.#setupDone) return;
        throw err;
      }
      if (this.#setupDone) return;
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

  // One long-poll of the session's messages after the cursor, which it
  // moves past what it returns.
  async #readSignals(abortSignal) {
    const query = `?session_id=${encodeURIComponent(this.#sessionId)}&after=${encodeURIComponent(this.#cursor)}`;
    const reply = await this.#signalRequest('GET', `/signal${query}`, undefined, abortSignal);
    if (reply?.cursor !== undefined && reply?.cursor !== null) this.#cursor = reply.cursor;
    return Array.isArray(reply?.messages) ? reply.messages : [];
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
    if (this.#setupDone) {
      // A later resume channel (after a reconnect).
      if (this.#resumable) this.#updatePath();
      return;
    }
    const opened = now();
    this.#measured('direct', { setupMs: opened - this.#setupStartedAt });
    const protocol = this.#protocol;
    const settled = protocol.info !== null;
    protocol.open();
    protocol.negotiated.then((info) => {
      if (info?.version === 2 && !settled) this.#measured('direct', { rttMs: now() - opened });
    });
    // Requests may flow at once (in this task: before `agree`, as v1). The
    // kind of direct path is normally known already (read when ICE
    // connected, before DTLS and SCTP); else it follows in a moment.
    this.#checkTurn();
    this.#finishSetup('direct');
  }

  // Reads once whether the selected candidate pair is a TURN relay.
  #checkTurn() {
    if (this.#turnChecked) return;
    this.#turnChecked = true;
    this.#usesRelay().then(
      (viaTurn) => {
        if (!viaTurn) return;
        this.#viaTurn = true;
        this.#updatePath();
      },
      (err) => debug('cannot read the connection stats', err?.message ?? err),
    );
  }

  // Starts probing the session's loopback listener, if it offered one; in
  // parallel with the channel setup.
  #startLoopback(session) {
    const offer = parseLoopbackOffer(session.loopback);
    if (offer === null || typeof session.home !== 'string' || !this.#opts.loopback) return;
    const loopback = new Loopback(offer, {
      home: session.home,
      fetch: this.#opts.loopbackFetch,
      scope: this.#opts.signalBase,
      onchange: () => settle(),
    });
    const settle = () => {
      if (this.#loopback !== loopback) return;
      if (loopback.alive && this.#timings.loopback.setupMs === undefined) {
        this.#measured('loopback', { rttMs: loopback.rttMs, setupMs: now() - this.#setupStartedAt });
      }
      this.#updatePath();
    };
    this.#loopback = loopback;
    loopback.probed.then(settle);
  }

  #onConnectionState(state) {
    const established = this.#setupDone && this.#pc !== null;
    if (state === 'closed' || (state === 'failed' && !established)) {
      this.#onChannelLost(`connection ${state}`);
      return;
    }
    if (state === 'connected') {
      this.#checkTurn();
      this.#iceRestored();
    }
    if (!established) return;
    if (state === 'disconnected' || state === 'failed') this.#scheduleIceRestart(state);
    if (this.#resumable) {
      this.#onResumePathState(state);
      return;
    }
    if (this.#channel === null) return;
    // A 'disconnected' connection may come back (by itself, or through an
    // ICE restart): route new requests the normal way meanwhile, and go
    // direct again if it recovers.
    if ((state === 'disconnected' || state === 'failed') && this.#channelState === 'direct') {
      debug('connection disconnected; using the normal path for now');
      this.#setChannelState('fallback');
    } else if (state === 'connected' && this.#channelState === 'fallback' && this.#channel.readyState === 'open') {
      this.#setChannelState('direct');
    }
  }

  // The resumable connection stops writing to a channel whose path went
  // 'disconnected' (writing moves to the frame connection, everything not
  // yet acknowledged sent again there) and closes it, as home-peer does its
  // side; when the path is back, a new `resume` channel joins.
  #onResumePathState(state) {
    const channel = this.#channel;
    if ((state === 'disconnected' || state === 'failed') && channel) {
      debug('connection disconnected; the resumable connection moves to the link');
      this.#channel = null;
      if (this.#channelCarrier !== null) this.#resumable.detach(this.#channelCarrier);
      this.#channelCarrier = null;
      this.#setChannelState('fallback');
      channel.close();
    } else if (state === 'connected' && this.#channel === null && this.#pc) {
      this.#openResumeChannel(this.#pc);
    }
  }

  // ---- ICE restart (issue 12) ---------------------------------------------

  // The connection went 'disconnected' or 'failed': unless it comes back by
  // itself within ICE_RESTART_AFTER_MS ('failed': at once), a new offer with
  // new ICE credentials goes to home-peer under the same session. It answers
  // on the same peer connection, so DTLS, SCTP and the channel carry on.
  // After ICE_RESTART_ATTEMPTS that did not bring the path back, the direct
  // path is given up as before.
  #scheduleIceRestart(state) {
    if (this.#restarting) return;
    clearTimeout(this.#restartTimer);
    const delay = state === 'failed' ? 0 : ICE_RESTART_AFTER_MS;
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = null;
      const current = this.#pc?.connectionState;
      if (current === 'disconnected' || current === 'failed') this.#restartIce();
    }, delay);
  }

  #iceRestored() {
    clearTimeout(this.#restartTimer);
    this.#restartTimer = null;
    if (this.#restartAttempts > 0) debug(`path back after ${this.#restartAttempts} ICE restart(s)`);
    this.#restartAttempts = 0;
  }

  async #restartIce() {
    const pc = this.#pc;
    if (!pc || this.#restarting) return;
    if (this.#restartAttempts >= ICE_RESTART_ATTEMPTS) {
      this.#onChannelLost(`connection ${pc.connectionState}; ${this.#restartAttempts} ICE restarts did not bring it back`);
      return;
    }
    this.#restarting = true;
    this.#restartAttempts += 1;
    debug(`connection ${pc.connectionState}; ICE restart ${this.#restartAttempts}`);
    try {
      const offer = await pc.createOffer({ iceRestart: true });
      if (this.#pc !== pc) return;
      await pc.setLocalDescription(offer);
      this.#postSignal({ type: 'offer', sdp: pc.localDescription.sdp });
      await this.#pollRestart(pc);
    } catch (err) {
      debug('ICE restart failed:', err?.message ?? err);
    } finally {
      this.#restarting = false;
    }
    if (this.#pc !== pc) return;
    const state = pc.connectionState;
    if (state === 'disconnected' || state === 'failed') this.#restartIce();
  }

  // Reads the session's messages until the restart's answer is applied and
  // the path is back, or ICE_RESTART_BUDGET_MS passed.
  async #pollRestart(pc) {
    const deadline = Date.now() + ICE_RESTART_BUDGET_MS;
    let answered = false;
    while (this.#pc === pc && Date.now() < deadline) {
      if (answered && pc.connectionState === 'connected') return;
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), Math.max(0, deadline - Date.now()));
      const connected = () => abort.abort();
      pc.addEventListener('connectionstatechange', connected);
      let messages = [];
      try {
        messages = await this.#readSignals(abort.signal);
      } catch (err) {
        if (!abort.signal.aborted) throw err;
      } finally {
        clearTimeout(timer);
        pc.removeEventListener('connectionstatechange', connected);
      }
      for (const message of messages) {
        if (this.#pc !== pc) return;
        if (message?.type === 'answer' && pc.signalingState === 'have-local-offer') {
          await pc.setRemoteDescription({ type: 'answer', sdp: message.sdp });
          answered = true;
        } else if (message?.type === 'candidate') {
          await this.#addRemoteCandidate(pc, message.candidate);
        } else if (message?.type === 'bye') {
          this.#onChannelLost('home peer said bye');
          return;
        }
      }
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
    this.#setChannelState('fallback');
    if (this.#channelCarrier !== null) this.#resumable?.detach(this.#channelCarrier);
    this.#channelCarrier = null;
    // The resumable connection carries on over the frame connection.
    if (!this.#resumable) this.#protocol?.closeAll();
    this.#link?.close();
    this.#closePeer();
    if (this.#sessionId) this.#postSignal({ type: 'bye' });
  }

  #closePeer() {
    this.#stopWatchingTimings();
    clearTimeout(this.#restartTimer);
    this.#restartTimer = null;
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
