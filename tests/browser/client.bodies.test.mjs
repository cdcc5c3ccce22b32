// Unit tests for the request bodies the browser client sends, in node without
// a browser (fakes.mjs): every body type `fetch` accepts arrives byte-exact,
// with the content-type the browser derives from it and, when its length is
// known, a `content-length` in the v2 request head. Each case also runs as a
// browser without `Request.prototype.body` and without request streams
// (Firefox), where the client must not depend on either.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { supportsRequestStreams } from '../../client/src/index.mjs';
import { BASE_URL, directClient, until } from './fakes.mjs';

const AGREE = { type: 'agree', version: 2, features: ['binary', 'cancel', 'credit'], window: 262144, max_streams: 128, max_header_bytes: 16384, max_body_bytes: 1 << 30 };

const encoder = new TextEncoder();
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

// Hides Request.prototype.body while `body` runs, as in Firefox.
async function withoutRequestBody(body) {
  const descriptor = Object.getOwnPropertyDescriptor(Request.prototype, 'body');
  delete Request.prototype.body;
  try {
    assert.equal('body' in new Request('http://x.test/', { method: 'POST', body: 'x' }), false);
    return await body();
  } finally {
    Object.defineProperty(Request.prototype, 'body', descriptor);
  }
}

// The two kinds of browser: one like Chromium (request streams, node's own
// Request), one like Firefox (no Request.prototype.body, no request streams).
const BROWSERS = [
  { name: 'with request streams', requestStreams: true, run: (body) => body() },
  { name: 'like Firefox', requestStreams: false, run: withoutRequestBody },
];

// A v2 client over the fake channel, agreed with binary framing.
async function v2Client(requestStreams, extra = {}) {
  const parts = await directClient({ requestStreams, ...extra });
  parts.channel.deliver(AGREE);
  assert.equal((await parts.client.negotiated).version, 2);
  return parts;
}

// Sends one request and returns its head and the body bytes it sent, once
// the stream is complete (an `end` frame, or a head with end).
async function sendV2(channel, client, input, init) {
  const before = channel.sent.length;
  const pending = client.fetch(input, init);
  await until(() => {
    const mine = channel.sent.slice(before);
    return mine.length > 0 && (mine[0].end === true || mine.some((f) => f.type === 'end'));
  }, 2000, 'the request to be sent');
  const frames = channel.sent.slice(before);
  const head = frames[0];
  assert.equal(head.type, 'request');
  channel.deliver({ type: 'response', id: head.id, status: 204, headers: {} });
  channel.deliver({ type: 'end', id: head.id });
  assert.equal((await pending).status, 204);
  return { head, body: concat(frames.filter((f) => f.type === 'data').map((f) => f.data)) };
}

// Every body type: what to pass, the bytes that must arrive and their content-type.
function bodyCases() {
  const backing = bytesOf(64, 3);
  return [
    { kind: 'string', body: 'h\u00e9llo \u26a1', bytes: encoder.encode('h\u00e9llo \u26a1'), contentType: 'text/plain;charset=UTF-8' },
    { kind: 'ArrayBuffer', body: bytesOf(3000).buffer, bytes: bytesOf(3000), contentType: null },
    { kind: 'Uint8Array', body: bytesOf(100, 9), bytes: bytesOf(100, 9), contentType: null },
    { kind: 'a typed-array view with a byteOffset', body: new Uint16Array(backing.buffer, 6, 10), bytes: backing.slice(6, 26), contentType: null },
    { kind: 'DataView', body: new DataView(backing.buffer, 1, 5), bytes: backing.slice(1, 6), contentType: null },
    { kind: 'Blob', body: new Blob([bytesOf(5000, 4)], { type: 'image/png' }), bytes: bytesOf(5000, 4), contentType: 'image/png' },
    { kind: 'untyped Blob', body: new Blob(['ab', bytesOf(10)]), bytes: concat([encoder.encode('ab'), bytesOf(10)]), contentType: null },
    {
      kind: 'URLSearchParams',
      body: new URLSearchParams({ q: 'a b&c', '\u00e9': '\u26a1' }),
      bytes: encoder.encode('q=a+b%26c&%C3%A9=%E2%9A%A1'),
      contentType: 'application/x-www-form-urlencoded;charset=UTF-8',
    },
  ];
}

