// ICE restart from the browser (issue 12), in headless Chromium: the data
// channel's UDP path is cut (iptables DROP on home-peer's ICE port, inside
// this run's namespace) while a response streams over it. client.js sees
// the connection go 'disconnected' and restarts ICE; home-peer answers under
// the same session, a new pair (new ports on both sides) takes over, and
// the same channel carries on: the stream in flight completes, every line
// once and in order, and the page is back on the direct path.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';

import { launchBrowser, openPage, startStack, waitFor } from './harness.mjs';

const TICKS = 300;
const INTERVAL_MS = 50;

// The UDP port of home-peer's selected pair, from its last INFO line.
function homePeerPort(log) {
  const matches = [...log.matchAll(/state=Connected local=\w+ [0-9.]+:(\d+)/g)];
  if (matches.length === 0) throw new Error(`home-peer logged no connected pair:\n${log}`);
  return matches.at(-1)[1];
}

function iptables(action, port) {
  for (const dir of ['--dport', '--sport']) {
    execFileSync('iptables', [action, 'INPUT', '-p', 'udp', dir, port, '-j', 'DROP']);
  }
}

describe('ICE restart in chromium', () => {
  let browser;
  before(async () => {
    browser = await launchBrowser([], { kind: 'chromium' });
  });
  after(async () => {
    await browser?.close();
  });

  test('a cut path comes back through an ICE restart: the same channel carries on and the stream in flight completes', async (t) => {
    const stack = await startStack({ homePeer: true, allowIps: ['127.0.0.1'] });
    let cutPort = null;
    const consoleLines = [];
    t.after(async () => {
      if (cutPort !== null) iptables('-D', cutPort);
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

      cutPort = homePeerPort(stack.homePeer.log);
      const cutAt = Date.now();
      iptables('-I', cutPort);
      const atCut = await progress();
      assert.ok(atCut.lines < TICKS, 'the stream ended before the cut');

      // home-peer answers the browser's restart, and the path is back.
      await waitFor(async () => stack.homePeer.log.includes('ICE restart from the browser'), 20_000, 'home-peer to answer an ICE restart');
      await waitFor(async () => homePeerPort(stack.homePeer.log) !== cutPort, 20_000, 'a new pair on a new port');
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
