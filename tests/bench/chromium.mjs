// Headless-Chromium side of `just bench`: the browser is the real user, so
// setup time, round trips, streamed-token delay, throughput and near/far are
// measured in a page that loads beeline's client.js from signal-api, exactly
// as an application page would.
//
//   node chromium.mjs --mode loopback --origin http://127.0.0.1:P --upstream http://127.0.0.1:Q --out FILE [...]
//   node chromium.mjs --mode far --origin http://10.77.2.2:P --out FILE
//   (--only bundle,loopback_tier runs only those phases of loopback mode)
//
// `beeline-bench` starts it (inside the namespace it runs in) against a
// stack of real binaries; it never starts servers itself. Every loop is
// bounded in count and in time. Writes one JSON file shaped like the Rust
// side's (summaries: n, min, p50, p90, p99, max; raw round-trip samples).

import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

// The browser tests' launcher and context: the same Chromium, flags and
// camera/microphone permission (plain host candidates, not mDNS names).
import { launchBrowser, newContext } from '../browser/harness.mjs';

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--')) throw new Error(`unexpected argument ${argv[i]}`);
    out[argv[i].slice(2)] = argv[i + 1];
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const mode = args.mode ?? 'loopback';
const num = (name, fallback) => (args[name] !== undefined ? Number(args[name]) : fallback);

const log = (...a) => console.error('chromium bench:', ...a);
// `--only a,b`: run only these phases (the keys of the result), e.g. for a quick look.
const only = args.only ? new Set(args.only.split(',')) : null;
const wants = (key) => only === null || only.has(key);

/** Binary transfers each way, and Chromium↔Chromium runs: an odd count, so the median is a run. */
const THROUGHPUT_REPS = 3;

const browser = await launchBrowser([
  // Keep timers and the network stack at full speed in a background tab.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
]);

let exitCode = 0;
try {
  const context = await newContext(browser);
  const page = await context.newPage();
  page.on('pageerror', (err) => log('pageerror:', err.message));
  await page.goto(`${args.origin}/bench/page`);
  await page.evaluate(installHelpers);

  const result = { mode, user_agent: await page.evaluate(() => navigator.userAgent) };
  if (mode === 'loopback') {
    if (wants('bundle')) result.bundle = await phase('client.js bundle size', () => measureBundle(args.origin));
    if (wants('setup')) result.setup = await phase('setup', () => page.evaluate(measureSetup, { n: num('setups', 20) }));
    // Only when home-peer runs its loopback listener (the session offers it).
    if (wants('loopback_tier')) result.loopback_tier = await phase('loopback tier', () =>
      page.evaluate(measureLoopbackTier, { setups: num('setups', 20), warmup: 50, n: num('round-trips', 500), upstream: args.upstream, budgetMs: 60_000 }),
    );
    if (wants('chromium_echo')) result.chromium_echo = await phase('Chromium↔Chromium echo', () => page.evaluate(measureChromiumEcho, { n: 500 }));
    if (wants('clientjs_protocol')) result.clientjs_protocol = await phase('client.js protocol alone', () => page.evaluate(measureClientJsProtocol, { n: 1000 }));
    if (wants('rtt')) result.rtt = await phase('round trips', () =>
      page.evaluate(measureRoundTrips, { warmup: 50, n: num('round-trips', 500), upstream: args.upstream, relay: true, budgetMs: 60_000 }),
    );
    if (wants('sse')) result.sse = await phase('token delay', () =>
      page.evaluate(measureSse, { events: num('sse-events', 1000), intervalMs: num('sse-interval-ms', 20), upstream: args.upstream }),
    );
    if (wants('throughput')) result.throughput = await phase('throughput', () =>
      measureThroughput(page, { bytes: num('transfer-bytes', 100_000_000), reps: THROUGHPUT_REPS, budgetMs: 60_000, homePid: num('home-pid', 0), browserPid: process.pid }),
    );
    // Last: 100 MB of garbage for Chromium's collector must not land in the latency phases.
    // As many runs as the binary transfers it is compared with, and the
    // median of each: one run of either side is at the mercy of the
    // machine's other tenants.
    if (wants('chromium_throughput')) result.chromium_throughput = await phase('Chromium↔Chromium throughput', async () => {
      const runs = [];
      for (let rep = 0; rep < THROUGHPUT_REPS; rep++) {
        const before = treeCpuSecs(process.pid);
        const run = await page.evaluate(measureChromiumThroughput, { bytes: num('transfer-bytes', 100_000_000), budgetMs: 60_000 });
        run.chromium_and_node_cpu_secs = treeCpuSecs(process.pid) - before;
        runs.push(run);
      }
      const middle = medianRun(runs);
      return { ...middle, runs };
    });
  } else {
    result.delay = args.delay;
    result.setup_ms = await phase('setup (far)', async () => (await page.evaluate(measureSetup, { n: 3 })).open);
    const rtt = await phase('round trips (far)', () => page.evaluate(measureRoundTrips, { warmup: 3, n: 30, upstream: null, relay: true, budgetMs: 60_000 }));
    if (rtt) result.rtt = { direct: rtt.channel, relay: rtt.relay, samples: { direct: rtt.samples.channel, relay: rtt.samples.relay } };
    result.first_token = await phase('first token (far)', () => page.evaluate(measureFirstToken, { n: 10 }));
  }
  writeFileSync(args.out, JSON.stringify(result, null, 2));
  log(`wrote ${args.out}`);
} catch (err) {
  log('failed:', err?.stack ?? err);
  exitCode = 1;
} finally {
  await browser.close();
}
process.exit(exitCode);

