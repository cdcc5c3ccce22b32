// Unit tests for protocol v2 in the browser client, in node without a
// browser: ChannelStreams and ChannelProtocol driven through a fake link, and
// createClient negotiating over the fake RTCPeerConnection of fakes.mjs.

import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { ChannelProtocol, ChannelSendError, ChannelStreams, codec } from '../../client/src/index.mjs';
import { directClient, sleep, until } from './fakes.mjs';

const AGREE = { type: 'agree', version: 2, features: ['binary', 'cancel', 'credit'], window: 262144, max_streams: 128, max_header_bytes: 16384, max_body_bytes: 1 << 30 };

const bytesOf = (n, seed = 1) => new Uint8Array(n).map((_, i) => (i * 31 + seed) & 0xff);
const concat = (chunks) => {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
};

// A link that records every frame sent (decoded) and the size of each message.
function fakeLink({ maxMessageSize = 262144 } = {}) {
  const link = {
    maxMessageSize,
    frames: [],
    sizes: [],
    refuse: false,
    isCongested: false,
    drainWaiters: [],
    send(message) {
      if (link.refuse) throw new ChannelSendError('refused');
      const binary = typeof message !== 'string';
      link.sizes.push(binary ? message.length : Buffer.byteLength(message));
      link.frames.push(binary ? codec.decodeBinary(message) : codec.decodeJson(message));
    },
    congested: () => link.isCongested,
    drained: () => new Promise((resolve) => link.drainWaiters.push(resolve)),
    drain() {
      link.isCongested = false;
      for (const wake of link.drainWaiters.splice(0)) wake();
    },
    ofType: (type) => link.frames.filter((f) => f.type === type),
  };
  return link;
}

function streams(options = {}, linkOptions = {}) {
  const link = fakeLink(linkOptions);
  const s = new ChannelStreams(link, { binary: true, cancel: true, credit: true, sendWindow: 262144, recvWindow: 262144, ...options });
  return { link, s };
}

const get = (path = '/x') => ({ method: 'GET', path, headers: {} });

// Reads a response body to the end.
async function readAll(body) {
  const chunks = [];
  const reader = body.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return concat(chunks);
    chunks.push(value);
  }
}

