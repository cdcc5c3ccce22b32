// Headless Firefox ESR (Debian's firefox-esr, driven by puppeteer-core over
// WebDriver BiDi) against beeline-transport (dc-echo), both ways: Firefox
// offers and beeline answers (the product's path), and beeline offers and
// Firefox answers. Each moves 10 MB and 1,000 small messages through the
// echo and checks them. Firefox gathers host candidates only with a default
// route, so run.sh gives the namespace one (a veth to a second, empty
// namespace); its address, BEELINE_NS_ADDR, is the one dc-echo allows.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { launchBrowser } from '../browser/harness.mjs';
import { answerInPage, echoRun, offerInPage } from './exchange.mjs';

const address = process.env.BEELINE_NS_ADDR;
if (!address) throw new Error('BEELINE_NS_ADDR is not set: run this through tests/interop/run.sh');
const ALLOW = ['--allow', address];

let browser;
before(async () => {
  browser = await launchBrowser([], { kind: 'firefox' });
});
after(async () => browser?.close());

async function newPage() {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto('about:blank');
  return { page, context };
}

test('Firefox offers, beeline answers: 10 MB and 1,000 messages echoed intact', { timeout: 150_000 }, () =>
  echoRun({
    newPage,
    echoArgs: ['answer', ...ALLOW, '--max-message-size', '131072'],
    inPage: offerInPage,
    // beeline's a=max-message-size reached Firefox.
    inspect: (result) => assert.equal(result.maxMessageSize, 131072),
  }));

test('beeline offers, Firefox answers: 10 MB and 1,000 messages echoed intact', { timeout: 150_000 }, () =>
  echoRun({
    newPage,
    echoArgs: ['offer', '--open', 'echo', ...ALLOW],
    inPage: answerInPage,
    inspect: (result) => assert.equal(result.maxMessageSize, 262144),
  }));