/**
 * The bundle signal-api serves at {base}/client.js: its size as served
 * (minified) and gzipped (level 9, as a server would compress it at best).
 */
async function measureBundle(origin) {
  const res = await fetch(`${origin}/webrtc/client.js`);
  if (!res.ok) throw new Error(`GET /webrtc/client.js answered ${res.status}`);
  const bytes = Buffer.from(await res.arrayBuffer());
  return { bytes: bytes.length, gzip_bytes: gzipSync(bytes, { level: 9 }).length };
}

/** CPU seconds (user + system) used so far by `pid` and all its descendants. */
function treeCpuSecs(pid) {
  if (!pid) return NaN;
  const stats = new Map();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      stats.set(Number(entry), { ppid: Number(fields[1]), cpu: (Number(fields[11]) + Number(fields[12])) / 100 });
    } catch {
      // Gone meanwhile.
    }
  }
  let total = 0;
  const tree = new Set([pid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [p, s] of stats) {
      if (!tree.has(p) && tree.has(s.ppid)) {
        tree.add(p);
        grew = true;
      }
    }
  }
  for (const p of tree) total += stats.get(p)?.cpu ?? 0;
  return total;
}

/** The run whose `mb_per_s` is the median (the lower middle one for an even count). */
function medianRun(runs) {
  const ok = runs.filter((r) => Number.isFinite(r.mb_per_s)).sort((a, b) => a.mb_per_s - b.mb_per_s);
  return ok.length ? ok[Math.floor((ok.length - 1) / 2)] : runs[0] ?? {};
}

async function measureThroughput(page, { bytes, reps, budgetMs, homePid, browserPid }) {
  await page.evaluate(prepareThroughput, { bytes });
  const out = {};
  for (const framing of ['binary', 'json']) {
    const info = await page.evaluate(openFraming, { framing });
    const runs = { down: [], up: [] };
    const n = framing === 'binary' ? reps : 1;
    for (let rep = 0; rep < n; rep++) {
      for (const direction of ['down', 'up']) {
        log(`throughput ${framing} ${direction} ${rep + 1}/${n}…`);
        const before = [treeCpuSecs(homePid), treeCpuSecs(browserPid)];
        const run = await page.evaluate(transferOnce, { framing, direction, bytes, budgetMs });
        const after = [treeCpuSecs(homePid), treeCpuSecs(browserPid)];
        run.home_peer_cpu_secs = after[0] - before[0];
        // Chromium's processes are children of this node process.
        run.chromium_and_node_cpu_secs = after[1] - before[1];
        runs[direction].push(run);
      }
    }
    await page.evaluate(closeFraming, { framing });
    const median = (list) => medianRun(list).mb_per_s ?? null;
    out[framing] = { ...info, down: { median_mb_per_s: median(runs.down), runs: runs.down }, up: { median_mb_per_s: median(runs.up), runs: runs.up } };
  }
  return out;
}