describe('ChannelStreams: requests and responses', () => {
  test('a request without a body is one binary head with end, ids counting from 1', async () => {
    const { link, s } = streams();
    s.start({ method: 'GET', path: '/a?b=c', headers: { accept: 'text/plain' } });
    s.start(get('/b'));
    await until(() => link.frames.length === 2);
    assert.deepEqual(link.frames[0], { type: 'request', id: 1, method: 'GET', path: '/a?b=c', headers: { accept: 'text/plain' }, end: true });
    assert.equal(link.frames[1].id, 2);
    assert.equal(s.size, 2);
  });

  test('fetch resolves at the response head with its status and headers; the body follows', async () => {
    const { link, s } = streams();
    const pending = s.start(get());
    await until(() => link.frames.length === 1);
    s.receive({ type: 'response', id: 1, status: 201, headers: { 'content-type': 'text/plain', 'x-trace': 'a, b' } });
    const res = await pending;
    assert.equal(res.status, 201);
    assert.equal(res.headers.get('content-type'), 'text/plain');
    assert.equal(res.headers.get('x-trace'), 'a, b');
    assert.equal(res.headers.get('x-beeline-path'), 'direct');
    const body = readAll(res.body);
    const bytes = new Uint8Array([0, 1, 2, 0xff, 0xfe, 0xc3]); // not UTF-8
    s.receive({ type: 'data', id: 1, data: bytes.subarray(0, 4) });
    s.receive({ type: 'data', id: 1, data: bytes.subarray(4) });
    s.receive({ type: 'end', id: 1 });
    assert.deepEqual(await body, bytes);
    assert.equal(s.size, 0);
  });

  test('204 has no body; a 1xx or a second head fails the stream', async () => {
    const { link, s } = streams();
    const a = s.start(get());
    const b = s.start(get());
    const c = s.start(get());
    await until(() => link.frames.length === 3);
    s.receive({ type: 'response', id: 1, status: 204, headers: {} });
    s.receive({ type: 'end', id: 1 });
    assert.equal((await a).body, null);
    s.receive({ type: 'response', id: 2, status: 103, headers: {} });
    await assert.rejects(b, { name: 'TypeError', code: 'bad_frame' });
    s.receive({ type: 'response', id: 3, status: 200, headers: {} });
    const res = await c;
    s.receive({ type: 'response', id: 3, status: 200, headers: {} });
    await assert.rejects(res.arrayBuffer(), TypeError);
    assert.deepEqual(link.ofType('error').map((e) => [e.id, e.code]), [[2, 'bad_frame'], [3, 'bad_frame']]);
  });

  test('JSON framing: string ids, base64 data, data frames within the message size', async () => {
    const { link, s } = streams({ binary: false }, { maxMessageSize: 1000 });
    const body = bytesOf(5000);
    const pending = s.start({ method: 'POST', path: '/up', headers: {}, body });
    await until(() => link.ofType('end').length === 1);
    assert.equal(link.frames[0].id, '1');
    assert.ok(link.sizes.every((n) => n <= 1000), `sizes ${link.sizes}`);
    assert.deepEqual(concat(link.ofType('data').map((f) => f.data)), body);
    s.receive({ type: 'response', id: '1', status: 200, headers: {} });
    s.receive({ type: 'data', id: '1', data: new Uint8Array([0xff, 0]) });
    s.receive({ type: 'end', id: '1' });
    assert.deepEqual(await readAll((await pending).body), new Uint8Array([0xff, 0]));
  });

  test('error frames reject with a TypeError carrying the code, or error the body', async () => {
    const { link, s } = streams();
    const a = s.start(get());
    const b = s.start(get());
    await until(() => link.frames.length === 2);
    s.receive({ type: 'error', id: 1, code: 'upstream_unavailable', message: 'connection refused' });
    await assert.rejects(a, (err) => err instanceof TypeError && err.code === 'upstream_unavailable' && /connection refused/.test(err.message));
    s.receive({ type: 'response', id: 2, status: 200, headers: {} });
    const reader = (await b).body.getReader();
    s.receive({ type: 'data', id: 2, data: bytesOf(10) });
    await reader.read();
    s.receive({ type: 'error', id: 2, code: 'upstream_failed', message: 'reset' });
    await assert.rejects(reader.read(), { name: 'TypeError', code: 'upstream_failed' });
    assert.equal(s.size, 0);
    // Errors without a stream, and frames for ended streams, change nothing.
    s.receive({ type: 'error', code: 'bad_frame', message: 'frame is not JSON' });
    s.receive({ type: 'data', id: 2, data: bytesOf(1) });
    assert.equal(link.ofType('error').length, 0, 'the client answered an error frame');
  });

  test('too_many_streams before the head retries an idempotent request the normal way', async () => {
    const { link, s } = streams();
    const retried = s.start(get(), { retry: async () => new Response('via fallback') });
    await until(() => link.frames.length === 1);
    s.receive({ type: 'error', id: 1, code: 'too_many_streams', message: 'limit 128' });
    assert.equal(await (await retried).text(), 'via fallback');
  });

  test('the home peer cancelling fails the response with AbortError', async () => {
    const { link, s } = streams();
    const a = s.start(get());
    await until(() => link.frames.length === 1);
    s.receive({ type: 'cancel', id: 1 });
    await assert.rejects(a, { name: 'AbortError' });
    assert.equal(link.ofType('cancel').length, 0);
  });
});

