// The WebSocket echo session the browser tests run over every path
// (websocket.test.mjs, and through nginx in nginx.test.mjs): numbered text
// and binary messages each way, a 1 MiB message, close codes both ways,
// against demo-chat's /ws/echo.

import assert from 'node:assert/strict';

// Runs in the page: an echo session over `window.__beeline.websocket`.
export async function echoSession(count) {
  const client = window.__beeline;
  await client.ready;
  const opened = (socket) =>
    new Promise((resolve, reject) => {
      socket.onopen = () => resolve();
      socket.onerror = () => reject(new Error('error before open'));
      socket.onclose = (e) => reject(new Error(`closed before open: ${e.code}`));
    });
  const socket = client.websocket('/ws/echo', ['echo.v1']);
  socket.binaryType = 'arraybuffer';
  await opened(socket);
  const result = { path: socket.path, protocol: socket.protocol, readyState: socket.readyState };
  const received = [];
  let wanted = 2 * count;
  let done;
  const all = new Promise((resolve) => {
    done = resolve;
  });
  socket.onmessage = (e) => {
    received.push(typeof e.data === 'string' ? e.data : new DataView(e.data).getUint32(0));
    if (received.length === wanted) done();
  };
  for (let i = 0; i < count; i++) {
    socket.send(`text ${i}`);
    const bytes = new ArrayBuffer(4);
    new DataView(bytes).setUint32(0, i);
    socket.send(bytes);
  }
  await all;
  result.inOrder = received.every((m, k) => (k % 2 === 0 ? m === `text ${k / 2}` : m === (k - 1) / 2));
  result.count = received.length;

  // A 1 MiB message, as a Blob this time.
  socket.binaryType = 'blob';
  const big = new Uint8Array(1 << 20).map((_, i) => i % 251);
  const bigBack = new Promise((resolve) => {
    socket.onmessage = async (e) => resolve(new Uint8Array(await e.data.arrayBuffer()));
  });
  socket.send(new Blob([big]));
  const back = await bigBack;
  result.bigIntact = back.length === big.length && back.every((b, i) => b === big[i]);

  // The server closes with a code and reason.
  const serverClose = new Promise((resolve) => {
    socket.onclose = (e) => resolve({ code: e.code, reason: e.reason, wasClean: e.wasClean });
  });
  socket.send('close:4001:bye from home');
  result.serverClose = await serverClose;
  result.finalState = socket.readyState;

  // The page closes another with its own code; validation as a browser's.
  const second = client.websocket('/ws/echo');
  await opened(second);
  try {
    second.close(1001);
    result.badCode = 'accepted';
  } catch (err) {
    result.badCode = err.name;
  }
  const pageClose = new Promise((resolve) => {
    second.onclose = (e) => resolve({ code: e.code, reason: e.reason, wasClean: e.wasClean });
  });
  second.close(4002, 'bye from page');
  result.pageClose = await pageClose;
  return result;
}

export function assertEcho(result, path, count) {
  assert.equal(result.path, path);
  assert.equal(result.protocol, 'echo.v1');
  assert.equal(result.readyState, 1);
  assert.equal(result.count, 2 * count);
  assert.equal(result.inOrder, true, 'messages out of order or changed');
  assert.equal(result.bigIntact, true, 'the 1 MiB message changed');
  assert.deepEqual(result.serverClose, { code: 4001, reason: 'bye from home', wasClean: true });
  assert.equal(result.finalState, 3);
  assert.equal(result.badCode, 'InvalidAccessError');
  assert.equal(result.pageClose.code, 4002);
  assert.equal(result.pageClose.wasClean, true);
}
