// Headless Chromium against beeline-transport (dc-echo), both ways: Chromium
// offers and beeline answers (the product's path), and beeline offers and
// Chromium answers. Each moves 10 MB and 1,000 small messages through the
// echo and checks them. Runs inside the network namespace run.sh creates,
// with only loopback in it.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { answerInPage, echoRun, offerInPage } from './exchange.mjs';
import { repoRoot } from './peer.mjs';

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

test('Chromium offers, beeline answers: 10 MB and 1,000 messages echoed intact', { timeout: 120_000 }, () =>
  echoRun({
    newPage,
    echoArgs: ['answer', ...ALLOW, '--max-message-size', '131072'],
    inPage: offerInPage,
    openMs: 10_000,
    maxMessageSize: 131072,
    inspect(result) {
      // beeline's a=max-message-size reached Chromium and is enforced there.
      assert.equal(result.maxMessageSize, 131072);
      assert.ok(['TypeError', 'closed by beeline'].includes(result.oversize), `oversize message: ${result.oversize}`);
      console.log(`  max-message-size 131072 seen by Chromium; a 131073-byte message: ${result.oversize}`);
    },
  }));

test('beeline offers, Chromium answers: 10 MB and 1,000 messages echoed intact', { timeout: 120_000 }, () =>
  echoRun({
    newPage,
    echoArgs: ['offer', '--open', 'echo', ...ALLOW],
    inPage: answerInPage,
    openMs: 10_000,
    inspect: (result) => assert.equal(result.maxMessageSize, 262144),
  }));