describe('ChannelStreams: head timeout', () => {
  // The head timer does not keep Node's event loop up by itself (a browser
  // has no such notion); these tests keep it up while they wait.
  let keepAlive;
  beforeEach(() => {
    keepAlive = setInterval(() => {}, 1000);
  });
  afterEach(() => clearInterval(keepAlive));

  test('no response head in time: the stream is cancelled and the promise rejects with TimeoutError', async () => {
    const { link, s } = streams({ headTimeoutMs: 80 });
    const started = Date.now();
    const pending = s.start(get());
    await assert.rejects(pending, { name: 'TimeoutError' });
    const took = Date.now() - started;
    assert.ok(took >= 70 && took < 2000, `rejected after ${took} ms`);
    assert.deepEqual(link.ofType('cancel'), [{ type: 'cancel', id: 1 }]);
    assert.equal(s.size, 0);
    // A late head is ignored.
    s.receive({ type: 'response', id: 1, status: 200, headers: {} });
    assert.equal(link.frames.length, 2);
  });

  test('a head in time clears the timer: a slow body is not cut', async () => {
    const { link, s } = streams({ headTimeoutMs: 50 });
    const pending = s.start(get());
    await until(() => link.frames.length === 1);
    s.receive({ type: 'response', id: 1, status: 200, headers: {} });
    const res = await pending;
    await new Promise((r) => setTimeout(r, 150));
    s.receive({ type: 'data', id: 1, data: bytesOf(3) });
    s.receive({ type: 'end', id: 1 });
    assert.equal((await res.arrayBuffer()).byteLength, 3);
    assert.equal(link.ofType('cancel').length, 0);
  });
});

describe('ChannelStreams: cancel', () => {
  test('abort before the head sends cancel and rejects with AbortError; later frames are ignored', async () => {
    const { link, s } = streams();
    const controller = new AbortController();
    const pending = s.start(get(), { signal: controller.signal });
    await until(() => link.frames.length === 1);
    controller.abort();
    await assert.rejects(pending, { name: 'AbortError' });
    assert.deepEqual(link.frames[1], { type: 'cancel', id: 1 });
    s.receive({ type: 'response', id: 1, status: 200, headers: {} });
    s.receive({ type: 'data', id: 1, data: bytesOf(3) });
    assert.equal(link.frames.length, 2);
    assert.equal(s.size, 0);
  });

  test('abort mid-body sends cancel and errors the body with AbortError, even with data still queued', async () => {
    const { link, s } = streams();
    const controller = new AbortController();
    const pending = s.start(get(), { signal: controller.signal });
    await until(() => link.frames.length === 1);
    s.receive({ type: 'response', id: 1, status: 200, headers: {} });
    s.receive({ type: 'data', id: 1, data: bytesOf(10) });
    s.receive({ type: 'data', id: 1, data: bytesOf(10) });
    const reader = (await pending).body.getReader();
    await reader.read();
    controller.abort();
    await assert.rejects(reader.read(), { name: 'AbortError' });
    assert.deepEqual(link.ofType('cancel'), [{ type: 'cancel', id: 1 }]);
  });

  test('cancelling the body sends cancel; without the cancel feature nothing is sent', async () => {
    for (const cancel of [true, false]) {
      const { link, s } = streams({ cancel });
      const pending = s.start(get());
      await until(() => link.frames.length === 1);
      s.receive({ type: 'response', id: 1, status: 200, headers: {} });
      await (await pending).body.cancel();
      assert.equal(link.ofType('cancel').length, cancel ? 1 : 0);
      assert.equal(s.size, 0);
    }
  });

  test('an already aborted signal sends nothing', async () => {
    const { link, s } = streams();
    await assert.rejects(s.start(get(), { signal: AbortSignal.abort() }), { name: 'AbortError' });
    assert.equal(link.frames.length, 0);
  });
});