describe('createClient v2: request bodies', () => {
  test('node, like Chromium, supports request streams', () => {
    assert.equal(supportsRequestStreams(), true);
  });

  for (const browser of BROWSERS) {
    describe(browser.name, () => {
      for (const c of bodyCases()) {
        test(`a ${c.kind} body arrives byte-exact with its content-type and a content-length`, () =>
          browser.run(async () => {
            const { client, channel } = await v2Client(browser.requestStreams);
            const { head, body } = await sendV2(channel, client, '/upload', { method: 'POST', body: c.body });
            assert.deepEqual(body, c.bytes);
            assert.equal(head.headers['content-length'], String(c.bytes.length));
            assert.equal(head.headers['content-type'] ?? null, c.contentType);
            assert.equal(head.end, undefined);
          }));
      }

      test('a FormData body is multipart with the boundary of its content-type, and a content-length', () =>
        browser.run(async () => {
          const { client, channel } = await v2Client(browser.requestStreams);
          const form = new FormData();
          form.append('message', 'h\u00e9llo');
          form.append('file', new Blob([bytesOf(300, 5)], { type: 'application/octet-stream' }), 'data.bin');
          const { head, body } = await sendV2(channel, client, '/form', { method: 'POST', body: form });
          const contentType = head.headers['content-type'];
          const boundary = contentType.match(/^multipart\/form-data; ?boundary=(.+)$/)?.[1];
          assert.ok(boundary, `content-type ${contentType}`);
          assert.ok(Buffer.from(body).toString('latin1').startsWith(`--${boundary}\r\n`), 'the body starts with the boundary');
          assert.equal(head.headers['content-length'], String(body.length));
          const parsed = await new Response(body, { headers: { 'content-type': contentType } }).formData();
          assert.equal(parsed.get('message'), 'h\u00e9llo');
          const file = parsed.get('file');
          assert.equal(file.name, 'data.bin');
          assert.deepEqual(new Uint8Array(await file.arrayBuffer()), bytesOf(300, 5));
        }));

      test('a Request object with its own body and headers goes up whole, and keeps its body for the normal path', () =>
        browser.run(async () => {
          const { client, channel } = await v2Client(browser.requestStreams);
          const original = new Request(`${new URL(BASE_URL).origin}/v1/chat`, {
            method: 'PUT',
            headers: { 'content-type': 'application/json', 'x-a': '1' },
            body: '{"message":"hi"}',
          });
          const { head, body } = await sendV2(channel, client, original);
          assert.equal(head.method, 'PUT');
          assert.equal(head.path, '/v1/chat');
          assert.equal(head.headers['x-a'], '1');
          assert.equal(head.headers['content-type'], 'application/json');
          assert.equal(head.headers['content-length'], '16');
          assert.equal(Buffer.from(body).toString(), '{"message":"hi"}');
          assert.equal(original.bodyUsed, false);
          assert.equal(await original.text(), '{"message":"hi"}');
        }));

      test('a Request object with init overriding its body sends the init body', () =>
        browser.run(async () => {
          const { client, channel } = await v2Client(browser.requestStreams);
          const original = new Request(`${new URL(BASE_URL).origin}/x`, { method: 'POST', body: 'old' });
          const { head, body } = await sendV2(channel, client, original, { body: new Uint8Array([1, 2, 3]) });
          assert.deepEqual(body, new Uint8Array([1, 2, 3]));
          assert.equal(head.headers['content-length'], '3');
        }));

      test('an empty POST or PUT body is a head with end and content-length 0; a GET or DELETE without body has none', () =>
        browser.run(async () => {
          const { client, channel } = await v2Client(browser.requestStreams);
          for (const [method, body] of [['POST', ''], ['PUT', new Uint8Array(0)], ['POST', undefined], ['PATCH', new Blob([])]]) {
            const sent = await sendV2(channel, client, '/x', { method, body });
            assert.equal(sent.head.end, true, method);
            assert.equal(sent.head.headers['content-length'], '0', `${method} ${String(body)}`);
          }
          for (const method of ['GET', 'DELETE', 'HEAD']) {
            const sent = await sendV2(channel, client, '/x', { method });
            assert.equal(sent.head.end, true, method);
            assert.equal(sent.head.headers['content-length'], undefined, method);
          }
        }));

      test('a body larger than the home\'s window goes up in full, with its length', () =>
        browser.run(async () => {
          const { client, channel, pc } = await v2Client(browser.requestStreams);
          pc.sctp = { maxMessageSize: 16384 };
          const bytes = bytesOf(300_000, 7);
          const before = channel.sent.length;
          const pending = client.fetch('/up', { method: 'POST', body: new Blob([bytes]) });
          await until(() => channel.sent.length > before, 2000, 'the head');
          const head = channel.sent[before];
          assert.equal(head.headers['content-length'], '300000');
          // The home grants more window as it reads.
          await until(() => channel.sent.slice(before).filter((f) => f.type === 'data').reduce((n, f) => n + f.data.length, 0) === AGREE.window, 2000, 'the first window');
          channel.deliver({ type: 'credit', id: head.id, bytes: 1 << 20 });
          await until(() => channel.sent.slice(before).some((f) => f.type === 'end'), 2000, 'the end');
          const data = channel.sent.slice(before).filter((f) => f.type === 'data');
          assert.ok(data.every((f) => f.data.length <= 16384 - 5));
          assert.deepEqual(concat(data.map((f) => f.data)), bytes);
          channel.deliver({ type: 'response', id: head.id, status: 200, headers: {} });
          channel.deliver({ type: 'end', id: head.id });
          assert.equal((await pending).status, 200);
        }));
    });
  }

  test('with request streams, a ReadableStream body streams up as it comes, without content-length', async () => {
    const { client, channel } = await v2Client(true);
    let push;
    const stream = new ReadableStream({
      start(controller) {
        push = controller;
      },
    });
    const before = channel.sent.length;
    client.fetch('/stream', { method: 'POST', body: stream, duplex: 'half' });
    await until(() => channel.sent.length > before, 2000, 'the head');
    const head = channel.sent[before];
    assert.equal(head.headers['content-length'], undefined);
    assert.equal(head.headers['content-type'], undefined);
    assert.equal(head.end, undefined);
    push.enqueue(encoder.encode('first '));
    await until(() => channel.sent.slice(before).some((f) => f.type === 'data'), 2000, 'the first piece, before the stream ends');
    push.enqueue(encoder.encode('second'));
    push.close();
    await until(() => channel.sent.slice(before).some((f) => f.type === 'end'), 2000, 'the end');
    const data = channel.sent.slice(before).filter((f) => f.type === 'data');
    assert.equal(Buffer.from(concat(data.map((f) => f.data))).toString(), 'first second');
  });

  test('without request streams, a ReadableStream body is read whole and sent with its length', () =>
    withoutRequestBody(async () => {
      // Node still takes the stream as a body; a browser without request
      // streams sends "[object ReadableStream]", which is what `fetch` there
      // would send too. Either way the client sends what the Request holds.
      const { client, channel } = await v2Client(false);
      const stream = new ReadableStream({
        start(controller) {
          controller.enqueue(encoder.encode('all '));
          controller.enqueue(encoder.encode('at once'));
          controller.close();
        },
      });
      const { head, body } = await sendV2(channel, client, '/stream', { method: 'POST', body: stream, duplex: 'half' });
      assert.equal(Buffer.from(body).toString(), 'all at once');
      assert.equal(head.headers['content-length'], '11');
    }));

  test('a Blob streams from the Blob itself instead of being copied whole first', async () => {
    const { client, channel } = await v2Client(true);
    const arrayBuffer = Request.prototype.arrayBuffer;
    let readWhole = 0;
    Request.prototype.arrayBuffer = function (...args) {
      readWhole += 1;
      return arrayBuffer.apply(this, args);
    };
    try {
      const { head, body } = await sendV2(channel, client, '/b', { method: 'POST', body: new Blob([bytesOf(1000)]) });
      assert.equal(head.headers['content-length'], '1000');
      assert.deepEqual(body, bytesOf(1000));
    } finally {
      Request.prototype.arrayBuffer = arrayBuffer;
    }
    assert.equal(readWhole, 0);
  });
});

