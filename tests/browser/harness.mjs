// Shared setup for the browser tests: starts an upstream (demo-chat, or the
// plain http.server of tests/upstreams), signal-api and (optionally)
// home-peer on 127.0.0.1 with free ports, launches headless Chromium
// (playwright-core) or Firefox ESR (puppeteer-core over WebDriver BiDi), and
// drives the demo chat page the way a person would. Firefox pages are
// wrapped in the small part of Playwright's page API the tests use, so one
// test body runs in both browsers.
//
// Everything binds to loopback only; run.sh puts the whole run in a fresh
// network namespace so no WebRTC packet can leave it.

import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Where the Rust binaries are: `$BEELINE_BIN_DIR` (relative to the repo root) or target/debug. */
export const binDir = path.resolve(repoRoot, process.env.BEELINE_BIN_DIR ?? 'target/debug');

const CHROMIUM = process.env.BEELINE_CHROMIUM ?? '/usr/bin/chromium';
const FIREFOX = process.env.BEELINE_FIREFOX ?? '/usr/bin/firefox-esr';
const PLAIN_UPSTREAM = path.join(repoRoot, 'tests/upstreams/plain_upstream.py');
const COOKIE_APP = path.join(repoRoot, 'tests/upstreams/cookie_app.py');
const START_TIMEOUT_MS = 15_000;

const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A child process whose output is kept, so a failing test can show it. */
class Service {
  #lines = [];
  #exited = null;
  #exitWaiters = [];