describe('ChannelStreams: request bodies', () => {
  test('a byte body goes in data frames of at most the message size minus 5, then end', async () => {
    const { link, s } = streams({}, { maxMessageSize: 1024 });
    const body = bytesOf(10_000);
    s.start({ method: 'POST', path: '/up', headers: { 'content-type': 'application/octet-stream' }, body });
    await until(() => link.ofType('end').length === 1);
    assert.equal(link.frames[0].end, undefined, 'the head says a body follows');
    const data = link.ofType('data');
    assert.ok(data.every((f) => f.data.length <= 1019));
    assert.equal(data[0].data.length, 1019);
    assert.deepEqual(concat(data.map((f) => f.data)), body);
    assert.equal(link.frames.at(-1).type, 'end');
    assert.ok(link.sizes.every((n) => n <= 1024));
  });

  test('a ReadableStream body is read as it comes, pieces split and joined as needed', async () => {
    const { link, s } = streams({}, { maxMessageSize: 105 });
    let push;
    const body = new ReadableStream({
      start(controller) {
        push = controller;
      },
    });
    s.start({ method: 'PUT', path: '/up', headers: {}, body });
    push.enqueue(bytesOf(250, 1));
    await until(() => link.ofType('data').length === 3);
    assert.deepEqual(link.ofType('data').map((f) => f.data.length), [100, 100, 50]);
    push.enqueue(new Uint8Array(0));
    push.enqueue(bytesOf(7, 2));
    push.close();
    await until(() => link.ofType('end').length === 1);
    assert.deepEqual(concat(link.ofType('data').map((f) => f.data)), concat([bytesOf(250, 1), bytesOf(7, 2)]));
  });

  test('uploads stop at the home peer\'s window and resume on credit', async () => {
    const { link, s } = streams({ sendWindow: 3000 }, { maxMessageSize: 1005 });
    s.start({ method: 'POST', path: '/up', headers: {}, body: bytesOf(10_000) });
    await until(() => link.ofType('data').length === 3);
    await sleep(20);
    const sent = () => link.ofType('data').reduce((n, f) => n + f.data.length, 0);
    assert.equal(sent(), 3000);
    s.receive({ type: 'credit', id: 1, bytes: 2500 });
    await until(() => sent() === 5500);
    await sleep(20);
    assert.equal(sent(), 5500);
    s.receive({ type: 'credit', id: 1, bytes: 1_000_000 });
    await until(() => link.ofType('end').length === 1);
    assert.equal(sent(), 10_000);
  });

  test('without the credit feature the window is unlimited', async () => {
    const { link, s } = streams({ credit: false, sendWindow: 10 });
    s.start({ method: 'POST', path: '/up', headers: {}, body: bytesOf(100_000) });
    await until(() => link.ofType('end').length === 1);
  });

  test('uploads wait while the channel is congested', async () => {
    const { link, s } = streams({}, { maxMessageSize: 1005 });
    link.isCongested = true;
    s.start({ method: 'POST', path: '/up', headers: {}, body: bytesOf(5000) });
    await sleep(30);
    assert.equal(link.ofType('data').length, 0);
    link.drain();
    await until(() => link.ofType('end').length === 1);
  });

  test('a response that ends before the upload stops the upload with cancel', async () => {
    const { link, s } = streams({ sendWindow: 1000 });
    let pulled = 0;
    const body = new ReadableStream({
      pull(controller) {
        pulled += 1;
        controller.enqueue(bytesOf(1000));
      },
    });
    const pending = s.start({ method: 'POST', path: '/up', headers: {}, body });
    await until(() => link.ofType('data').length === 1);
    s.receive({ type: 'response', id: 1, status: 413, headers: {} });
    s.receive({ type: 'end', id: 1 });
    assert.equal((await pending).status, 413);
    assert.deepEqual(link.ofType('cancel'), [{ type: 'cancel', id: 1 }]);
    const before = pulled;
    await sleep(20);
    assert.ok(pulled <= before + 1, 'the body kept being read');
    assert.equal(link.ofType('end').length, 0);
  });

  test('a body that errors cancels the stream and rejects with a TypeError', async () => {
    const { link, s } = streams();
    const body = new ReadableStream({
      pull(controller) {
        controller.error(new Error('disk on fire'));
      },
    });
    await assert.rejects(s.start({ method: 'POST', path: '/up', headers: {}, body }), TypeError);
    assert.deepEqual(link.ofType('cancel'), [{ type: 'cancel', id: 1 }]);
  });

  test('a head the channel refuses rejects with ChannelSendError and leaves the body unread', async () => {
    const { link, s } = streams();
    link.refuse = true;
    const body = new ReadableStream({ pull: (c) => c.enqueue(bytesOf(10)) });
    await assert.rejects(s.start({ method: 'POST', path: '/up', headers: {}, body }), ChannelSendError);
    assert.equal(body.locked, false);
    assert.equal(s.size, 0);
  });

  test('a head above max_header_bytes is refused without sending, so the normal path can take it', async () => {
    const { link, s } = streams({ maxHeaderBytes: 100 });
    await assert.rejects(s.start({ method: 'GET', path: '/', headers: { 'x-big': 'y'.repeat(200) } }), ChannelSendError);
    assert.equal(link.frames.length, 0);
  });

  test('requests beyond max_streams wait for a free stream', async () => {
    const { link, s } = streams({ maxStreams: 2 });
    const first = s.start(get('/1'));
    s.start(get('/2'));
    const third = s.start(get('/3'));
    await sleep(20);
    assert.equal(link.frames.length, 2);
    s.receive({ type: 'error', id: 1, code: 'upstream_failed', message: '' });
    await assert.rejects(first, TypeError);
    await until(() => link.frames.length === 3);
    assert.equal(link.frames[2].path, '/3');
    s.receive({ type: 'response', id: 3, status: 200, headers: {} });
    assert.equal((await third).status, 200);
  });
});

