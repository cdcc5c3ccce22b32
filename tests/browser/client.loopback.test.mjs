// Unit tests (node) for the loopback tier of the browser client
// (client/src/loopback.mjs and its use in client.mjs): the probe and what it
// must prove, routing, the silent fallback when the listener goes away, the
// per-tab memory, WebSockets and cookie jars. A fake home-peer loopback
// listener stands in for the real one (tests/browser/loopback.test.mjs runs
// the real one in Chromium and Firefox).
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { LOOPBACK_CACHE_MS, createClient, parseLoopbackOffer } from '../../client/src/index.mjs';
import { BASE_URL, FakeSignalServer, directClient, fakePeerConnectionClass, recordingFetch, sleep, until } from './fakes.mjs';

const URL_ = 'http://127.0.0.1:33120';
const OFFER = Object.freeze({ url: URL_, ticket: 'v1.sess-1.1900000000.mac', proof: 'proof-of-home' });

// What home-peer's loopback listener answers. `mode`: 'ok', 'stopped' (the
// connection is refused), 'wrong' (another process: no magic headers),
// 'wrong-proof', 'wrong-home', 'slow' (answers nothing until aborted),
// 'expired' (refuses the ticket with x-beeline-error).
function fakeListener({ mode = 'ok', home = 'home', proof = OFFER.proof, answer } = {}) {
  const listener = {
    mode,
    calls: [],
    fetch: async (url, init = {}) => {
      const headers = new Headers(init.headers);
      const body = init.body === undefined ? null : new TextDecoder().decode(init.body);
      const call = { url: String(url), method: init.method ?? 'GET', headers, body, mode: init.mode, credentials: init.credentials };
      listener.calls.push(call);
      const m = listener.mode;
      if (m === 'stopped') throw new TypeError('Failed to fetch');
      if (m === 'slow') {
        return new Promise((_, reject) => init.signal?.addEventListener('abort', () => reject(init.signal.reason), { once: true }));
      }
      if (new URL(url).pathname === '/.beeline/probe') {
        if (m === 'wrong') return new Response('hello from someone else', { status: 200 });
        if (headers.get('x-beeline-ticket') !== OFFER.ticket) return new Response(null, { status: 403, headers: { 'x-beeline-error': 'bad ticket' } });
        return new Response(null, {
          status: 204,
          headers: { 'x-beeline-home': m === 'wrong-home' ? 'someone-else' : home, 'x-beeline-proof': m === 'wrong-proof' ? 'forged' : proof },
        });
      }
      if (m === 'expired') return new Response('{"error":"the loopback ticket has expired"}', { status: 403, headers: { 'x-beeline-error': 'ticket_expired' } });
      if (answer) return answer(call);
      return new Response(`via loopback ${call.method} ${new URL(url).pathname}${new URL(url).search}${body ? ` ${body}` : ''}`, { status: 200, headers: { 'content-type': 'text/plain' } });
    },
  };
  return listener;
}

function fakeStorage() {
  const map = new Map();
  return {
    map,
    getItem: (k) => (map.has(k) ? map.get(k) : null),
    setItem: (k, v) => map.set(k, String(v)),
    removeItem: (k) => map.delete(k),
  };
}

// A client whose session offers the loopback listener; setup of the channel
// goes on in parallel and never finishes unless the test drives it.
function loopbackClient(listener, extra = {}, { loopback = OFFER, cookieJar } = {}) {
  const server = new FakeSignalServer();
  server.loopback = loopback;
  server.cookieJar = cookieJar;
  const { FakePeerConnection, instances } = fakePeerConnectionClass();
  const fallback = recordingFetch();
  const client = createClient({
    enabled: true,
    baseUrl: BASE_URL,
    signalFetch: server.fetch,
    fallbackFetch: fallback.fetch,
    loopbackFetch: listener.fetch,
    RTCPeerConnection: FakePeerConnection,
    budgetMs: 5000,
    ...extra,
  });
  return { client, server, fallback, instances };
}

