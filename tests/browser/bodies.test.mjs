// Request bodies over the direct path, in headless Chromium and Firefox ESR,
// against a home service that cannot read chunked bodies: Python's
// http.server (tests/upstreams/plain_upstream.py), which reads exactly
// Content-Length bytes and logs what it received. Every body type `fetch`
// accepts must arrive byte-exact, with its content-type and a
// content-length, never chunked. The page loads client.js from signal-api
// (its /healthz page is the origin) and waits for the direct path.
//
// Run through run.sh, which confines everything to a fresh network namespace
// (with the veth link Firefox needs for host candidates).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { allowIpsFor, browserKinds, launchBrowser, openPage, startStack } from './harness.mjs';

// In the page: creates a client, waits for the direct path, sends each body
// case over it (POST /echo/<kind>) and returns, per case, what the upstream
// echoed and what it should have seen. `v1` sends every request in the same
// task as the channel opens, before `agree` can arrive, so they go as v1
// request frames; otherwise the client first settles on v2.
function sendCases(page, { v1 = false } = {}) {
  return page.evaluate(async (v1) => {
    const module = await import('/webrtc/client.js');
    const client = module.createClient({ enabled: true, signalBase: '/webrtc' });
    window.__client = client;
    const ready = await client.ready;
    if (ready !== 'direct') return { ready };
    if (!v1) await client.negotiated;
    const encoder = new TextEncoder();
    const hex = async (bytes) => [...new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))].map((b) => b.toString(16).padStart(2, '0')).join('');
    const pattern = (n, seed) => {
      const bytes = new Uint8Array(n);
      for (let i = 0; i < n; i += 1) bytes[i] = (i * 31 + seed + (i >> 8)) & 0xff;
      return bytes;
    };
    const backing = pattern(4096, 3);
    const bigBlob = pattern(3 * 1024 * 1024 + 17, 5);
    const form = new FormData();
    form.append('message', 'h\u00e9llo \u26a1');
    form.append('file', new Blob([pattern(70_000, 9)], { type: 'application/octet-stream' }), 'data.bin');
    const cases = [
      { kind: 'string', init: { body: '{"message":"h\u00e9llo \u26a1"}', headers: { 'content-type': 'application/json' } }, bytes: encoder.encode('{"message":"h\u00e9llo \u26a1"}'), contentType: 'application/json' },
      { kind: 'plain-string', init: { body: 'just text' }, bytes: encoder.encode('just text'), contentType: 'text/plain;charset=UTF-8' },
      { kind: 'ArrayBuffer', init: { body: pattern(600_000, 1).buffer }, bytes: pattern(600_000, 1), contentType: null },
      { kind: 'Uint8Array', init: { body: pattern(1000, 2) }, bytes: pattern(1000, 2), contentType: null },
      { kind: 'typed-view-with-offset', init: { body: new Uint32Array(backing.buffer, 12, 100) }, bytes: backing.slice(12, 412), contentType: null },
      { kind: 'DataView', init: { body: new DataView(backing.buffer, 7, 33) }, bytes: backing.slice(7, 40), contentType: null },
      { kind: 'Blob', init: { body: new Blob([bigBlob], { type: 'application/x-test' }) }, bytes: bigBlob, contentType: 'application/x-test' },
      { kind: 'small-Blob', init: { body: new Blob(['ab', pattern(10, 4)]) }, bytes: new Uint8Array([97, 98, ...pattern(10, 4)]), contentType: null },
      {
        kind: 'URLSearchParams',
        init: { body: new URLSearchParams({ q: 'a b&c', '\u00e9': '\u26a1' }) },
        bytes: encoder.encode('q=a+b%26c&%C3%A9=%E2%9A%A1'),
        contentType: 'application/x-www-form-urlencoded;charset=UTF-8',
      },
      { kind: 'FormData', init: { body: form }, form: true },
      {
        kind: 'Request',
        input: new Request('/echo/Request', { method: 'PUT', headers: { 'content-type': 'text/csv', 'x-test': 'own' }, body: 'a,b\n1,2\n' }),
        bytes: encoder.encode('a,b\n1,2\n'),
        contentType: 'text/csv',
        method: 'PUT',
      },
      { kind: 'empty', init: { body: '' }, bytes: new Uint8Array(0), contentType: 'text/plain;charset=UTF-8' },
    ];
    if (v1) {
      // A v1 request is one frame with a base64 body: larger ones take the
      // normal path.
      for (let i = cases.length - 1; i >= 0; i -= 1) if ((cases[i].bytes?.length ?? 0) > 100_000) cases.splice(i, 1);
    } else {
      const stream = () =>
        new ReadableStream({
          start(controller) {
            controller.enqueue(pattern(100_000, 6));
            controller.enqueue(encoder.encode('tail'));
            controller.close();
          },
        });
      // Where request streams exist the stream is sent as it comes, with no
      // length; elsewhere the browser makes the body what its own fetch
      // would send, read here from a Request built the same way.
      const streamed = module.supportsRequestStreams();
      const bytes = streamed
        ? new Uint8Array([...pattern(100_000, 6), ...encoder.encode('tail')])
        : new Uint8Array(await new Request('/', { method: 'POST', body: stream(), duplex: 'half' }).arrayBuffer());
      cases.push({ kind: 'ReadableStream', init: { body: stream(), duplex: 'half' }, bytes, contentType: streamed ? null : 'text/plain;charset=UTF-8', streamed });
    }

    const protocolAtSend = client.protocol;
    const sent = cases.map((c) => {
      const method = c.method ?? 'POST';
      const promise = c.input ? client.fetch(c.input) : client.fetch(`/echo/${c.kind}`, { method, ...c.init });
      return { c, method, promise };
    });
    const results = [];
    for (const { c, method, promise } of sent) {
      const res = await promise;
      const echo = await res.json();
      const result = { kind: c.kind, method, status: res.status, path: res.headers.get('x-beeline-path'), echo, contentType: c.contentType, streamed: c.streamed ?? false };
      if (c.form) {
        // The boundary is the browser's: check that the body is the multipart
        // its content-type describes, and holds the fields.
        const header = echo.headers.find(([name]) => name.toLowerCase() === 'content-type')?.[1] ?? '';
        const body = Uint8Array.from(atob(echo.body_b64), (ch) => ch.charCodeAt(0));
        const parsed = await new Response(body, { headers: { 'content-type': header } }).formData();
        const file = parsed.get('file');
        result.form = {
          contentType: header,
          message: parsed.get('message'),
          fileName: file?.name,
          fileSha256: file ? await hex(await file.arrayBuffer()) : null,
          wantFileSha256: await hex(pattern(70_000, 9)),
          startsWithBoundary: new TextDecoder().decode(body.subarray(0, 200)).startsWith(`--${header.split('boundary=')[1]}\r\n`),
        };
      } else {
        result.want = { bytes: c.bytes.length, sha256: await hex(c.bytes) };
      }
      results.push(result);
    }
    return { ready, protocolAtSend, results };
  }, v1);
}

