// Headless Chromium against beeline-transport (dc-echo), both ways: Chromium
// offers and beeline answers (the product's path), and beeline offers and
// Chromium answers. Each moves 10 MB and 1,000 small messages through the
// echo and checks them. Runs inside the network namespace run.sh creates,
// with only loopback in it.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { answerInPage, bridge, check, offerInPage, opened } from './exchange.mjs';
import { repoRoot, startEcho } from './peer.mjs';

const { chromium } = await import(path.join(repoRoot, 'tests/browser/node_modules/playwright-core/index.mjs'));

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.BEELINE_CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-sync',
      '--disable-background-networking', '--disable-component-update',
      '--allow-loopback-in-peer-connection',
      // Plain host candidates instead of mDNS names (the namespace has no
      // multicast); see docs/transport.md for why `.local` ones need no
      // resolving in production.
      '--disable-features=WebRtcHideLocalIpsWithMdns',
    ],
  });
});
after(async () => browser?.close());

const ALLOW = ['--allow', '127.0.0.1'];

async function newPage() {
  const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  await page.goto('about:blank');
  return { page, context };
}

test('Chromium offers, beeline answers: 10 MB and 1,000 messages echoed intact', { timeout: 120_000 }, async () => {
  const echo = startEcho(['answer', ...ALLOW, '--max-message-size', '131072']);
  const { page, context } = await newPage();
  let stop = () => {};
  try {
    await page.evaluate(offerInPage);
    stop = bridge(page, echo);
    await opened(page, 10_000);
    const result = await check(page, echo, 131072);
    // beeline's a=max-message-size reached Chromium and is enforced there.
    assert.equal(result.maxMessageSize, 131072);
    assert.ok(['TypeError', 'closed by beeline'].includes(result.oversize), `oversize message: ${result.oversize}`);
    console.log(`  max-message-size 131072 seen by Chromium; a 131073-byte message: ${result.oversize}`);
  } catch (e) {
    console.log(echo.log.join('\n'));
    throw e;
  } finally {
    stop();
    await context.close();
    await echo.stop();
  }
});

test('beeline offers, Chromium answers: 10 MB and 1,000 messages echoed intact', { timeout: 120_000 }, async () => {
  const echo = startEcho(['offer', '--open', 'echo', ...ALLOW]);
  const { page, context } = await newPage();
  let stop = () => {};
  try {
    await page.evaluate(answerInPage);
    stop = bridge(page, echo);
    await opened(page, 10_000);
    const result = await check(page, echo, 0);
    assert.equal(result.maxMessageSize, 262144);
  } catch (e) {
    console.log(echo.log.join('\n'));
    throw e;
  } finally {
    stop();
    await context.close();
    await echo.stop();
  }
});
