// Shared setup for the browser tests: starts demo-chat, signal-api and
// (optionally) home-peer on 127.0.0.1 with free ports, launches headless
// Chromium, and drives the demo chat page the way a person would.
//
// Everything binds to loopback only; run.sh puts the whole run in a fresh
// network namespace so no WebRTC packet can leave it.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Where the Rust binaries are: `$BEELINE_BIN_DIR` (relative to the repo root) or target/debug. */
export const binDir = path.resolve(repoRoot, process.env.BEELINE_BIN_DIR ?? 'target/debug');

const CHROMIUM = process.env.BEELINE_CHROMIUM ?? '/usr/bin/chromium';
const START_TIMEOUT_MS = 15_000;

const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A child process whose output is kept, so a failing test can show it. */
class Service {
  #lines = [];
  #exited = null;
  #exitWaiters = [];

  constructor(name, args) {
    const file = path.join(binDir, name);
    if (!existsSync(file)) {
      throw new Error(`${file} does not exist; build the binaries first (cargo build --bins)`);
    }
    this.name = name;
    this.child = spawn(file, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NO_COLOR: '1', RUST_LOG: process.env.RUST_LOG ?? 'info' },
    });
    for (const stream of [this.child.stdout, this.child.stderr]) {
      let partial = '';
      stream.setEncoding('utf8');
      stream.on('data', (text) => {
        const parts = (partial + text).split('\n');
        partial = parts.pop();
        for (const line of parts) this.#lines.push(line.replace(ANSI, ''));
      });
    }
    this.child.on('exit', (code, signal) => {
      this.#exited = { code, signal };
      for (const wake of this.#exitWaiters.splice(0)) wake();
    });
  }

  /** Everything the process printed so far. */
  get log() {
    return this.#lines.join('\n');
  }

  /** Resolves with the first printed line matching `pattern`'s first group. */
  async waitForLine(pattern, timeoutMs = START_TIMEOUT_MS) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (const line of this.#lines) {
        const match = line.match(pattern);
        if (match) return match[1];
      }
      if (this.#exited) {
        throw new Error(`${this.name} exited (${JSON.stringify(this.#exited)}) before printing ${pattern}:\n${this.log}`);
      }
      if (Date.now() > deadline) throw new Error(`${this.name} did not print ${pattern} in ${timeoutMs} ms:\n${this.log}`);
      await sleep(20);
    }
  }

  /** Resolves with the `http://host:port` the service printed it listens on. */
  listeningUrl() {
    return this.waitForLine(/listening on (http:\/\/[^\s]+)/);
  }

  /** Stops the process (SIGTERM, then SIGKILL) and waits for it to go. */
  async stop() {
    if (this.#exited) return;
    const gone = new Promise((resolve) => this.#exitWaiters.push(resolve));
    this.child.kill('SIGTERM');
    const killed = await Promise.race([gone.then(() => true), sleep(3000).then(() => false)]);
    if (!killed) {
      this.child.kill('SIGKILL');
      await gone;
    }
  }
}

/**
 * Starts demo-chat and signal-api (relaying to demo-chat), and home-peer
 * unless `homePeer` is false. Call `stop()` when done.
 */
export async function startStack({ homePeer = true, tokenDelayMs = 30 } = {}) {
  const workDir = mkdtempSync(path.join(tmpdir(), 'beeline-browser-'));
  const token = randomBytes(24).toString('hex');
  const services = [];
  const stack = {
    services,
    homeToken: token,
    async stop() {
      await Promise.all(services.map((s) => s.stop()));
      rmSync(workDir, { recursive: true, force: true });
    },
    /** All service logs, for failure messages. */
    logs() {
      return services.map((s) => `----- ${s.name} -----\n${s.log}`).join('\n');
    },
  };
  try {
    const demo = new Service('demo-chat', ['--listen', '127.0.0.1:0', '--token-delay-ms', String(tokenDelayMs), '--test-endpoints']);
    services.push(demo);
    stack.demoUrl = await demo.listeningUrl();

    const signal = new Service('signal-api', [
      '--listen', '127.0.0.1:0',
      '--db', path.join(workDir, 'signal.db'),
      '--home-token', token,
      '--browser-auth', 'open',
      '--relay-upstream', stack.demoUrl,
    ]);
    services.push(signal);
    stack.signalUrl = await signal.listeningUrl();
    stack.metrics = () => readMetrics(stack.signalUrl);

    if (homePeer) {
      const waitingBefore = (await stack.metrics()).beeline_longpolls_waiting ?? 0;
      const peer = new Service('home-peer', [
        '--signal-url', `${stack.signalUrl}/webrtc`,
        '--token', token,
        '--upstream', stack.demoUrl,
        '--allow-ip', '127.0.0.1',
      ]);
      services.push(peer);
      stack.homePeer = peer;
      // The home peer is ready once its long-poll is held by signal-api.
      await waitFor(async () => ((await stack.metrics()).beeline_longpolls_waiting ?? 0) > waitingBefore, START_TIMEOUT_MS, () => `home-peer to start polling:\n${peer.log}`);
    }
    return stack;
  } catch (err) {
    await stack.stop();
    throw err;
  }
}

/** Polls `check` until it resolves truthy, or throws after `timeoutMs`. */
export async function waitFor(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${typeof what === 'function' ? what() : what}`);
    await sleep(50);
  }
}

/** signal-api's Prometheus metrics as `{name or name{labels}: number}`. */
export async function readMetrics(signalUrl) {
  const res = await fetch(`${signalUrl}/metrics`);
  if (!res.ok) throw new Error(`GET /metrics answered ${res.status}`);
  const metrics = {};
  for (const line of (await res.text()).split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue;
    const space = line.lastIndexOf(' ');
    metrics[line.slice(0, space)] = Number(line.slice(space + 1));
  }
  return metrics;
}

/**
 * Headless Debian Chromium, allowed to use loopback for WebRTC; `extraArgs`
 * go after the common flags (tests/bench/chromium.mjs adds its own).
 */
export function launchBrowser(extraArgs = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      '--disable-sync',
      '--allow-loopback-in-peer-connection',
      ...extraArgs,
    ],
  });
}

/**
 * A fresh browser context for the chat page.
 *
 * Without camera or microphone permission Chromium hides its host addresses
 * behind mDNS names, and in a namespace with only loopback (no multicast, no
 * default route) it then gathers no ICE candidate at all. The permission
 * makes it offer plain 127.0.0.1 host candidates; no media is captured.
 */
export function newContext(browser) {
  return browser.newContext({ permissions: ['camera', 'microphone'] });
}

/**
 * A fresh page that records console errors and uncaught exceptions, so tests
 * can assert that nothing surfaced.
 */
export async function openPage(browser, url) {
  const context = await newContext(browser);
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console.error: ${msg.text()}`);
  });
  await page.goto(url);
  await page.waitForFunction(() => window.__beeline !== undefined);
  return { page, problems, close: () => context.close() };
}