  /** `name` is a binary in binDir unless `command` names the program to run. */
  constructor(name, args, { command } = {}) {
    const file = command ?? path.join(binDir, name);
    if (!command && !existsSync(file)) {
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
 * Starts the upstream, signal-api (relaying to it), and home-peer (forwarding
 * to it) unless `homePeer` is false. Call `stop()` when done.
 *
 * `upstream` is 'demo-chat' (the default; `stack.demoUrl` is its URL),
 * 'plain' (tests/upstreams/plain_upstream.py, which reads no chunked body;
 * `stack.upstreamRequests()` reads its request log), 'cookie'
 * (tests/upstreams/cookie_app.py, a cookie-login app; the relay and
 * home-peer reach it on two ports of one process, so each record of
 * `stack.upstreamRequests()` says `via: 'relay'` or `'channel'`), or the URL
 * of an upstream the test runs itself. `stack.upstreamUrl` is home-peer's
 * upstream URL and `stack.relayUrl` the relay's (the same, except for 'cookie').
 * `allowIps` are home-peer's ICE addresses (`--allow-ip`). With `loopback`,
 * home-peer also serves its loopback listener on a free port of 127.0.0.1
 * (`stack.loopbackUrl`), for pages of signal-api's origin. `relay` is
 * 'upstream' (signal-api relays to the upstream with --relay-upstream, the
 * default) or 'link' (no --relay-upstream: the normal path goes over
 * home-peer's home link, as in a deployment without a tunnel).
 */
export async function startStack({ homePeer = true, tokenDelayMs = 30, upstream = 'demo-chat', allowIps = ['127.0.0.1'], relay = 'upstream', loopback = false } = {}) {
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
    if (upstream === 'demo-chat') {
      const demo = new Service('demo-chat', ['--listen', '127.0.0.1:0', '--token-delay-ms', String(tokenDelayMs), '--test-endpoints']);
      services.push(demo);
      stack.demoUrl = await demo.listeningUrl();
      stack.upstreamUrl = stack.demoUrl;
    } else if (upstream === 'plain') {
      const log = path.join(workDir, 'upstream.jsonl');
      const plain = new Service('plain-upstream', [PLAIN_UPSTREAM, '--host', '127.0.0.1', '--port', '0', '--log', log], { command: 'python3' });
      services.push(plain);
      stack.upstreamUrl = `http://127.0.0.1:${await plain.waitForLine(/^listening (\d+)/)}`;
      stack.upstreamRequests = () => readJsonLines(log);
    } else if (upstream === 'cookie') {
      const log = path.join(workDir, 'cookie-app.jsonl');
      const app = new Service('cookie-app', [COOKIE_APP, '--host', '127.0.0.1', '--log', log], { command: 'python3' });
      services.push(app);
      const ports = await app.waitForLine(/^listening (relay=\d+ channel=\d+)/);
      const [, relayPort, channelPort] = ports.match(/relay=(\d+) channel=(\d+)/);
      stack.upstreamUrl = `http://127.0.0.1:${channelPort}`;
      stack.relayUrl = `http://127.0.0.1:${relayPort}`;
      stack.upstreamRequests = () => readJsonLines(log);
    } else {
      stack.upstreamUrl = upstream;
    }
    stack.relayUrl ??= stack.upstreamUrl;

    const signal = new Service('signal-api', [
      '--listen', '127.0.0.1:0',
      '--db', path.join(workDir, 'signal.db'),
      '--home-token', token,
      '--browser-auth', 'open',
      ...(relay === 'link' ? [] : ['--relay-upstream', stack.relayUrl]),
    ]);
    services.push(signal);
    stack.signalUrl = await signal.listeningUrl();
    stack.metrics = () => readMetrics(stack.signalUrl);

    if (homePeer) {
      const waitingBefore = (await stack.metrics()).beeline_longpolls_waiting ?? 0;
      const peerArgs = [
        '--signal-url', `${stack.signalUrl}/webrtc`,
        '--token', token,
        '--upstream', stack.upstreamUrl,
        ...allowIps.flatMap((ip) => ['--allow-ip', ip]),
        ...(loopback ? ['--loopback-listen', '127.0.0.1:0'] : []),
      ];
      const peer = new Service('home-peer', peerArgs);
      services.push(peer);
      /** Stops home-peer and starts a new one with the same arguments; resolves once its home link is up again. */
      stack.restartHomePeer = async () => {
        const linksBefore = (await stack.metrics())['beeline_home_link_connects_total'] ?? 0;
        await stack.homePeer.stop();
        const next = new Service('home-peer', peerArgs);
        services.push(next);
        stack.homePeer = next;
        await waitFor(async () => ((await stack.metrics())['beeline_home_link_connects_total'] ?? 0) > linksBefore, START_TIMEOUT_MS, () => `the new home-peer's home link:\n${next.log}`);
      };
      stack.homePeer = peer;
      if (loopback) stack.loopbackUrl = await peer.waitForLine(/loopback listener up.*?url=(http:\/\/[0-9.:]+)/);
      // The home peer is ready once its long-poll is held by signal-api.
      await waitFor(async () => ((await stack.metrics()).beeline_longpolls_waiting ?? 0) > waitingBefore, START_TIMEOUT_MS, () => `home-peer to start polling:\n${peer.log}`);
      if (relay === 'link' || loopback) {
        await waitFor(async () => (await stack.metrics())['beeline_home_link_connected{home="home"}'] === 1, START_TIMEOUT_MS, () => `home-peer's home link:\n${peer.log}`);
      }
    }
    return stack;
  } catch (err) {
    await stack.stop();
    throw err;
  }
}

/** The records of a JSON-lines file (none when it does not exist yet). */
function readJsonLines(file) {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line));
}

/**
 * `promise`, or a rejection after `ms` saying what hung. The timer is
 * cleared once `promise` settles: a pending one would keep the test file's
 * process alive until it fired.
 */
export function bounded(promise, ms, what) {
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish in ${ms} ms`)), ms);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
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

/** The browsers the tests can run in. */
export const BROWSER_KINDS = Object.freeze(['chromium', 'firefox']);

/**
 * The browsers a test file runs its browser tests in: `$BEELINE_BROWSERS`
 * (space-separated) or all of BROWSER_KINDS. A browser that cannot be
 * launched fails its tests; none is skipped.
 */
export function browserKinds() {
  const chosen = (process.env.BEELINE_BROWSERS ?? BROWSER_KINDS.join(' ')).split(/\s+/).filter(Boolean);
  for (const kind of chosen) if (!BROWSER_KINDS.includes(kind)) throw new Error(`BEELINE_BROWSERS: unknown browser ${kind}`);
  return chosen;
}

/**
 * home-peer's ICE addresses (`--allow-ip`) for a page in `kind`. Chromium
 * pairs over 127.0.0.1. Firefox gathers host candidates only on the
 * interface of the default route, so it needs the namespace's veth address,
 * which run.sh passes as BEELINE_NS_ADDR; both stay inside the namespace.
 */
export function allowIpsFor(kind) {
  if (kind !== 'firefox') return ['127.0.0.1'];
  const addr = process.env.BEELINE_NS_ADDR;
  if (!addr) throw new Error('BEELINE_NS_ADDR is not set: Firefox tests need the namespace run.sh builds (a veth link with a default route)');
  return ['127.0.0.1', addr];
}

/**
 * Launches headless `kind` ('chromium' or 'firefox'). For Chromium,
 * `extraArgs` go after the common flags (tests/bench/chromium.mjs adds its
 * own); the result is Playwright's Browser. For Firefox the result is a
 * FirefoxBrowser, which offers the same `newContext`/`newPage`/`close` and a
 * page with the part of Playwright's API the tests use.
 */
export function launchBrowser(extraArgs = [], { kind = 'chromium', acceptInsecureCerts = false } = {}) {
  if (kind === 'firefox') return FirefoxBrowser.launch({ acceptInsecureCerts });
  if (kind !== 'chromium') throw new Error(`unknown browser ${kind}`);
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
 * Preferences for Firefox ESR, on top of the ones puppeteer-core sets to keep
 * an automated profile quiet (no updates, telemetry, safe-browsing fetches).
 * Nothing else is needed: Firefox as root, headless (puppeteer passes
 * --headless; MOZ_HEADLESS was not needed) and without any permission
 * grant opens data channels. What it does need is a default route in the
 * namespace (run.sh), or it gathers no host candidate at all; loopback
 * candidates (`media.peerconnection.ice.loopback`) did not help there and
 * are not needed once the veth address is allowed.
 */
const FIREFOX_PREFS = {
  // Without camera or microphone permission Firefox names its host
  // candidates with mDNS (`….local`), which beeline drops. The direct path
  // still opens then (tried: Firefox's checks reach the home peer and
  // become peer-reflexive candidates), but with plain addresses the pair is
  // host-to-host, as Chromium's is with its camera permission, and Firefox
  // sends no mDNS traffic.
  'media.peerconnection.ice.obfuscate_host_addresses': false,
};
/** Headless Firefox ESR driven by puppeteer-core over WebDriver BiDi. */
export class FirefoxBrowser {
  kind = 'firefox';

  constructor(browser) {
    this.browser = browser;
  }

  /** `acceptInsecureCerts`: pages on a certificate no public root vouches for load too (a test's own CA). */
  static async launch({ acceptInsecureCerts = false } = {}) {
    if (!existsSync(FIREFOX)) throw new Error(`${FIREFOX} does not exist (scripts/ensure-browser-deps.sh installs firefox-esr)`);
    const browser = await puppeteer.launch({
      browser: 'firefox',
      executablePath: FIREFOX,
      headless: true,
      extraPrefsFirefox: FIREFOX_PREFS,
      acceptInsecureCerts,
    });
    return new FirefoxBrowser(browser);
  }

  /** A fresh browser context; `options` (Playwright's) are not needed here. */
  async newContext() {
    const context = await this.browser.createBrowserContext();
    return {
      newPage: async () => new FirefoxPage(await context.newPage()),
      close: () => context.close(),
    };
  }

  close() {
    return this.browser.close();
  }
}

/** A puppeteer page behind the subset of Playwright's Page the tests call. */
class FirefoxPage {
  constructor(page) {
    this.page = page;
  }

  goto(url) {
    return this.page.goto(url);
  }

  on(event, handler) {
    if (event === 'console') this.page.on('console', (msg) => handler({ type: () => msg.type(), text: () => msg.text() }));
    else this.page.on(event, handler);
  }

  /** Playwright's form: one argument. */
  evaluate(fn, arg) {
    return this.page.evaluate(fn, arg);
  }

  /** The cookies the browser stores for this page's URL (HttpOnly ones too). */
  async cookies() {
    const all = await this.page.browserContext().cookies();
    const url = new URL(this.page.url());
    return all.filter((c) => url.hostname === c.domain.replace(/^\./, ''));
  }

  /** Playwright's form: (fn, arg, {timeout}). */
  waitForFunction(fn, arg, { timeout = 30_000 } = {}) {
    return this.page.waitForFunction(fn, { timeout, polling: 50 }, arg);
  }

  fill(selector, value) {
    return this.page.evaluate(
      (selector, value) => {
        const el = document.querySelector(selector);
        el.focus();
        el.value = value;
        el.dispatchEvent(new Event('input', { bubbles: true }));
      },
      selector,
      value,
    );
  }

  click(selector) {
    return this.page.click(selector);
  }

  hover(selector) {
    return this.page.hover(selector);
  }

  locator(selector) {
    return new FirefoxLocator(this, selector, null);
  }
}

/** Playwright's Locator, as far as the tests use it: `selector`, or its `index`th match. */
class FirefoxLocator {
  constructor(page, selector, index) {
    this.page = page;
    this.selector = selector;
    this.index = index;
  }

  nth(index) {
    return new FirefoxLocator(this.page, this.selector, index);
  }

  count() {
    return this.page.page.evaluate((selector) => document.querySelectorAll(selector).length, this.selector);
  }

  async #handle() {
    const handles = await this.page.page.$$(this.selector);
    const handle = handles[this.index ?? 0];
    if (!handle) throw new Error(`no element matches ${this.selector}${this.index === null ? '' : ` #${this.index}`}`);
    return handle;
  }

  /** Only state 'attached' is supported. */
  waitFor({ state = 'attached', timeout = 30_000 } = {}) {
    if (state !== 'attached') throw new Error(`waitFor state ${state} is not supported for Firefox`);
    return this.page.waitForFunction(({ selector, index }) => document.querySelectorAll(selector).length > index, { selector: this.selector, index: this.index ?? 0 }, { timeout });
  }

  async evaluate(fn, arg) {
    return (await this.#handle()).evaluate(fn, arg);
  }

  async isVisible() {
    const handles = await this.page.page.$$(this.selector);
    const handle = handles[this.index ?? 0];
    if (!handle) return false;
    return handle.evaluate((el) => {
      const style = getComputedStyle(el);
      return el.getClientRects().length > 0 && style.visibility !== 'hidden' && style.display !== 'none';
    });
  }

  async textContent() {
    return (await this.#handle()).evaluate((el) => el.textContent);
  }
}

/**
 * The cookies the browser holds for `page`'s URL, HttpOnly ones included, as
 * `[{name, value, httpOnly, path, ...}]`: Playwright's context store for
 * Chromium, the BiDi storage for Firefox.
 */
export async function browserCookies(page) {
  if (page instanceof FirefoxPage) return page.cookies();
  return page.context().cookies(page.url());
}

/**
 * A fresh browser context for the chat page.
 *
 * Without camera or microphone permission Chromium hides its host addresses
 * behind mDNS names, and in a namespace with only loopback (no multicast, no
 * default route) it then gathers no ICE candidate at all. The permission
 * makes it offer plain 127.0.0.1 host candidates; no media is captured.
 * (Firefox gets the same effect from a preference, see FIREFOX_PREFS.)
 */
export function newContext(browser) {
  return browser.newContext({ permissions: ['camera', 'microphone'] });
}

/**
 * A fresh page that records console errors and uncaught exceptions, so tests
 * can assert that nothing surfaced. Waits for the demo page's client
 * (`window.__beeline`) unless `waitForClient` is false.
 */
export async function openPage(browser, url, { waitForClient = true } = {}) {
  const context = await newContext(browser);
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console.error: ${msg.text()}`);
  });
  await page.goto(url);
  if (waitForClient) await page.waitForFunction(() => window.__beeline !== undefined);
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

