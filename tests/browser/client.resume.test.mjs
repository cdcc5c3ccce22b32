// Unit tests (node, no browser) of the client's resumable link
// (client/src/resume.mjs, docs/protocol.md §4.8): the envelope codec against
// the Rust encoder's bytes, and two links joined by fake carriers that
// switch, lose what was in flight, and deliver copies.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import { EnvelopeError, ResumableLink, decodeEnvelope, encodeAck, encodeData } from '../../client/src/index.mjs';

const hex = (bytes) => Buffer.from(bytes).toString('hex');

describe('resumable envelopes', () => {
  test('encode as the Rust codec does (beeline_frame::resume)', () => {
    assert.equal(hex(encodeData(1, 'hi')), '02' + '0000000000000001' + '6869');
    assert.equal(hex(encodeData(258, new Uint8Array([0, 255]))), '01' + '0000000000000102' + '00ff');
    assert.equal(hex(encodeAck(7)), '03' + '0000000000000007');
  });

  test('decode round-trips text and binary', () => {
    const text = decodeEnvelope(encodeData(42, 'héllo'));
    assert.deepEqual(text, { kind: 'data', seq: 42, message: 'héllo' });
    const binary = decodeEnvelope(encodeData(3, new Uint8Array([1, 2, 3])));
    assert.equal(binary.kind, 'data');
    assert.deepEqual([...new Uint8Array(binary.message)], [1, 2, 3]);
    assert.deepEqual(decodeEnvelope(encodeAck(9).buffer), { kind: 'ack', next: 9 });
  });

  test('bad bytes are refused with a clear error', () => {
    assert.throws(() => decodeEnvelope(new Uint8Array([])), EnvelopeError);
    assert.throws(() => decodeEnvelope(new Uint8Array([4, 0, 0, 0, 0, 0, 0, 0, 0])), /unknown resumable envelope kind 4/);
    assert.throws(() => decodeEnvelope(new Uint8Array([1, 0, 0])), /truncated \(3 bytes\)/);
    assert.throws(() => decodeEnvelope(new Uint8Array([3, 0, 0, 0, 0, 0, 0, 0, 1, 9])), /trailing/);
    assert.throws(() => decodeEnvelope(new Uint8Array([2, 0, 0, 0, 0, 0, 0, 0, 0, 0xff])), /not UTF-8/);
  });
});

// A carrier between two links: `up` false drops what is sent (a cut path);
// `hold` keeps what is sent until released (in flight).
function carrierPair(name) {
  const state = { up: true, hold: false, held: [] };
  const ends = {};
  const make = (from, to) => ({
    name,
    bufferedAmount: 0,
    send(bytes) {
      if (!state.up) return;
      const copy = bytes.slice();
      if (state.hold) state.held.push(() => ends[to].deliver(copy));
      else queueMicrotask(() => ends[to].deliver(copy));
    },
    close() {},
  });
  ends.a = { carrier: make('a', 'b'), deliver: () => {} };
  ends.b = { carrier: make('b', 'a'), deliver: () => {} };
  return {
    state,
    ends,
    /** Attaches both ends: `a` to link `la`, `b` to `lb`. */
    attach(la, lb, opts = {}) {
      const ia = la.attach(ends.a.carrier, opts);
      const ib = lb.attach(ends.b.carrier, opts);
      ends.a.deliver = (bytes) => la.receive(ia, bytes);
      ends.b.deliver = (bytes) => lb.receive(ib, bytes);
      return [ia, ib];
    },
    release() {
      state.hold = false;
      for (const deliver of state.held.splice(0)) deliver();
    },
  };
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 15));

function collect(link) {
  const got = [];
  link.onmessage = (m) => got.push(typeof m === 'string' ? m : `bin:${[...new Uint8Array(m)].join(',')}`);
  return got;
}

