// Unit tests for the browser client (client/src, the sources of the bundle signal-api serves)
// that run in node without a browser: frame handling through a fake channel,
// and the setup/fallback state machine through a fake RTCPeerConnection and a
// fake signaling server.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import {
  ChannelRequests,
  createClient,
  encodeBase64,
  installIndicator,
} from '../../client/src/index.mjs';
import { BASE_URL, FakeElement, FakeSignalServer, directClient, fakePeerConnectionClass, recordingFetch, sleep, until } from './fakes.mjs';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

// A channel that records what was sent and lets the test inject replies.
function fakeChannel() {
  const sent = [];
  const requests = new ChannelRequests((text) => sent.push(JSON.parse(text)));
  const reply = (frame) => requests.receive(JSON.stringify(frame));
  return { sent, requests, reply };
}

async function readAll(response) {
  return new TextDecoder().decode(await response.arrayBuffer());
}

describe('ChannelRequests frame handling', () => {
  test('sends a v1 request frame with a uuid id, path, lowercase headers and a base64 body', async () => {
    const { sent, requests } = fakeChannel();
    const body = new TextEncoder().encode('{"message":"hé"}');
    requests.start({ method: 'POST', path: '/v1/chat?x=y', headers: { 'content-type': 'application/json' }, body });
    assert.equal(sent.length, 1);
    const frame = sent[0];
    assert.match(frame.id, UUID);
    assert.equal(frame.method, 'POST');
    assert.equal(frame.path, '/v1/chat?x=y');
    assert.deepEqual(frame.headers, { 'content-type': 'application/json' });
    assert.equal(Buffer.from(frame.body, 'base64').toString('utf8'), '{"message":"hé"}');
  });

  test('omits the body when there is none', () => {
    const { sent, requests } = fakeChannel();
    requests.start({ method: 'GET', path: '/healthz', headers: {} });
    assert.ok(!('body' in sent[0]));
  });

  test('resolves on the first chunk and streams later chunks before done', async () => {
    const { sent, requests, reply } = fakeChannel();
    const pending = requests.start({ method: 'POST', path: '/v1/chat', headers: {} });
    const { id } = sent[0];
    reply({ id, type: 'chunk', data: 'data: Hello\n\n' });
    const response = await pending;
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('x-beeline-path'), 'direct');
    const reader = response.body.getReader();
    const first = await reader.read();
    assert.equal(new TextDecoder().decode(first.value), 'data: Hello\n\n');
    // Still open: the reply has not ended.
    assert.equal(requests.size, 1);
    reply({ id, type: 'chunk', data: 'data: world\n\n' });
    reply({ id, type: 'done', status: 200 });
    const second = await reader.read();
    assert.equal(new TextDecoder().decode(second.value), 'data: world\n\n');
    assert.equal((await reader.read()).done, true);
    assert.equal(requests.size, 0);
  });

  test('a done without chunks resolves with its status and an empty body', async () => {
    const { sent, requests, reply } = fakeChannel();
    const pending = requests.start({ method: 'GET', path: '/missing', headers: {} });
    reply({ id: sent[0].id, type: 'done', status: 404 });
    const response = await pending;
    assert.equal(response.status, 404);
    assert.notEqual(response.body, null, 'fetch gives an empty body, not none');
    assert.equal(await readAll(response), '');
  });

  test('a done with an impossible status rejects like a network error', async () => {
    const { sent, requests, reply } = fakeChannel();
    const pending = requests.start({ method: 'GET', path: '/', headers: {} });
    reply({ id: sent[0].id, type: 'done', status: 99 });
    await assert.rejects(pending, TypeError);
  });

  test('a done of 204 without chunks has no body', async () => {
    const { sent, requests, reply } = fakeChannel();
    const pending = requests.start({ method: 'DELETE', path: '/thing', headers: {} });
    reply({ id: sent[0].id, type: 'done', status: 204 });
    const response = await pending;
    assert.equal(response.status, 204);
    assert.equal(response.body, null);
  });

  test('matches interleaved frames of concurrent requests by id', async () => {
    const { sent, requests, reply } = fakeChannel();
    const a = requests.start({ method: 'GET', path: '/a', headers: {} });
    const b = requests.start({ method: 'GET', path: '/b', headers: {} });
    const [idA, idB] = sent.map((f) => f.id);
    assert.notEqual(idA, idB);
    reply({ id: idB, type: 'chunk', data: 'b1 ' });
    reply({ id: idA, type: 'chunk', data: 'a1 ' });
    reply({ id: idB, type: 'chunk', data: 'b2' });
    reply({ id: idA, type: 'chunk', data: 'a2' });
    reply({ id: idA, type: 'done', status: 200 });
    reply({ id: idB, type: 'done', status: 200 });
    assert.equal(await readAll(await a), 'a1 a2');
    assert.equal(await readAll(await b), 'b1 b2');
  });

  test('accepts trailing newlines, several frames per message and binary messages', async () => {
    const { sent, requests } = fakeChannel();
    const pending = requests.start({ method: 'GET', path: '/', headers: {} });
    const { id } = sent[0];
    requests.receive(JSON.stringify({ id, type: 'chunk', data: 'one ' }) + '\n');
    requests.receive(
      JSON.stringify({ id, type: 'chunk', data: 'two ' }) + '\n' + JSON.stringify({ id, type: 'chunk', data: 'three' }) + '\n',
    );
    requests.receive(new TextEncoder().encode(JSON.stringify({ id, type: 'done', status: 200 }) + '\n').buffer);
    assert.equal(await readAll(await pending), 'one two three');
  });

  test('ignores unknown frame types, unknown fields, unknown ids and garbage', async () => {
    const { sent, requests, reply } = fakeChannel();
    const pending = requests.start({ method: 'GET', path: '/', headers: {} });
    const { id } = sent[0];
    requests.receive('not json at all');
    requests.receive('[1,2,3]');
    reply({ id, type: 'credit', bytes: 65536 });
    reply({ id: 'someone-else', type: 'chunk', data: 'nope' });
    reply({ id, type: 'chunk', data: 'yes', future: { field: true } });
    reply({ id, type: 'done', status: 200, trailers: {} });
    assert.equal(await readAll(await pending), 'yes');
  });

  test('abort before the response rejects with AbortError and drops later frames', async () => {
    const { sent, requests, reply } = fakeChannel();
    const controller = new AbortController();
    const pending = requests.start({ method: 'POST', path: '/v1/chat', headers: {} }, { signal: controller.signal });
    controller.abort();
    await assert.rejects(pending, { name: 'AbortError' });
    assert.equal(requests.size, 0);
    // Frames that were already on their way are ignored.
    reply({ id: sent[0].id, type: 'chunk', data: 'late' });
    reply({ id: sent[0].id, type: 'done', status: 200 });
  });

  test('abort while streaming errors the body', async () => {
    const { sent, requests, reply } = fakeChannel();
    const controller = new AbortController();
    const pending = requests.start({ method: 'POST', path: '/v1/chat', headers: {} }, { signal: controller.signal });
    reply({ id: sent[0].id, type: 'chunk', data: 'partial' });
    const reader = (await pending).body.getReader();
    await reader.read();
    controller.abort();
    await assert.rejects(reader.read(), { name: 'AbortError' });
    assert.equal(requests.size, 0);
  });

  test('an already aborted signal sends nothing', async () => {
    const { sent, requests } = fakeChannel();
    await assert.rejects(
      requests.start({ method: 'GET', path: '/', headers: {} }, { signal: AbortSignal.abort() }),
      { name: 'AbortError' },
    );
    assert.equal(sent.length, 0);
  });

  test('cancelling the body stops routing its frames', async () => {
    const { sent, requests, reply } = fakeChannel();
    const pending = requests.start({ method: 'GET', path: '/', headers: {} });
    reply({ id: sent[0].id, type: 'chunk', data: 'x' });
    await (await pending).body.cancel();
    assert.equal(requests.size, 0);
    reply({ id: sent[0].id, type: 'chunk', data: 'after cancel' });
  });

  test('closeAll errors streaming bodies, retries unstarted retryable requests, rejects the rest', async () => {
    const { sent, requests, reply } = fakeChannel();
    const streaming = requests.start({ method: 'POST', path: '/s', headers: {} });
    const retried = requests.start({ method: 'GET', path: '/g', headers: {} }, { retry: async () => new Response('via fallback') });
    const rejected = requests.start({ method: 'POST', path: '/p', headers: {} });
    reply({ id: sent[0].id, type: 'chunk', data: 'partial' });
    const reader = (await streaming).body.getReader();
    await reader.read();
    requests.closeAll();
    await assert.rejects(reader.read(), TypeError);
    assert.equal(await (await retried).text(), 'via fallback');
    await assert.rejects(rejected, TypeError);
    assert.equal(requests.size, 0);
  });

  test('a send that throws leaves nothing in flight', () => {
    const requests = new ChannelRequests(() => {
      throw new Error('closing');
    });
    assert.throws(() => requests.start({ method: 'POST', path: '/', headers: {} }));
    assert.equal(requests.size, 0);
  });

  test('encodeBase64 handles bodies larger than one slice', () => {
    const bytes = new Uint8Array(200_000).map((_, i) => i * 7);
    assert.equal(encodeBase64(bytes), Buffer.from(bytes).toString('base64'));
  });
});