/** Runs one phase; a failing phase is logged and left out. */
async function phase(name, fn) {
  log(`${name}…`);
  try {
    return await fn();
  } catch (err) {
    log(`${name} failed:`, err?.message ?? err);
    return null;
  }
}

// ---- code that runs in the page --------------------------------------------

function installHelpers() {
  const now = () => performance.now();
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const withTimeout = (promise, ms, what) =>
    Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms))]);
  const summary = (samples) => {
    const v = samples.filter(Number.isFinite).sort((a, b) => a - b);
    const pct = (p) => (v.length ? v[Math.min(v.length, Math.max(1, Math.ceil((p / 100) * v.length))) - 1] : null);
    return { n: v.length, min: v[0] ?? null, p50: pct(50), p90: pct(90), p99: pct(99), max: v.at(-1) ?? null };
  };
  async function openClient(options = {}) {
    const { createClient } = await import('/webrtc/client.js');
    // The channel's figures: no loopback tier even where home-peer offers it.
    const client = createClient({ enabled: true, loopback: false, ...options });
    const path = await withTimeout(client.ready, 10_000, 'setup');
    if (path !== 'direct') throw new Error(`no direct channel (path ${path})`);
    const info = await withTimeout(client.negotiated, 5_000, 'negotiation');
    return { client, info };
  }
  // Splits SSE text into `data: <seq> <µs>` events; records write → arrival delays.
  function sseParser(delays) {
    let buf = '';
    const decoder = new TextDecoder();
    return (chunk) => {
      const arrival = performance.timeOrigin + performance.now();
      buf += typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true });
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const parts = event.replace(/^data:\s*/, '').trim().split(/\s+/);
        const written = Number(parts[1]);
        if (Number.isFinite(written)) delays.push(arrival - written / 1000);
      }
    };
  }
  async function readAll(response, onChunk) {
    const reader = response.body.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      onChunk(value);
    }
  }
  // Chromium's own floor: two RTCPeerConnections in this page with no beeline
  // code on either side. `onRemote` gets the answering side's channel.
  async function chromiumPair(onRemote) {
    const a = new RTCPeerConnection();
    const b = new RTCPeerConnection();
    a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate).catch(() => {});
    b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate).catch(() => {});
    b.ondatachannel = ({ channel }) => onRemote(channel);
    const ch = a.createDataChannel('floor');
    ch.binaryType = 'arraybuffer';
    await a.setLocalDescription(await a.createOffer());
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription(await b.createAnswer());
    await a.setRemoteDescription(b.localDescription);
    await withTimeout(new Promise((resolve) => (ch.onopen = resolve)), 10_000, 'floor channel');
    return { ch, close: () => (a.close(), b.close()) };
  }

  window.__bench = { now, sleep, withTimeout, summary, openClient, sseParser, readAll, chromiumPair };
}

async function measureSetup({ n }) {
  const { now, sleep, summary, withTimeout } = window.__bench;
  const { createClient } = await import('/webrtc/client.js');
  const open = [];
  const negotiated = [];
  let failures = 0;
  // One unrecorded warm-up: the first RTCPeerConnection of a page pays for
  // loading WebRTC itself.
  for (let i = 0; i <= n; i++) {
    const t0 = now();
    const client = createClient({ enabled: true, loopback: false });
    try {
      const path = await withTimeout(client.ready, 10_000, 'setup');
      const t1 = now();
      if (path !== 'direct') throw new Error(`path ${path}`);
      await withTimeout(client.negotiated, 5_000, 'negotiation');
      const t2 = now();
      if (i > 0) {
        open.push(t1 - t0);
        negotiated.push(t2 - t0);
      }
    } catch (err) {
      failures += 1;
      console.warn('setup failed', err.message);
    } finally {
      client.close();
    }
    await sleep(50);
  }
  return { failures, open: summary(open), negotiated: summary(negotiated), samples_open: open };
}