let storage;
beforeEach(() => {
  storage = fakeStorage();
  globalThis.sessionStorage = storage;
});
afterEach(() => {
  delete globalThis.sessionStorage;
});

describe('loopback offer', () => {
  test('only an http URL on a loopback address, with a ticket and a proof, is taken', () => {
    assert.deepEqual(parseLoopbackOffer(OFFER), { url: URL_, ticket: OFFER.ticket, proof: OFFER.proof });
    assert.deepEqual(parseLoopbackOffer({ ...OFFER, url: 'http://127.0.0.1:33120/' }), { url: URL_, ticket: OFFER.ticket, proof: OFFER.proof });
    assert.equal(parseLoopbackOffer({ ...OFFER, url: 'http://[::1]:33120' })?.url, 'http://[::1]:33120');
    for (const url of ['http://192.168.1.2:33120', 'https://127.0.0.1:33120', 'http://evil.example:33120', 'http://127.0.0.1:33120/prefix', 'javascript:alert(1)', 'not a url']) {
      assert.equal(parseLoopbackOffer({ ...OFFER, url }), null, url);
    }
    assert.equal(parseLoopbackOffer({ url: URL_, ticket: '', proof: 'p' }), null);
    assert.equal(parseLoopbackOffer({ url: URL_, ticket: 't' }), null);
    assert.equal(parseLoopbackOffer(null), null);
    assert.equal(parseLoopbackOffer('http://127.0.0.1:33120'), null);
  });

  test('an offer that is not loopback is never contacted', async () => {
    const listener = fakeListener();
    const { client } = loopbackClient(listener, { budgetMs: 100 }, { loopback: { ...OFFER, url: 'http://10.0.0.1:33120' } });
    assert.equal(await client.ready, 'normal');
    assert.equal(listener.calls.length, 0);
  });
});