describe('createClient setup and fallback', () => {
  test('disabled: ready is normal, no signaling, fetch is the normal fetch', async () => {
    const server = new FakeSignalServer();
    const fallback = recordingFetch();
    const client = createClient({ enabled: false, baseUrl: BASE_URL, signalFetch: server.fetch, fallbackFetch: fallback.fetch });
    assert.equal(await client.ready, 'normal');
    assert.equal(client.path, 'normal');
    const res = await client.fetch('/v1/chat', { method: 'POST', body: '{}' });
    assert.equal(await res.text(), 'via fallback');
    assert.equal(server.calls.length, 0);
  });

  test('enabled defaults to globalThis.__WEBRTC_ENABLED__ === true', async () => {
    const { FakePeerConnection } = fakePeerConnectionClass();
    const make = (server) =>
      createClient({ baseUrl: BASE_URL, signalFetch: server.fetch, fallbackFetch: recordingFetch().fetch, RTCPeerConnection: FakePeerConnection, budgetMs: 50 });
    try {
      for (const flag of [undefined, 'true', 1]) {
        globalThis.__WEBRTC_ENABLED__ = flag;
        const server = new FakeSignalServer();
        assert.equal(await make(server).ready, 'normal');
        assert.equal(server.calls.length, 0, `flag ${flag} must not enable`);
      }
      globalThis.__WEBRTC_ENABLED__ = true;
      const server = new FakeSignalServer();
      const client = make(server);
      assert.equal(client.path, 'normal');
      await client.ready;
      assert.equal(server.calls[0].path, '/webrtc/session');
    } finally {
      delete globalThis.__WEBRTC_ENABLED__;
    }
  });

  test('no RTCPeerConnection: silent fallback', async () => {
    const server = new FakeSignalServer();
    const client = createClient({ enabled: true, baseUrl: BASE_URL, signalFetch: server.fetch, fallbackFetch: recordingFetch().fetch, RTCPeerConnection: undefined });
    assert.equal(await client.ready, 'normal');
  });

  test('a failing session endpoint: silent fallback', async () => {
    const server = new FakeSignalServer();
    server.sessionStatus = 503;
    const { FakePeerConnection, instances } = fakePeerConnectionClass();
    const client = createClient({ enabled: true, baseUrl: BASE_URL, signalFetch: server.fetch, fallbackFetch: recordingFetch().fetch, RTCPeerConnection: FakePeerConnection });
    assert.equal(await client.ready, 'normal');
    assert.equal(instances.length, 0);
  });

  test('signals offer before candidates, applies the answer, and goes direct when the channel opens', async () => {
    const { client, server, pc, channel } = await directClient();
    assert.equal(client.path, 'direct');
    assert.deepEqual(pc.config.iceServers, [{ urls: ['stun:127.0.0.1:3478'], username: 'u', credential: 'c' }]);
    assert.equal(channel.label, 'http');
    assert.equal(channel.init, undefined, 'reliable and ordered: the defaults');
    assert.deepEqual(channel.hellos, [{ type: 'hello', version: 2, features: ['binary', 'cancel', 'credit', 'websocket'], window: 262144 }]);
    assert.equal(channel.sent.length, 0);
    assert.deepEqual(server.calls[0], { method: 'POST', path: '/webrtc/session', query: {} });
    const types = server.posted.map((m) => m.type);
    assert.equal(types[0], 'offer');
    assert.equal(server.posted[0].sdp, 'v=0\r\nfake offer\r\n');
    assert.ok(server.posted.every((m) => m.session_id === 'sess-1'));
    await until(() => server.posted.some((m) => m.type === 'candidate' && m.candidate === null), 2000, 'end of candidates');
    assert.equal(server.posted[1].candidate.candidate, 'candidate:1 1 udp 1 127.0.0.1 5000 typ host');
    assert.equal(pc.remoteDescription.type, 'answer');
    const polls = server.calls.filter((c) => c.method === 'GET');
    assert.equal(polls[0].query.session_id, 'sess-1');
    assert.equal(polls[0].query.after, '0');
    assert.ok(polls.slice(1).every((p) => Number(p.query.after) >= 1), 'later polls pass the cursor back');
  });

  test('direct: same-origin requests go over the channel, cross-origin ones do not', async () => {
    const { client, channel, fallback } = await directClient();
    const pending = client.fetch('/v1/chat?x=1', { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-Extra': 'y' }, body: '{"message":"hi"}' });
    await until(() => channel.sent.length === 1, 2000, 'the request frame');
    const frame = channel.sent[0];
    assert.equal(frame.method, 'POST');
    assert.equal(frame.path, '/v1/chat?x=1');
    assert.equal(frame.headers['content-type'], 'application/json');
    assert.equal(frame.headers['x-extra'], 'y');
    assert.equal(Buffer.from(frame.body, 'base64').toString(), '{"message":"hi"}');
    channel.onmessage({ data: JSON.stringify({ id: frame.id, type: 'chunk', data: 'data: hi\n\n' }) });
    channel.onmessage({ data: JSON.stringify({ id: frame.id, type: 'done', status: 200 }) });
    const res = await pending;
    assert.equal(res.headers.get('x-beeline-path'), 'direct');
    assert.equal(await res.text(), 'data: hi\n\n');
    assert.equal(fallback.calls.length, 0);

    await client.fetch('http://elsewhere.test/v1/chat');
    assert.equal(fallback.calls.length, 1);
    assert.equal(fallback.calls[0].input, 'http://elsewhere.test/v1/chat');
    const other = client.fetch(new URL('http://home.test/v1/other'));
    await until(() => channel.sent.length === 2, 2000, 'the second request frame');
    assert.equal(channel.sent[1].method, 'GET');
    assert.equal(channel.sent[1].path, '/v1/other');
    channel.onmessage({ data: JSON.stringify({ id: channel.sent[1].id, type: 'done', status: 204 }) });
    assert.equal((await other).status, 204);
    assert.equal(fallback.calls.length, 1);
  });

  test('a Request object goes over the channel and keeps its body for the normal path', async () => {
    const { client, channel, fallback } = await directClient();
    const original = new Request('http://home.test/v1/chat', { method: 'POST', headers: { 'x-a': '1' }, body: 'payload' });
    const pending = client.fetch(original);
    await until(() => channel.sent.length === 1, 2000, 'the request frame');
    assert.equal(channel.sent[0].method, 'POST');
    assert.equal(channel.sent[0].headers['x-a'], '1');
    assert.equal(Buffer.from(channel.sent[0].body, 'base64').toString(), 'payload');
    assert.equal(original.bodyUsed, false);
    channel.onmessage({ data: JSON.stringify({ id: channel.sent[0].id, type: 'done', status: 201 }) });
    assert.equal((await pending).status, 201);
    assert.equal(fallback.calls.length, 0);
  });

  test('a request the channel refuses to send goes the normal way, whatever its method', async () => {
    const { client, channel, fallback } = await directClient();
    channel.refuseSends = true;
    const res = await client.fetch('/v1/chat', { method: 'POST', body: '{}' });
    assert.equal(await res.text(), 'via fallback');
    assert.equal(fallback.calls.length, 1);
    assert.equal(fallback.calls[0].init.method, 'POST');
  });

  test('a request made during setup goes the normal way at once', async () => {
    const server = new FakeSignalServer();
    const { FakePeerConnection } = fakePeerConnectionClass();
    const fallback = recordingFetch();
    const client = createClient({ enabled: true, baseUrl: BASE_URL, signalFetch: server.fetch, fallbackFetch: fallback.fetch, RTCPeerConnection: FakePeerConnection, budgetMs: 5000 });
    assert.equal(client.path, 'normal');
    let settled = false;
    client.ready.then(() => {
      settled = true;
    });
    const started = Date.now();
    const res = await client.fetch('/v1/chat', { method: 'POST', body: '{}' });
    assert.ok(Date.now() - started < 100);
    assert.equal(await res.text(), 'via fallback');
    assert.equal(settled, false, 'ready resolved while the channel was being set up');
    client.close();
    assert.equal(await client.ready, 'normal');
  });

  test('budget: no channel in time means fallback, a closed peer and a bye', async () => {
    const server = new FakeSignalServer();
    const { FakePeerConnection, instances } = fakePeerConnectionClass();
    const changes = [];
    const client = createClient({ enabled: true, baseUrl: BASE_URL, signalFetch: server.fetch, fallbackFetch: recordingFetch().fetch, RTCPeerConnection: FakePeerConnection, budgetMs: 150 });
    client.onpathchange = (path) => changes.push(path);
    const started = Date.now();
    assert.equal(await client.ready, 'normal');
    assert.ok(Date.now() - started >= 140);
    assert.deepEqual(changes, [], 'the path was the normal one all along');
    assert.equal(instances[0].closed, true);
    await until(() => server.posted.some((m) => m.type === 'bye'), 2000, 'bye');
    // Never retried in this page load.
    const sessions = server.calls.filter((c) => c.path === '/webrtc/session').length;
    await sleep(300);
    assert.equal(server.calls.filter((c) => c.path === '/webrtc/session').length, sessions);
    // A channel that opens late is ignored.
    instances[0].channels[0].open();
    await sleep(20);
    assert.equal(client.path, 'normal');
  });

  test('ICE failure during setup: silent fallback', async () => {
    const server = new FakeSignalServer();
    const { FakePeerConnection, instances } = fakePeerConnectionClass();
    const client = createClient({ enabled: true, baseUrl: BASE_URL, signalFetch: server.fetch, fallbackFetch: recordingFetch().fetch, RTCPeerConnection: FakePeerConnection });
    await until(() => instances.length === 1, 2000, 'the peer connection');
    instances[0].setConnectionState('failed');
    assert.equal(await client.ready, 'normal');
  });

  test('a bye from the home peer during setup: fallback', async () => {
    const server = new FakeSignalServer();
    const { FakePeerConnection } = fakePeerConnectionClass();
    const client = createClient({ enabled: true, baseUrl: BASE_URL, signalFetch: server.fetch, fallbackFetch: recordingFetch().fetch, RTCPeerConnection: FakePeerConnection });
    await until(() => server.posted.some((m) => m.type === 'offer'), 2000, 'the offer');
    server.deliver({ type: 'bye' });
    assert.equal(await client.ready, 'normal');
  });

  test('channel loss: GET is retried the normal way, POST errors, later requests use the normal path', async () => {
    const { client, channel, fallback, pc } = await directClient();
    const events = [];
    client.addEventListener('pathchange', (e) => events.push(e.detail.path));
    const get = client.fetch('/v1/history');
    const post = client.fetch('/v1/chat', { method: 'POST', body: '{}' });
    await until(() => channel.sent.length === 2, 2000, 'both request frames');
    channel.remoteClose();
    assert.equal(client.path, 'normal');
    assert.deepEqual(events, ['normal']);
    assert.equal(await (await get).text(), 'via fallback');
    await assert.rejects(post, TypeError);
    assert.equal(pc.closed, true);
    await client.fetch('/v1/chat', { method: 'POST', body: '{}' });
    assert.equal(fallback.calls.length, 2);
    assert.equal(fallback.calls[0].input, '/v1/history');
  });

  test('a disconnected connection routes new requests the normal way until it recovers', async () => {
    const { client, channel, pc, fallback } = await directClient();
    pc.setConnectionState('disconnected');
    assert.equal(client.path, 'normal');
    await client.fetch('/v1/chat');
    assert.equal(fallback.calls.length, 1);
    pc.setConnectionState('connected');
    assert.equal(client.path, 'direct');
    client.fetch('/v1/chat');
    await until(() => channel.sent.length === 1, 2000, 'a request over the channel');
  });

  test('a channel whose selected pair is a TURN relay is path relay, and the indicator says so', async () => {
    const element = new FakeElement();
    const events = [];
    const { client } = await directClient(
      { indicator: element },
      {
        candidateType: 'relay',
        expect: 'relay',
        // ICE connects before DTLS and SCTP: the pair is read then.
        beforeOpen: async (c, { pc }) => {
          c.addEventListener('pathchange', (e) => events.push(e.detail.path));
          pc.setConnectionState('connected');
          await sleep(5);
        },
      },
    );
    assert.equal(client.path, 'relay');
    assert.equal(await client.ready, 'relay');
    assert.deepEqual(events, ['relay'], 'it never said direct first');
    assert.equal(element.visibleText, '\u26a1 TURN relay');
  });

  test('a TURN relay found only after the channel opened: direct, then relay', async () => {
    const events = [];
    const { client } = await directClient({}, { candidateType: 'relay', beforeOpen: (c) => c.addEventListener('pathchange', (e) => events.push(e.detail.path)) });
    await until(() => client.path === 'relay', 2000, 'the relay path');
    assert.deepEqual(events, ['direct', 'relay']);
  });

  test('a WebSocket opened while hello/agree is under way waits for it, then takes the channel', async () => {
    const { client, channel } = await directClient({ WebSocket: class { constructor() { throw new Error('the relay was used'); } } });
    assert.equal(client.protocol, null, 'still negotiating');
    const socket = client.websocket('/ws/echo', ['echo.v1']);
    assert.equal(socket.readyState, 0);
    await sleep(10);
    assert.equal(channel.sent.length, 0, 'nothing before agree');
    channel.deliver({ type: 'agree', version: 2, features: ['binary', 'cancel', 'credit', 'websocket'], window: 262144, max_streams: 128 });
    await until(() => channel.sent.some((f) => f.type === 'request'), 2000, 'the upgrade request on the channel');
    const head = channel.sent.find((f) => f.type === 'request');
    assert.equal(head.path, '/ws/echo');
    assert.equal(head.headers.upgrade ?? head.upgrade, 'websocket');
    assert.equal(socket.path, 'direct');
  });

  test('a WebSocket opened while negotiating takes the relay when the home never agrees, and close() meanwhile fails it', async () => {
    const opened = [];
    class FakeNativeWebSocket {
      constructor(url) {
        opened.push(url);
      }
    }
    const { client } = await directClient({ WebSocket: FakeNativeWebSocket, negotiateMs: 50 });
    const socket = client.websocket('/ws/echo');
    const closing = client.websocket('/ws/other');
    const events = [];
    closing.onerror = () => events.push('error');
    closing.onclose = (e) => events.push(`close ${e.code}`);
    closing.close();
    await until(() => opened.length === 1, 2000, 'the relay socket');
    assert.match(opened[0], /^ws:\/\/home\.test\/ws\/echo\?__beeline_session=sess-1$/);
    assert.equal(socket.path, 'relay');
    await until(() => events.length === 2, 2000, 'the failed socket');
    assert.deepEqual(events, ['error', 'close 1006']);
  });

  test('the indicator names the path in text, is an accessible live region, and shows the measurements on hover and focus', async () => {
    const element = new FakeElement();
    element.hidden = true;
    const { client, channel } = await directClient({ indicator: element });
    assert.equal(element.hidden, false);
    assert.equal(element.visibleText, '\u26a1 direct');
    assert.equal(element.getAttribute('role'), 'status');
    assert.equal(element.getAttribute('aria-live'), 'polite');
    assert.equal(element.getAttribute('tabindex'), '0');
    assert.equal(element.dataset.path, 'direct');
    // The hello/agree round trip and the setup time, measured.
    channel.deliver({ type: 'agree', version: 2, features: ['binary', 'cancel', 'credit'], window: 262144, max_streams: 128 });
    await until(() => client.timing.rttMs !== null, 2000, 'the round trip');
    const { rttMs, setupMs } = client.timing;
    assert.ok(rttMs >= 0 && setupMs > 0, JSON.stringify(client.timing));
    for (const [enter, leave] of [['mouseenter', 'mouseleave'], ['focus', 'blur']]) {
      element.dispatch(enter);
      assert.match(element.visibleText, /^\u26a1 direct \(round trip \d+(\.\d)? ms, setup \d+(\.\d)? ms\)$/, enter);
      element.dispatch(leave);
      assert.equal(element.visibleText, '\u26a1 direct', leave);
    }
    assert.match(element.title, /round trip/);
    const other = new FakeElement();
    installIndicator(client, other);
    assert.equal(other.visibleText, '\u26a1 direct');
    channel.remoteClose();
    assert.equal(element.visibleText, 'normal path');
    assert.equal(other.visibleText, 'normal path');
    assert.equal(element.dataset.path, 'normal');
    assert.equal(element.hidden, false);
  });
});