describe('ChannelStreams: response flow control', () => {
  test('credit is granted as the page reads, in quarters of the window, and not for unread data', async () => {
    const { link, s } = streams({ recvWindow: 4000 });
    const pending = s.start(get());
    await until(() => link.frames.length === 1);
    s.receive({ type: 'response', id: 1, status: 200, headers: {} });
    const reader = (await pending).body.getReader();
    for (let i = 0; i < 8; i += 1) s.receive({ type: 'data', id: 1, data: bytesOf(500) });
    // 4000 bytes arrived, none read: no grant.
    await sleep(10);
    assert.equal(link.ofType('credit').length, 0);
    await reader.read();
    assert.equal(link.ofType('credit').length, 0, 'granted before a quarter of the window was read');
    await reader.read();
    assert.deepEqual(link.ofType('credit'), [{ type: 'credit', id: 1, bytes: 1000 }]);
    for (let i = 0; i < 6; i += 1) await reader.read();
    assert.deepEqual(link.ofType('credit').map((c) => c.bytes), [1000, 1000, 1000, 1000]);
    // The window is open again: 4000 more bytes are fine.
    for (let i = 0; i < 8; i += 1) s.receive({ type: 'data', id: 1, data: bytesOf(500) });
    s.receive({ type: 'end', id: 1 });
    let rest = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      rest += value.length;
    }
    assert.equal(rest, 4000);
    assert.equal(link.ofType('error').length, 0);
  });

  test('data beyond the window is a flow_control error for that stream only', async () => {
    const { link, s } = streams({ recvWindow: 1000 });
    const a = s.start(get('/a'));
    const b = s.start(get('/b'));
    await until(() => link.frames.length === 2);
    s.receive({ type: 'response', id: 1, status: 200, headers: {} });
    s.receive({ type: 'response', id: 2, status: 200, headers: {} });
    const bodyA = (await a).body.getReader();
    s.receive({ type: 'data', id: 1, data: bytesOf(1000) });
    s.receive({ type: 'data', id: 1, data: bytesOf(1) });
    assert.deepEqual(link.ofType('error').map((e) => [e.id, e.code]), [[1, 'flow_control']]);
    await assert.rejects(bodyA.read(), { name: 'TypeError', code: 'flow_control' });
    s.receive({ type: 'data', id: 2, data: bytesOf(1000) });
    s.receive({ type: 'end', id: 2 });
    assert.equal((await readAll((await b).body)).length, 1000);
  });

  test('without the credit feature nothing is granted and nothing is limited', async () => {
    const { link, s } = streams({ credit: false, recvWindow: 100 });
    const pending = s.start(get());
    await until(() => link.frames.length === 1);
    s.receive({ type: 'response', id: 1, status: 200, headers: {} });
    for (let i = 0; i < 10; i += 1) s.receive({ type: 'data', id: 1, data: bytesOf(100) });
    s.receive({ type: 'end', id: 1 });
    assert.equal((await readAll((await pending).body)).length, 1000);
    assert.equal(link.ofType('credit').length + link.ofType('error').length, 0);
  });
});

