// A cookie-login home app on the direct path (docs/cookies.md), in headless
// Chromium and Firefox ESR: tests/upstreams/cookie_app.py logs in with an
// HttpOnly session cookie (POST /login), guards GET /me with it and clears
// it at POST /logout. Its page is served through signal-api's relay, so it
// is same-origin with signaling, and loads client.js, which carries the
// session's sealed cookie jar on the channel and has signal-api set the
// cookies the app answers there. The app is reached on two ports, one for
// the relay and one for home-peer, so its log says which path each request
// took.
//
// Run through run.sh, which confines everything to a fresh network namespace
// (with the veth link Firefox needs for host candidates).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { allowIpsFor, browserCookies, browserKinds, launchBrowser, openPage, startStack } from './harness.mjs';

const LOGIN = 'user=alice&password=wonderland';

// In the page: one request through `client.fetch` (or, with `plain`, the
// page's own fetch, i.e. the normal path) and what came back.
function call(page, method, path, { body, plain = false } = {}) {
  return page.evaluate(
    async ({ method, path, body, plain }) => {
      const init = { method };
      if (body !== undefined) init.body = new URLSearchParams(body);
      const res = await (plain ? fetch(path, init) : window.__client.fetch(path, init));
      const text = await res.text();
      let json = null;
      try {
        json = JSON.parse(text);
      } catch {
        // not JSON
      }
      return {
        status: res.status,
        json,
        path: res.headers.get('x-beeline-path') ?? 'normal',
        sealedVisible: res.headers.get('x-beeline-set-cookie') !== null,
        cookiesChanged: res.headers.get('x-beeline-cookies-changed'),
        documentCookie: document.cookie,
      };
    },
    { method, path, body, plain },
  );
}

// In the page: waits for the direct path and returns what was negotiated.
function direct(page) {
  return page.evaluate(async () => {
    const ready = await window.__client.ready;
    return { ready, protocol: await window.__client.negotiated };
  });
}

const sidOf = (cookie) => (cookie ?? '').split(';').map((c) => c.trim()).find((c) => c.startsWith('sid='))?.slice(4) ?? null;

