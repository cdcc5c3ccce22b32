// signal-api behind nginx with TLS, configured by the file the docs give
// (docs/examples/nginx.conf), in headless Chromium and Firefox ESR (each
// told to accept this run's certificate): the deployment most
// people run, a page on https:// and home-peer's home link both through
// the proxy. The page opens the direct path (its signaling passes nginx,
// and signal-api's origin check sees the Host nginx passes on); with
// WebRTC off, a chat reply streams token by token over the home link (a
// buffering proxy would hand it over in one piece), a WebSocket echo is
// relayed over the home link (the upgrade passes nginx twice: the page's
// socket and home-peer's link; the session websocket.test.mjs runs on
// every path), a 5 MB upload arrives whole, and the home
// service is told the page's scheme and address by the relay, which
// believes nginx as a --trusted-proxy. nginx's certificate comes from a
// private CA: home-peer refuses it until told to trust the CA
// (--signal-ca), and beeline-proxy, told the same, reaches the home over
// its direct path and, with no usable address, over --relay-url.
//
// Needs nginx and openssl (run.sh installs them through
// scripts/ensure-browser-deps.sh). Without them the test is skipped with a
// loud note, unless BEELINE_REQUIRE_NGINX is set (the `just` recipe sets
// it), which makes a missing one a failure.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Service, allowIpsFor, bounded, browserKinds, launchBrowser, readMetrics, sendChat, waitFor } from './harness.mjs';
import { freePort } from './postgres.mjs';
import { assertEcho, echoSession } from './websocket-echo.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const DOCUMENTED = path.resolve(here, '../../docs/examples/nginx.conf');
const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx', '/usr/local/sbin/nginx'].find((file) => existsSync(file));
const START_TIMEOUT_MS = 15_000;
const TOKEN_DELAY_MS = 30;

/**
 * The documented file with this run's addresses: each replacement must
 * match exactly once, so a change to the documented file that the test
 * does not follow fails here rather than testing something else.
 */
function nginxSite({ signalPort, tlsPort, cert, key }) {
  let text = readFileSync(DOCUMENTED, 'utf8');
  const replace = (from, to) => {
    const count = text.split(from).length - 1;
    if (count !== 1) throw new Error(`docs/examples/nginx.conf: expected "${from}" once, found it ${count} times`);
    text = text.replace(from, to);
  };
  replace('server 127.0.0.1:8080;', `server 127.0.0.1:${signalPort};`);
  replace('listen 443 ssl;', `listen 127.0.0.1:${tlsPort} ssl;`);
  replace('/etc/ssl/beeline/fullchain.pem', cert);
  replace('/etc/ssl/beeline/privkey.pem', key);
  return text;
}

/** nginx in the foreground, one process, its files in `dir`, the site included as a distribution's conf.d would. */
function startNginx(dir, site) {
  writeFileSync(path.join(dir, 'beeline.conf'), site);
  const main = [
    'daemon off;',
    'master_process off;',
    `pid ${dir}/nginx.pid;`,
    'error_log stderr notice;',
    'events { worker_connections 256; }',
    'http {',
    '    access_log off;',
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((kind) => `    ${kind}_temp_path ${dir}/${kind}_temp;`),
    `    include ${dir}/beeline.conf;`,
    '}',
    '',
  ].join('\n');
  writeFileSync(path.join(dir, 'nginx.conf'), main);
  // -e: the error log before the configuration is read goes to stderr, not /var/log/nginx.
  return new Service('nginx', ['-p', dir, '-e', 'stderr', '-c', path.join(dir, 'nginx.conf')], { command: NGINX });
}

/**
 * A private CA (what home-peer and beeline-proxy are told to trust with
 * --signal-ca) and nginx's certificate for 127.0.0.1, signed by it, both
 * valid for a day.
 */
function privateCa(dir) {
  const file = (name) => path.join(dir, name);
  const openssl = (args) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '1', '-subj', '/CN=beeline test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', file('key.pem'), '-out', file('cert.csr'), '-subj', '/CN=127.0.0.1']);
  writeFileSync(file('cert.ext'), 'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  openssl(['x509', '-req', '-in', file('cert.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial',
    '-out', file('cert.pem'), '-days', '1', '-extfile', file('cert.ext')]);
  return { ca: file('ca.pem'), cert: file('cert.pem'), key: file('key.pem') };
}

