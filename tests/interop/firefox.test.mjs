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
import { answerInPage, bridge, check, offerInPage, opened } from './exchange.mjs';
import { startEcho } from './peer.mjs';

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

test('Firefox offers, beeline answers: 10 MB and 1,000 messages echoed intact', { timeout: 150_000 }, async () => {
  const echo = startEcho(['answer', ...ALLOW, '--max-message-size', '131072']);
  const { page, context } = await newPage();
  let stop = () => {};
  try {
    await page.evaluate(offerInPage);
    stop = bridge(page, echo);
    await opened(page);
    const result = await check(page, echo, 0);
    // beeline's a=max-message-size reached Firefox.
    assert.equal(result.maxMessageSize, 131072);
  } catch (e) {
    console.log(echo.log.join('\n'));
    throw e;
  } finally {
    stop();
    await context.close();
    await echo.stop();
  }
});

test('beeline offers, Firefox answers: 10 MB and 1,000 messages echoed intact', { timeout: 150_000 }, async () => {
  const echo = startEcho(['offer', '--open', 'echo', ...ALLOW]);
  const { page, context } = await newPage();
  let stop = () => {};
  try {
    await page.evaluate(answerInPage);
    stop = bridge(page, echo);
    await opened(page);
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