// The loopback tier (home-peer's loopback listener): how long a page waits
// from createClient until the path is chosen, and a small GET through the
// client over loopback against a plain fetch of the same URL from the home
// service, interleaved. Null figures when the session offers no listener.
async function measureLoopbackTier({ setups, warmup, n, upstream, budgetMs }) {
  const { now, sleep, summary, withTimeout } = window.__bench;
  const { createClient } = await import('/webrtc/client.js');
  const choose = [];
  let client = null;
  // One unrecorded warm-up, as for setup.
  for (let i = 0; i <= setups; i++) {
    client?.close();
    const t0 = now();
    client = createClient({ enabled: true });
    const path = await withTimeout(client.ready, 10_000, 'choosing the path');
    const ms = now() - t0;
    if (path !== 'loopback') {
      client.close();
      return { error: `the path chosen was ${path}, not loopback (is home-peer's loopback listener on?)` };
    }
    if (i > 0) choose.push(ms);
    await sleep(20);
  }
  const samples = { loopback: [], http: [] };
  const deadline = now() + budgetMs;
  const time = async (f) => {
    const t = now();
    const res = await f();
    await res.text();
    if (!res.ok) throw new Error(`status ${res.status}`);
    return { ms: now() - t, path: res.headers.get('x-beeline-path') };
  };
  for (let i = 0; i < warmup + n && now() < deadline; i++) {
    const keep = i >= warmup;
    // The default cache mode (the home service answers no-store, so nothing
    // comes from the HTTP cache): with 'no-store' or 'no-cache' Chromium
    // skips its CORS preflight cache, and every loopback request (which
    // carries x-beeline-ticket) would cost a preflight first.
    const l = await time(() => client.fetch('/bench/small'));
    if (l.path !== 'loopback') throw new Error(`a request went ${l.path ?? 'the normal way'}, not over loopback`);
    const h = await time(() => fetch(`${upstream}/bench/small`));
    if (keep) {
      samples.loopback.push(l.ms);
      samples.http.push(h.ms);
    }
  }
  const timing = client.timing;
  client.close();
  return { choose: summary(choose), probe_rtt_ms: timing.rttMs, rtt: { loopback: summary(samples.loopback), http: summary(samples.http) }, samples_choose: choose };
}

async function measureRoundTrips({ warmup, n, upstream, relay, budgetMs }) {
  const { now, summary, openClient } = window.__bench;
  const { client } = await openClient();
  const samples = { channel: [], http: [], relay: [] };
  const deadline = now() + budgetMs;
  const time = async (f) => {
    const t = now();
    const res = await f();
    await res.text();
    if (!res.ok) throw new Error(`status ${res.status}`);
    return now() - t;
  };
  for (let i = 0; i < warmup + n && now() < deadline; i++) {
    const keep = i >= warmup;
    const c = await time(() => client.fetch('/bench/small', { cache: 'no-store' }));
    if (keep) samples.channel.push(c);
    if (upstream) {
      const h = await time(() => fetch(`${upstream}/bench/small`, { cache: 'no-store' }));
      if (keep) samples.http.push(h);
    }
    if (relay) {
      const r = await time(() => fetch('/bench/small', { cache: 'no-store' }));
      if (keep) samples.relay.push(r);
    }
  }
  // The channel alone, back to back. Above, each channel request follows a
  // plain fetch whose own work in Chromium (the connection going back to
  // its pool, the request's bookkeeping) is still running; here the page
  // does what a page on the direct path does, channel requests only.
  samples.channel_alone = [];
  for (let i = 0; i < warmup + n && now() < deadline; i++) {
    const c = await time(() => client.fetch('/bench/small', { cache: 'no-store' }));
    if (i >= warmup) samples.channel_alone.push(c);
  }
  client.close();
  return {
    channel: summary(samples.channel),
    http: summary(samples.http),
    relay: summary(samples.relay),
    channel_alone: summary(samples.channel_alone),
    samples,
  };
}

async function measureSse({ events, intervalMs, upstream }) {
  const { summary, openClient, sseParser, readAll, withTimeout } = window.__bench;
  const { client } = await openClient();
  const url = `/bench/sse?n=${events}&interval_ms=${intervalMs}`;
  const budget = events * intervalMs + 30_000;
  const channel = [];
  const http = [];
  // Side by side: the same stream over the channel and over plain HTTP.
  await withTimeout(
    Promise.all([
      client.fetch(url, { cache: 'no-store' }).then((res) => readAll(res, sseParser(channel))),
      fetch(`${upstream}${url}`, { cache: 'no-store' }).then((res) => readAll(res, sseParser(http))),
    ]),
    budget,
    'token stream',
  );
  client.close();
  return { events, interval_ms: intervalMs, channel: summary(channel), http: summary(http) };
}