describe('ResumableLink', () => {
  test('delivers in order across a switch, and again after the new carrier is cut', async () => {
    const a = new ResumableLink({ lingerMs: 5000 });
    const b = new ResumableLink({ lingerMs: 5000 });
    const gotA = collect(a);
    const gotB = collect(b);
    const relay = carrierPair('link');
    relay.attach(a, b);
    for (let i = 0; i < 50; i++) a.send(`m${i}`);
    b.send(new Uint8Array([7]));
    await tick();
    // Messages in flight on the relay when the channel takes over: the
    // relay's tail still arrives, and their copies on the channel are dropped.
    relay.state.hold = true;
    for (let i = 50; i < 100; i++) a.send(`m${i}`);
    const channel = carrierPair('channel');
    const [ca, cb] = channel.attach(a, b);
    assert.equal(a.carrier, 'channel');
    for (let i = 100; i < 150; i++) a.send(`m${i}`);
    relay.release();
    await tick();
    // The channel's path dies with messages on it; both sides go back.
    channel.state.up = false;
    for (let i = 150; i < 200; i++) a.send(`m${i}`);
    b.send('from b');
    a.detach(ca);
    b.detach(cb);
    assert.equal(a.carrier, 'link');
    for (let i = 200; i < 250; i++) a.send(`m${i}`);
    await tick();
    assert.deepEqual(gotB, Array.from({ length: 250 }, (_, i) => `m${i}`));
    assert.deepEqual(gotA, ['bin:7', 'from b']);
    assert.equal(a.switches, 2);
    // Everything was acknowledged in the end.
    await tick();
    assert.equal(a.unacked, 0);
    assert.equal(b.unacked, 0);
    a.close();
    b.close();
  });

  test('keeps messages sent with no carrier and sends them on the first one', async () => {
    const a = new ResumableLink({ lingerMs: 5000 });
    const b = new ResumableLink({ lingerMs: 5000 });
    const gotB = collect(b);
    a.send('early');
    assert.equal(a.carrier, null);
    assert.ok(a.congested(), 'no carrier: congested');
    carrierPair('link').attach(a, b);
    await tick();
    assert.deepEqual(gotB, ['early']);
    a.close();
    b.close();
  });

  test('a carrier joined without writing leaves the writer alone until it goes', async () => {
    const a = new ResumableLink({ lingerMs: 5000 });
    const b = new ResumableLink({ lingerMs: 5000 });
    const gotB = collect(b);
    const channel = carrierPair('channel');
    const [ca, cb] = channel.attach(a, b);
    const relay = carrierPair('link');
    relay.attach(a, b, { write: false });
    assert.equal(a.carrier, 'channel');
    a.send('x');
    a.carrierEnded(ca);
    b.carrierEnded(cb);
    assert.equal(a.carrier, 'link');
    a.send('y');
    await tick();
    assert.deepEqual(gotB, ['x', 'y']);
    a.close();
    b.close();
  });

  test('bad input ends the connection with a reason, once', async () => {
    const link = new ResumableLink({ lingerMs: 5000 });
    const reasons = [];
    link.onclose = (why) => reasons.push(why);
    const id = link.attach({ name: 'link', send() {}, close() {} });
    link.receive(id, encodeAck(5));
    assert.equal(reasons.length, 1);
    assert.match(reasons[0], /beyond the 0 sent/);
    link.receive(id, new Uint8Array([9]));
    assert.equal(reasons.length, 1);
    assert.throws(() => link.send('late'), /ended/);
  });

  test('a peer that restarted (its first ack on a new carrier goes back) ends the connection', async () => {
    const a = new ResumableLink({ lingerMs: 5000 });
    const b = new ResumableLink({ lingerMs: 5000 });
    collect(b);
    const relay = carrierPair('link');
    const [ra] = relay.attach(a, b);
    for (let i = 0; i < 40; i++) a.send(`m${i}`);
    await tick();
    assert.equal(a.unacked, 0);
    // The other side comes back as a new connection on a new carrier.
    a.carrierEnded(ra);
    const reasons = [];
    a.onclose = (why) => reasons.push(why);
    const fresh = new ResumableLink({ lingerMs: 5000 });
    const socket = carrierPair('link');
    socket.ends.a.carrier.fresh = true;
    socket.attach(a, fresh);
    await tick();
    assert.equal(reasons.length, 1);
    assert.match(reasons[0], /lost the connection \(it acknowledged 40 messages before, 0 now\)/);
    b.close();
    fresh.close();
  });

  test('a late ack first on a data channel (a reused SCTP stream) is not taken for a restart', async () => {
    const a = new ResumableLink({ lingerMs: 5000 });
    const reasons = [];
    a.onclose = (why) => reasons.push(why);
    const first = a.attach({ name: 'link', send() {}, close() {}, fresh: true });
    for (let i = 0; i < 10; i++) a.send(`m${i}`);
    a.receive(first, encodeAck(10));
    const channel = a.attach({ name: 'channel', send() {}, close() {} });
    // What the old channel's stream still held: an ack from before.
    a.receive(channel, encodeAck(4));
    a.receive(channel, encodeAck(10));
    assert.deepEqual(reasons, []);
    assert.equal(a.carrier, 'channel');
    a.close();
  });

  test('a gap that holds too much ends the connection', () => {
    const link = new ResumableLink({ lingerMs: 5000, maxUnacked: 100 });
    const reasons = [];
    link.onclose = (why) => reasons.push(why);
    const id = link.attach({ name: 'link', send() {}, close() {} });
    for (let seq = 1; seq < 20; seq++) link.receive(id, encodeData(seq, 'x'.repeat(10)));
    assert.equal(reasons.length, 1);
    assert.match(reasons[0], /gap at message 0/);
  });

  test('with no carrier for the linger time the connection ends', async () => {
    const link = new ResumableLink({ lingerMs: 30 });
    const closed = new Promise((resolve) => {
      link.onclose = resolve;
    });
    assert.match(await closed, /no carrier for 30 ms/);
  });
});