describe('loopback tier', () => {
  test('a proven listener is chosen at once, in parallel with the channel setup, and carries requests', async () => {
    const listener = fakeListener();
    const started = performance.now();
    const { client, instances, fallback } = loopbackClient(listener);
    const changes = [];
    client.addEventListener('pathchange', (e) => changes.push(e.detail));
    assert.equal(await client.ready, 'loopback');
    assert.ok(performance.now() - started < 150, `chose in ${performance.now() - started} ms`);
    assert.equal(client.path, 'loopback');
    assert.equal(changes.length, 1);
    assert.equal(changes[0].path, 'loopback');
    assert.equal(changes[0].previous, 'normal');
    assert.ok(changes[0].rttMs >= 0 && changes[0].setupMs >= changes[0].rttMs, JSON.stringify(changes[0]));
    // The channel setup went on regardless (the next path when loopback goes).
    await until(() => instances.length === 1, 2000, 'the peer connection');

    const [probe] = listener.calls;
    assert.equal(probe.url, `${URL_}/.beeline/probe`);
    assert.equal(probe.headers.get('x-beeline-ticket'), OFFER.ticket);
    assert.equal(probe.mode, 'cors');
    assert.equal(probe.credentials, 'omit');

    const res = await client.fetch('/v1/chat?x=1', { method: 'POST', headers: { 'content-type': 'application/json', 'x-app': 'a' }, body: '{"m":1}' });
    assert.equal(await res.text(), 'via loopback POST /v1/chat?x=1 {"m":1}');
    assert.equal(res.headers.get('x-beeline-path'), 'loopback');
    assert.equal(res.headers.get('content-type'), 'text/plain');
    const call = listener.calls.at(-1);
    assert.equal(call.url, `${URL_}/v1/chat?x=1`);
    assert.equal(call.headers.get('x-beeline-ticket'), OFFER.ticket);
    assert.equal(call.headers.get('x-app'), 'a');
    assert.equal(call.headers.get('content-type'), 'application/json');
    assert.equal(call.mode, 'cors');
    assert.equal(call.credentials, 'omit');
    // A page cannot send a ticket of its own choosing.
    await client.fetch('/v1/x', { headers: { 'x-beeline-ticket': 'forged' } });
    assert.equal(listener.calls.at(-1).headers.get('x-beeline-ticket'), OFFER.ticket);
    // Cross-origin requests are not the home's: the normal fetch.
    await client.fetch('https://elsewhere.example/api');
    assert.equal(fallback.calls.length, 1);
    assert.equal(fallback.calls[0].input, 'https://elsewhere.example/api');
    client.close();
    assert.equal(client.path, 'normal');
  });

  test('responses stream (SSE) and keep their status', async () => {
    let push;
    const listener = fakeListener({
      answer: () =>
        new Response(
          new ReadableStream({
            start(controller) {
              push = (text) => (text === null ? controller.close() : controller.enqueue(new TextEncoder().encode(text)));
            },
          }),
          { status: 201, headers: { 'content-type': 'text/event-stream' } },
        ),
    });
    const { client } = loopbackClient(listener);
    assert.equal(await client.ready, 'loopback');
    const res = await client.fetch('/v1/events');
    assert.equal(res.status, 201);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    push('data: one\n\n');
    assert.equal((await reader.read()).value, 'data: one\n\n');
    push('data: two\n\n');
    assert.equal((await reader.read()).value, 'data: two\n\n');
    push(null);
    assert.equal((await reader.read()).done, true);
    client.close();
  });

  for (const mode of ['wrong', 'wrong-proof', 'wrong-home']) {
    test(`another process on the port (${mode}) is never used`, async () => {
      const listener = fakeListener({ mode });
      const { client, client: { fetch } } = await directClient({ loopbackFetch: listener.fetch }, { loopback: OFFER });
      assert.equal(client.path, 'direct');
      assert.equal(listener.calls.length, 1, 'only the probe');
      fetch('/v1/chat');
      await sleep(20);
      assert.equal(listener.calls.length, 1, 'a request went to the wrong daemon');
      client.close();
    });
  }

  test('a listener that does not answer within 150 ms is given up', async () => {
    const listener = fakeListener({ mode: 'slow' });
    const started = performance.now();
    const { client } = loopbackClient(listener, { budgetMs: 100 });
    assert.equal(await client.ready, 'normal');
    const took = performance.now() - started;
    assert.ok(took >= 140 && took < 400, `ready after ${took} ms`);
    assert.equal(client.path, 'normal');
  });

  test('a listener that proves itself after the 150 ms is taken then (a loaded machine), with a pathchange', async () => {
    const listener = fakeListener();
    const slow = { ...listener, fetch: async (url, init) => {
      if (new URL(url).pathname === '/.beeline/probe') await sleep(300);
      return listener.fetch(url, init);
    } };
    const started = performance.now();
    const { client } = loopbackClient(slow, { budgetMs: 100 });
    const changes = [];
    client.addEventListener('pathchange', (e) => changes.push(e.detail.path));
    assert.equal(await client.ready, 'normal');
    assert.ok(performance.now() - started < 300, 'ready waited for the slow probe');
    await until(() => client.path === 'loopback', 2000, 'the late listener');
    assert.deepEqual(changes, ['loopback']);
    // The probe slept 300 ms; Node's timers may fire a fraction of a millisecond
    // early by performance.now(), so the setup is checked against the 150 ms budget
    // it outlived, with room for that slack, not against the sleep exactly.
    assert.ok(client.timing.setupMs >= 250, JSON.stringify(client.timing));
    const res = await client.fetch('/late');
    assert.equal(res.headers.get('x-beeline-path'), 'loopback');
    client.close();
  });

  test('when the listener stops, the request (body included) goes on over the channel without an error, and later ones too', async () => {
    const listener = fakeListener();
    const { client, channel } = await directClient({ loopbackFetch: listener.fetch }, { loopback: OFFER, expect: 'loopback' });
    assert.equal(client.path, 'loopback');
    const changes = [];
    client.addEventListener('pathchange', (e) => changes.push(e.detail.path));
    listener.mode = 'stopped';
    const pending = client.fetch('/v1/chat', { method: 'POST', body: 'hello' });
    await until(() => channel.sent.length === 1, 2000, 'the request on the channel');
    assert.equal(channel.sent[0].method, 'POST');
    assert.equal(channel.sent[0].path, '/v1/chat');
    assert.equal(new TextDecoder().decode(Uint8Array.from(atob(channel.sent[0].body), (c) => c.charCodeAt(0))), 'hello');
    channel.deliver({ type: 'done', id: channel.sent[0].id, status: 200 });
    assert.equal((await pending).status, 200);
    assert.deepEqual(changes, ['direct']);
    assert.equal(client.path, 'direct');
    const before = listener.calls.length;
    client.fetch('/v1/next');
    await until(() => channel.sent.length === 2, 2000, 'the next request on the channel');
    assert.equal(listener.calls.length, before, 'the dead listener was tried again');
    // Remembered for the tab.
    const remembered = [...storage.map.values()].map((v) => JSON.parse(v));
    assert.deepEqual(remembered.map((r) => r.ok), [false]);
    client.close();
  });

  test('without RTCPeerConnection no session is made, so no loopback either', async () => {
    const listener = fakeListener();
    const { client, server } = loopbackClient(listener, { RTCPeerConnection: null });
    assert.equal(await client.ready, 'normal');
    assert.equal(server.calls.filter((c) => c.path === '/webrtc/session').length, 0);
    assert.equal(listener.calls.length, 0);
  });

  test('a stopped listener with no channel hands the request to the normal path', async () => {
    const listener = fakeListener();
    const { client, fallback } = loopbackClient(listener);
    assert.equal(await client.ready, 'loopback');
    listener.mode = 'stopped';
    const res = await client.fetch('/v1/history');
    assert.equal(await res.text(), 'via fallback');
    assert.equal(fallback.calls[0].input, '/v1/history');
    assert.equal(client.path, 'normal');
    client.close();
  });

  test('a ticket the listener refuses (403 with x-beeline-error) falls back too', async () => {
    const listener = fakeListener();
    const { client, fallback } = loopbackClient(listener, { budgetMs: 5000 });
    assert.equal(await client.ready, 'loopback');
    listener.mode = 'expired';
    const res = await client.fetch('/v1/chat', { method: 'PUT', body: 'x' });
    assert.equal(await res.text(), 'via fallback');
    assert.equal(fallback.calls.length, 1);
    assert.equal(new TextDecoder().decode(fallback.calls[0].init.body), 'x', 'the body was not replayed as sent');
    assert.equal(fallback.calls[0].init.method, 'PUT');
    assert.equal(client.path, 'normal');
    client.close();
  });

  test('home-peer refusals: of the session, the next path (a busy moment keeps the listener); of the request, the page\'s answer', async () => {
    let refusal = null;
    const listener = fakeListener({
      answer: () => (refusal ? new Response('refused', { status: refusal.status, headers: { 'x-beeline-error': refusal.code } }) : new Response('ok')),
    });
    const { client, fallback } = loopbackClient(listener);
    assert.equal(await client.ready, 'loopback');
    refusal = { status: 502, code: 'upstream_unavailable' };
    const res = await client.fetch('/down');
    assert.equal(res.status, 502);
    assert.equal(res.headers.get('x-beeline-error'), 'upstream_unavailable');
    refusal = { status: 503, code: 'too_many_streams' };
    assert.equal(await (await client.fetch('/busy')).text(), 'via fallback');
    assert.equal(client.path, 'loopback', 'a busy moment ended the listener');
    refusal = { status: 503, code: 'too_many_sessions' };
    assert.equal(await (await client.fetch('/full')).text(), 'via fallback');
    assert.equal(client.path, 'normal');
    assert.deepEqual(fallback.calls.map((c) => c.input), ['/busy', '/full']);
    client.close();
  });

  test('a 403 from the home service itself (no x-beeline-error) is the answer', async () => {
    const listener = fakeListener({ answer: () => new Response('forbidden by the app', { status: 403 }) });
    const { client } = loopbackClient(listener);
    assert.equal(await client.ready, 'loopback');
    const res = await client.fetch('/admin');
    assert.equal(res.status, 403);
    assert.equal(await res.text(), 'forbidden by the app');
    assert.equal(client.path, 'loopback');
    client.close();
  });

  test('a redirect the page asked to see (redirect: manual) comes back as fetch gave it', async () => {
    const opaque = { type: 'opaqueredirect', status: 0, headers: new Headers(), body: null };
    const listener = fakeListener({ answer: () => opaque });
    const { client } = loopbackClient(listener);
    assert.equal(await client.ready, 'loopback');
    const res = await client.fetch('/login', { redirect: 'manual' });
    assert.equal(res, opaque);
    assert.equal(client.path, 'loopback');
    client.close();
  });

  test('an abort is the page\'s, not a dead listener', async () => {
    const listener = fakeListener({ answer: () => new Promise(() => {}) });
    const wrapped = { ...listener, fetch: (url, init) => (new URL(url).pathname === '/.beeline/probe' ? listener.fetch(url, init) : new Promise((_, reject) => init.signal.addEventListener('abort', () => reject(init.signal.reason)))) };
    const { client } = loopbackClient(wrapped);
    assert.equal(await client.ready, 'loopback');
    const abort = new AbortController();
    const pending = client.fetch('/slow', { signal: abort.signal });
    await sleep(5);
    abort.abort();
    await assert.rejects(pending, { name: 'AbortError' });
    assert.equal(client.path, 'loopback');
    client.close();
  });

  test('what the probe found is remembered for 30 s in the tab', async () => {
    const dead = fakeListener({ mode: 'stopped' });
    const first = loopbackClient(dead, { budgetMs: 100 });
    assert.equal(await first.client.ready, 'normal');
    assert.equal(dead.calls.length, 1);
    // The next page in this tab does not try it again...
    const alive = fakeListener();
    const second = loopbackClient(alive, { budgetMs: 100 });
    assert.equal(await second.client.ready, 'normal');
    assert.equal(alive.calls.length, 0);
    // ...until 30 s have passed.
    for (const [key, value] of storage.map) storage.map.set(key, JSON.stringify({ ...JSON.parse(value), at: Date.now() - LOOPBACK_CACHE_MS - 1 }));
    const third = loopbackClient(alive);
    assert.equal(await third.client.ready, 'loopback');
    assert.equal(alive.calls.length, 1);
    third.client.close();
  });

  test('a WebSocket goes to the listener with the ticket in the query', async () => {
    const opened = [];
    class FakeNativeWebSocket {
      constructor(url, protocols) {
        opened.push({ url, protocols });
      }
    }
    const { client } = loopbackClient(fakeListener(), { WebSocket: FakeNativeWebSocket });
    assert.equal(await client.ready, 'loopback');
    const socket = client.websocket('/ws/echo?room=a b', ['chat.v1']);
    assert.equal(socket.path, 'loopback');
    assert.equal(socket.url, 'ws://home.test/ws/echo?room=a%20b');
    assert.deepEqual(opened, [{ url: `ws://127.0.0.1:33120/ws/echo?room=a%20b&__beeline_ticket=${encodeURIComponent(OFFER.ticket)}`, protocols: ['chat.v1'] }]);
    client.websocket('/ws/plain');
    assert.equal(opened[1].url, `ws://127.0.0.1:33120/ws/plain?__beeline_ticket=${encodeURIComponent(OFFER.ticket)}`);
    client.close();
  });

  test('a WebSocket the listener never opens goes on over the next path without the page seeing it; the listener is probed and found gone', async () => {
    const opened = [];
    class FakeNativeWebSocket {
      constructor(url) {
        this.url = url;
        opened.push(url);
        setTimeout(() => {
          if (url.startsWith('ws://127.0.0.1:33120/')) {
            this.onerror?.({});
            this.onclose?.({ code: 1006, reason: '', wasClean: false });
          } else {
            this.readyState = 1;
            this.onopen?.({});
          }
        }, 5);
      }
      close() {}
    }
    const listener = fakeListener();
    const { client } = loopbackClient(listener, { WebSocket: FakeNativeWebSocket });
    assert.equal(await client.ready, 'loopback');
    listener.mode = 'stopped';
    const socket = client.websocket('/ws/echo');
    const events = [];
    socket.onopen = () => events.push('open');
    socket.onerror = () => events.push('error');
    socket.onclose = (e) => events.push(`close ${e.code}`);
    await until(() => events.length > 0, 2000, 'the socket to open');
    assert.deepEqual(events, ['open']);
    assert.equal(socket.path, 'relay');
    assert.equal(opened.length, 2);
    assert.match(opened[1], /^ws:\/\/home\.test\/ws\/echo\?__beeline_session=sess-1$/);
    await until(() => client.path === 'normal', 2000, 'the listener to be found gone');
    client.close();
  });

  test('a WebSocket the home refuses on a live listener is tried once on the next path, and the listener stays', async () => {
    const opened = [];
    class RefusingWebSocket {
      constructor(url) {
        opened.push(url);
        setTimeout(() => {
          this.onerror?.({});
          this.onclose?.({ code: 1006, reason: '', wasClean: false });
        }, 5);
      }
      close() {}
    }
    const { client } = loopbackClient(fakeListener(), { WebSocket: RefusingWebSocket });
    assert.equal(await client.ready, 'loopback');
    const socket = client.websocket('/ws/forbidden');
    const events = [];
    socket.onerror = () => events.push('error');
    socket.onclose = (e) => events.push(`close ${e.code}`);
    await until(() => events.length === 2, 2000, 'the refusal');
    assert.deepEqual(events, ['error', 'close 1006']);
    assert.equal(opened.length, 2);
    await sleep(20);
    assert.equal(client.path, 'loopback', 'a refusal of the home service is not a dead listener');
    // A socket the page closes while connecting is not retried.
    const before = opened.length;
    const closing = client.websocket('/ws/echo');
    closing.close();
    await sleep(30);
    assert.equal(opened.length, before + 1);
    client.close();
  });

  test('the sealed cookie jar goes along as x-beeline-cookie-jar, and sealed Set-Cookie goes to signal-api', async () => {
    const listener = fakeListener({ answer: () => new Response('logged in', { headers: { 'x-beeline-set-cookie': 'sealed-set-cookie' } }) });
    const { client, server } = loopbackClient(listener, {}, { cookieJar: 'jar-1' });
    assert.equal(await client.ready, 'loopback');
    const res = await client.fetch('/login', { method: 'POST', body: 'u=a' });
    assert.equal(listener.calls.at(-1).headers.get('x-beeline-cookie-jar'), 'jar-1');
    assert.equal(res.headers.get('x-beeline-set-cookie'), null);
    assert.deepEqual(server.cookieCalls.map((c) => c.body), [{ session_id: 'sess-1', set_cookie: 'sealed-set-cookie' }]);
    await client.fetch('/me');
    assert.equal(listener.calls.at(-1).headers.get('x-beeline-cookie-jar'), 'jar-2', 'the new jar');
    client.close();
  });

  test('loopback: false turns the tier off', async () => {
    const listener = fakeListener();
    const { client } = loopbackClient(listener, { loopback: false, budgetMs: 100 });
    assert.equal(await client.ready, 'normal');
    assert.equal(listener.calls.length, 0);
  });
});
