// Unit tests for the browser half of sealed cookie jars (docs/cookies.md), in
// node without a browser: createClient over the fake RTCPeerConnection and
// signaling server of fakes.mjs, whose session may answer a `cookie_jar` and
// whose `POST /webrtc/cookie` answers jar-2, jar-3, ...

import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { directClient, sleep, until } from './fakes.mjs';

const AGREE = { type: 'agree', version: 2, features: ['binary', 'cancel', 'credit', 'cookies'], window: 262144, max_streams: 128, max_header_bytes: 16384, max_body_bytes: 1 << 30 };

// A client on a v2 channel that agreed `features`, with the session's jar.
async function agreed({ cookieJar = 'jar-1', features = AGREE.features, ...rest } = {}) {
  const world = await directClient({}, { cookieJar, ...rest });
  world.channel.deliver({ ...AGREE, features });
  await world.client.negotiated;
  return world;
}

// The request heads the client sent, in order.
const heads = (channel) => channel.sent.filter((f) => f.type === 'request');

// Answers the last request head with `headers` and an empty body.
function answer(channel, headers = {}, status = 200) {
  const id = heads(channel).at(-1).id;
  channel.deliver({ type: 'response', id, status, headers });
  channel.deliver({ type: 'end', id });
}

// Sends GET `path` on the channel, answers it with `headers`, returns the response.
async function roundTrip(world, path, headers = {}) {
  const before = heads(world.channel).length;
  const pending = world.client.fetch(path);
  await until(() => heads(world.channel).length === before + 1, 2000, `the request for ${path}`);
  answer(world.channel, headers);
  return pending;
}

const jarOf = (head) => head.headers['x-beeline-jar'];

const realObserver = globalThis.PerformanceObserver;

afterEach(() => {
  delete globalThis.document;
  globalThis.PerformanceObserver = realObserver;
});

// A PerformanceObserver whose resource entries the test adds: `record`
// queues one (as the browser does when a response ends), `deliver` hands the
// queue to the callback (as the browser does a little later).
function fakeObservers() {
  const observers = [];
  class FakeObserver {
    queue = [];
    constructor(callback) {
      this.callback = callback;
      observers.push(this);
    }
    observe(options) {
      this.options = options;
    }
    takeRecords() {
      return this.queue.splice(0);
    }
    disconnect() {
      this.disconnected = true;
    }
  }
  const serverTiming = (...names) => ({ name: 'http://home.test/login', entryType: 'resource', serverTiming: names.map((name) => ({ name, duration: 0, description: '' })) });
  return {
    FakeObserver,
    observers,
    record: (...names) => observers.filter((o) => !o.disconnected).forEach((o) => o.queue.push(serverTiming(...names))),
    deliver: () => observers.forEach((o) => o.callback({ getEntries: () => o.takeRecords() })),
  };
}

