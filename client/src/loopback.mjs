// The loopback tier (docs/loopback.md): when the browser runs on the home
// machine itself, home-peer's loopback listener (`--loopback-listen`) is
// nearer than any data channel.
//
// The session answer may carry `loopback: {url, ticket, proof}`. The client
// probes `GET {url}/.beeline/probe` with `x-beeline-ticket` at once, in
// parallel with the WebRTC setup, giving up after 150 ms; it uses the
// listener only when the answer is a 204 whose `x-beeline-home` names the
// session's home and whose `x-beeline-proof` is the session's proof, so
// another process on that port is never sent a request. Requests then go to
// `{url}{path}` with the ticket (and the sealed cookie jar as
// `x-beeline-cookie-jar`), CORS without credentials; WebSockets to
// `ws://{host}{path}?__beeline_ticket=...`.
//
// A request whose connection fails before any response, or that home-peer
// refuses (403 with x-beeline-error), marks the listener dead and goes on
// over the channel or the normal path, body replayed. A WebSocket that never
// opens goes on over the next path too, and a probe tells a listener that is
// gone from a refusal of the home service.
//
// What the probe found is remembered per tab (sessionStorage) for 30 s: a
// listener that did not answer, or stopped answering, is not tried again in
// that time, by this page or by the next one the tab loads.

import { debug } from './common.mjs';

/** How long the probe may take before the loopback tier is given up. */
export const LOOPBACK_PROBE_MS = 150;
/** How long the first probe may go on after that, to take a listener that answers late (a loaded machine). */
export const LATE_PROBE_MS = 2000;
/** How long what a probe found is remembered (per tab). */
export const LOOPBACK_CACHE_MS = 30_000;
/** The probe's path on the loopback listener. */
export const PROBE_PATH = '/.beeline/probe';
/** The request header that carries the ticket. */
export const TICKET_HEADER = 'x-beeline-ticket';
/** The query parameter that carries the ticket of a WebSocket (browsers send no custom headers on one). */
export const TICKET_PARAM = '__beeline_ticket';
/** The request header that carries the sealed cookie jar on the loopback tier. */
export const LOOPBACK_JAR_HEADER = 'x-beeline-cookie-jar';
/** The probe answer's headers: the home's name and the session's proof. */
export const HOME_HEADER = 'x-beeline-home';
export const PROOF_HEADER = 'x-beeline-proof';
/** Set by home-peer on a refusal of its own (bad or expired ticket), as opposed to the home service's answer. */
export const ERROR_HEADER = 'x-beeline-error';

const STORAGE_PREFIX = 'beeline.loopback:';

function storage() {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    // Storage refused (sandboxed frame, privacy settings).
    return null;
  }
}

/**
 * The `loopback` member of a session answer, checked: `{url, ticket, proof}`
 * with an http URL on a loopback address; null for anything else.
 */
export function parseLoopbackOffer(value) {
  if (value === null || typeof value !== 'object') return null;
  const { url, ticket, proof } = value;
  if (typeof url !== 'string' || typeof ticket !== 'string' || typeof proof !== 'string' || ticket === '' || proof === '') return null;
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return null;
  }
  const host = parsed.hostname;
  const loopbackHost = host === 'localhost' || host === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
  if (parsed.protocol !== 'http:' || !loopbackHost || parsed.pathname.replace(/\/+$/, '') !== '' || parsed.search || parsed.hash) return null;
  return { url: parsed.origin, ticket, proof };
}

/**
 * One session's loopback listener. `state` is 'probing' until the probe
 * settles, then 'alive' or 'dead' ('late' between the 150 ms and a slow
 * probe's answer). A dead listener may be probed again once
 * what was remembered about it expires (`maybeRevive`).
 */
export class Loopback {
  /** 'probing' | 'late' (the probe outlasted the 150 ms; not used until it proves the listener) | 'alive' | 'dead' */
  state = 'probing';
  /** The probe's round trip in ms (its CORS preflight included), once alive. */
  rttMs = null;
  /** Resolves with true (alive) or false once the first probe settles. */
  probed;

  #url;
  #ticket;
  #proof;
  #home;
  #fetch;
  #timeoutMs;
  #cacheMs;
  #key;
  #now;
  #deadSince = 0;
  #reviving = null;
  #verifying = null;
  #onchange;