/**
 * Types `message` into the chat and sends it, waits for the reply to end, and
 * returns what the page recorded about it.
 */
export async function sendChat(page, message, timeoutMs = 15_000) {
  const replies = page.locator('.bubble.assistant');
  const index = await replies.count();
  await page.fill('#message', message);
  await page.click('#send');
  const reply = replies.nth(index);
  await reply.waitFor({ state: 'attached', timeout: timeoutMs });
  await page.waitForFunction((i) => document.querySelectorAll('.bubble.assistant')[i]?.dataset.done === 'true', index, { timeout: timeoutMs });
  return reply.evaluate((el) => ({
    text: el.textContent,
    path: el.dataset.path,
    complete: el.dataset.complete === 'true',
    error: el.dataset.error === 'true',
    tokens: Number(el.dataset.tokens ?? 0),
    firstTokenMs: Number(el.dataset.firstTokenMs),
    doneMs: Number(el.dataset.doneMs),
  }));
}

/**
 * A stand-in for a home peer that speaks only protocol v1 (the
 * specification's format), running in its own Chromium page, so the client
 * can be tested against a real RTCPeerConnection independently of the Rust
 * home peer. It answers every offer, ignores frames that have a `type` (such
 * as the client's `hello`, which it counts), and serves each request frame
 * by fetching the path from the page's origin (signal-api, which relays to
 * demo-chat) and streaming `chunk` frames back, except that requests with
 * `hold=1` in their query are kept unanswered until the connection drops.
 */
export async function startReferencePeer(browser, stack) {
  const context = await newContext(browser);
  const page = await context.newPage();
  await page.goto(`${stack.signalUrl}/healthz`);
  await page.evaluate((token) => {
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const post = (message) => fetch('/webrtc/signal', { method: 'POST', headers, body: JSON.stringify(message) });
    const peers = new Map();
    const state = { held: 0, hellos: 0, stopped: false };
    window.__referencePeer = state;

    async function serve(channel, request) {
      if (new URL(request.path, location.origin).searchParams.get('hold') === '1') {
        state.held += 1;
        return;
      }
      const body = request.body ? Uint8Array.from(atob(request.body), (c) => c.charCodeAt(0)) : undefined;
      const res = await fetch(request.path, { method: request.method, headers: request.headers, body });
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        channel.send(JSON.stringify({ id: request.id, type: 'chunk', data: value }) + '\n');
      }
      channel.send(JSON.stringify({ id: request.id, type: 'done', status: res.status }) + '\n');
    }

    async function onOffer(message) {
      const pc = new RTCPeerConnection();
      peers.set(message.session_id, pc);
      pc.onicecandidate = (event) =>
        post({ session_id: message.session_id, type: 'candidate', candidate: event.candidate ? event.candidate.toJSON() : null });
      pc.ondatachannel = ({ channel }) => {
        channel.onmessage = (event) => {
          const frame = JSON.parse(event.data);
          // A v1 peer ignores typed frames; a request frame has no type.
          if (frame.type !== undefined) {
            if (frame.type === 'hello') state.hellos += 1;
            return;
          }
          serve(channel, frame);
        };
      };
      await pc.setRemoteDescription({ type: 'offer', sdp: message.sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await post({ session_id: message.session_id, type: 'answer', sdp: pc.localDescription.sdp });
    }

    state.dropConnections = () => {
      for (const pc of peers.values()) pc.close();
      peers.clear();
    };

    (async () => {
      let after = 0;
      while (!state.stopped) {
        const reply = await (await fetch(`/webrtc/signal?after=${after}`, { headers })).json();
        after = reply.cursor;
        for (const message of reply.messages) {
          if (message.type === 'offer') await onOffer(message);
          else if (message.type === 'candidate' && message.candidate) {
            await peers.get(message.session_id)?.addIceCandidate(message.candidate).catch(() => {});
          }
        }
      }
    })();
  }, stack.homeToken);
  return {
    heldRequests: () => page.evaluate(() => window.__referencePeer.held),
    hellos: () => page.evaluate(() => window.__referencePeer.hellos),
    dropConnections: () => page.evaluate(() => window.__referencePeer.dropConnections()),
    close: () => context.close(),
  };
}