describe('createClient v1: request bodies', () => {
  for (const browser of BROWSERS) {
    test(`${browser.name}: every body type is complete in the request frame`, () =>
      browser.run(async () => {
        const { client, channel } = await directClient({ requestStreams: browser.requestStreams, negotiateMs: 10 });
        assert.deepEqual(await client.negotiated, { version: 1 });
        const form = new FormData();
        form.append('a', 'b');
        const cases = [...bodyCases(), { kind: 'FormData', body: form, bytes: null, contentType: null }];
        for (const c of cases) {
          const before = channel.sent.length;
          const pending = client.fetch('/v1/up', { method: 'POST', body: c.body });
          await until(() => channel.sent.length > before, 2000, `the ${c.kind} request frame`);
          const frame = channel.sent[before];
          const body = Buffer.from(frame.body ?? '', 'base64');
          if (c.bytes) {
            assert.deepEqual(new Uint8Array(body), c.bytes, c.kind);
            assert.equal(frame.headers['content-type'] ?? null, c.contentType, c.kind);
          } else {
            const parsed = await new Response(body, { headers: { 'content-type': frame.headers['content-type'] } }).formData();
            assert.equal(parsed.get('a'), 'b');
          }
          channel.onmessage({ data: JSON.stringify({ id: frame.id, type: 'done', status: 204 }) });
          assert.equal((await pending).status, 204);
        }
      }));
  }
});