for (const kind of browserKinds()) {
  describe(`a cookie-login app works on the direct path in ${kind}`, () => {
    let browser;
    let stack;

    before(async () => {
      browser = await launchBrowser([], { kind });
      stack = await startStack({ homePeer: true, upstream: 'cookie', allowIps: allowIpsFor(kind) });
    });

    after(async () => {
      await stack?.stop();
      await browser?.close();
    });

    // Opens the app's page (query `query`) in a fresh context, so with no
    // cookies, runs `body` with it, and adds the service logs and the app's
    // request log to a failure.
    async function withPage(t, query, body) {
      const { page, problems, close } = await openPage(browser, `${stack.signalUrl}/${query}`, { waitForClient: false });
      t.after(close);
      await page.waitForFunction(() => window.__client !== undefined);
      try {
        await body(page);
        // Chromium reports 4xx answers as console errors; nothing else may show.
        assert.deepEqual(problems.filter((p) => !/Failed to load resource: the server responded with a status of 401/.test(p)), []);
      } catch (err) {
        err.message += `\n----- app log -----\n${stack.upstreamRequests().map((r) => JSON.stringify({ ...r, headers: undefined })).join('\n')}\n${stack.logs()}`;
        throw err;
      }
    }

    // The app's records since `from` for `method path`.
    const logged = (from, method, path) => stack.upstreamRequests().slice(from).filter((r) => r.method === method && r.path === path);

    test('login, a protected GET and logout over the channel, with an HttpOnly session cookie', async (t) => {
      await withPage(t, '', async (page) => {
        const { ready, protocol } = await direct(page);
        const started = Date.now();
        assert.equal(ready, 'direct', 'no direct path');
        assert.ok(protocol.features.includes('cookies'), `features: ${protocol.features}`);
        const from = stack.upstreamRequests().length;

        const before = await call(page, 'GET', '/me');
        assert.deepEqual([before.status, before.path], [401, 'direct']);

        const login = await call(page, 'POST', '/login', { body: LOGIN });
        assert.deepEqual([login.status, login.path, login.json], [200, 'direct', { user: 'alice' }]);
        assert.equal(login.sealedVisible, false, 'the page sees no sealed Set-Cookie');
        assert.doesNotMatch(login.documentCookie, /sid=/, 'HttpOnly: the page cannot read the session cookie');
        const [loginRecord] = logged(from, 'POST', '/login');
        assert.equal(loginRecord.via, 'channel');
        assert.equal(loginRecord.status, 200);

        // The browser's own store has it, HttpOnly, set through signal-api.
        const stored = (await browserCookies(page)).find((c) => c.name === 'sid');
        assert.ok(stored, 'the browser stored no sid cookie');
        assert.equal(stored.httpOnly, true);
        assert.equal(stored.path, '/');
        const sid = stored.value;

        // The normal path sends it, as the browser always does.
        const plainMe = await call(page, 'GET', '/me', { plain: true });
        assert.deepEqual([plainMe.status, plainMe.path, plainMe.json], [200, 'normal', { user: 'alice' }]);

        // The channel carries it too: the app sees the same cookie.
        const me = await call(page, 'GET', '/me');
        assert.deepEqual([me.status, me.path, me.json], [200, 'direct', { user: 'alice' }]);
        const meRecords = logged(from, 'GET', '/me');
        assert.deepEqual(
          meRecords.map((r) => [r.via, r.status, sidOf(r.cookie) === sid]),
          [
            ['channel', 401, false],
            ['relay', 200, true],
            ['channel', 200, true],
          ],
        );

        // Logout over the channel clears the browser's cookie.
        const logout = await call(page, 'POST', '/logout');
        assert.deepEqual([logout.status, logout.path], [200, 'direct']);
        assert.equal(logged(from, 'POST', '/logout')[0].via, 'channel');
        assert.equal((await browserCookies(page)).find((c) => c.name === 'sid'), undefined, 'sid is still stored');
        const meAfter = await call(page, 'GET', '/me');
        assert.deepEqual([meAfter.status, meAfter.path], [401, 'direct']);
        const plainAfter = await call(page, 'GET', '/me', { plain: true });
        assert.deepEqual([plainAfter.status, plainAfter.path], [401, 'normal']);
        const last = logged(from, 'GET', '/me').slice(-2);
        assert.deepEqual(last.map((r) => [r.via, sidOf(r.cookie)]), [['channel', null], ['relay', null]], 'a cookie was still sent');
        console.log(`# ${kind}: the exchange above (9 requests, 3 cookie checks) took ${Date.now() - started} ms`);
      });
    });

    test('a login on the normal path through client.fetch, before the channel opens, reaches the channel', async (t) => {
      await withPage(t, '?hold', async (page) => {
        // The session (and its jar, without sid) exists; the offer is held.
        await page.waitForFunction(() => window.__client.sessionId !== null);
        const from = stack.upstreamRequests().length;
        const login = await call(page, 'POST', '/login', { body: LOGIN });
        assert.deepEqual([login.status, login.path], [200, 'normal']);
        assert.equal(login.cookiesChanged, '1', 'the relay marks a response that set cookies');
        assert.equal(logged(from, 'POST', '/login')[0].via, 'relay');

        await page.evaluate(() => window.__releaseSetup());
        const { ready, protocol } = await direct(page);
        assert.equal(ready, 'direct', 'no direct path');
        assert.ok(protocol.features.includes('cookies'));
        const me = await call(page, 'GET', '/me');
        assert.deepEqual([me.status, me.path, me.json], [200, 'direct', { user: 'alice' }]);
        const [record] = logged(from, 'GET', '/me');
        assert.equal(record.via, 'channel');
        assert.ok(sidOf(record.cookie), 'no sid on the channel');
        const refreshes = await page.evaluate(() => performance.getEntriesByType('resource').filter((e) => new URL(e.name).pathname === '/webrtc/cookie').length);
        assert.equal(refreshes, 1, 'one jar refresh');
      });
    });

    test('a login through the page\'s own fetch reaches the channel by the relay\'s Server-Timing mark', async (t) => {
      await withPage(t, '', async (page) => {
        const { ready } = await direct(page);
        assert.equal(ready, 'direct', 'no direct path');
        const from = stack.upstreamRequests().length;
        const login = await call(page, 'POST', '/login', { body: LOGIN, plain: true });
        assert.deepEqual([login.status, login.path, login.cookiesChanged], [200, 'normal', '1']);
        // client.js never reads that response, and the cookie is HttpOnly, so
        // document.cookie does not change either. What it can see is the
        // login's resource timing entry: the relay may mark it with
        // Server-Timing: beeline-cookies-changed.
        const marked = await page.evaluate(async () => {
          const url = new URL('/login', location.href).href;
          for (let i = 0; i < 50 && performance.getEntriesByName(url).length === 0; i += 1) await new Promise((r) => setTimeout(r, 10));
          return performance.getEntriesByName(url).some((e) => e.serverTiming?.some((st) => st.name === 'beeline-cookies-changed'));
        });
        assert.ok(marked, 'the relay marks a response that set cookies with Server-Timing');
        const expected = [];
        const me = await call(page, 'GET', '/me');
        assert.deepEqual([me.status, me.path, me.json], [200, 'direct', { user: 'alice' }]);
        expected.push(['channel', 200, true]);
        assert.deepEqual(logged(from, 'GET', '/me').map((r) => [r.via, r.status, sidOf(r.cookie) !== null]), expected);
      });
    });
  });
}