// Throughput runs one transfer per page.evaluate, so that node can read the
// CPU time home-peer and Chromium used around each one.
async function prepareThroughput({ bytes }) {
  // The upstream's pattern (xorshift64, 1 MiB, repeated), so its sink can check the upload.
  const PATTERN_LEN = 1 << 20;
  const pattern = new Uint8Array(PATTERN_LEN);
  let x = 0x9e3779b97f4a7c15n;
  const mask = (1n << 64n) - 1n;
  const view = new DataView(pattern.buffer);
  for (let off = 0; off < PATTERN_LEN; off += 8) {
    x ^= (x << 13n) & mask;
    x ^= x >> 7n;
    x ^= (x << 17n) & mask;
    view.setBigUint64(off, x, true);
  }
  const upload = new Uint8Array(bytes);
  for (let off = 0; off < bytes; off += PATTERN_LEN) upload.set(pattern.subarray(0, Math.min(PATTERN_LEN, bytes - off)), off);
  window.__bench.upload = upload;
  window.__bench.clients = {};
}

async function openFraming({ framing }) {
  const features = framing === 'binary' ? ['binary', 'cancel', 'credit'] : ['cancel', 'credit'];
  const { client, info } = await window.__bench.openClient({ features });
  window.__bench.clients[framing] = client;
  return { negotiated_binary: info?.binary ?? null };
}

function closeFraming({ framing }) {
  window.__bench.clients[framing]?.close();
}

async function transferOnce({ framing, direction, bytes, budgetMs }) {
  const { now, withTimeout } = window.__bench;
  const client = window.__bench.clients[framing];
  const abort = new AbortController();
  const t = now();
  let got = 0;
  let complete = false;
  try {
    if (direction === 'down') {
      const res = await client.fetch(`/bench/bytes?n=${bytes}`, { signal: abort.signal, cache: 'no-store' });
      const reader = res.body.getReader();
      const deadline = t + budgetMs;
      for (;;) {
        if (now() > deadline) {
          abort.abort();
          break;
        }
        const { value, done } = await reader.read();
        if (done) break;
        got += value.byteLength;
      }
      complete = got === bytes;
    } else {
      const text = await withTimeout(
        client.fetch('/bench/sink', { method: 'POST', body: window.__bench.upload, signal: abort.signal, cache: 'no-store' }).then((r) => r.text()),
        budgetMs,
        'upload',
      );
      complete = text === `${bytes} intact`;
      if (!complete) console.warn('upload check failed:', text);
      got = complete ? bytes : 0;
    }
  } catch (err) {
    abort.abort();
    console.warn(`${direction} failed`, err.message);
  }
  const secs = (now() - t) / 1000;
  return { bytes: got, secs, mb_per_s: complete ? got / 1e6 / secs : null, complete };
}

// What Chromium alone costs per round trip of a small message.
async function measureChromiumEcho({ n }) {
  const { now, summary, chromiumPair } = window.__bench;
  const pair = await chromiumPair((channel) => {
    channel.onmessage = (e) => channel.send(e.data);
  });
  const payload = new Uint8Array(64);
  const samples = [];
  for (let i = 0; i < n + 50; i++) {
    const t = now();
    await new Promise((resolve) => {
      pair.ch.onmessage = resolve;
      pair.ch.send(payload);
    });
    if (i >= 50) samples.push(now() - t);
  }
  pair.close();
  return summary(samples);
}