describe('ChannelStreams: closeAll', () => {
  test('errors streaming bodies, retries unstarted requests that may be retried, rejects the rest', async () => {
    const { link, s } = streams();
    const streaming = s.start(get('/s'));
    const retried = s.start(get('/g'), { retry: async () => new Response('via fallback') });
    const rejected = s.start({ method: 'POST', path: '/p', headers: {}, body: bytesOf(10) });
    await until(() => link.frames.length >= 3);
    s.receive({ type: 'response', id: 1, status: 200, headers: {} });
    const reader = (await streaming).body.getReader();
    s.closeAll();
    await assert.rejects(reader.read(), TypeError);
    assert.equal(await (await retried).text(), 'via fallback');
    await assert.rejects(rejected, TypeError);
    assert.equal(s.size, 0);
    await assert.rejects(s.start(get()), ChannelSendError);
  });
});

describe('ChannelProtocol: negotiation', () => {
  test('sends hello on open and speaks v2 with the agreed features once agree arrives', async () => {
    const link = fakeLink();
    const p = new ChannelProtocol(link, { window: 12345 });
    assert.equal(p.version, 1);
    p.open();
    assert.deepEqual(link.frames, [{ type: 'hello', version: 2, features: ['binary', 'cancel', 'credit', 'websocket'], window: 12345 }]);
    p.receive(JSON.stringify({ ...AGREE, features: ['credit', 'cancel', 'future'] }));
    assert.deepEqual(await p.negotiated, { version: 2, features: ['cancel', 'credit'], binary: false, window: 262144, maxStreams: 128, maxWsMessage: 16 * 1024 * 1024 });
    assert.equal(p.version, 2);
    assert.equal(p.streams.binary, false);
  });

  test('no agree within the timeout: v1 for good, and a late agree is ignored', async () => {
    const link = fakeLink();
    const p = new ChannelProtocol(link, { timeoutMs: 30 });
    p.open();
    assert.deepEqual(await p.negotiated, { version: 1 });
    p.receive(JSON.stringify(AGREE));
    assert.equal(p.version, 1);
    assert.equal(p.streams, null);
  });

  test('an agree for version 1, or a malformed one, keeps v1', async () => {
    for (const agree of [{ ...AGREE, version: 1 }, { type: 'agree', version: 2 }]) {
      const p = new ChannelProtocol(fakeLink());
      p.open();
      p.receive(JSON.stringify(agree));
      assert.deepEqual(await p.negotiated, { version: 1 });
    }
  });

  test('v1 responses are routed while negotiating and after, v2 frames only once agreed', async () => {
    const sent = [];
    const link = { maxMessageSize: 65536, send: (m) => sent.push(m) };
    const p = new ChannelProtocol(link);
    p.open();
    const v1 = p.requests.start({ method: 'GET', path: '/', headers: {} });
    const id = JSON.parse(sent[1]).id;
    p.receive(JSON.stringify({ type: 'response', id: '1', status: 200, headers: {} })); // ignored: not agreed
    p.receive(JSON.stringify(AGREE));
    p.receive(`${JSON.stringify({ id, type: 'chunk', data: 'hi' })}\n${JSON.stringify({ id, type: 'done', status: 200 })}\n`);
    assert.equal(await (await v1).text(), 'hi');
    const v2 = p.streams.start({ method: 'GET', path: '/', headers: {} });
    await until(() => sent.length === 3);
    assert.ok(sent[2] instanceof Uint8Array, 'binary framing was agreed');
    p.receive(codec.encodeBinary({ type: 'response', id: 1, status: 202, headers: {} }).buffer);
    assert.equal((await v2).status, 202);
  });

  test('a malformed binary frame for a live stream is answered with bad_frame and fails only that stream', async () => {
    const link = fakeLink();
    const p = new ChannelProtocol(link);
    p.open();
    p.receive(JSON.stringify(AGREE));
    const a = p.streams.start({ method: 'GET', path: '/a', headers: {} });
    const b = p.streams.start({ method: 'GET', path: '/b', headers: {} });
    await until(() => link.frames.length === 3);
    p.receive(new Uint8Array([0x07, 0, 0, 0, 1, 0xff]).buffer); // credit with a 1-byte payload
    p.receive(new Uint8Array([0x02, 0]).buffer); // too short to tell the stream: ignored
    await assert.rejects(a, { name: 'TypeError', code: 'bad_frame' });
    assert.deepEqual(link.ofType('error').map((e) => [e.id, e.code]), [[1, 'bad_frame']]);
    p.receive(codec.encodeBinary({ type: 'response', id: 2, status: 200, headers: {} }));
    assert.equal((await b).status, 200);
  });
});