describe('client.js: sealed cookie jars', () => {
  test('asks for the cookies feature only when the session gave a jar', async () => {
    const without = await directClient();
    assert.deepEqual(without.channel.hellos[0].features, ['binary', 'cancel', 'credit', 'websocket']);
    const withJar = await directClient({}, { cookieJar: 'jar-1' });
    assert.deepEqual(withJar.channel.hellos[0].features, ['binary', 'cancel', 'credit', 'websocket', 'cookies']);
    // Also when the page chose its features, and never without a jar.
    const chosen = await directClient({ features: ['binary', 'cookies'] }, { cookieJar: 'jar-1' });
    assert.deepEqual(chosen.channel.hellos[0].features, ['binary', 'cookies']);
    const chosenNoJar = await directClient({ features: ['binary', 'cookies'] });
    assert.deepEqual(chosenNoJar.channel.hellos[0].features, ['binary']);
    // And not when the page turned cookies off.
    const off = await directClient({ cookies: false }, { cookieJar: 'jar-1' });
    assert.deepEqual(off.channel.hellos[0].features, ['binary', 'cancel', 'credit', 'websocket']);
    for (const world of [without, withJar, chosen, chosenNoJar, off]) world.client.close();
  });

  test('every v2 request carries the jar once cookies are agreed; a page-set x-beeline-jar is replaced', async () => {
    const world = await agreed();
    assert.deepEqual(world.client.protocol.features, ['binary', 'cancel', 'credit', 'cookies']);
    await roundTrip(world, '/a');
    const post = world.client.fetch('/b', { method: 'POST', body: 'x', headers: { 'X-Beeline-Jar': 'forged' } });
    await until(() => heads(world.channel).length === 2);
    answer(world.channel);
    await post;
    assert.deepEqual(heads(world.channel).map(jarOf), ['jar-1', 'jar-1']);
    assert.equal(Object.keys(heads(world.channel)[1].headers).filter((n) => n.toLowerCase() === 'x-beeline-jar').length, 1);
    assert.equal(world.server.cookieCalls.length, 0, 'no refresh without a reason');
  });

  test('no jar header when the home peer did not agree to cookies, nor on v1', async () => {
    const world = await agreed({ features: ['binary', 'cancel', 'credit'] });
    await roundTrip(world, '/a');
    assert.equal(jarOf(heads(world.channel)[0]), undefined);

    const v1 = await directClient({ negotiateMs: 30 }, { cookieJar: 'jar-1' });
    assert.deepEqual(await v1.client.negotiated, { version: 1 });
    v1.client.fetch('/a');
    await until(() => v1.channel.sent.length === 1);
    assert.equal(v1.channel.sent[0].type, undefined, 'a v1 request');
    assert.equal(v1.channel.sent[0].headers['x-beeline-jar'], undefined);
  });

  test('sealed Set-Cookie lines are exchanged at signal-api before the response resolves', async () => {
    const world = await agreed();
    world.server.holdCookie = true;
    let resolved = null;
    const pending = world.client.fetch('/login', { method: 'POST', body: 'user=alice' }).then((res) => {
      resolved = res;
      return res;
    });
    await until(() => heads(world.channel).length === 1);
    answer(world.channel, { 'x-beeline-set-cookie': 'sealed-lines', 'content-type': 'text/plain' });
    await until(() => world.server.cookieCalls.length === 1, 2000, 'the exchange');
    assert.deepEqual(world.server.cookieCalls[0], { body: { session_id: 'sess-1', set_cookie: 'sealed-lines' }, credentials: 'same-origin' });
    await sleep(30);
    assert.equal(resolved, null, 'the response waits for the exchange');
    // A request made meanwhile waits for the new jar too.
    const next = world.client.fetch('/me');
    await sleep(30);
    assert.equal(heads(world.channel).length, 1, 'the next request waits for the exchange');
    world.server.releaseCookie();
    const res = await pending;
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-beeline-set-cookie'), null, 'the page never sees the sealed lines');
    assert.equal(res.headers.get('content-type'), 'text/plain');
    assert.equal(res.headers.get('x-beeline-path'), 'direct');
    await until(() => heads(world.channel).length === 2);
    assert.equal(jarOf(heads(world.channel)[1]), 'jar-2', 'the exchange answered the new jar');
    answer(world.channel);
    await next;
  });

  test('a failed exchange still resolves the response (its cookies are not set); the jar stays', async () => {
    const world = await agreed();
    world.server.cookieStatus = 400;
    const res = await roundTrip(world, '/login', { 'x-beeline-set-cookie': 'stale' });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-beeline-set-cookie'), null);
    assert.equal(world.server.cookieCalls.length, 1);
    await roundTrip(world, '/me');
    assert.equal(jarOf(heads(world.channel)[1]), 'jar-1');
  });

  test('a normal-path response with x-beeline-cookies-changed refreshes the jar before the next channel request', async () => {
    const world = await agreed({
      fallbackFetch: (input) =>
        String(input).endsWith('/login') ? new Response('ok', { headers: { 'x-beeline-cookies-changed': '1' } }) : new Response('plain'),
      // The login goes the normal way: the channel is not open yet.
      beforeOpen: async (client) => {
        const res = await client.fetch('/login', { method: 'POST', body: 'user=alice' });
        assert.equal(res.headers.get('x-beeline-path'), null, 'the normal path');
        // A normal-path response without the mark changes nothing.
        await client.fetch('/other');
      },
    });
    assert.equal(world.server.cookieCalls.length, 0, 'refreshed only when needed');
    await roundTrip(world, '/me');
    assert.deepEqual(world.server.cookieCalls.map((c) => c.body), [{ session_id: 'sess-1' }]);
    assert.equal(jarOf(heads(world.channel)[0]), 'jar-2');
    await roundTrip(world, '/me');
    assert.equal(world.server.cookieCalls.length, 1, 'once');
    assert.equal(jarOf(heads(world.channel)[1]), 'jar-2');
  });

  test('Server-Timing: beeline-cookies-changed on any response of the page (its own fetch too) refreshes the jar', async () => {
    const timings = fakeObservers();
    globalThis.PerformanceObserver = timings.FakeObserver;
    const world = await agreed();
    assert.deepEqual(timings.observers[0].options, { type: 'resource' });
    // Another metric changes nothing.
    timings.record('db', 'cache');
    timings.deliver();
    await roundTrip(world, '/a');
    assert.equal(world.server.cookieCalls.length, 0);
    // Delivered to the observer.
    timings.record('db', 'beeline-cookies-changed');
    timings.deliver();
    await roundTrip(world, '/b');
    assert.equal(world.server.cookieCalls.length, 1);
    assert.equal(jarOf(heads(world.channel)[1]), 'jar-2');
    // Recorded but not yet delivered when the next request starts.
    timings.record('beeline-cookies-changed');
    await roundTrip(world, '/c');
    assert.equal(world.server.cookieCalls.length, 2);
    assert.equal(jarOf(heads(world.channel)[2]), 'jar-3');
    await roundTrip(world, '/d');
    assert.equal(world.server.cookieCalls.length, 2, 'once per mark');
    // A session without a jar watches nothing.
    const before = timings.observers.length;
    const noJar = await directClient();
    assert.ok(timings.observers.slice(before).every((o) => o.disconnected));
    noJar.client.close();
  });

  test('a document.cookie change refreshes the jar', async () => {
    globalThis.document = { cookie: 'theme=dark' };
    const world = await agreed();
    await roundTrip(world, '/a');
    assert.equal(world.server.cookieCalls.length, 0);
    globalThis.document.cookie = 'theme=light';
    await roundTrip(world, '/b');
    assert.equal(world.server.cookieCalls.length, 1);
    assert.deepEqual(heads(world.channel).map(jarOf), ['jar-1', 'jar-2']);
    await roundTrip(world, '/c');
    assert.equal(world.server.cookieCalls.length, 1, 'the new jar remembers the new document.cookie');
  });

  test('cookiesChanged(): concurrent requests wait for one refresh', async () => {
    const world = await agreed();
    world.client.cookiesChanged();
    world.server.holdCookie = true;
    const a = world.client.fetch('/a');
    const b = world.client.fetch('/b');
    await until(() => world.server.cookieCalls.length === 1);
    await sleep(30);
    assert.equal(world.server.cookieCalls.length, 1, 'one refresh at a time');
    assert.equal(heads(world.channel).length, 0, 'requests wait for the refresh');
    world.server.releaseCookie();
    await until(() => heads(world.channel).length === 2);
    assert.deepEqual(heads(world.channel).map(jarOf), ['jar-2', 'jar-2']);
    for (const head of heads(world.channel)) world.channel.deliver({ type: 'response', id: head.id, status: 204, headers: {} });
    await Promise.all([a, b]);
  });

  test('a jar older than 6 h is refreshed; a failed refresh sends the old jar and waits before trying again', async () => {
    const world = await agreed();
    const realNow = Date.now;
    try {
      const later = realNow() + 6 * 3600 * 1000 + 1000;
      Date.now = () => later;
      world.server.cookieStatus = 503;
      await roundTrip(world, '/a');
      assert.equal(world.server.cookieCalls.length, 1);
      assert.equal(jarOf(heads(world.channel)[0]), 'jar-1', 'the old jar, since no new one came');
      await roundTrip(world, '/b');
      assert.equal(world.server.cookieCalls.length, 1, 'no retry right away');
      Date.now = () => later + 11_000;
      world.server.cookieStatus = 200;
      await roundTrip(world, '/c');
      assert.equal(world.server.cookieCalls.length, 2);
      assert.equal(jarOf(heads(world.channel)[2]), 'jar-3');
    } finally {
      Date.now = realNow;
    }
  });
});
