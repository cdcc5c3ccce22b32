// What both browser interop tests share: the page's side of a connection
// to dc-echo (as offerer or as answerer), the signaling between them, and
// the echo check run in the page (10 MB of patterned binary chunks and
// 1,000 small text messages) with its assertions.

import assert from 'node:assert/strict';

import { bounded } from '../browser/harness.mjs';
import { startEcho } from './peer.mjs';

// Runs in the page: the echo check on an open channel.
async function exchangeInPage({ total, chunk, small, maxMessageSize }) {
  const channel = window.__channel;
  const pc = window.__pc;
  channel.binaryType = 'arraybuffer';
  const result = { maxMessageSize: pc.sctp?.maxMessageSize ?? null };
  const pattern = (seed, len) => {
    const out = new Uint8Array(len);
    let x = (Math.imul(seed, 2654435761) + 1) >>> 0;
    for (let i = 0; i < len; i++) {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      out[i] = x & 0xff;
    }
    return out;
  };
  const chunks = Math.ceil(total / chunk);
  let bulkIndex = 0, smallIndex = 0, bytes = 0, errors = [];
  const done = new Promise((resolve) => {
    channel.onmessage = ({ data }) => {
      if (bulkIndex < chunks) {
        const len = Math.min(chunk, total - bulkIndex * chunk);
        const got = new Uint8Array(data);
        const want = pattern(bulkIndex, len);
        if (typeof data === 'string' || got.length !== len || got.some((b, i) => b !== want[i])) {
          errors.push(`bulk ${bulkIndex} differs`);
        }
        bytes += got.length;
        bulkIndex++;
      } else {
        if (data !== `small ${smallIndex}`) errors.push(`small ${smallIndex} differs: ${String(data).slice(0, 40)}`);
        smallIndex++;
        if (smallIndex === small) resolve();
      }
    };
  });
  const started = performance.now();
  channel.bufferedAmountLowThreshold = 1 << 20;
  for (let i = 0; i < chunks; i++) {
    if (channel.bufferedAmount > 4 << 20) {
      await new Promise((resolve) => { channel.onbufferedamountlow = resolve; });
    }
    channel.send(pattern(i, Math.min(chunk, total - i * chunk)));
  }
  for (let i = 0; i < small; i++) channel.send(`small ${i}`);
  await done;
  if (maxMessageSize) {
    // A message over what beeline advertised is either refused by Chromium
    // (the spec says send() throws; Chromium 1xx does not) or refused by
    // beeline, which closes the channel rather than truncate it.
    try {
      const closed = new Promise((resolve) => { channel.onclose = () => resolve('closed by beeline'); });
      channel.onmessage = () => { result.oversize = 'echoed'; };
      channel.send(new Uint8Array(maxMessageSize + 1));
      result.oversize = await Promise.race([closed, new Promise((r) => setTimeout(() => r('still open'), 5000))]);
    } catch (e) {
      result.oversize = e.name;
    }
  }
  return { ...result, bytes, secs: (performance.now() - started) / 1000, small: smallIndex, errors: errors.slice(0, 5) };
}

/** Runs exchangeInPage in `page` against `echo` and checks what came back. */
async function check(page, echo, maxMessageSize) {
  const result = await bounded(
    page.evaluate(exchangeInPage, { total: 10 << 20, chunk: 64 * 1024, small: 1000, maxMessageSize }),
    90_000,
    'the exchange',
  );
  const pair = echo.log.find((l) => l.startsWith('pair')) ?? 'no pair line';
  const stack = echo.log.find((l) => l.startsWith('stack')) ?? 'no stack line';
  console.log(`  ${(result.bytes / 1e6).toFixed(1)} MB echoed in ${result.secs.toFixed(2)} s ` +
    `(${(result.bytes / 1e6 / result.secs).toFixed(1)} MB/s each way); beeline ${stack}, ${pair}`);
  // run.sh runs the suite once per stack (BEELINE_STACK, read by dc-echo).
  assert.equal(stack, `stack ${process.env.BEELINE_STACK || 'sansio'}`);
  assert.deepEqual(result.errors, []);
  assert.equal(result.bytes, 10 << 20);
  assert.equal(result.small, 1000);
  return result;
}


/**
 * Runs in the page: offers a channel labelled `echo`; what it sends for
 * dc-echo is queued in `window.__out` (see bridge).
 */
export async function offerInPage() {
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
}

/** Runs in the page: answers dc-echo's offer and takes the channel it opens. */
export function answerInPage() {
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
}

/**
 * Wires page ⇄ dc-echo signaling the same way in every browser: what the
 * page queued in `window.__out` is read every 25 ms; dc-echo's lines go to
 * `window.__onSdp` / `window.__onCandidate`. Returns a function that stops
 * the reading.
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

/** Waits for the page's channel to open. */
function opened(page, ms = 15_000) {
  return page.evaluate((ms) => Promise.race([window.__opened, new Promise((_, no) => setTimeout(() => no(new Error(`channel did not open in ${ms / 1000} s`)), ms))]), ms);
}

/**
 * One interop run: dc-echo started with `echoArgs`, a page from `newPage()`
 * set up by `inPage` (offerInPage or answerInPage), the channel opened
 * within `openMs`, the echo checked (`maxMessageSize` as for check), then
 * `inspect(result)` for the browser's own assertions. dc-echo's log is
 * printed when anything fails; everything is closed either way.
 */
export async function echoRun({ newPage, echoArgs, inPage, openMs = 15_000, maxMessageSize = 0, inspect = () => {} }) {
  const echo = startEcho(echoArgs);
  const { page, context } = await newPage();
  let stop = () => {};
  try {
    await page.evaluate(inPage);
    stop = bridge(page, echo);
    await opened(page, openMs);
    inspect(await check(page, echo, maxMessageSize));
  } catch (e) {
    console.log(echo.log.join('\n'));
    throw e;
  } finally {
    stop();
    await context.close();
    await echo.stop();
  }
}