/** Resolves once something accepts TCP connections on 127.0.0.1:`port`. */
function accepts(port) {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

// Runs in the page (WebRTC off): a 5 MB upload and a header echo over
// client.fetch().
async function uploadAndHeaders() {
  const client = window.__beeline;
  const body = new Uint8Array(5_000_000).map((_, i) => (i * 7) % 256);
  let fnv = 0x811c9dc5;
  for (const b of body) fnv = Math.imul(fnv ^ b, 0x01000193) >>> 0;
  const uploadRes = await client.fetch('/test/upload', { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } });
  const upload = { status: uploadRes.status, path: uploadRes.headers.get('x-beeline-path'), ...(await uploadRes.json()), sent: fnv.toString(16).padStart(8, '0') };

  const headersRes = await client.fetch('/test/headers');
  return { upload, headers: await headersRes.json() };
}

/** The page's part, in one browser: the direct path, then WebRTC off. */
async function throughNginx(context, origin, metrics, consoleLines) {
  // The direct path: the page's signaling goes through nginx to signal-api and home-peer's polls.
  const direct = await context.newPage();
  const problems = [];
  direct.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  direct.on('console', (msg) => consoleLines.push(`${new Date().toISOString()} ${msg.text()}`));
  await direct.goto(`${origin}/`);
  await direct.waitForFunction(() => window.__beeline !== undefined);
  assert.equal(await bounded(direct.evaluate(() => window.__beeline.ready), 20_000, 'the direct path'), 'direct');
  const viaChannel = await sendChat(direct, 'hello through nginx');
  assert.equal(viaChannel.path, 'direct');
  assert.equal(viaChannel.complete, true);

  // WebRTC off: everything over nginx and the home link.
  const relayedBefore = (await metrics()).beeline_relay_requests_total ?? 0;
  const normal = await context.newPage();
  normal.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  await normal.goto(`${origin}/?webrtc=0`);
  await normal.waitForFunction(() => window.__beeline !== undefined);
  const reply = await sendChat(normal, 'hello over the link');
  assert.equal(reply.path, 'fallback');
  assert.equal(reply.complete, true, 'the relayed stream ended without [DONE]');
  assert.ok(reply.tokens >= 20, `only ${reply.tokens} tokens`);
  // About 25 tokens 30 ms apart: a buffering proxy would deliver the first with the last.
  assert.ok(reply.firstTokenMs + 200 < reply.doneMs, `first token at ${reply.firstTokenMs} ms, done at ${reply.doneMs} ms: the stream was buffered`);

  // The echo session every path runs (websocket-echo.mjs): 300 numbered
  // messages each way, a 1 MiB message, close codes both ways.
  const echo = await bounded(normal.evaluate(echoSession, 300), 60_000, 'the relayed WebSocket');
  assertEcho(echo, 'relay', 300);
  const relayed = await bounded(normal.evaluate(uploadAndHeaders), 60_000, 'the upload and header echo');
  assert.equal(relayed.upload.status, 200);
  assert.equal(relayed.upload.bytes, 5_000_000);
  assert.equal(relayed.upload.fnv1a32, relayed.upload.sent, 'the upload changed on the way');
  // The relay believed nginx (a --trusted-proxy): the page came over https from 127.0.0.1.
  assert.equal(relayed.headers['x-forwarded-proto'], 'https');
  assert.match(relayed.headers['x-forwarded-for'] ?? '', /^127\.0\.0\.1\b/);
  assert.equal(relayed.headers['x-forwarded-host'], new URL(origin).host);
  assert.ok((await metrics()).beeline_relay_requests_total > relayedBefore, 'nothing went over the relay');
  assert.deepEqual(problems, []);
}