// How fast Chromium moves bytes between two of its own peers here: `bytes`
// one way in 64 KiB messages, the sender kept at most 1 MiB ahead (as
// client.js and the home peer are). Both ends are Chromium, so this is the
// ceiling for a page whose other end costs nothing.
async function measureChromiumThroughput({ bytes, budgetMs }) {
  const { now, withTimeout, chromiumPair } = window.__bench;
  let got = 0;
  let done;
  const finished = new Promise((resolve) => (done = resolve));
  const pair = await chromiumPair((channel) => {
    channel.binaryType = 'arraybuffer';
    channel.onmessage = (e) => {
      got += e.data.byteLength;
      if (got >= bytes) done();
    };
  });
  const { ch } = pair;
  const piece = new Uint8Array(64 * 1024);
  ch.bufferedAmountLowThreshold = 256 * 1024;
  const t = now();
  const send = (async () => {
    for (let sent = 0; sent < bytes; ) {
      if (ch.bufferedAmount > 1024 * 1024) {
        await new Promise((resolve) => (ch.onbufferedamountlow = resolve));
      }
      const n = Math.min(piece.length, bytes - sent);
      ch.send(n === piece.length ? piece : piece.subarray(0, n));
      sent += n;
    }
  })();
  let complete = true;
  try {
    await withTimeout(Promise.all([send, finished]), budgetMs, 'Chromium↔Chromium transfer');
  } catch {
    complete = false;
  }
  const secs = (now() - t) / 1000;
  pair.close();
  return { bytes: got, secs, mb_per_s: complete ? got / 1e6 / secs : null, complete };
}

// client.js alone: its v2 protocol (binary framing) against a fake link
// that answers every request at once with RESPONSE, DATA("ok"), END, each
// delivered as its own task like channel messages are. No network: what is
// left is the JavaScript cost of one small request, from `start` to the
// body read.
async function measureClientJsProtocol({ n }) {
  const { now, summary, withTimeout } = window.__bench;
  const { ChannelProtocol, codec } = await import('/webrtc/client.js');
  const port = new MessageChannel();
  let protocol;
  port.port2.onmessage = (e) => protocol.receive(e.data);
  const deliver = (message) => port.port1.postMessage(message);
  const link = {
    maxMessageSize: 262144,
    send(message) {
      if (typeof message === 'string') {
        if (message.includes('"hello"')) deliver(codec.encodeJson({ type: 'agree', version: 2, features: ['binary', 'cancel', 'credit'], window: 262144 }));
        return;
      }
      const frame = codec.decodeBinary(message);
      if (frame.type !== 'request') return;
      deliver(codec.encodeBinary({ type: 'response', id: frame.id, status: 200, headers: { 'content-type': 'text/plain' } }));
      deliver(codec.encodeBinary({ type: 'data', id: frame.id, data: new TextEncoder().encode('ok') }));
      deliver(codec.encodeBinary({ type: 'end', id: frame.id }));
    },
    congested: () => false,
    drained: () => Promise.resolve(),
    close() {},
  };
  protocol = new ChannelProtocol(link, {});
  protocol.open();
  const info = await withTimeout(protocol.negotiated, 2_000, 'fake agree');
  if (!protocol.streams) throw new Error(`fake link negotiated ${JSON.stringify(info)}`);
  const samples = [];
  for (let i = 0; i < n + 100; i++) {
    const t = now();
    const res = await protocol.streams.start({ method: 'GET', path: '/bench/small', headers: { host: location.host }, body: null });
    await res.text();
    if (i >= 100) samples.push(now() - t);
  }
  protocol.closeAll();
  // The same fake round trip without client.js: three posted messages.
  const bare = [];
  for (let i = 0; i < n; i++) {
    const t = now();
    await new Promise((resolve) => {
      let left = 3;
      const ch = new MessageChannel();
      ch.port2.onmessage = () => --left === 0 && resolve();
      for (let k = 0; k < 3; k++) ch.port1.postMessage(k);
    });
    bare.push(now() - t);
  }
  return { protocol: summary(samples), bare_message_hops: summary(bare) };
}

async function measureFirstToken({ n }) {
  const { now, summary, openClient } = window.__bench;
  const { client } = await openClient();
  const direct = [];
  const relay = [];
  const first = async (f) => {
    const t = now();
    const res = await f();
    const reader = res.body.getReader();
    const { done } = await reader.read();
    const ms = now() - t;
    while (!(await reader.read()).done) {
      // drain
    }
    return done ? NaN : ms;
  };
  const url = '/bench/sse?n=2&interval_ms=5';
  for (let i = 0; i < n; i++) {
    direct.push(await first(() => client.fetch(url, { cache: 'no-store' })));
    relay.push(await first(() => fetch(url, { cache: 'no-store' })));
  }
  client.close();
  return { direct: summary(direct), relay: summary(relay) };
}
