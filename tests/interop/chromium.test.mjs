// Headless Chromium against beeline-transport (dc-echo), both ways: Chromium
// offers and beeline answers (the product's path), and beeline offers and
// Chromium answers. Each moves 10 MB and 1,000 small messages through the
// echo and checks them. Runs inside the network namespace run.sh creates,
// with only loopback in it.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { check } from './exchange.mjs';
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

/** Wires page ⇄ dc-echo signaling; the page side calls window.__signal(obj). */
async function bridge(page, echo) {
  await page.exposeFunction('__signal', (signal) => echo.send(signal));
  echo.onSignal((signal) => {
    if (signal.sdp !== undefined) page.evaluate((sdp) => window.__onSdp(sdp), signal.sdp).catch(() => {});
    else if (signal.candidate !== undefined) {
      page.evaluate((c) => window.__onCandidate(c), signal.candidate).catch(() => {});
    }
  });
}

test('Chromium offers, beeline answers: 10 MB and 1,000 messages echoed intact', { timeout: 120_000 }, async () => {
  const echo = startEcho(['answer', ...ALLOW, '--max-message-size', '131072']);
  const { page, context } = await newPage();
  try {
    await bridge(page, echo);
    await page.evaluate(async () => {
      const pc = new RTCPeerConnection();
      window.__pc = pc;
      const channel = pc.createDataChannel('echo');
      window.__opened = new Promise((resolve) => { channel.onopen = resolve; });
      window.__channel = channel;
      pc.onicecandidate = (e) => window.__signal({ candidate: e.candidate ? e.candidate.candidate : '' });
      window.__onSdp = (sdp) => pc.setRemoteDescription({ type: 'answer', sdp });
      window.__onCandidate = (c) => (c ? pc.addIceCandidate({ candidate: c, sdpMid: '0' }) : null);
      await pc.setLocalDescription(await pc.createOffer());
      window.__signal({ sdp: pc.localDescription.sdp });
    });
    await page.evaluate(() => Promise.race([window.__opened, new Promise((_, no) => setTimeout(() => no(new Error('channel did not open in 10 s')), 10_000))]));
    const result = await check(page, echo, 131072);
    // beeline's a=max-message-size reached Chromium and is enforced there.
    assert.equal(result.maxMessageSize, 131072);
    assert.ok(['TypeError', 'closed by beeline'].includes(result.oversize), `oversize message: ${result.oversize}`);
    console.log(`  max-message-size 131072 seen by Chromium; a 131073-byte message: ${result.oversize}`);
  } catch (e) {
    console.log(echo.log.join('\n'));
    throw e;
  } finally {
    await context.close();
    await echo.stop();
  }
});

test('beeline offers, Chromium answers: 10 MB and 1,000 messages echoed intact', { timeout: 120_000 }, async () => {
  const echo = startEcho(['offer', '--open', 'echo', ...ALLOW]);
  const { page, context } = await newPage();
  try {
    await page.evaluate(() => {
      const pc = new RTCPeerConnection();
      window.__pc = pc;
      window.__opened = new Promise((resolve) => {
        pc.ondatachannel = ({ channel }) => {
          window.__channel = channel;
          if (channel.readyState === 'open') resolve();
          else channel.onopen = resolve;
        };
      });
      pc.onicecandidate = (e) => window.__signal({ candidate: e.candidate ? e.candidate.candidate : '' });
      window.__onSdp = async (sdp) => {
        await pc.setRemoteDescription({ type: 'offer', sdp });
        await pc.setLocalDescription(await pc.createAnswer());
        window.__signal({ sdp: pc.localDescription.sdp });
      };
      window.__onCandidate = (c) => (c ? pc.addIceCandidate({ candidate: c, sdpMid: '0' }) : null);
    });
    await bridge(page, echo);
    await page.evaluate(() => Promise.race([window.__opened, new Promise((_, no) => setTimeout(() => no(new Error('channel did not open in 10 s')), 10_000))]));
    const result = await check(page, echo, 0);
    assert.equal(result.maxMessageSize, 262144);
  } catch (e) {
    console.log(echo.log.join('\n'));
    throw e;
  } finally {
    await context.close();
    await echo.stop();
  }
});
