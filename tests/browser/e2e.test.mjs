// End-to-end tests in headless Chromium and Firefox ESR: the demo chat page,
// opened through signal-api, chats over the direct WebRTC path when the home
// peer is there and over signal-api's relay when it is not, without the
// person noticing. The test against the v1 reference peer (itself a
// Chromium page) runs in Chromium only.
//
// Run through run.sh, which builds nothing, installs what is missing and
// confines everything to a fresh network namespace.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { allowIpsFor, browserKinds, launchBrowser, openPage, sendChat, startReferencePeer, startStack, waitFor } from './harness.mjs';

const RELAYED = 'beeline_relay_requests_total';
const SESSIONS = 'beeline_sessions_created_total';
const BYES = 'beeline_signals_total{type="bye"}';
// The client's setup budget: a reply must never wait for it.
const BUDGET_MS = 8000;

// Shows the service logs when a test body fails.
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

function assertFullReply(reply, message) {
  assert.equal(reply.error, false, `the page showed an error: ${reply.text}`);
  assert.equal(reply.complete, true, 'the stream ended without [DONE]');
  assert.ok(reply.text.startsWith(`You said: ${message}.`), `unexpected reply: ${reply.text}`);
  assert.ok(reply.tokens >= 20, `only ${reply.tokens} tokens`);
  // About 25 tokens 30 ms apart: a buffered reply would render its first
  // token at the same moment as the last.
  assert.ok(reply.firstTokenMs + 200 < reply.doneMs, `first token at ${reply.firstTokenMs} ms, done at ${reply.doneMs} ms`);
}

