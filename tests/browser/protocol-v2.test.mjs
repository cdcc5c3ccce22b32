// Protocol v2 in headless Chromium against the real home-peer: the page's
// client negotiates v2 and its `fetch` behaves like the network's: resolves
// at the response head, streams bodies both ways, aborts cancel the upstream
// request, large binary downloads arrive intact, and a page that stops
// reading one response stalls nothing else. demo-chat runs with
// --test-endpoints (see bins/demo-chat/src/test_endpoints.rs).
// Every test runs in Chromium and in Firefox ESR.
//
// Run through run.sh, which confines everything to a fresh network namespace.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';

import { allowIpsFor, browserKinds, launchBrowser, openPage, startStack, waitFor } from './harness.mjs';

const RELAYED = 'beeline_relay_requests_total';
const MB = 1024 * 1024;

// SHA-256 of what demo-chat serves at `path`, fetched from it directly.
async function upstreamDigest(stack, path) {
  const res = await fetch(`${stack.demoUrl}${path}`);
  assert.equal(res.status, 200);
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of res.body) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { sha256: hash.digest('hex'), bytes };
}

async function disconnects(stack) {
  const res = await fetch(`${stack.demoUrl}/test/disconnects`);
  return res.json();
}

// In the page: fetches `path` with `client` (default: the page's client),
// reads the whole body and returns its SHA-256, size and timings.
function pageDownload(page, path, clientExpr = 'window.__beeline') {
  return page.evaluate(
    async ({ path, clientExpr }) => {
      const client = clientExpr === 'window.__beeline' ? window.__beeline : window[clientExpr];
      const started = performance.now();
      const res = await client.fetch(path);
      const headMs = performance.now() - started;
      const chunks = [];
      let total = 0;
      const reader = res.body.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        chunks.push(value);
        total += value.length;
      }
      const bodyMs = performance.now() - started;
      const all = new Uint8Array(total);
      let offset = 0;
      for (const chunk of chunks) {
        all.set(chunk, offset);
        offset += chunk.length;
      }
      const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', all));
      return {
        status: res.status,
        path: res.headers.get('x-beeline-path'),
        contentType: res.headers.get('content-type'),
        bytes: total,
        chunks: chunks.length,
        sha256: [...digest].map((b) => b.toString(16).padStart(2, '0')).join(''),
        headMs,
        bodyMs,
      };
    },
    { path, clientExpr },
  );
}