describe('createClient with a v2 home peer', () => {
  test('fetch sends a v2 head with the page host and resolves at the response head', async () => {
    const { client, channel } = await directClient();
    channel.deliver(AGREE);
    assert.equal((await client.negotiated).version, 2);
    assert.deepEqual(client.protocol.features, ['binary', 'cancel', 'credit']);
    const pending = client.fetch('/v1/items?page=2', { headers: { 'X-Extra': 'y' } });
    await until(() => channel.sent.length === 1);
    // The page's scheme goes along, for x-forwarded-proto.
    assert.deepEqual(channel.sent[0], { type: 'request', id: 1, method: 'GET', path: '/v1/items?page=2', headers: { 'x-extra': 'y', host: 'home.test' }, scheme: 'http', end: true });
    channel.deliver({ type: 'response', id: 1, status: 200, headers: { 'content-type': 'application/json' } });
    const res = await pending;
    assert.equal(res.headers.get('content-type'), 'application/json');
    channel.deliver({ type: 'data', id: 1, data: new TextEncoder().encode('[1]') });
    channel.deliver({ type: 'end', id: 1 });
    assert.deepEqual(await res.json(), [1]);
  });

  test('a streamed request body goes up within the negotiated message size', async () => {
    const { client, channel, pc } = await directClient();
    pc.sctp = { maxMessageSize: 2048 };
    channel.deliver(AGREE);
    await client.negotiated;
    const body = new ReadableStream({
      start(controller) {
        controller.enqueue(bytesOf(5000));
        controller.enqueue(new TextEncoder().encode('tail'));
        controller.close();
      },
    });
    client.fetch('/upload', { method: 'POST', body, duplex: 'half' });
    await until(() => channel.sent.some((f) => f.type === 'end'));
    const data = channel.sent.filter((f) => f.type === 'data');
    assert.ok(data.every((f) => f.data.length <= 2043));
    assert.deepEqual(concat(data.map((f) => f.data)), concat([bytesOf(5000), new TextEncoder().encode('tail')]));
  });

  test('a channel that refuses the head sends the request the normal way with its body intact', async () => {
    const { client, channel, fallback } = await directClient();
    channel.deliver(AGREE);
    await client.negotiated;
    channel.refuseSends = true;
    const body = new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('streamed'));
        controller.close();
      },
    });
    const res = await client.fetch('/upload', { method: 'POST', body, duplex: 'half' });
    assert.equal(await res.text(), 'via fallback');
    assert.equal(fallback.calls.length, 1);
    assert.equal(await new Response(fallback.calls[0].init.body).text(), 'streamed');
  });

  test('without agree the client stays on v1 and says so', async () => {
    const { client, channel } = await directClient({ negotiateMs: 30 });
    assert.deepEqual(await client.negotiated, { version: 1 });
    assert.deepEqual(client.protocol, { version: 1 });
    client.fetch('/v1/chat', { method: 'POST', body: '{}' });
    await until(() => channel.sent.length === 1);
    assert.equal(channel.sent[0].type, undefined, 'a v1 request has no type');
    assert.equal(Buffer.from(channel.sent[0].body, 'base64').toString(), '{}');
  });
});