for (const kind of browserKinds()) describe(`demo chat in ${kind}`, () => {
  let browser;
  before(async () => {
    browser = await launchBrowser([], { kind });
  });
  after(async () => {
    await browser?.close();
  });

  test('direct: the reply streams over the data channel and the relay carries none of it', async (t) => {
    await withStack({ homePeer: true, allowIps: allowIpsFor(kind) }, t, async (stack) => {
      const { page, problems, close } = await openPage(browser, `${stack.signalUrl}/`);
      t.after(close);
      assert.equal(await page.evaluate(() => window.__beeline.ready), 'direct');
      const indicator = page.locator('#beeline-indicator');
      assert.equal(await indicator.isVisible(), true, 'indicator hidden while direct');
      assert.equal(await indicator.textContent(), '⚡ direct');

      const relayedBefore = (await stack.metrics())[RELAYED];
      const message = 'hello from the couch';
      const reply = await sendChat(page, message);
      assertFullReply(reply, message);
      assert.equal(reply.path, 'direct');
      assert.equal((await stack.metrics())[RELAYED], relayedBefore, 'the chat went through the relay');
      assert.equal(await page.evaluate(() => window.__beeline.path), 'direct');
      // The page reported its outcome once, for the operator's success rate.
      await waitFor(async () => (await stack.metrics())['beeline_connection_outcomes_total{outcome="direct"}'] === 1, 5000, 'the direct outcome to be reported');
      assert.deepEqual(problems, []);
    });
  });

  test('path: the indicator names it in text (a polite live region, focusable) with the round trip and setup time on hover and keyboard focus; client.path and pathchange', async (t) => {
    await withStack({ homePeer: true, allowIps: allowIpsFor(kind) }, t, async (stack) => {
      const { page, problems, close } = await openPage(browser, `${stack.signalUrl}/`);
      t.after(close);
      assert.equal(await page.evaluate(() => window.__beeline.ready), 'direct');
      assert.equal(await page.evaluate(() => window.__beeline.path), 'direct');
      const indicator = page.locator('#beeline-indicator');
      const attributes = await page.evaluate(() => {
        const el = document.querySelector('#beeline-indicator');
        return { role: el.getAttribute('role'), live: el.getAttribute('aria-live'), tabIndex: el.tabIndex, text: el.textContent };
      });
      assert.deepEqual(attributes, { role: 'status', live: 'polite', tabIndex: 0, text: '\u26a1 direct' });
      await page.waitForFunction(() => window.__beeline.timing.rttMs !== null && window.__beeline.timing.setupMs !== null);
      const detailed = /^\u26a1 direct \(round trip \d+(\.\d)? ms, setup \d+(\.\d)? ms\)$/;
      await page.evaluate(() => document.querySelector('#beeline-indicator').focus());
      assert.match(await indicator.textContent(), detailed, 'keyboard focus');
      await page.evaluate(() => document.querySelector('#beeline-indicator').blur());
      assert.equal(await indicator.textContent(), '\u26a1 direct');
      await page.hover('#beeline-indicator');
      assert.match(await indicator.textContent(), detailed, 'hover');
      await page.hover('#message');
      assert.equal(await indicator.textContent(), '\u26a1 direct');

      // A page showing the path itself, with the served bundle.
      const own = await page.evaluate(async () => {
        const { createClient } = await import('/webrtc/client.js');
        const client = createClient({ enabled: true });
        const changes = [];
        client.addEventListener('pathchange', (e) => changes.push({ path: e.detail.path, previous: e.detail.previous }));
        const ready = await client.ready;
        const { path, setupMs } = client.timing;
        client.close();
        return { ready, path, setupMs, changes, after: client.path };
      });
      assert.equal(own.ready, 'direct');
      assert.equal(own.path, 'direct');
      assert.ok(own.setupMs > 0, `setup ${own.setupMs} ms`);
      assert.deepEqual(own.changes, [{ path: 'direct', previous: 'normal' }, { path: 'normal', previous: 'direct' }]);
      assert.equal(own.after, 'normal');
      assert.deepEqual(problems, []);
    });
  });

  test('fallback: with no home peer the reply comes through the relay at once, without an error', async (t) => {
    await withStack({ homePeer: false }, t, async (stack) => {
      const { page, problems, close } = await openPage(browser, `${stack.signalUrl}/`);
      t.after(close);
      const relayedBefore = (await stack.metrics())[RELAYED];
      // Sent while the channel is still being set up: it must not wait for it.
      assert.equal(await page.evaluate(() => window.__beeline.path), 'normal');
      const message = 'anyone home?';
      const sentAt = Date.now();
      const reply = await sendChat(page, message);
      assertFullReply(reply, message);
      assert.equal(reply.path, 'fallback');
      assert.ok(reply.doneMs < BUDGET_MS / 2, `reply took ${reply.doneMs} ms`);
      assert.ok(Date.now() - sentAt < BUDGET_MS, 'the reply waited for the setup budget');
      assert.ok((await stack.metrics())[RELAYED] > relayedBefore, 'the chat did not go through the relay');

      // The attempt is abandoned quietly once the budget runs out.
      assert.equal(await page.evaluate(() => window.__beeline.ready), 'normal');
      await waitFor(async () => (await stack.metrics())[BYES] === 1, 5000, 'the abandoned session to say bye');
      await waitFor(async () => (await stack.metrics())['beeline_connection_outcomes_total{outcome="fallback"}'] === 1, 5000, 'the fallback outcome to be reported');
      assert.equal(await page.locator('#beeline-indicator').textContent(), 'normal path');
      assert.equal(await page.locator('.bubble.error').count(), 0);

      const again = await sendChat(page, 'still there?');
      assertFullReply(again, 'still there?');
      assert.equal(again.path, 'fallback');
      assert.equal((await stack.metrics())[SESSIONS], 1, 'setup was retried');
      assert.deepEqual(problems, []);
    });
  });

  test('fallback: with WebRTC disabled (?webrtc=0) no session is made and the indicator says normal path', async (t) => {
    await withStack({ homePeer: false }, t, async (stack) => {
      const { page, problems, close } = await openPage(browser, `${stack.signalUrl}/?webrtc=0`);
      t.after(close);
      assert.equal(await page.evaluate(() => window.__beeline.ready), 'normal');
      const relayedBefore = (await stack.metrics())[RELAYED];
      const message = 'no webrtc please';
      const reply = await sendChat(page, message);
      assertFullReply(reply, message);
      assert.equal(reply.path, 'fallback');
      assert.ok((await stack.metrics())[RELAYED] > relayedBefore, 'the chat did not go through the relay');
      assert.equal((await stack.metrics())[SESSIONS], 0, 'a WebRTC session was created');
      assert.equal(await page.locator('#beeline-indicator').textContent(), 'normal path');
      assert.deepEqual(problems, []);
    });
  });

  // The reference peer is a Chromium page.
  const chromiumOnly = kind === 'chromium' ? test : () => {};

  chromiumOnly('client against a v1-only reference peer in Chromium: v1 fallback, concurrent streams, abort, and losing the channel', async (t) => {
    await withStack({ homePeer: false }, t, async (stack) => {
      const peer = await startReferencePeer(browser, stack);
      t.after(peer.close);
      const { page, problems, close } = await openPage(browser, `${stack.signalUrl}/`);
      t.after(close);
      assert.equal(await page.evaluate(() => window.__beeline.ready), 'direct');
      // Sent while the client still waits for an `agree` that never comes.
      const reply = await sendChat(page, 'via the reference peer');
      assertFullReply(reply, 'via the reference peer');
      assert.equal(reply.path, 'direct');
      // The peer ignored the hello, so the client settled on v1.
      assert.deepEqual(await page.evaluate(() => window.__beeline.negotiated), { version: 1 });
      assert.equal(await peer.hellos(), 1);

      const concurrent = await page.evaluate(() =>
        Promise.all(
          ['one', 'two', 'three'].map(async (message) => {
            const res = await window.__beeline.fetch('/v1/chat', {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ message }),
            });
            return { path: res.headers.get('x-beeline-path'), body: await res.text() };
          }),
        ),
      );
      for (const [i, message] of ['one', 'two', 'three'].entries()) {
        assert.equal(concurrent[i].path, 'direct');
        assert.match(concurrent[i].body, new RegExp(`^data: You\\n\\ndata: said:\\n\\ndata: ${message}\\.\\n\\n`));
        assert.ok(concurrent[i].body.endsWith('data: [DONE]\n\n'));
      }

      const aborted = await page.evaluate(async () => {
        const controller = new AbortController();
        const res = await window.__beeline.fetch('/v1/chat', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ message: 'stop me' }),
          signal: controller.signal,
        });
        const reader = res.body.getReader();
        await reader.read();
        controller.abort();
        try {
          await reader.read();
          return 'not aborted';
        } catch (err) {
          return err.name;
        }
      });
      assert.equal(aborted, 'AbortError');

      // Requests whose response has not started when the channel goes: the
      // GET is repeated over the normal path, the POST fails like fetch does.
      await page.evaluate(() => {
        const outcome = (promise) =>
          promise.then(
            async (res) => ({ status: res.status, path: res.headers.get('x-beeline-path'), body: await res.text() }),
            (err) => ({ error: err.name }),
          );
        window.__held = {
          get: outcome(window.__beeline.fetch('/healthz?hold=1')),
          post: outcome(window.__beeline.fetch('/v1/chat?hold=1', { method: 'POST', body: '{"message":"x"}' })),
        };
      });
      await waitFor(async () => (await peer.heldRequests()) === 2, 5000, 'both requests to reach the peer');
      await peer.dropConnections();
      assert.deepEqual(await page.evaluate(() => window.__held.get), { status: 200, path: null, body: 'ok' });
      assert.deepEqual(await page.evaluate(() => window.__held.post), { error: 'TypeError' });
      assert.equal(await page.evaluate(() => window.__beeline.path), 'normal');
      assert.equal(await page.locator('#beeline-indicator').textContent(), 'normal path');

      const after = await sendChat(page, 'after the loss');
      assertFullReply(after, 'after the loss');
      assert.equal(after.path, 'fallback');
      assert.deepEqual(problems, []);
    });
  });
});
