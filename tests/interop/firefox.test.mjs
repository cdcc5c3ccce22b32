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
import { check } from './exchange.mjs';
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

/**
 * Wires page ⇄ dc-echo signaling without exposed functions: the page queues
 * what it sends in `window.__out`, read here every 25 ms; dc-echo's lines
 * go to `window.__onSdp` / `window.__onCandidate`.
 */
function bridge(page, echo) {
  let stopped = false;
  (async () => {
    while (!stopped) {
      const out = await page.evaluate(() => (window.__out ?? []).splice(0)).catch(() => []);
      for (const signal of out) echo.send(signal);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  })();
  echo.onSignal((signal) => {
    if (signal.sdp !== undefined) page.evaluate((sdp) => window.__onSdp(sdp), signal.sdp).catch(() => {});
    else if (signal.candidate !== undefined) page.evaluate((c) => window.__onCandidate(c), signal.candidate).catch(() => {});
  });
  return () => {
    stopped = true;
  };
}

const opened = (page) =>
  page.evaluate(() => Promise.race([window.__opened, new Promise((_, no) => setTimeout(() => no(new Error('channel did not open in 15 s')), 15_000))]));

test('Firefox offers, beeline answers: 10 MB and 1,000 messages echoed intact', { timeout: 150_000 }, async () => {
  const echo = startEcho(['answer', ...ALLOW, '--max-message-size', '131072']);
  const { page, context } = await newPage();
  let stop = () => {};
  try {
    await page.evaluate(async () => {
      window.__out = [];
      const pc = new RTCPeerConnection();
      window.__pc = pc;
      const channel = pc.createDataChannel('echo');
      window.__opened = new Promise((resolve) => { channel.onopen = resolve; });
      window.__channel = channel;
      pc.onicecandidate = (e) => window.__out.push({ candidate: e.candidate ? e.candidate.candidate : '' });
      window.__onSdp = (sdp) => pc.setRemoteDescription({ type: 'answer', sdp });
      window.__onCandidate = (c) => (c ? pc.addIceCandidate({ candidate: c, sdpMid: '0' }) : null);
      await pc.setLocalDescription(await pc.createOffer());
      window.__out.push({ sdp: pc.localDescription.sdp });
    });
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
    await page.evaluate(() => {
      window.__out = [];
      const pc = new RTCPeerConnection();
      window.__pc = pc;
      window.__opened = new Promise((resolve) => {
        pc.ondatachannel = ({ channel }) => {
          window.__channel = channel;
          if (channel.readyState === 'open') resolve();
          else channel.onopen = resolve;
        };
      });
      pc.onicecandidate = (e) => window.__out.push({ candidate: e.candidate ? e.candidate.candidate : '' });
      window.__onSdp = async (sdp) => {
        await pc.setRemoteDescription({ type: 'offer', sdp });
        await pc.setLocalDescription(await pc.createAnswer());
        window.__out.push({ sdp: pc.localDescription.sdp });
      };
      window.__onCandidate = (c) => (c ? pc.addIceCandidate({ candidate: c, sdpMid: '0' }) : null);
    });
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