test('demo chat through nginx with TLS (docs/examples/nginx.conf): direct path, a reply streamed over the home link, a relayed WebSocket, a 5 MB upload; home-peer and beeline-proxy trusting a private CA', { timeout: 300_000 }, async (t) => {
  if (!NGINX) {
    if (process.env.BEELINE_REQUIRE_NGINX) throw new Error('BEELINE_REQUIRE_NGINX is set but nginx is not installed; run scripts/ensure-browser-deps.sh');
    process.stderr.write('\n\n!!!!!!!! SKIPPED: the browser test through nginx: nginx is not installed. Run scripts/ensure-browser-deps.sh. !!!!!!!!\n\n');
    t.skip('nginx is not installed');
    return;
  }
  const workDir = mkdtempSync(path.join(tmpdir(), 'beeline-nginx-'));
  const services = [];
  t.after(async () => {
    await Promise.all(services.map((s) => s.stop()));
    rmSync(workDir, { recursive: true, force: true });
  });
  const logs = () => services.map((s) => `----- ${s.name} -----\n${s.log}`).join('\n');
  try {
    const token = randomBytes(24).toString('hex');
    const demo = new Service('demo-chat', ['--listen', '127.0.0.1:0', '--token-delay-ms', String(TOKEN_DELAY_MS), '--test-endpoints']);
    services.push(demo);
    const demoUrl = await demo.listeningUrl();
    // No --relay-upstream: the normal path goes over home-peer's home link.
    const signal = new Service('signal-api', [
      '--listen', '127.0.0.1:0',
      '--db', path.join(workDir, 'signal.db'),
      '--home-token', token,
      '--browser-auth', 'open',
      '--trusted-proxy', '127.0.0.1',
    ]);
    services.push(signal);
    const signalUrl = await signal.listeningUrl();
    const metrics = () => readMetrics(signalUrl);

    const tlsPort = await freePort();
    const { ca, cert, key } = privateCa(workDir);
    const nginx = startNginx(workDir, nginxSite({ signalPort: new URL(signalUrl).port, tlsPort, cert, key }));
    services.push(nginx);
    const origin = `https://127.0.0.1:${tlsPort}`;
    await waitFor(() => accepts(tlsPort), START_TIMEOUT_MS, () => `nginx to listen:\n${logs()}`);

    // Without the private CA, home-peer refuses nginx's certificate.
    // Firefox pairs over the namespace's veth address (allowIpsFor).
    const allowIps = [...new Set(browserKinds().flatMap(allowIpsFor))];
    const peerArgs = ['--signal-url', `${origin}/webrtc`, '--token', token, '--upstream', demoUrl, ...allowIps.flatMap((ip) => ['--allow-ip', ip])];
    const untrusting = new Service('home-peer', peerArgs);
    services.push(untrusting);
    await untrusting.waitForLine(/(home link failed.*(?:certificate|UnknownIssuer).*)/i);
    await untrusting.stop();
    assert.equal((await metrics())['beeline_home_link_connected{home="home"}'], 0);

    const peer = new Service('home-peer', [...peerArgs, '--signal-ca', ca]);
    services.push(peer);
    await waitFor(async () => (await metrics())['beeline_home_link_connected{home="home"}'] === 1, START_TIMEOUT_MS, () => `home-peer's home link through nginx:\n${logs()}`);

    for (const kind of browserKinds()) {
      await t.test(`in ${kind}`, async (t) => {
        const browser = await launchBrowser([], { kind, acceptInsecureCerts: true });
        t.after(() => browser.close());
        // The certificate is this run's own; camera/microphone as in newContext().
        const context = kind === 'chromium' ? await browser.newContext({ ignoreHTTPSErrors: true, permissions: ['camera', 'microphone'] }) : await browser.newContext();
        t.after(() => context.close());
        // A failure here says what the page and the services logged.
        const consoleLines = [];
        try {
          await throughNginx(context, origin, metrics, consoleLines);
        } catch (err) {
          err.message += `\n----- page console (direct path) -----\n${consoleLines.join('\n')}\n${logs()}`;
          throw err;
        }
      });
    }

    // beeline-proxy through the same nginx, trusting the private CA: once
    // over its direct path (its signaling passes nginx), once with no usable
    // address, so that its request takes --relay-url, https through nginx.
    const proxyArgs = (port, allowIp) => [
      '--signal-url', `${origin}/webrtc`, '--signal-ca', ca, '--relay-url', origin,
      '--listen', `127.0.0.1:${port}`, '--allow-ip', allowIp, '--setup-budget-ms', '1500',
    ];
    const directPort = await freePort();
    const directProxy = new Service('beeline-proxy', proxyArgs(directPort, '127.0.0.1'));
    services.push(directProxy);
    await directProxy.waitForLine(/(direct path open)/);
    let relayed0 = (await metrics()).beeline_relay_requests_total;
    const viaDirect = await fetch(`http://127.0.0.1:${directPort}/test/bytes?size=1000`);
    assert.equal(viaDirect.status, 200);
    assert.equal((await viaDirect.arrayBuffer()).byteLength, 1000);
    assert.equal((await metrics()).beeline_relay_requests_total, relayed0, 'the proxy relayed although its channel was open');

    const relayPort = await freePort();
    // 192.0.2.1 (TEST-NET-1) is on no interface here: no candidate, no channel.
    const relayProxy = new Service('beeline-proxy', proxyArgs(relayPort, '192.0.2.1'));
    services.push(relayProxy);
    await relayProxy.waitForLine(/(beeline-proxy ready)/);
    relayed0 = (await metrics()).beeline_relay_requests_total;
    const viaRelay = await fetch(`http://127.0.0.1:${relayPort}/test/headers`);
    assert.equal(viaRelay.status, 200, await viaRelay.clone().text());
    assert.equal((await viaRelay.json())['x-forwarded-proto'], 'https');
    assert.equal((await metrics()).beeline_relay_requests_total, relayed0 + 1, 'the proxy did not take the relay');
  } catch (err) {
    err.message += `\n${logs()}`;
    throw err;
  }
});
