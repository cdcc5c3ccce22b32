// Live migration (issue 11, docs/protocol.md §4.8), in headless Chromium and
// Firefox ESR:
// a page's streams start on the relay (the frame connection through
// signal-api's home link, no --relay-upstream), move to the data channel
// when it opens, back when its UDP path is cut (iptables DROP on
// every UDP port of home-peer, inside this run's namespace), and to a new channel
// once client.js's ICE restart finds a new pair, with every message and
// event arriving exactly once and in order, in both directions.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { allowIpsFor, browserKinds, dropUdpPorts, homePeerIcePort, launchBrowser, openPage, startStack, udpPortsOf, waitFor } from './harness.mjs';

const ECHO_MESSAGES = 10_000;
const SSE_EVENTS = 5_000;
const SSE_INTERVAL_MS = 4;
// The page asks for the direct path this long after its session exists, so
// the streams start on the relay.
const DIRECT_AFTER_MS = 3_000;

// Runs in the page: a resumable client, and the two streams.
async function startStreams({ echoMessages, sseEvents, sseIntervalMs, directAfterMs }) {
  const { createClient } = await import('/webrtc/client.js');
  const started = performance.now();
  const at = () => Math.round(performance.now() - started);
  const client = createClient({ enabled: true, resume: true, directAfterMs, budgetMs: 20_000 });
  const run = {
    client,
    switches: [],
    echo: { sent: 0, received: [], errors: [], closed: null },
    sse: { received: [], error: null, done: false },
  };
  window.__run = run;
  client.addEventListener('pathchange', (e) => {
    run.switches.push({ at: at(), path: e.detail.path, previous: e.detail.previous, carrier: client.resume?.carrier ?? null, echoed: run.echo.received.length, events: run.sse.received.length });
  });
  const info = await client.negotiated;
  run.negotiated = info?.version ?? null;
  run.startPath = client.path;
  run.startCarrier = client.resume?.carrier ?? null;

  // The echo: numbered text messages, paced over about 20 s.
  const socket = client.websocket('/ws/echo');
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onclose = (e) => reject(new Error(`echo closed before open: ${e.code}`));
  });
  socket.onmessage = (e) => run.echo.received.push(Number(String(e.data).slice(4)));
  socket.onclose = (e) => {
    run.echo.closed = { code: e.code, at: at() };
  };
  socket.onerror = () => run.echo.errors.push(at());
  (async () => {
    const perTick = 25;
    while (run.echo.sent < echoMessages && socket.readyState === 1) {
      for (let k = 0; k < perTick && run.echo.sent < echoMessages; k++) socket.send(`msg ${run.echo.sent++}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();

  // The event stream, read as it arrives.
  (async () => {
    try {
      const response = await client.fetch(`/test/events?n=${sseEvents}&interval_ms=${sseIntervalMs}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = event.split('\n').find((l) => l.startsWith('data: '));
          if (data) run.sse.received.push(Number(data.slice(6)));
        }
      }
      run.sse.done = true;
    } catch (err) {
      run.sse.error = String(err);
    }
  })();
  return { negotiated: run.negotiated, startPath: run.startPath, startCarrier: run.startCarrier };
}

const progress = (page) =>
  page.evaluate(() => {
    const run = window.__run;
    return {
      carrier: run.client.resume?.carrier ?? null,
      path: run.client.path,
      echoed: run.echo.received.length,
      sent: run.echo.sent,
      events: run.sse.received.length,
      sseDone: run.sse.done,
      sseError: run.sse.error,
      echoClosed: run.echo.closed,
    };
  });


const sequence = (n) => Array.from({ length: n }, (_, i) => i);

function assertExactlyOnceInOrder(received, n, what) {
  if (received.length === n && received.every((v, i) => v === i)) return;
  const firstBad = received.findIndex((v, i) => v !== i);
  assert.fail(`${what}: ${received.length} of ${n} arrived; first out of place at index ${firstBad} (${received.slice(Math.max(0, firstBad - 3), firstBad + 3)})`);
}

