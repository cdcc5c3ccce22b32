// Fakes for the browser client's unit tests: an RTCPeerConnection and data
// channel, a signaling server answering like signal-api, a recording fetch.

import assert from 'node:assert/strict';

import { codec, createClient } from '../../client/src/index.mjs';

export const BASE_URL = 'http://home.test/chat';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Resolves once `check()` is truthy, or fails after `ms`.
export async function until(check, ms = 2000, what = 'condition') {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

// Records what the client sends: `hellos` holds its `hello` frames (sent when
// the channel opens), `sent` every other frame (JSON parsed as is, binary
// decoded). Nothing answers `hello` unless a test delivers an `agree`, so
// the client speaks v1 by default.
export class FakeDataChannel {
  readyState = 'connecting';
  bufferedAmount = 0;
  sent = [];
  hellos = [];
  constructor(label, init) {
    this.label = label;
    this.init = init;
  }
  send(message) {
    if (this.readyState !== 'open' || this.refuseSends) throw new Error('InvalidStateError');
    if (typeof message !== 'string') {
      this.sent.push(codec.decodeBinary(message));
      return;
    }
    const frame = JSON.parse(message);
    if (frame.type === 'hello') this.hellos.push(frame);
    else this.sent.push(frame);
  }
  // Delivers a message from the home peer: a frame object (sent as JSON
  // text, or as binary when it has a numeric id) or a raw message.
  deliver(frame) {
    let data = frame;
    if (typeof frame === 'object' && !(frame instanceof ArrayBuffer)) {
      data = typeof frame.id === 'number' ? codec.encodeBinary(frame).buffer : codec.encodeJson(frame);
    }
    this.onmessage?.({ data });
  }
  open() {
    this.readyState = 'open';
    this.onopen?.();
  }
  remoteClose() {
    this.readyState = 'closed';
    this.onclose?.();
  }
}

export function fakePeerConnectionClass() {
  const instances = [];
  class FakePeerConnection {
    connectionState = 'new';
    localDescription = null;
    remoteDescription = null;
    remoteCandidates = [];
    channels = [];
    closed = false;
    constructor(config) {
      this.config = config;
      instances.push(this);
    }
    createDataChannel(label, init) {
      const channel = new FakeDataChannel(label, init);
      this.channels.push(channel);
      return channel;
    }
    async createOffer() {
      return { type: 'offer', sdp: 'v=0\r\nfake offer\r\n' };
    }
    async setLocalDescription(description) {
      this.localDescription = description;
      // Gathering starts now; the first candidate may beat the offer's POST.
      this.onicecandidate?.({ candidate: { toJSON: () => ({ candidate: 'candidate:1 1 udp 1 127.0.0.1 5000 typ host', sdpMid: '0', sdpMLineIndex: 0 }) } });
      setTimeout(() => this.onicecandidate?.({ candidate: null }), 1);
    }
    async setRemoteDescription(description) {
      this.remoteDescription = description;
    }
    async addIceCandidate(candidate) {
      if (!this.remoteDescription) throw new Error('no remote description');
      this.remoteCandidates.push(candidate);
    }
    close() {
      this.closed = true;
      this.connectionState = 'closed';
    }
    setConnectionState(state) {
      this.connectionState = state;
      this.onconnectionstatechange?.();
    }
    // RTCStatsReport-like: a selected pair whose local candidate is of
    // `FakePeerConnection.localCandidateType` (host unless a test says relay).
    async getStats() {
      return new Map([
        ['T', { type: 'transport', selectedCandidatePairId: 'P' }],
        ['P', { type: 'candidate-pair', localCandidateId: 'L', remoteCandidateId: 'R', nominated: true, state: 'succeeded' }],
        ['L', { type: 'local-candidate', candidateType: FakePeerConnection.localCandidateType ?? 'host' }],
        ['R', { type: 'remote-candidate', candidateType: 'host' }],
      ]);
    }
  }
  return { FakePeerConnection, instances };
}

// Answers the client's signaling requests the way signal-api does.
export class FakeSignalServer {
  calls = [];
  posted = [];
  sessionStatus = 200;
  // Sealed cookie jars (docs/cookies.md): the session answers `cookieJar`
  // when it is set (as signal-api with jars on), and `POST /webrtc/cookie`
  // answers jar-2, jar-3, ... (recorded in `cookieCalls`; held while
  // `holdCookie`, until `releaseCookie()`).
  cookieJar = undefined;
  // The session's `loopback` offer ({url, ticket, proof}), when set.
  loopback = undefined;
  cookieCalls = [];
  cookieStatus = 200;
  holdCookie = false;
  cookieWaiters = [];
  releaseCookie() {
    this.holdCookie = false;
    for (const wake of this.cookieWaiters.splice(0)) wake();
  }
  #queue = [];
  #seq = 0;
  #waiters = [];

  fetch = async (url, init = {}) => {
    const method = init.method ?? 'GET';
    const parsed = new URL(url, 'http://home.test');
    this.calls.push({ method, path: parsed.pathname, query: Object.fromEntries(parsed.searchParams) });
    if (method === 'POST' && parsed.pathname === '/webrtc/session') {
      if (this.sessionStatus !== 200) return new Response('{"error":"nope"}', { status: this.sessionStatus });
      const session = { session_id: 'sess-1', home: 'home', ice_servers: [{ urls: ['stun:127.0.0.1:3478'], username: 'u', credential: 'c' }], ttl: 300 };
      if (this.cookieJar !== undefined) session.cookie_jar = this.cookieJar;
      if (this.loopback !== undefined) session.loopback = this.loopback;
      return Response.json(session);
    }
    if (method === 'POST' && parsed.pathname === '/webrtc/cookie') {
      const body = JSON.parse(init.body);
      this.cookieCalls.push({ body, credentials: init.credentials });
      if (this.holdCookie) await new Promise((resolve) => this.cookieWaiters.push(resolve));
      if (this.cookieStatus !== 200) return new Response('{"error":"nope"}', { status: this.cookieStatus });
      return Response.json({ cookie_jar: `jar-${this.cookieCalls.length + 1}` });
    }
    if (method === 'POST' && parsed.pathname === '/webrtc/signal') {
      this.posted.push(JSON.parse(init.body));
      return Response.json({ seq: this.posted.length });
    }
    if (method === 'GET' && parsed.pathname === '/webrtc/signal') {
      const after = Number(parsed.searchParams.get('after'));
      const messages = await this.#waitFor(after, init.signal);
      return Response.json({ messages, cursor: messages.length ? messages.at(-1).seq : after });
    }
    return new Response('not found', { status: 404 });
  };

  // Queues a message from the home peer for the browser's long-poll.
  deliver(message) {
    this.#seq += 1;
    this.#queue.push({ ...message, seq: this.#seq, session_id: 'sess-1' });
    for (const wake of this.#waiters.splice(0)) wake();
  }

  async #waitFor(after, signal) {
    for (;;) {
      const ready = this.#queue.filter((m) => m.seq > after);
      if (ready.length) return ready;
      await new Promise((resolve, reject) => {
        this.#waiters.push(resolve);
        signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
        setTimeout(resolve, 200); // a short stand-in for the 10 s hold
      });
    }
  }
}

// The normal path: records each call and answers 'via fallback', or what
// `answer(input, init)` returns.
export function recordingFetch(answer) {
  const calls = [];
  const fetch = async (input, init) => {
    calls.push({ input: String(input instanceof Request ? input.url : input), init });
    return answer ? answer(input, init) : new Response('via fallback', { status: 200 });
  };
  return { calls, fetch };
}

// Runs setup up to an open channel and returns everything for inspection.
// `cookieJar` is the session's sealed jar (none by default), `fallbackFetch`
// answers the normal path, and `beforeOpen(client, {server, fallback, pc})` runs
// once signaling is done, before the channel opens. `loopback` is the
// session's loopback offer, `candidateType` the selected pair's local
// candidate type (host by default), `expect` what `ready` must resolve with.
export async function directClient(extra = {}, { cookieJar, fallbackFetch, beforeOpen, loopback, candidateType, expect = 'direct' } = {}) {
  const server = new FakeSignalServer();
  server.cookieJar = cookieJar;
  server.loopback = loopback;
  const { FakePeerConnection, instances } = fakePeerConnectionClass();
  FakePeerConnection.localCandidateType = candidateType;
  const fallback = recordingFetch(fallbackFetch);
  const client = createClient({
    enabled: true,
    baseUrl: BASE_URL,
    signalFetch: server.fetch,
    fallbackFetch: fallback.fetch,
    RTCPeerConnection: FakePeerConnection,
    budgetMs: 2000,
    ...extra,
  });
  await until(() => server.posted.some((m) => m.type === 'offer'), 2000, 'the offer');
  server.deliver({ type: 'answer', sdp: 'v=0\r\nfake answer\r\n' });
  server.deliver({ type: 'candidate', candidate: { candidate: 'candidate:2 1 udp 1 127.0.0.1 6000 typ host', sdpMid: '0', sdpMLineIndex: 0 } });
  const pc = instances[0];
  await until(() => pc.remoteCandidates.length === 1, 2000, 'the remote candidate');
  const channel = pc.channels[0];
  await beforeOpen?.(client, { server, fallback, pc });
  channel.open();
  assert.equal(await client.ready, expect);
  // The channel is usable once its stats are read (a few microtasks).
  await sleep(5);
  return { client, server, pc, channel, fallback };
}

/**
 * Just enough of a DOM element for the indicator: attributes, dataset,
 * child elements with text, listeners, and an ownerDocument that makes more.
 */
export class FakeElement {
  hidden = false;
  title = '';
  className = '';
  dataset = {};
  children = [];
  #attributes = new Map();
  #listeners = new Map();
  #text = '';

  constructor(tag = 'span') {
    this.tagName = tag.toUpperCase();
    this.ownerDocument = { createElement: (name) => new FakeElement(name) };
  }

  setAttribute(name, value) {
    this.#attributes.set(name, String(value));
  }

  getAttribute(name) {
    return this.#attributes.get(name) ?? null;
  }

  hasAttribute(name) {
    return this.#attributes.has(name);
  }

  replaceChildren(...nodes) {
    this.children = nodes;
  }

  get textContent() {
    return this.children.length > 0 ? this.children.map((c) => c.textContent).join('') : this.#text;
  }

  set textContent(value) {
    this.children = [];
    this.#text = String(value);
  }

  /** The text a reader sees: children that are not hidden. */
  get visibleText() {
    return this.children.length > 0 ? this.children.filter((c) => !c.hidden).map((c) => c.visibleText).join('') : this.#text;
  }

  addEventListener(type, listener) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, []);
    this.#listeners.get(type).push(listener);
  }

  dispatch(type) {
    for (const listener of this.#listeners.get(type) ?? []) listener({ type, target: this });
  }
}