const headerOf = (echo, name) => echo.headers.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v);

// Checks one echoed request: the exact bytes with their length, no chunking.
function assertIntact(r) {
  const what = `${r.kind}: ${JSON.stringify({ ...r.echo, body_b64: undefined })}`;
  assert.equal(r.status, 200, what);
  assert.equal(r.path, 'direct', what);
  assert.equal(r.echo.method, r.method, what);
  assert.equal(r.echo.path, `/echo/${r.kind}`, what);
  if (r.streamed) {
    // Unknown length: sent chunked, which this upstream cannot read.
    assert.equal(r.echo.chunked, true, what);
    assert.deepEqual(headerOf(r.echo, 'content-length'), [], what);
    return;
  }
  assert.equal(r.echo.chunked, false, what);
  assert.deepEqual(headerOf(r.echo, 'transfer-encoding'), [], what);
  if (r.form) {
    assert.match(r.form.contentType, /^multipart\/form-data; ?boundary=/, what);
    assert.equal(r.form.startsWithBoundary, true, `${what}: the body does not start with the boundary of its content-type`);
    assert.equal(r.form.message, 'h\u00e9llo \u26a1', what);
    assert.equal(r.form.fileName, 'data.bin', what);
    assert.equal(r.form.fileSha256, r.form.wantFileSha256, what);
    assert.deepEqual(headerOf(r.echo, 'content-length'), [String(r.echo.body_len)], what);
    return;
  }
  assert.equal(r.echo.body_len, r.want.bytes, what);
  assert.equal(r.echo.body_sha256, r.want.sha256, what);
  assert.deepEqual(headerOf(r.echo, 'content-length'), [String(r.want.bytes)], what);
  assert.deepEqual(headerOf(r.echo, 'content-type'), r.contentType === null ? [] : [r.contentType], what);
}

for (const kind of browserKinds()) {
  describe(`request bodies in ${kind} reach a plain http.server upstream intact`, () => {
    let browser;
    let stack;

    before(async () => {
      browser = await launchBrowser([], { kind });
      stack = await startStack({ homePeer: true, upstream: 'plain', allowIps: allowIpsFor(kind) });
    });

    after(async () => {
      await stack?.stop();
      await browser?.close();
    });

    // Opens a fresh page with a client on the direct path, runs `body` with
    // it, and adds the service logs to a failure.
    async function withPage(t, body) {
      const { page, problems, close } = await openPage(browser, `${stack.signalUrl}/healthz`, { waitForClient: false });
      t.after(close);
      try {
        await body(page, problems);
      } catch (err) {
        err.message += `\n${stack.logs()}`;
        throw err;
      }
    }

    test('v2: every body type arrives byte-exact with content-length and its content-type', async (t) => {
      await withPage(t, async (page, problems) => {
        const logBefore = stack.upstreamRequests().length;
        const { ready, protocolAtSend, results } = await sendCases(page);
        assert.equal(ready, 'direct', 'no direct path');
        assert.equal(protocolAtSend.version, 2);
        for (const r of results) assertIntact(r);
        // The upstream's own log holds the same requests, each once (the
        // relay would have added a second copy of any it retried). The
        // relay metric is no witness here: Chromium fetches /favicon.ico
        // through it.
        const logged = stack.upstreamRequests().slice(logBefore).filter((l) => l.path.startsWith('/echo/'));
        assert.equal(logged.length, results.length, JSON.stringify(logged.map((l) => l.path)));
        for (const r of results) {
          const record = logged.find((l) => l.path === `/echo/${r.kind}`);
          assert.ok(record, `${r.kind} is not in the upstream's log`);
          assert.equal(record.body_sha256, r.echo.body_sha256, r.kind);
        }
        console.log(`# ${kind}: request streams ${results.find((r) => r.kind === 'ReadableStream').streamed ? 'supported (ReadableStream sent chunked)' : 'not supported'}`);
        assert.deepEqual(problems, []);
      });
    });

    test('v1 (sent before agree): every body type arrives byte-exact with content-length', async (t) => {
      await withPage(t, async (page, problems) => {
        const { ready, protocolAtSend, results } = await sendCases(page, { v1: true });
        assert.equal(ready, 'direct', 'no direct path');
        assert.equal(protocolAtSend, null, 'the requests were sent after negotiation ended');
        for (const r of results) {
          // v1 responses carry no headers but the path; the echo is the record.
          assertIntact(r);
        }
        assert.deepEqual(problems, []);
      });
    });
  });
}
