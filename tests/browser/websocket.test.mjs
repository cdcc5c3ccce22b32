// WebSockets on every path (issue 11), in headless Chromium and Firefox ESR:
// `client.websocket()` over the data channel, over the home link (a
// deployment with no tunnel: signal-api without --relay-upstream, opened
// with ?webrtc=0), and over signal-api's plain WebSocket relay to
// --relay-upstream. On each: 1,000 numbered text and binary messages each
// way arrive once and in order, a 1 MiB message keeps its boundary, close
// codes and reasons pass both ways, the subprotocol is the one asked for.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { allowIpsFor, browserKinds, launchBrowser, openPage, startStack, waitFor } from './harness.mjs';
import { assertEcho, echoSession } from './websocket-echo.mjs';

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

for (const kind of browserKinds()) describe(`WebSockets in ${kind}`, () => {
  let browser;
  before(async () => {
    browser = await launchBrowser([], { kind });
  });
  after(async () => {
    await browser?.close();
  });

  test('over the data channel: in order, whole, with close codes, and nothing on the relay', async (t) => {
    await withStack({ homePeer: true, allowIps: allowIpsFor(kind) }, t, async (stack) => {
      const { page, problems, close } = await openPage(browser, `${stack.signalUrl}/`);
      t.after(close);
      assert.equal(await page.evaluate(() => window.__beeline.ready), 'direct');
      const relayedBefore = (await stack.metrics())[RELAYED];
      const result = await page.evaluate(echoSession, 1000);
      assertEcho(result, 'direct', 1000);
      assert.equal((await stack.metrics())[RELAYED], relayedBefore, 'a WebSocket went through the relay');
      assert.deepEqual(problems, []);
    });
  });

  test('a deployment without a tunnel: ?webrtc=0 chats and echoes over the home link', async (t) => {
    await withStack({ homePeer: true, relay: 'link', allowIps: allowIpsFor(kind) }, t, async (stack) => {
      const { page, problems, close } = await openPage(browser, `${stack.signalUrl}/?webrtc=0`);
      t.after(close);
      assert.equal(await page.evaluate(() => window.__beeline.ready), 'normal');
      const relayedBefore = (await stack.metrics())[RELAYED];
      const result = await page.evaluate(echoSession, 1000);
      assertEcho(result, 'relay', 1000);
      // The page itself, its script and the sockets all came over the link.
      assert.ok((await stack.metrics())[RELAYED] >= relayedBefore + 2, 'the sockets did not go through the relay');
      assert.equal((await stack.metrics())['beeline_home_link_connected{home="home"}'], 1);
      assert.deepEqual(problems, []);
    });
  });

  test('through --relay-upstream, a plain WebSocket proxy, when there is no home peer', async (t) => {
    await withStack({ homePeer: false }, t, async (stack) => {
      const { page, problems, close } = await openPage(browser, `${stack.signalUrl}/`);
      t.after(close);
      const result = await page.evaluate(echoSession, 300);
      assertEcho(result, 'relay', 300);
      assert.deepEqual(problems, []);
    });
  });

  test('home-peer restarts while a socket is open on the channel: the page sees a close and reconnects', async (t) => {
    await withStack({ homePeer: true, allowIps: allowIpsFor(kind) }, t, async (stack) => {
      const { page, close } = await openPage(browser, `${stack.signalUrl}/`);
      t.after(close);
      assert.equal(await page.evaluate(() => window.__beeline.ready), 'direct');
      await page.evaluate(async () => {
        const socket = window.__beeline.websocket('/ws/tick?every_ms=50');
        window.__ticks = [];
        window.__closes = [];
        socket.onmessage = (e) => window.__ticks.push(e.data);
        socket.onclose = (e) => window.__closes.push({ code: e.code, wasClean: e.wasClean, path: socket.path });
        await new Promise((resolve) => {
          socket.onopen = resolve;
        });
      });
      await waitFor(async () => (await page.evaluate(() => window.__ticks.length)) >= 5, 5000, 'ticks over the channel');
      await stack.homePeer.stop();
      await waitFor(async () => (await page.evaluate(() => window.__closes.length)) === 1, 15_000, 'the page to see the socket close');
      const [closed] = await page.evaluate(() => window.__closes);
      assert.equal(closed.path, 'direct');
      assert.equal(closed.wasClean, false);
      const ticks = await page.evaluate(() => window.__ticks);
      // What arrived arrived once, in order.
      assert.ok(ticks.every((t, i) => t === `tick ${i}`), `ticks out of order: ${ticks.slice(0, 10)}`);
      // Reconnecting now takes the normal path (the channel is gone).
      const again = await page.evaluate(async () => {
        const socket = window.__beeline.websocket('/ws/echo');
        await new Promise((resolve, reject) => {
          socket.onopen = resolve;
          socket.onclose = () => reject(new Error('closed'));
        });
        const echoed = new Promise((resolve) => {
          socket.onmessage = (e) => resolve(e.data);
        });
        socket.send('again');
        return { path: socket.path, echoed: await echoed };
      });
      assert.deepEqual(again, { path: 'relay', echoed: 'again' });
    });
  });
});
