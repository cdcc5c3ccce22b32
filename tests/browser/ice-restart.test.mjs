// ICE restart from the browser (issue 12), in headless Chromium and Firefox ESR: the data
// channel's UDP path is cut (iptables DROP on every UDP port of home-peer, inside
// this run's namespace) while a response streams over it. client.js sees
// the connection go 'disconnected' and restarts ICE; home-peer answers under
// the same session, a new pair (new ports on both sides) takes over, and
// the same channel carries on: the stream in flight completes, every line
// once and in order, and the page is back on the direct path.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { allowIpsFor, browserKinds, dropUdpPorts, homePeerIcePort, launchBrowser, openPage, startStack, udpPortsOf, waitFor } from './harness.mjs';

const TICKS = 300;
const INTERVAL_MS = 50;


for (const kind of browserKinds()) describe(`ICE restart in ${kind}`, () => {
  let browser;
  before(async () => {
    browser = await launchBrowser([], { kind });
  });
  after(async () => {
    await browser?.close();
  });

  test('a cut path comes back through an ICE restart: the same channel carries on and the stream in flight completes', async (t) => {
    const stack = await startStack({ homePeer: true, allowIps: allowIpsFor(kind) });
    let cutPorts = [];
    const consoleLines = [];
    t.after(async () => {
      if (cutPorts.length > 0) dropUdpPorts('-D', cutPorts);
      await stack.stop();
    });
    try {
      const { page, problems, close } = await openPage(browser, `${stack.signalUrl}/`);
      t.after(close);
      page.on('console', (msg) => consoleLines.push(`${new Date().toISOString()} ${msg.text()}`));
      assert.equal(await page.evaluate(() => window.__beeline.ready), 'direct');
      await page.evaluate(
        async ({ ticks, interval }) => {
          const client = window.__beeline;
          const run = { lines: [], states: [], paths: [], done: false, error: null };
          window.__run = run;
          client.addEventListener('pathchange', (e) => run.paths.push(e.detail.path));
          // The one peer connection the client made: its state changes.
          const response = await client.fetch(`/test/stream?id=restart&ticks=${ticks}&interval_ms=${interval}`);
          (async () => {
            try {
              const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
              let buffer = '';
              for (;;) {
                const { value, done } = await reader.read();
                if (done) break;
                buffer += value;
                const parts = buffer.split('\n');
                buffer = parts.pop();
                run.lines.push(...parts);
              }
              run.done = true;
            } catch (err) {
              run.error = String(err);
            }
          })();
        },
        { ticks: TICKS, interval: INTERVAL_MS },
      );
      const progress = () => page.evaluate(() => ({ lines: window.__run.lines.length, done: window.__run.done, error: window.__run.error, path: window.__beeline.path }));
      await waitFor(async () => (await progress()).lines >= 20, 10_000, 'lines over the channel');

      // Every UDP socket home-peer holds (each of its candidates), so no
      // other pair keeps the path alive.
      cutPorts = udpPortsOf(stack.homePeer.child.pid);
      assert.ok(cutPorts.includes(homePeerIcePort(stack.homePeer.log)), `the selected pair's port is not among home-peer's sockets ${cutPorts}`);
      const cutAt = Date.now();
      dropUdpPorts('-I', cutPorts);
      const atCut = await progress();
      assert.ok(atCut.lines < TICKS, 'the stream ended before the cut');

      // home-peer answers the browser's restart, and the path is back.
      await waitFor(async () => stack.homePeer.log.includes('ICE restart from the browser'), 20_000, 'home-peer to answer an ICE restart');
      await waitFor(async () => !cutPorts.includes(homePeerIcePort(stack.homePeer.log)), 20_000, 'a new pair on a new port');
      const backAt = Date.now();
      await waitFor(
        async () => {
          const p = await progress();
          if (p.error) throw new Error(`the stream failed: ${p.error}`);
          return p.done;
        },
        TICKS * INTERVAL_MS + 30_000,
        'the stream to complete',
      );
      const run = await page.evaluate(() => window.__run);
      assert.deepEqual(run.lines, Array.from({ length: TICKS }, (_, i) => `tick ${i}`), 'lines lost, doubled or reordered');
      assert.equal(await page.evaluate(() => window.__beeline.path), 'direct');
      // The restart went through the same peer connection and channel:
      // the session count at signal-api did not grow.
      const sessions = stack.homePeer.log.match(/direct channel open/g)?.length ?? 0;
      assert.equal(sessions, 1, 'a second channel was opened instead of restarting ICE');
      console.log(`ice restart: path back ${backAt - cutAt} ms after the cut (${atCut.lines} lines before it); ${TICKS} lines once and in order`);
      assert.deepEqual(problems, []);
    } catch (err) {
      err.message += `\n----- page console -----\n${consoleLines.join('\n')}\n${stack.logs()}`;
      throw err;
    }
  });
});
