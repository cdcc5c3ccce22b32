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

// Runs in the page: an echo session over `window.__beeline.websocket`.
async function echoSession(count) {
  const client = window.__beeline;
  await client.ready;
  const opened = (socket) =>
    new Promise((resolve, reject) => {
      socket.onopen = () => resolve();
      socket.onerror = () => reject(new Error('error before open'));
      socket.onclose = (e) => reject(new Error(`closed before open: ${e.code}`));
    });
  const socket = client.websocket('/ws/echo', ['echo.v1']);
  socket.binaryType = 'arraybuffer';
  await opened(socket);
  const result = { path: socket.path, protocol: socket.protocol, readyState: socket.readyState };
  const received = [];
  let wanted = 2 * count;
  let done;
  const all = new Promise((resolve) => {
    done = resolve;
  });
  socket.onmessage = (e) => {
    received.push(typeof e.data === 'string' ? e.data : new DataView(e.data).getUint32(0));
    if (received.length === wanted) done();
  };
  for (let i = 0; i < count; i++) {
    socket.send(`text ${i}`);
    const bytes = new ArrayBuffer(4);
    new DataView(bytes).setUint32(0, i);
    socket.send(bytes);
  }
  await all;
  result.inOrder = received.every((m, k) => (k % 2 === 0 ? m === `text ${k / 2}` : m === (k - 1) / 2));
  result.count = received.length;

  // A 1 MiB message, as a Blob this time.
  socket.binaryType = 'blob';
  const big = new Uint8Array(1 << 20).map((_, i) => i % 251);
  const bigBack = new Promise((resolve) => {
    socket.onmessage = async (e) => resolve(new Uint8Array(await e.data.arrayBuffer()));
  });
  socket.send(new Blob([big]));
  const back = await bigBack;
  result.bigIntact = back.length === big.length && back.every((b, i) => b === big[i]);

  // The server closes with a code and reason.
  const serverClose = new Promise((resolve) => {
    socket.onclose = (e) => resolve({ code: e.code, reason: e.reason, wasClean: e.wasClean });
  });
  socket.send('close:4001:bye from home');
  result.serverClose = await serverClose;
  result.finalState = socket.readyState;

  // The page closes another with its own code; validation as a browser's.
  const second = client.websocket('/ws/echo');
  await opened(second);
  try {
    second.close(1001);
    result.badCode = 'accepted';
  } catch (err) {
    result.badCode = err.name;
  }
  const pageClose = new Promise((resolve) => {
    second.onclose = (e) => resolve({ code: e.code, reason: e.reason, wasClean: e.wasClean });
  });
  second.close(4002, 'bye from page');
  result.pageClose = await pageClose;
  return result;
}

function assertEcho(result, path, count) {
  assert.equal(result.path, path);
  assert.equal(result.protocol, 'echo.v1');
  assert.equal(result.readyState, 1);
  assert.equal(result.count, 2 * count);
  assert.equal(result.inOrder, true, 'messages out of order or changed');
  assert.equal(result.bigIntact, true, 'the 1 MiB message changed');
  assert.deepEqual(result.serverClose, { code: 4001, reason: 'bye from home', wasClean: true });
  assert.equal(result.finalState, 3);
  assert.equal(result.badCode, 'InvalidAccessError');
  assert.equal(result.pageClose.code, 4002);
  assert.equal(result.pageClose.wasClean, true);
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