for (const kind of browserKinds()) describe(`protocol v2 in ${kind} against home-peer`, () => {
  let browser;
  let stack;
  let page;
  let problems;
  let closePage;

  before(async () => {
    browser = await launchBrowser([], { kind });
    stack = await startStack({ homePeer: true, allowIps: allowIpsFor(kind) });
    ({ page, problems, close: closePage } = await openPage(browser, `${stack.signalUrl}/`));
    assert.equal(await page.evaluate(() => window.__beeline.ready), 'direct', stack.logs());
  });

  after(async () => {
    await closePage?.();
    await stack?.stop();
    await browser?.close();
  });

  // Adds the service logs to a failing test's message.
  async function withLogs(body) {
    try {
      await body();
    } catch (err) {
      err.message += `\n${stack.logs()}`;
      throw err;
    }
  }

  test('the client negotiates v2 with binary framing, cancel, credit, cookies and websocket', async () => {
    const protocol = await page.evaluate(() => window.__beeline.negotiated);
    assert.equal(protocol.version, 2);
    assert.equal(protocol.binary, true);
    // cookies: signal-api gave the session a sealed jar (docs/cookies.md).
    assert.deepEqual([...protocol.features].sort(), ['binary', 'cancel', 'cookies', 'credit', 'websocket']);
  });

  test('fetch resolves with the upstream status and headers before the body finishes', async () => {
    await withLogs(async () => {
      const relayedBefore = (await stack.metrics())[RELAYED];
      const result = await page.evaluate(async () => {
        const started = performance.now();
        const res = await window.__beeline.fetch('/test/slow-head?delay_ms=1000');
        const headMs = performance.now() - started;
        const body = await res.text();
        return {
          status: res.status,
          statusOk: res.ok,
          testHead: res.headers.get('x-test-head'),
          contentType: res.headers.get('content-type'),
          path: res.headers.get('x-beeline-path'),
          body,
          headMs,
          bodyMs: performance.now() - started,
        };
      });
      assert.equal(result.status, 201);
      assert.equal(result.testHead, 'early');
      assert.equal(result.contentType, 'text/plain; charset=utf-8');
      assert.equal(result.path, 'direct');
      assert.equal(result.body, 'the body, after the pause');
      // The upstream holds the body back for 1 s after its head.
      assert.ok(result.bodyMs >= 950, `body after ${result.bodyMs} ms`);
      assert.ok(result.headMs < 500, `fetch resolved after ${result.headMs} ms, with the body at ${result.bodyMs} ms`);
      assert.equal((await stack.metrics())[RELAYED], relayedBefore, 'the request went through the relay');
    });
  });

  test('AbortController.abort() mid-stream errors the body with AbortError and the upstream sees the disconnect', async () => {
    await withLogs(async () => {
      const id = randomUUID();
      const result = await page.evaluate(async (id) => {
        const controller = new AbortController();
        const res = await window.__beeline.fetch(`/test/stream?id=${id}&interval_ms=50&ticks=1000`, { signal: controller.signal });
        const reader = res.body.getReader();
        const first = new TextDecoder().decode((await reader.read()).value);
        controller.abort();
        window.__abortedAt = Date.now();
        try {
          await reader.read();
          return { first, outcome: 'not aborted', path: res.headers.get('x-beeline-path') };
        } catch (err) {
          return { first, outcome: err.name, path: res.headers.get('x-beeline-path') };
        }
      }, id);
      assert.equal(result.path, 'direct');
      assert.match(result.first, /^tick 0\n/);
      assert.equal(result.outcome, 'AbortError');
      // One round trip plus one tick of the upstream's stream; allow plenty.
      await waitFor(async () => (await disconnects(stack)).disconnected.includes(id), 5000, 'demo-chat to see the client disconnect');
      const outcomes = await disconnects(stack);
      assert.ok(outcomes.started.includes(id));
      assert.ok(!outcomes.completed.includes(id));
      const ms = Date.now() - (await page.evaluate(() => window.__abortedAt));
      console.log(`# upstream saw the disconnect within ${ms} ms of abort()`);
    });
  });

  test('a 50 MB binary download arrives intact, the channel stays open, and a later request still goes direct', async () => {
    await withLogs(async () => {
      const path = `/test/bytes?size=${50 * MB}&seed=7`;
      const expected = await upstreamDigest(stack, path);
      const relayedBefore = (await stack.metrics())[RELAYED];
      const got = await pageDownload(page, path);
      console.log(`# 50 MB download into the page: ${(got.bodyMs / 1000).toFixed(1)} s (${((50 / got.bodyMs) * 1000).toFixed(1)} MB/s), ${got.chunks} chunks`);
      assert.equal(got.status, 200);
      assert.equal(got.path, 'direct');
      assert.equal(got.contentType, 'application/octet-stream');
      assert.equal(got.bytes, expected.bytes);
      assert.equal(got.sha256, expected.sha256);

      assert.equal(await page.evaluate(() => window.__beeline.path), 'direct');
      const later = await page.evaluate(async () => {
        const res = await window.__beeline.fetch('/healthz');
        return { status: res.status, path: res.headers.get('x-beeline-path'), body: await res.text() };
      });
      assert.deepEqual(later, { status: 200, path: 'direct', body: 'ok' });
      assert.equal((await stack.metrics())[RELAYED], relayedBefore, 'something went through the relay');
      assert.deepEqual(problems, []);
    });
  });

  test('a request whose head does not come in time rejects with TimeoutError, and the home drops it', async () => {
    await withLogs(async () => {
      const result = await page.evaluate(async () => {
        const module = await import('/webrtc/client.js');
        const client = module.createClient({ enabled: true, signalBase: '/webrtc', headTimeoutMs: 400 });
        if ((await client.ready) !== 'direct') return { ready: 'not direct' };
        await client.negotiated;
        const started = performance.now();
        let outcome;
        try {
          const res = await client.fetch('/test/late-head?delay_ms=5000');
          outcome = `answered ${res.status}`;
        } catch (err) {
          outcome = err.name;
        }
        const ms = performance.now() - started;
        // A request after it is served normally.
        const after = await (await client.fetch('/healthz')).text();
        client.close?.();
        return { outcome, ms, after };
      });
      assert.equal(result.outcome, 'TimeoutError', JSON.stringify(result));
      assert.ok(result.ms >= 350 && result.ms < 3000, `rejected after ${result.ms} ms`);
      assert.equal(result.after, 'ok');
    });
  });

  test('request headers go up and response headers come back, several values joined', async () => {
    await withLogs(async () => {
      const result = await page.evaluate(async () => {
        const res = await window.__beeline.fetch('/test/headers?x=1', { headers: { 'x-custom': 'hello', accept: 'application/json' } });
        return {
          status: res.status,
          multi: res.headers.get('x-test-multi'),
          contentType: res.headers.get('content-type'),
          seen: await res.json(),
          host: location.host,
          scheme: location.protocol.replace(/:$/, ''),
        };
      });
      assert.equal(result.status, 200);
      assert.equal(result.multi, 'one, two');
      assert.equal(result.contentType, 'application/json');
      assert.equal(result.seen['x-custom'], 'hello');
      assert.equal(result.seen.accept, 'application/json');
      // A reverse proxy's headers: Host is the upstream's, the page's host is forwarded.
      assert.equal(result.seen.host, new URL(stack.demoUrl).host);
      assert.equal(result.seen['x-forwarded-host'], result.host);
      // The scheme the page really used, as the relay would say it.
      assert.equal(result.seen['x-forwarded-proto'], result.scheme);
    });
  });

  test('request bodies stream up intact: a Blob, an ArrayBuffer, a string and a ReadableStream', async () => {
    await withLogs(async () => {
      const results = await page.evaluate(async () => {
        const fnv1a32 = (bytes) => {
          let hash = 0x811c9dc5;
          for (const b of bytes) hash = Math.imul(hash ^ b, 0x01000193);
          return (hash >>> 0).toString(16).padStart(8, '0');
        };
        const random = (n) => {
          const bytes = new Uint8Array(n);
          for (let i = 0; i < n; i += 65536) crypto.getRandomValues(bytes.subarray(i, Math.min(n, i + 65536)));
          return bytes;
        };
        const upload = async (body, bytes, extra = {}) => {
          const res = await window.__beeline.fetch('/test/upload', { method: 'POST', headers: { 'content-type': 'application/x-test' }, body, ...extra });
          const got = await res.json();
          return { status: res.status, path: res.headers.get('x-beeline-path'), got, want: { bytes: bytes.length, fnv1a32: fnv1a32(bytes) } };
        };
        const blobBytes = random(8 * 1024 * 1024 + 3);
        const bufferBytes = random(300_000);
        const text = 'h\u00e9llo \u26a1 '.repeat(10_000);
        const streamBytes = random(3 * 1024 * 1024);
        const stream = () =>
          new ReadableStream({
            start(controller) {
              // Odd-sized pieces, larger and smaller than one message.
              for (let i = 0, step = 1; i < streamBytes.length; i += step, step = (step * 7 + 13) % 400_000 + 1) {
                controller.enqueue(streamBytes.slice(i, i + step));
              }
              controller.close();
            },
          });
        // A browser without request streams (Firefox) sends what its own
        // fetch would: the stream turned into a string by the Request.
        const { supportsRequestStreams } = await import('/webrtc/client.js');
        const streamed = supportsRequestStreams()
          ? streamBytes
          : new Uint8Array(await new Request('/', { method: 'POST', body: stream(), duplex: 'half' }).arrayBuffer());
        return {
          blob: await upload(new Blob([blobBytes]), blobBytes),
          buffer: await upload(bufferBytes.buffer, bufferBytes),
          text: await upload(text, new TextEncoder().encode(text)),
          stream: await upload(stream(), streamed, { duplex: 'half' }),
        };
      });
      for (const [kind, r] of Object.entries(results)) {
        assert.equal(r.status, 200, kind);
        assert.equal(r.path, 'direct', kind);
        assert.equal(r.got.bytes, r.want.bytes, `${kind}: byte count`);
        assert.equal(r.got.fnv1a32, r.want.fnv1a32, `${kind}: checksum`);
        assert.equal(r.got.content_type, 'application/x-test', kind);
      }
    });
  });

  test('an upload larger than Chrome\'s 16 MB send buffer, without credit, keeps the channel open', async () => {
    await withLogs(async () => {
      // Without the credit feature nothing but the client's bufferedAmount
      // watermark keeps it from queueing the whole body in the channel, which
      // Chrome answers by closing the channel.
      const result = await page.evaluate(async () => {
        const { createClient } = await import('/webrtc/client.js');
        const client = createClient({ enabled: true, signalBase: '/webrtc', features: ['binary', 'cancel'] });
        await client.ready;
        const protocol = await client.negotiated;
        const size = 24 * 1024 * 1024;
        const bytes = new Uint8Array(size);
        for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
        let hash = 0x811c9dc5;
        for (const b of bytes) hash = Math.imul(hash ^ b, 0x01000193);
        const started = performance.now();
        const res = await client.fetch('/test/upload', { method: 'POST', body: new Blob([bytes]) });
        const got = await res.json();
        const ms = performance.now() - started;
        const after = await client.fetch('/healthz');
        const outcome = { protocol, got, want: { bytes: size, fnv1a32: (hash >>> 0).toString(16).padStart(8, '0') }, ms, path: client.path, afterPath: after.headers.get('x-beeline-path') };
        client.close();
        return outcome;
      });
      console.log(`# 24 MB upload without credit: ${(result.ms / 1000).toFixed(1)} s`);
      assert.equal(result.protocol.version, 2);
      assert.deepEqual(result.protocol.features, ['binary', 'cancel', 'cookies']);
      assert.equal(result.got.bytes, result.want.bytes);
      assert.equal(result.got.fnv1a32, result.want.fnv1a32);
      assert.equal(result.path, 'direct', 'the channel closed');
      assert.equal(result.afterPath, 'direct');
    });
  });

  test('a page that stops reading one response stalls only that stream, and the upstream with it', async () => {
    await withLogs(async () => {
      const id = randomUUID();
      const size = 20 * MB;
      const expected = await upstreamDigest(stack, `/test/bytes?size=${size}&seed=11`);
      const path = `/test/bytes?size=${size}&seed=11&id=${id}`;
      const produced = async () => (await fetch(`${stack.demoUrl}/test/produced?id=${id}`)).json();
      // Start a large download and read only its first chunk.
      await page.evaluate(async (path) => {
        const res = await window.__beeline.fetch(path);
        const reader = res.body.getReader();
        const first = await reader.read();
        window.__stalled = { reader, chunks: [first.value], total: first.value.length };
      }, path);
      // Everything else still flows meanwhile.
      const others = await page.evaluate(async () => {
        const started = performance.now();
        const results = await Promise.all([
          window.__beeline.fetch('/healthz').then((r) => r.text()),
          window.__beeline.fetch('/test/bytes?size=2000000&seed=2').then((r) => r.arrayBuffer()).then((b) => String(b.byteLength)),
          window.__beeline.fetch('/test/slow-head?delay_ms=10').then((r) => r.text()),
        ]);
        return { results, ms: performance.now() - started };
      });
      assert.deepEqual(others.results, ['ok', '2000000', 'the body, after the pause']);
      // Backpressure reaches the upstream: it stops producing once the
      // window, the bridge and the TCP buffers in between are full.
      let before = await produced();
      for (let i = 0; i < 20; i += 1) {
        await new Promise((resolve) => setTimeout(resolve, 250));
        const now = await produced();
        if (now === before) break;
        before = now;
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
      const stalledAt = await produced();
      console.log(`# the stalled download's upstream produced ${(stalledAt / MB).toFixed(1)} MB of ${size / MB} MB`);
      assert.equal(stalledAt, before, 'the upstream kept producing while the page did not read');
      assert.ok(stalledAt < size / 2, `the upstream produced ${stalledAt} bytes for a page that read one chunk`);

      const resumed = await page.evaluate(async () => {
        const s = window.__stalled;
        for (;;) {
          const { value, done } = await s.reader.read();
          if (done) break;
          s.chunks.push(value);
          s.total += value.length;
        }
        const all = new Uint8Array(s.total);
        let offset = 0;
        for (const c of s.chunks) {
          all.set(c, offset);
          offset += c.length;
        }
        const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', all));
        return { bytes: s.total, sha256: [...digest].map((b) => b.toString(16).padStart(2, '0')).join('') };
      });
      assert.deepEqual(resumed, { bytes: expected.bytes, sha256: expected.sha256 });
      assert.equal(await page.evaluate(() => window.__beeline.path), 'direct');
    });
  });

  test('v2 JSON framing (a client without the binary feature) is binary-safe both ways', async () => {
    await withLogs(async () => {
      const path = `/test/bytes?size=${3 * MB}&seed=5`;
      const expected = await upstreamDigest(stack, path);
      const protocol = await page.evaluate(async () => {
        const { createClient } = await import('/webrtc/client.js');
        window.__jsonClient = createClient({ enabled: true, signalBase: '/webrtc', features: ['cancel', 'credit'] });
        await window.__jsonClient.ready;
        return window.__jsonClient.negotiated;
      });
      assert.equal(protocol.version, 2);
      assert.equal(protocol.binary, false);
      const got = await pageDownload(page, path, '__jsonClient');
      assert.equal(got.path, 'direct');
      assert.equal(got.bytes, expected.bytes);
      assert.equal(got.sha256, expected.sha256);
      const upload = await page.evaluate(async () => {
        const bytes = new Uint8Array(700_001).map((_, i) => (i * 251) & 0xff);
        let hash = 0x811c9dc5;
        for (const b of bytes) hash = Math.imul(hash ^ b, 0x01000193);
        const res = await window.__jsonClient.fetch('/test/upload', { method: 'POST', body: bytes });
        return { got: await res.json(), fnv1a32: (hash >>> 0).toString(16).padStart(8, '0') };
      });
      assert.equal(upload.got.bytes, 700_001);
      assert.equal(upload.got.fnv1a32, upload.fnv1a32);
      await page.evaluate(() => window.__jsonClient.close());
    });
  });
});
