// The loopback tier in headless Chromium and Firefox (issue 14), inside the
// network namespace run.sh creates: pages load the bundle signal-api serves,
// home-peer runs its loopback listener (--loopback-listen 127.0.0.1:0).
//
// (a) A page on the home machine picks the loopback listener within 150 ms,
//     the indicator says so, requests and an SSE stream go there (the relay
//     carries none of them), and when the listener stops the next request
//     takes the normal path with no error on the page.
// (b) Another origin in the same browser cannot get the home service called
//     through the listener: not by fetch with or without no-cors, not by a
//     form POST, not by an image GET (the home service's own request log
//     says so; a request of the right page shows the log works).
// (c) Another process on the offered port, without the magic headers (or
//     with a proof it cannot make), is never sent a request.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';

import { allowIpsFor, browserKinds, launchBrowser, openPage, sendChat, startStack, waitFor } from './harness.mjs';

const RELAYED = 'beeline_relay_requests_total';

async function withStack(options, t, body) {
  const stack = await startStack(options);
  t.after(() => stack.stop());
  try {
    await body(stack);
  } catch (err) {
    err.message += `\n${stack.logs()}`;
    throw err;
  }
}

// A small HTTP server of the test's own on 127.0.0.1 (inside the
// namespace): `handler(req, res, body)`; every request is recorded.
async function startServer(handler) {
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      requests.push({ method: req.method, url: req.url, headers: req.headers, body });
      handler(req, res, body);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    close: () => new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(resolve);
    }),
  };
}

// In the page: a client of the served bundle, and how long it took to be on
// loopback (at `ready`, or later when a loaded machine made the probe
// outlast the 150 ms `ready` waits for it).
function chooseInPage(page, extra = {}) {
  return page.evaluate(async (extra) => {
    const { createClient } = await import('/webrtc/client.js');
    window.__own?.close();
    const started = performance.now();
    const client = createClient({ enabled: true, ...extra });
    window.__own = client;
    const late = new Promise((resolve) => {
      client.addEventListener('pathchange', (e) => e.detail.path === 'loopback' && resolve());
      setTimeout(resolve, 3000);
    });
    const ready = await client.ready;
    if (ready !== 'loopback') await late;
    return { ready, path: client.path, ms: performance.now() - started, timing: client.timing };
  }, extra);
}