// For tests that start services of their own (balancer.test.mjs).
export { Service };

/** The UDP port of home-peer's selected ICE pair, from the last INFO line its transport logged. */
export function homePeerIcePort(log) {
  const matches = [...log.matchAll(/state=Connected local=\w+ [0-9.]+:(\d+)/g)];
  if (matches.length === 0) throw new Error(`home-peer logged no connected pair:\n${log}`);
  return matches.at(-1)[1];
}

/** The local ports of the UDP sockets process `pid` holds now (its ICE candidates), from `ss`. */
export function udpPortsOf(pid) {
  const out = execFileSync('ss', ['-Hunap'], { encoding: 'utf8' });
  const ports = new Set();
  for (const line of out.split('\n')) {
    if (!line.includes(`pid=${pid},`)) continue;
    const local = line.trim().split(/\s+/)[3] ?? '';
    const port = local.slice(local.lastIndexOf(':') + 1);
    if (/^\d+$/.test(port)) ports.add(port);
  }
  return [...ports];
}

/**
 * Cuts (`'-I'`) or restores (`'-D'`) UDP to and from each of `ports` with
 * iptables, in the namespace the tests run in (run.sh made it): a dead path
 * for the one process using those ports, nobody else's.
 */
export function dropUdpPorts(action, ports) {
  for (const port of ports) {
    for (const dir of ['--dport', '--sport']) {
      execFileSync('iptables', [action, 'INPUT', '-p', 'udp', dir, String(port), '-j', 'DROP']);
    }
  }
}