for (const kind of browserKinds()) describe(`live migration in ${kind}`, () => {
  let browser;
  before(async () => {
    browser = await launchBrowser([], { kind });
  });
  after(async () => {
    await browser?.close();
  });

  test('a WebSocket echo and an SSE stream move relay -> channel -> relay (UDP cut) with nothing lost, duplicated or reordered', async (t) => {
    const stack = await startStack({ homePeer: true, relay: 'link', allowIps: allowIpsFor(kind) });
    let cutPorts = [];
    const consoleLines = [];
    t.after(async () => {
      if (cutPorts.length > 0) dropUdpPorts('-D', cutPorts);
      await stack.stop();
    });
    try {
      const { page, problems, close } = await openPage(browser, `${stack.signalUrl}/?webrtc=0`, { waitForClient: false });
      t.after(close);
      page.on('console', (msg) => consoleLines.push(`${new Date().toISOString()} ${msg.text()}`));
      const start = await page.evaluate(startStreams, { echoMessages: ECHO_MESSAGES, sseEvents: SSE_EVENTS, sseIntervalMs: SSE_INTERVAL_MS, directAfterMs: DIRECT_AFTER_MS });
      assert.deepEqual(start, { negotiated: 2, startPath: 'normal', startCarrier: 'link' });

      // Switch 1: the channel opens mid-stream.
      await waitFor(async () => (await progress(page)).carrier === 'channel', 20_000, 'the resumable connection to move to the channel');
      const onChannel = await progress(page);
      assert.equal(onChannel.path, 'direct');
      assert.ok(onChannel.echoed > 0 && onChannel.echoed < ECHO_MESSAGES, `the channel did not open mid-stream: ${JSON.stringify(onChannel)}`);
      // Traffic on the channel for a while, then the cut.
      await waitFor(async () => (await progress(page)).echoed >= onChannel.echoed + 1000, 20_000, 'echoes over the channel');
      // Every UDP socket home-peer holds (each of its candidates), so no
      // other pair keeps the path alive.
      cutPorts = udpPortsOf(stack.homePeer.child.pid);
      assert.ok(cutPorts.includes(homePeerIcePort(stack.homePeer.log)), `the selected pair's port is not among home-peer's sockets ${cutPorts}`);
      dropUdpPorts('-I', cutPorts);
      const cut = await progress(page);
      assert.ok(cut.echoed < ECHO_MESSAGES && cut.events < SSE_EVENTS, `the cut came after the streams ended: ${JSON.stringify(cut)}`);

      // Switch 2: back to the relay.
      await waitFor(async () => (await progress(page)).carrier === 'link', 20_000, 'the resumable connection to move back to the link');
      await waitFor(
        async () => {
          const p = await progress(page);
          if (p.sseError || p.echoClosed) throw new Error(`a stream failed: ${JSON.stringify(p)}`);
          return p.echoed >= ECHO_MESSAGES && p.sseDone;
        },
        60_000,
        'both streams to finish',
      );
      const run = await page.evaluate(() => ({ echo: window.__run.echo.received, sse: window.__run.sse.received, switches: window.__run.switches, errors: window.__run.echo.errors }));
      assertExactlyOnceInOrder(run.echo, ECHO_MESSAGES, 'echo (each message went up and came back)');
      assertExactlyOnceInOrder(run.sse, SSE_EVENTS, 'server-sent events');
      assert.deepEqual(run.errors, []);
      // Then client.js restarts ICE; the new pair (new ports) is not cut,
      // so the connection moves to a new resume channel once more.
      await waitFor(async () => (await progress(page)).carrier === 'channel', 30_000, 'the path to come back through an ICE restart');
      const switches = await page.evaluate(() => window.__run.switches);
      const moves = switches.map((s) => `${s.previous}->${s.path}`);
      assert.deepEqual(moves, ['normal->direct', 'direct->normal', 'normal->direct'], `switches: ${JSON.stringify(switches)}`);
      for (const s of switches.slice(0, 2)) {
        assert.ok(s.echoed > 0 && s.echoed < ECHO_MESSAGES && s.events > 0 && s.events < SSE_EVENTS, `switch not mid-stream: ${JSON.stringify(s)}`);
      }
      console.log(`migration: to the channel at ${switches[0].at} ms (echoes ${switches[0].echoed}, events ${switches[0].events}); ` +
        `back to the relay at ${switches[1].at} ms (echoes ${switches[1].echoed}, events ${switches[1].events}); ` +
        `to a new channel after an ICE restart at ${switches[2].at} ms (echoes ${switches[2].echoed}, events ${switches[2].events}); ` +
        `${ECHO_MESSAGES} echoes and ${SSE_EVENTS} events each exactly once, in order`);
      assert.deepEqual(problems, []);
    } catch (err) {
      err.message += `\n----- page console -----\n${consoleLines.join('\n')}\n${stack.logs()}`;
      throw err;
    }
  });

  test('home-peer restarts under a resumable connection: the page sees its socket close, nothing twice, and reconnects', async (t) => {
    const stack = await startStack({ homePeer: true, relay: 'link', allowIps: allowIpsFor(kind) });
    t.after(() => stack.stop());
    const consoleLines = [];
    try {
      const { page, problems, close } = await openPage(browser, `${stack.signalUrl}/?webrtc=0`, { waitForClient: false });
      t.after(close);
      page.on('console', (msg) => consoleLines.push(`${new Date().toISOString()} ${msg.text()}`));
      await page.evaluate(async () => {
        const { createClient } = await import('/webrtc/client.js');
        const client = createClient({ enabled: true, resume: true });
        window.__client = client;
        await client.ready;
        window.__ticks = [];
        window.__closes = [];
        const socket = client.websocket('/ws/tick?every_ms=50');
        socket.onmessage = (e) => window.__ticks.push(e.data);
        socket.onclose = (e) => window.__closes.push({ code: e.code, wasClean: e.wasClean });
        await new Promise((resolve, reject) => {
          socket.onopen = resolve;
          socket.onerror = () => reject(new Error('tick socket failed'));
        });
      });
      assert.equal(await page.evaluate(() => window.__client.resume?.carrier), 'channel');
      await waitFor(async () => (await page.evaluate(() => window.__ticks.length)) >= 10, 10_000, 'ticks');
      await stack.restartHomePeer();
      await waitFor(async () => (await page.evaluate(() => window.__closes.length)) === 1, 30_000, 'the page to see its socket close');
      const [closed] = await page.evaluate(() => window.__closes);
      assert.deepEqual(closed, { code: 1006, wasClean: false });
      const ticks = await page.evaluate(() => window.__ticks);
      assert.ok(ticks.every((tick, i) => tick === `tick ${i}`), `ticks duplicated or out of order: ${ticks.slice(0, 20)}`);
      // The connection is gone for good; a new socket goes over the relay (the new home-peer's link).
      assert.equal(await page.evaluate(() => window.__client.resume), null);
      const again = await page.evaluate(async () => {
        const socket = window.__client.websocket('/ws/echo');
        await new Promise((resolve, reject) => {
          socket.onopen = resolve;
          socket.onclose = (e) => reject(new Error(`closed: ${e.code}`));
        });
        const echoed = new Promise((resolve) => {
          socket.onmessage = (e) => resolve(e.data);
        });
        socket.send('again');
        return await echoed;
      });
      assert.equal(again, 'again');
      assert.deepEqual(problems, []);
    } catch (err) {
      err.message += `\n----- page console -----\n${consoleLines.join('\n')}\n${stack.logs()}`;
      throw err;
    }
  });
});