// What a browser itself logs when a connection is refused (Chromium:
// "Failed to load resource: net::ERR_CONNECTION_REFUSED", "WebSocket
// connection to 'ws://127.0.0.1:…' failed"; Firefox, for a CORS request:
// "... (Reason: CORS request did not succeed). Status code: (null)", "...
// can't establish a connection to the server at ws://127.0.0.1:…"): the
// client cannot silence those, and recovers. Anything else
// on the console or thrown in the page is a problem.
const pageProblems = (problems) =>
  problems.filter((p) => !/net::ERR_CONNECTION_REFUSED|\(Reason: CORS request did not succeed\)\. Status code: \(null\)|WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/[^']*' failed|can.t establish a connection to the server at ws:\/\/127\.0\.0\.1:\d+\//.test(p));

for (const kind of browserKinds()) describe(`loopback tier in ${kind}`, () => {
  let browser;
  before(async () => {
    browser = await launchBrowser([], { kind });
  });
  after(async () => {
    await browser?.close();
  });

  test('(a) the page picks loopback within 150 ms, chats and streams over it, and takes the normal path without an error when the listener stops', async (t) => {
    // home-peer's ICE confined to an address no interface has: no channel
    // opens, so once the listener is gone the next path is the relay.
    await withStack({ homePeer: true, loopback: true, allowIps: ['192.0.2.1'] }, t, async (stack) => {
      const { page, problems, close } = await openPage(browser, `${stack.signalUrl}/`);
      t.after(close);
      await page.evaluate(() => window.__beeline.ready);
      await page.waitForFunction(() => window.__beeline.path === 'loopback', undefined, { timeout: 5000 });
      assert.equal(await page.locator('#beeline-indicator').textContent(), '\u26a1 loopback');

      // A page's own clients, timed from createClient (the session request,
      // then the probe and its preflight); the median of three, so one
      // slow moment of a loaded machine does not decide.
      const owns = [];
      for (let i = 0; i < 3; i++) owns.push(await chooseInPage(page));
      for (const own of owns) {
        assert.equal(own.path, 'loopback');
        assert.ok(own.timing.rttMs !== null && own.timing.setupMs !== null, JSON.stringify(own.timing));
      }
      const median = owns.map((o) => o.ms).sort((a, b) => a - b)[1];
      assert.ok(median <= 150, `chose loopback after ${owns.map((o) => `${o.ms.toFixed(1)} ms (ready: ${o.ready})`).join(', ')}`);

      const relayedBefore = (await stack.metrics())[RELAYED] ?? 0;
      const reply = await sendChat(page, 'hello from the home machine');
      assert.equal(reply.error, false, reply.text);
      assert.equal(reply.complete, true, 'the SSE stream ended without [DONE]');
      assert.ok(reply.text.startsWith('You said: hello from the home machine.'), reply.text);
      assert.ok(reply.tokens >= 20, `only ${reply.tokens} tokens`);
      assert.ok(reply.firstTokenMs + 200 < reply.doneMs, `not streamed: first token at ${reply.firstTokenMs} ms, done at ${reply.doneMs} ms`);
      assert.equal(reply.path, 'loopback');
      const plain = await page.evaluate(async () => {
        const res = await window.__own.fetch('/healthz?via=own');
        return { status: res.status, path: res.headers.get('x-beeline-path') };
      });
      assert.deepEqual(plain, { status: 200, path: 'loopback' });
      assert.equal((await stack.metrics())[RELAYED] ?? 0, relayedBefore, 'the relay carried a loopback request');

      // The listener goes away (with home-peer). A WebSocket opened now goes
      // on over the relay without the page seeing the failed attempt...
      await stack.homePeer.stop();
      const socket = await page.evaluate(async () => {
        const ws = window.__beeline.websocket('/ws/echo');
        const events = [];
        const settled = new Promise((resolve) => {
          ws.onopen = () => resolve(events.push('open'));
          ws.onerror = () => events.push('error');
          ws.onclose = (e) => resolve(events.push(`close ${e.code}`));
        });
        await Promise.race([settled, new Promise((resolve) => setTimeout(resolve, 5000))]);
        if (ws.readyState !== 1) return { events, path: ws.path };
        const echoed = await Promise.race([
          new Promise((resolve) => {
            ws.onmessage = (e) => resolve(e.data);
            ws.send('after the listener');
          }),
          new Promise((resolve) => setTimeout(() => resolve('no echo'), 5000)),
        ]);
        ws.close();
        return { events, path: ws.path, echoed };
      });
      assert.deepEqual(socket, { events: ['open'], path: 'relay', echoed: 'after the listener' });
      // ...and so does the next chat.
      const again = await sendChat(page, 'still there?');
      assert.equal(again.error, false, `the page showed an error: ${again.text}`);
      assert.equal(again.complete, true);
      assert.ok(again.text.startsWith('You said: still there?.'), again.text);
      assert.equal(again.path, 'fallback', 'the demo marks a reply without x-beeline-path');
      assert.equal(await page.evaluate(() => window.__beeline.path), 'normal');
      assert.equal(await page.locator('#beeline-indicator').textContent(), 'normal path');
      assert.ok(((await stack.metrics())[RELAYED] ?? 0) > relayedBefore, 'the chat did not go through the relay');
      assert.equal(await page.locator('.bubble.error').count(), 0);
      assert.deepEqual(pageProblems(problems), []);
    });
  });

  test('(b) another origin in the same browser cannot get the home service called through the listener', async (t) => {
    await withStack({ homePeer: true, loopback: true, upstream: 'plain', allowIps: allowIpsFor(kind) }, t, async (stack) => {
      const logged = () => stack.upstreamRequests().map((r) => r.path);
      // The right page reaches the home service through the listener, so the
      // log would show any request that got through.
      const { page: home, close: closeHome } = await openPage(browser, `${stack.signalUrl}/healthz`, { waitForClient: false });
      t.after(closeHome);
      assert.equal((await chooseInPage(home)).path, 'loopback');
      const legit = await home.evaluate(async () => {
        const res = await window.__own.fetch('/legit?x=1', { method: 'POST', body: 'hi' });
        return { status: res.status, path: res.headers.get('x-beeline-path') };
      });
      assert.deepEqual(legit, { status: 200, path: 'loopback' });
      await waitFor(async () => logged().includes('/legit?x=1'), 5000, 'the legit request in the log');

      // The other origin: a page of the test's own server.
      const other = await startServer((req, res) => {
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end('<!doctype html><title>other origin</title><iframe name="sink"></iframe>');
      });
      t.after(other.close);
      const { page: evil, problems, close: closeEvil } = await openPage(browser, `${other.url}/`, { waitForClient: false });
      t.after(closeEvil);
      const outcome = await evil.evaluate(async (lb) => {
        const settle = (promise) => promise.then((res) => ({ ok: true, type: res.type, status: res.status }), (err) => ({ ok: false, error: err.name }));
        const results = {};
        results.cors = await settle(fetch(`${lb}/attack/cors`, { method: 'POST', body: 'x' }));
        results.corsJson = await settle(fetch(`${lb}/attack/cors-json`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }));
        results.noCorsPost = await settle(fetch(`${lb}/attack/no-cors-post`, { method: 'POST', mode: 'no-cors', body: 'x' }));
        results.noCorsGet = await settle(fetch(`${lb}/attack/no-cors-get`, { mode: 'no-cors' }));
        results.guessedTicket = await settle(fetch(`${lb}/attack/ticket`, { headers: { 'x-beeline-ticket': 'v1.0123456789abcdef.4102444800.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' } }));
        results.image = await new Promise((resolve) => {
          const img = new Image();
          img.onload = () => resolve('load');
          img.onerror = () => resolve('error');
          img.src = `${lb}/attack/image.png`;
        });
        results.form = await new Promise((resolve) => {
          const sink = document.querySelector('iframe[name=sink]');
          sink.onload = () => resolve('submitted');
          const form = document.createElement('form');
          form.method = 'POST';
          form.action = `${lb}/attack/form`;
          form.target = 'sink';
          const field = document.createElement('input');
          field.name = 'message';
          field.value = 'x';
          form.append(field);
          document.body.append(form);
          form.submit();
          setTimeout(() => resolve('timeout'), 3000);
        });
        return results;
      }, stack.loopbackUrl);
      // The listener answered (the no-cors requests got an opaque answer),
      // and nothing of it reached the home service.
      assert.equal(outcome.noCorsPost.type, 'opaque', JSON.stringify(outcome));
      assert.equal(outcome.noCorsGet.type, 'opaque', JSON.stringify(outcome));
      assert.equal(outcome.image, 'error', JSON.stringify(outcome));
      assert.equal(outcome.form, 'submitted', JSON.stringify(outcome));
      for (const name of ['cors', 'corsJson', 'guessedTicket']) {
        assert.ok(!outcome[name].ok || outcome[name].status >= 400, `${name}: ${JSON.stringify(outcome[name])}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 300));
      const attacks = logged().filter((p) => p.startsWith('/attack'));
      assert.deepEqual(attacks, [], `the home service was called from another origin: ${attacks.join(', ')}`);
      void problems;
    });
  });

  for (const daemon of ['no magic headers', 'a forged proof']) {
    test(`(c) a process on the offered port with ${daemon} is never used`, async (t) => {
      await withStack({ homePeer: true, allowIps: allowIpsFor(kind) }, t, async (stack) => {
        // Answers everything, CORS wide open, as a careless local dev server would.
        const other = await startServer((req, res) => {
          const headers = {
            'access-control-allow-origin': '*',
            'access-control-allow-headers': '*',
            'access-control-allow-methods': '*',
            'access-control-expose-headers': '*',
          };
          if (daemon === 'a forged proof') Object.assign(headers, { 'x-beeline-home': 'home', 'x-beeline-proof': 'forged' });
          res.writeHead(req.url === '/.beeline/probe' ? 204 : 200, headers);
          res.end(req.url === '/.beeline/probe' ? undefined : 'not the home');
        });
        t.after(other.close);
        // The demo page (it names no favicon, which Chromium would ask for).
        const { page, problems, close } = await openPage(browser, `${stack.signalUrl}/`);
        t.after(close);
        // signal-api names that port in the session answer (as it would if
        // home-peer's listener had been replaced by this process).
        await page.evaluate((url) => {
          window.__offeringFetch = async (input, init) => {
            const res = await fetch(input, init);
            if (!String(input).endsWith('/session')) return res;
            const session = await res.json();
            session.loopback = { url, ticket: 'v1.s.1.t', proof: 'the-real-proof' };
            return new Response(JSON.stringify(session), { status: res.status, headers: res.headers });
          };
        }, other.url);
        const chosen = await page.evaluate(async () => {
          const { createClient } = await import('/webrtc/client.js');
          const client = createClient({ enabled: true, signalFetch: window.__offeringFetch });
          window.__own = client;
          const path = await client.ready;
          await client.negotiated;
          const res = await client.fetch('/v1/models');
          const ws = client.websocket('/ws/echo');
          await new Promise((resolve) => {
            ws.onopen = resolve;
            ws.onclose = resolve;
          });
          ws.close();
          return { path, fetched: res.headers.get('x-beeline-path'), ws: ws.path };
        });
        assert.deepEqual(chosen, { path: 'direct', fetched: 'direct', ws: 'direct' });
        const asked = other.requests.map((r) => `${r.method} ${r.url}`);
        assert.ok(asked.includes('GET /.beeline/probe'), `the probe never came: ${asked}`);
        assert.deepEqual(asked.filter((a) => !a.endsWith(' /.beeline/probe')), [], 'the other process was sent a request');
        assert.deepEqual(pageProblems(problems), []);
      });
    });
  }
});