  /**
   * @param {{url: string, ticket: string, proof: string}} offer from the session answer
   * @param {object} options
   * @param {string} options.home the session's home (what `x-beeline-home` must say)
   * @param {typeof fetch} options.fetch
   * @param {string} [options.scope] what the remembered outcome is kept under (the signal base)
   * @param {number} [options.timeoutMs]
   * @param {number} [options.cacheMs]
   * @param {() => void} [options.onchange] called when `state` changes after the first probe
   */
  constructor(offer, { home, fetch: fetchImpl, scope = '', timeoutMs = LOOPBACK_PROBE_MS, cacheMs = LOOPBACK_CACHE_MS, onchange = () => {}, now = () => Date.now() }) {
    this.#url = offer.url;
    this.#ticket = offer.ticket;
    this.#proof = offer.proof;
    this.#home = home;
    this.#fetch = fetchImpl;
    this.#timeoutMs = timeoutMs;
    this.#cacheMs = cacheMs;
    this.#key = `${STORAGE_PREFIX}${scope}|${offer.url}|${home}`;
    this.#now = now;
    this.#onchange = onchange;
    const remembered = this.#remembered();
    if (remembered && remembered.ok === false) {
      // Found dead a moment ago (this page or the last one in this tab).
      debug(`loopback ${this.#url} was unusable ${Math.round(this.#now() - remembered.at)} ms ago; not probing it`);
      this.state = 'dead';
      this.#deadSince = remembered.at;
      this.probed = Promise.resolve(false);
    } else {
      // `probed` says false once the 150 ms are up, so nothing waits longer
      // for the listener; the probe itself may go on up to LATE_PROBE_MS,
      // and a listener that proves itself late is taken then (onchange).
      this.probed = new Promise((resolve) => {
        const deadline = setTimeout(() => {
          if (this.state !== 'probing') return;
          this.state = 'late';
          debug(`loopback ${this.#url} did not answer within ${this.#timeoutMs} ms; not waiting for it`);
          resolve(false);
        }, this.#timeoutMs);
        this.#probe(Math.max(this.#timeoutMs, LATE_PROBE_MS)).then((ok) => {
          clearTimeout(deadline);
          const late = this.state === 'late';
          this.state = ok ? 'alive' : 'dead';
          if (!ok) this.#deadSince = this.#now();
          this.#remember(ok);
          resolve(ok);
          if (late && ok) this.#onchange();
        });
      });
    }
  }

  /** The listener's origin, e.g. http://127.0.0.1:33120. */
  get url() {
    return this.#url;
  }

  get alive() {
    return this.state === 'alive';
  }

  /**
   * Stops using the listener (a request found it gone, or it refused the
   * ticket); remembered for the cache time.
   */
  markDead(why) {
    if (this.state === 'dead') return;
    debug(`loopback ${this.#url} unusable (${why}); using the next path`);
    this.state = 'dead';
    this.#deadSince = this.#now();
    this.#remember(false);
    this.#onchange();
  }

  /**
   * Probes a live listener again, in the background, after something failed
   * on it that may or may not be its fault (a WebSocket that never opened);
   * marks it dead if the probe fails.
   */
  verify() {
    if (this.state !== 'alive' || this.#verifying) return;
    this.#verifying = this.#probe().then((ok) => {
      this.#verifying = null;
      if (!ok && this.state === 'alive') this.markDead('its probe failed after a WebSocket did');
    });
  }

  /**
   * Probes a dead listener again, in the background, once the cache time
   * has passed since it was found dead. Never delays the caller.
   */
  maybeRevive() {
    if (this.state !== 'dead' || this.#reviving || this.#now() - this.#deadSince < this.#cacheMs) return;
    this.#reviving = this.#probe().then((ok) => {
      this.#reviving = null;
      this.#remember(ok);
      if (ok) {
        this.state = 'alive';
        this.#onchange();
      } else {
        this.#deadSince = this.#now();
      }
    });
  }

  async #probe(limitMs = this.#timeoutMs) {
    const started = this.#now();
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new Error(`no answer within ${limitMs} ms`)), limitMs);
    try {
      const res = await this.#fetch(this.#url + PROBE_PATH, {
        method: 'GET',
        headers: { [TICKET_HEADER]: this.#ticket },
        mode: 'cors',
        credentials: 'omit',
        cache: 'no-store',
        redirect: 'error',
        signal: abort.signal,
      });
      const home = res.headers.get(HOME_HEADER);
      const proof = res.headers.get(PROOF_HEADER);
      if (res.status !== 204 || home !== this.#home || proof !== this.#proof) {
        debug(`loopback ${this.#url} is not this home's peer (status ${res.status}, home ${JSON.stringify(home)}, proof ${proof === this.#proof ? 'right' : 'wrong'})`);
        return false;
      }
      this.rttMs = this.#now() - started;
      return true;
    } catch (err) {
      debug(`loopback ${this.#url} did not answer:`, err?.message ?? err);
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  #remembered() {
    try {
      const value = JSON.parse(storage()?.getItem(this.#key) ?? 'null');
      if (value && typeof value.at === 'number' && this.#now() - value.at < this.#cacheMs) return value;
    } catch {
      // Unreadable: as if nothing was remembered.
    }
    return null;
  }

  #remember(ok) {
    try {
      storage()?.setItem(this.#key, JSON.stringify({ ok, at: this.#now() }));
    } catch {
      // Storage full or refused: the next page probes again.
    }
  }

  /**
   * Sends one request to the listener. Resolves with the listener's
   * Response (headers marked `x-beeline-path: loopback`), or with null when
   * the request must take the next path: the connection failed before any
   * response, or home-peer refused it with an `x-beeline-error` that is not
   * about the request itself (an expired ticket, too many sessions, ...).
   * An abort rejects as fetch does.
   *
   * @param {{method: string, path: string, headers: Headers, body: Uint8Array|null, signal?: AbortSignal, cache?: RequestCache, redirect?: RequestRedirect, jar?: string|null}} request
   */
  async send({ method, path, headers, body, signal, cache, redirect, jar }) {
    const outgoing = new Headers(headers);
    for (const name of [TICKET_HEADER, LOOPBACK_JAR_HEADER]) outgoing.delete(name);
    outgoing.set(TICKET_HEADER, this.#ticket);
    if (jar) outgoing.set(LOOPBACK_JAR_HEADER, jar);
    let res;
    try {
      res = await this.#fetch(this.#url + path, {
        method,
        headers: outgoing,
        body: body && body.length > 0 ? body : undefined,
        signal,
        cache,
        redirect,
        mode: 'cors',
        credentials: 'omit',
      });
    } catch (err) {
      if (signal?.aborted) throw err;
      this.markDead(`request failed: ${err?.message ?? err}`);
      return null;
    }
    const refusal = res.headers.get(ERROR_HEADER);
    if (refusal !== null && !REQUEST_ERRORS.has(refusal)) {
      // home-peer's own refusal of the session (ticket, origin, host, too
      // many sessions, its bridge): the next path. One that says only this
      // request came at a busy moment does not end the listener's use.
      try {
        await res.body?.cancel();
      } catch {
        // Nothing to release.
      }
      if (refusal !== 'too_many_streams') this.markDead(`refused: ${refusal} (${res.status})`);
      return null;
    }
    return loopbackResponse(res);
  }

  /** The URL of a WebSocket to `pathAndQuery` on the listener, ticket included. */
  websocketUrl(pathAndQuery) {
    const sep = pathAndQuery.includes('?') ? '&' : '?';
    return `ws://${new URL(this.#url).host}${pathAndQuery}${sep}${TICKET_PARAM}=${encodeURIComponent(this.#ticket)}`;
  }
}

// home-peer's error codes (x-beeline-error) about the request itself, which
// the channel would answer alike: the page gets them as responses.
const REQUEST_ERRORS = new Set(['upstream_unavailable', 'body_too_large', 'header_too_large', 'bad_request', 'stream_failed']);

const NULL_BODY = new Set([101, 103, 204, 205, 304]);

/** The listener's response as the page gets it: same status, headers and streaming body, marked `x-beeline-path: loopback`. */
function loopbackResponse(res) {
  // An opaque redirect (the page asked for redirect: 'manual') cannot be
  // rebuilt: the page gets it as fetch gave it.
  if (res.status < 200 || res.status > 599) return res;
  const headers = new Headers(res.headers);
  headers.set('x-beeline-path', 'loopback');
  return new Response(NULL_BODY.has(res.status) ? null : res.body, { status: res.status, statusText: res.statusText, headers });
}
