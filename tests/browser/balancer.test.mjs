// The Chromium end-to-end test once through a load balancer (issue 15):
// three signal-api instances on one throwaway PostgreSQL cluster, Debian's
// haproxy in front of them (round-robin, every request balanced on its own),
// home-peer and the demo chat page both talking to the balancer only. The
// page reaches the direct path and a chat streams back over the data
// channel, although the page's and home-peer's signaling requests are
// spread over the instances (each instance's /metrics shows its share), so
// offers, answers and candidates cross instances through LISTEN/NOTIFY.
//
// Needs PostgreSQL and haproxy (run.sh installs both through
// scripts/ensure-browser-deps.sh). Without them the test is skipped with a
// loud note, unless BEELINE_REQUIRE_POSTGRES is set (the `just` recipe sets
// it), which makes a missing one a failure.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { Service, bounded, browserKinds, launchBrowser, openPage, readMetrics, sendChat, waitFor } from './harness.mjs';
import { TestPostgres, freePort, isRoot, postgresRequired, userIds } from './postgres.mjs';

const INSTANCES = 3;
const START_TIMEOUT_MS = 15_000;
const HAPROXY = ['/usr/sbin/haproxy', '/usr/bin/haproxy', '/usr/local/sbin/haproxy'].find((file) => existsSync(file));

/**
 * haproxy's configuration: round-robin over `backends` (host:port), each
 * request balanced on its own (http-server-close), read timeouts longer
 * than signal-api's 10 s long-poll, and WebSocket tunnels (home-peer's
 * /webrtc/link, a page's /webrtc/frames) kept open.
 */
function haproxyConfig(port, backends) {
  return [
    'global',
    '    maxconn 1000',
    'defaults',
    '    mode http',
    '    timeout connect 2s',
    '    timeout http-request 10s',
    '    timeout client 30s',
    '    timeout server 30s',
    '    timeout tunnel 1h',
    '    option http-server-close',
    '    option redispatch',
    '    retries 3',
    'frontend signal',
    `    bind 127.0.0.1:${port}`,
    '    default_backend instances',
    'backend instances',
    '    balance roundrobin',
    '    option httpchk GET /healthz',
    ...backends.map((addr, i) => `    server s${i} ${addr} check inter 1s fall 2 rise 1`),
    '',
  ].join('\n');
}

