// The loopback tier in headless Chromium and Firefox (issue 14), inside the
// network namespace run.sh creates: pages load the bundle signal-api serves,
// home-peer runs its loopback listener (--loopback-listen 127.0.0.1:0).
//
// (c) Another process on the offered port, without the magic headers (or
//     with a proof it cannot make), is never sent a request.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';

import { allowIpsFor, browserKinds, launchBrowser, openPage, startStack } from './harness.mjs';

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

// Console lines a page may show for a connection the browser itself
// reports failing (the client cannot silence those); anything else is a problem.
const pageProblems = (problems) => problems.filter((p) => !/Failed to load resource|ERR_CONNECTION_REFUSED|NetworkError|net::ERR/.test(p));

for (const kind of browserKinds()) describe(`loopback tier in ${kind}`, () => {
  let browser;
  before(async () => {
    browser = await launchBrowser([], { kind });
  });
  after(async () => {
    await browser?.close();
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
        const { page, problems, close } = await openPage(browser, `${stack.signalUrl}/healthz`, { waitForClient: false });
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