/** haproxy in the foreground, as `nobody` when we are root (setpriv execs, so the child is haproxy itself). */
function startHaproxy(dir, port, backends) {
  const config = path.join(dir, 'haproxy.cfg');
  writeFileSync(config, haproxyConfig(port, backends));
  chmodSync(dir, 0o755);
  chmodSync(config, 0o644);
  const args = ['-f', config, '-db'];
  if (!isRoot()) return new Service('haproxy', args, { command: HAPROXY });
  const { uid, gid } = userIds('nobody');
  return new Service('haproxy', [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--', HAPROXY, ...args], { command: 'setpriv' });
}

/** Sum over the instances of every series whose name starts with `prefix`. */
const total = (snapshots, prefix) =>
  snapshots.reduce((sum, m) => sum + Object.entries(m).reduce((s, [k, v]) => (k.startsWith(prefix) ? s + v : s), 0), 0);

/** One instance's signaling: sessions created, and offers, answers, candidates and byes posted to it. */
function signaling(m) {
  const of = (series) => m[series] ?? 0;
  return {
    sessions: of('beeline_sessions_created_total'),
    offers: of('beeline_signals_total{type="offer"}'),
    answers: of('beeline_signals_total{type="answer"}'),
    candidates: of('beeline_signals_total{type="candidate"}'),
    byes: of('beeline_signals_total{type="bye"}'),
  };
}

function assertFullReply(reply, message) {
  assert.equal(reply.error, false, `the page showed an error: ${reply.text}`);
  assert.equal(reply.complete, true, 'the stream ended without [DONE]');
  assert.ok(reply.text.startsWith(`You said: ${message}.`), `unexpected reply: ${reply.text}`);
  assert.ok(reply.tokens >= 20, `only ${reply.tokens} tokens`);
  assert.ok(reply.firstTokenMs + 200 < reply.doneMs, `first token at ${reply.firstTokenMs} ms, done at ${reply.doneMs} ms`);
}

test('demo chat in chromium through haproxy (round-robin) in front of three signal-api instances on one PostgreSQL: direct path, streamed reply, signaling spread over the instances', { timeout: 180_000 }, async (t) => {
  if (!browserKinds().includes('chromium')) {
    t.skip('BEELINE_BROWSERS leaves Chromium out');
    return;
  }
  if (!HAPROXY) {
    if (postgresRequired()) throw new Error('BEELINE_REQUIRE_POSTGRES is set but haproxy is not installed; run scripts/ensure-haproxy.sh');
    process.stderr.write('\n\n!!!!!!!! SKIPPED: the browser test through a balancer: haproxy is not installed. Run scripts/ensure-haproxy.sh. !!!!!!!!\n\n');
    t.skip('haproxy is not installed');
    return;
  }
  const pg = await TestPostgres.startOrSkip('the browser test through a balancer');
  if (!pg) {
    t.skip('PostgreSQL is not installed');
    return;
  }

  const started = Date.now();
  const workDir = mkdtempSync(path.join(tmpdir(), 'beeline-balancer-'));
  const token = randomBytes(24).toString('hex');
  const services = [];
  let browser = null;
  const logs = () => [...services.map((s) => `----- ${s.name} -----\n${s.log}`), `----- postgresql -----\n${pg.serverLog()}`].join('\n');
  try {
    const demo = new Service('demo-chat', ['--listen', '127.0.0.1:0', '--token-delay-ms', '30']);
    services.push(demo);
    const demoUrl = await demo.listeningUrl();

    const db = pg.createDatabase('balancer');
    const bases = [];
    // One after the other: the first applies the migrations.
    for (let i = 0; i < INSTANCES; i++) {
      const instance = new Service('signal-api', ['--listen', '127.0.0.1:0', '--db', db, '--home-token', token, '--browser-auth', 'open', '--relay-upstream', demoUrl]);
      instance.name = `signal-api ${i}`;
      services.push(instance);
      bases.push(await instance.listeningUrl());
    }
    const snapshot = () => Promise.all(bases.map((base) => readMetrics(base)));

    const lbPort = await freePort();
    const haproxy = startHaproxy(workDir, lbPort, bases.map((base) => base.replace(/^http:\/\//, '')));
    services.push(haproxy);
    const lb = `http://127.0.0.1:${lbPort}`;
    await waitFor(
      async () => (await fetch(`${lb}/healthz`).catch(() => null))?.status === 200,
      START_TIMEOUT_MS,
      () => `haproxy to answer /healthz:\n${haproxy.log}`,
    );

    const peer = new Service('home-peer', ['--signal-url', `${lb}/webrtc`, '--token', token, '--upstream', demoUrl, '--allow-ip', '127.0.0.1']);
    services.push(peer);
    // Ready once one of its long-polls is held and its home link (a
    // WebSocket through haproxy) is up on one of the instances.
    await waitFor(
      async () => {
        const m = await snapshot();
        return total(m, 'beeline_longpolls_waiting') >= 1 && total(m, 'beeline_home_link_connected{home="home"}') === 1;
      },
      START_TIMEOUT_MS,
      () => `home-peer to poll and link through the balancer:\n${peer.log}`,
    );

    browser = await launchBrowser();
    const before = await snapshot();
    const { page, problems } = await openPage(browser, `${lb}/`);
    assert.equal(await page.evaluate(() => window.__beeline.ready), 'direct', 'the page did not reach the direct path through the balancer');
    const setupMs = await page.evaluate(() => window.__beeline.timing.setupMs);

    const relayedBefore = total(await snapshot(), 'beeline_relay_requests_total');
    const message = 'hello through the balancer';
    const reply = await sendChat(page, message);
    assertFullReply(reply, message);
    assert.equal(reply.path, 'direct');
    assert.equal(total(await snapshot(), 'beeline_relay_requests_total'), relayedBefore, 'the chat went through the relay');
    await waitFor(async () => total(await snapshot(), 'beeline_connection_outcomes_total{outcome="direct"}') === 1, 5000, 'the direct outcome to be reported');
    assert.deepEqual(problems, []);

    // Round-robin spread the page's and home-peer's signaling.
    const after = await snapshot();
    const shares = after.map((m, i) => {
      const [a, b] = [signaling(m), signaling(before[i])];
      return Object.fromEntries(Object.keys(a).map((k) => [k, a[k] - b[k]]));
    });
    const sum = (share) => Object.values(share).reduce((s, v) => s + v, 0);
    const all = shares.reduce((acc, share) => acc + sum(share), 0);
    const took = shares.filter((share) => sum(share) > 0).length;
    const line = shares.map((s, i) => `instance ${i}: ${s.sessions} session, ${s.offers} offer, ${s.answers} answer, ${s.candidates} candidates`).join('; ');
    t.diagnostic(`direct after ${Math.round(setupMs)} ms of setup; first token ${Math.round(reply.firstTokenMs)} ms, done ${Math.round(reply.doneMs)} ms; whole test ${Date.now() - started} ms`);
    t.diagnostic(`signaling per instance: ${line}`);
    assert.equal(shares.reduce((acc, s) => acc + s.sessions, 0), 1, `one session: ${line}`);
    assert.equal(shares.reduce((acc, s) => acc + s.offers, 0), 1, `one offer: ${line}`);
    assert.equal(shares.reduce((acc, s) => acc + s.answers, 0), 1, `one answer: ${line}`);
    assert.ok(all >= 3, `only ${all} signaling requests: ${line}`);
    assert.ok(took >= 2, `round-robin did not spread the signaling: only ${took} instance took part (${line})`);
  } catch (err) {
    err.message += `\n${logs()}`;
    throw err;
  } finally {
    // Bounded: each service gets SIGTERM, then SIGKILL after 3 s.
    await bounded(browser?.close() ?? Promise.resolve(), 10_000, 'closing Chromium').catch(() => {});
    await Promise.all(services.reverse().map((s) => s.stop()));
    pg.stop();
    rmSync(workDir, { recursive: true, force: true });
  }
});
