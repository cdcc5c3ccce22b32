// A resumable link (docs/protocol.md §4.8): one bridge connection whose
// messages travel, numbered, over whichever carrier is current — the frame
// connection through signal-api's home link, or the session's `resume` data
// channel — so streams move between them with nothing lost, duplicated or
// reordered.
//
// Every message is an envelope, one binary message on the carrier:
//   data: [1 binary | 2 text] [seq u64 BE] [message]
//   ack:  [3] [next expected seq u64 BE]
// The sender keeps each message until an ack covers it and sends everything
// not yet acknowledged again on the carrier it moves to. The receiver
// delivers in seq order, drops copies, holds later seqs until a gap fills.

import { BUFFERED_HIGH, ChannelSendError, debug } from './common.mjs';

export const ENVELOPE_DATA_BINARY = 1;
export const ENVELOPE_DATA_TEXT = 2;
export const ENVELOPE_ACK = 3;
/** Bytes an envelope adds to a message. */
export const ENVELOPE_OVERHEAD = 9;
/** The largest bridge message (a data channel's usual 64 KiB, less the envelope). */
export const RESUME_MAX_MESSAGE = 64 * 1024 - ENVELOPE_OVERHEAD;
/** Unacknowledged bytes past which the link reports congestion (and most held for a gap). */
export const RESUME_MAX_UNACKED = 8 * 1024 * 1024;
/** With no carrier this long, the connection ends. */
export const RESUME_LINGER_MS = 30_000;
/** An ack goes out after this many messages, or this long after the first unacknowledged one. */
export const RESUME_ACK_EVERY = 32;
export const RESUME_ACK_DELAY_MS = 10;
/** The close code of a frame connection that asked to resume a connection the home no longer has. */
export const UNKNOWN_CONNECTION_CLOSE = 4410;

const encoder = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Bytes that are not an envelope, or an envelope that breaks the rules. */
export class EnvelopeError extends Error {
  name = 'EnvelopeError';
}

function header(kind, number) {
  const out = new Uint8Array(ENVELOPE_OVERHEAD);
  out[0] = kind;
  new DataView(out.buffer).setBigUint64(1, BigInt(number));
  return out;
}

/** Encodes a data envelope for `message` (string or bytes) numbered `seq`. */
export function encodeData(seq, message) {
  const text = typeof message === 'string';
  const body = text ? encoder.encode(message) : toBytes(message);
  const out = new Uint8Array(ENVELOPE_OVERHEAD + body.length);
  out.set(header(text ? ENVELOPE_DATA_TEXT : ENVELOPE_DATA_BINARY, seq));
  out.set(body, ENVELOPE_OVERHEAD);
  return out;
}

/** Encodes an ack of everything below `next`. */
export function encodeAck(next) {
  return header(ENVELOPE_ACK, next);
}

/**
 * Decodes one envelope: `{kind: 'data', seq, message}` (message: string or
 * ArrayBuffer) or `{kind: 'ack', next}`. Throws EnvelopeError.
 */
export function decodeEnvelope(data) {
  const bytes = toBytes(data);
  if (bytes.length === 0) throw new EnvelopeError('resumable envelope truncated (0 bytes)');
  const kind = bytes[0];
  if (kind !== ENVELOPE_DATA_BINARY && kind !== ENVELOPE_DATA_TEXT && kind !== ENVELOPE_ACK) {
    throw new EnvelopeError(`unknown resumable envelope kind ${kind}`);
  }
  if (bytes.length < ENVELOPE_OVERHEAD) throw new EnvelopeError(`resumable envelope truncated (${bytes.length} bytes)`);
  const number = Number(new DataView(bytes.buffer, bytes.byteOffset, bytes.length).getBigUint64(1));
  const rest = bytes.subarray(ENVELOPE_OVERHEAD);
  if (kind === ENVELOPE_ACK) {
    if (rest.length > 0) throw new EnvelopeError(`resumable ack has ${rest.length} trailing bytes`);
    return { kind: 'ack', next: number };
  }
  if (kind === ENVELOPE_DATA_TEXT) {
    let message;
    try {
      message = strictUtf8.decode(rest);
    } catch {
      throw new EnvelopeError('resumable text message is not UTF-8');
    }
    return { kind: 'data', seq: number, message };
  }
  return { kind: 'data', seq: number, message: rest.slice().buffer };
}

function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError('an envelope is binary');
}

/**
 * The link ChannelProtocol and ChannelStreams use (like dataChannelLink),
 * over carriers that come and go.
 *
 * A carrier is `{ name, send(Uint8Array), bufferedAmount?, close?(), fresh? }`;
 * whoever owns it calls `receive(id, data)` with each of its binary
 * messages and `carrierEnded(id)` when it closes. `attach` makes a carrier
 * the one written to; `detach` stops using one whose path is known dead.
 *
 * Events (callbacks): `onmessage(message)` in order, `oncarrier(name|null)`
 * when the written carrier changes, `onclose(reason)` once, when the
 * connection ends (bad input from the home, or no carrier for `lingerMs`).
 */
export class ResumableLink {
  onmessage = null;
  oncarrier = null;
  onclose = null;

  #lingerMs;
  #maxUnacked;
  #carriers = []; // [{id, carrier}], oldest first
  #nextId = 1;
  #writer = null;
  // Sent, not yet acknowledged: [{seq, bytes}] in seq order.
  #kept = [];
  #keptBytes = 0;
  #nextSeq = 0;
  // Receiving side.
  #expect = 0;
  #held = new Map();
  #heldBytes = 0;
  #unackedIn = 0;
  #ackTimer = null;
  #lingerTimer = null;
  #waiters = [];
  #closed = null;
  // The highest ack received, and the carriers that delivered anything: the
  // first envelope on a fresh carrier (`fresh: true`, a new WebSocket, which
  // cannot hold anything from before) is the other side's ack of attaching
  // it, never below what it acknowledged before, unless it lost the
  // connection (home-peer restarted) and started a new one. A data channel
  // is not fresh: one that takes a closed channel's SCTP stream may first
  // deliver that channel's late messages, acks included.
  #ackedMax = 0;
  #heard = new Set();
  #fresh = new Set();
  /** Carrier switches so far (each time the written carrier changed to another one). */
  switches = 0;

  constructor({ lingerMs = RESUME_LINGER_MS, maxUnacked = RESUME_MAX_UNACKED } = {}) {
    this.#lingerMs = lingerMs;
    this.#maxUnacked = maxUnacked;
    this.#armLinger();
  }

  get maxMessageSize() {
    return RESUME_MAX_MESSAGE;
  }

  /** The name of the carrier written to, or null. */
  get carrier() {
    return this.#writer?.carrier.name ?? null;
  }

  /** Why the connection ended, or null while it is up. */
  get closed() {
    return this.#closed;
  }

  /** Whether anything was sent or received: a new carrier then resumes the connection rather than starting it. */
  get started() {
    return this.#nextSeq > 0 || this.#expect > 0;
  }

  /** Bytes sent and not yet acknowledged. */
  get unacked() {
    return this.#keptBytes;
  }

  /** Whether `name` is among the carriers attached. */
  has(name) {
    return this.#carriers.some((c) => c.carrier.name === name);
  }

  /**
   * Writes to `carrier` from now on: an ack, then everything not yet
   * acknowledged, then new messages. Returns its id. With `write: false`
   * it only joins (read, and written to if the current one goes), unless
   * there is no carrier to write to.
   */
  attach(carrier, { write = true } = {}) {
    if (this.#closed) throw new ChannelSendError(`the resumable connection ended: ${this.#closed}`);
    const entry = { id: this.#nextId++, carrier };
    if (carrier.fresh) this.#fresh.add(entry.id);
    if (write || this.#writer === null) {
      this.#carriers.push(entry);
    } else {
      // Second newest: the current carrier stays the one to fall back from.
      this.#carriers.splice(this.#carriers.indexOf(this.#writer), 0, entry);
    }
    clearTimeout(this.#lingerTimer);
    this.#lingerTimer = null;
    if (write || this.#writer === null) this.#moveTo(entry);
    return entry.id;
  }

  /** Stops using carrier `id` (its path is dead); writing moves to the newest other one. */
  detach(id) {
    this.#drop(id);
  }

  /** Carrier `id` closed. */
  carrierEnded(id) {
    this.#drop(id);
  }

  /** Handles one binary message that arrived on carrier `id`. */
  receive(id, data) {
    if (this.#closed) return;
    let envelope;
    try {
      envelope = decodeEnvelope(data);
    } catch (err) {
      this.#close(err.message);
      return;
    }
    const first = !this.#heard.has(id);
    if (first) this.#heard.add(id);
    if (envelope.kind === 'ack') {
      if (first && this.#fresh.has(id) && envelope.next < this.#ackedMax) {
        this.#close(`the other side lost the connection (it acknowledged ${this.#ackedMax} messages before, ${envelope.next} now)`);
        return;
      }
      this.#onAck(envelope.next);
      return;
    }
    const { seq, message } = envelope;
    if (seq < this.#expect) return; // a copy
    if (seq > this.#expect) {
      if (!this.#held.has(seq)) {
        this.#held.set(seq, message);
        this.#heldBytes += size(message);
        if (this.#heldBytes > this.#maxUnacked) this.#close(`a gap at message ${this.#expect} held more than ${this.#maxUnacked} bytes`);
      }
      return;
    }
    this.#deliver(message);
    while (this.#held.has(this.#expect)) {
      const next = this.#held.get(this.#expect);
      this.#held.delete(this.#expect);
      this.#heldBytes -= size(next);
      this.#deliver(next);
    }
  }

  /** Sends one bridge message (string or bytes); kept until acknowledged. */
  send(message) {
    if (this.#closed) throw new ChannelSendError(`the resumable connection ended: ${this.#closed}`);
    const bytes = encodeData(this.#nextSeq, message);
    this.#nextSeq += 1;
    this.#kept.push(bytes);
    this.#keptBytes += bytes.length;
    if (this.#writer) this.#write(this.#writer, bytes);
  }

  congested() {
    if (this.#closed) return false;
    if (this.#keptBytes > this.#maxUnacked || this.#writer === null) return true;
    return (this.#writer.carrier.bufferedAmount ?? 0) > BUFFERED_HIGH;
  }

  /** Resolves on an ack, a new carrier, or after a while. */
  drained() {
    return new Promise((resolve) => {
      this.#waiters.push(resolve);
      setTimeout(resolve, 100);
    });
  }

  /** Wakes waiters (the carrier's buffer drained). */
  wake() {
    for (const resolve of this.#waiters.splice(0)) resolve();
  }

  /** Ends the connection; closes every carrier. */
  close(reason = 'closed by the page') {
    this.#close(reason);
  }

  #deliver(message) {
    this.#expect += 1;
    this.#unackedIn += 1;
    if (this.#unackedIn >= RESUME_ACK_EVERY) this.#sendAck();
    else if (this.#ackTimer === null) this.#ackTimer = setTimeout(() => this.#sendAck(), RESUME_ACK_DELAY_MS);
    try {
      this.onmessage?.(message);
    } catch (err) {
      debug('resumable message handler threw', err);
    }
  }

  #sendAck() {
    clearTimeout(this.#ackTimer);
    this.#ackTimer = null;
    this.#unackedIn = 0;
    if (this.#writer) this.#write(this.#writer, encodeAck(this.#expect));
  }

  #onAck(next) {
    const firstKept = this.#nextSeq - this.#kept.length;
    if (next > this.#nextSeq) {
      this.#close(`an ack of message ${next}, beyond the ${this.#nextSeq} sent`);
      return;
    }
    if (next > this.#ackedMax) this.#ackedMax = next;
    let covered = next - firstKept;
    if (covered <= 0) return;
    while (covered-- > 0) this.#keptBytes -= this.#kept.shift().length;
    this.wake();
  }

  #moveTo(entry) {
    const previous = this.#writer;
    this.#writer = entry;
    if (previous && previous !== entry) this.switches += 1;
    if (!entry) {
      this.#armLinger();
      this.oncarrier?.(null);
      return;
    }
    // Stop-the-world: every send is synchronous, so nothing is half
    // written; the ack, then all that is not acknowledged, then new ones.
    clearTimeout(this.#ackTimer);
    this.#ackTimer = null;
    this.#unackedIn = 0;
    this.#write(entry, encodeAck(this.#expect));
    for (const bytes of this.#kept) {
      if (this.#writer !== entry) break;
      this.#write(entry, bytes);
    }
    if (this.#writer === entry) {
      this.oncarrier?.(entry.carrier.name);
      this.wake();
    }
  }

  #write(entry, bytes) {
    try {
      entry.carrier.send(bytes);
    } catch (err) {
      // The carrier is gone; what it lost is kept and goes again on the next.
      debug(`resumable carrier ${entry.carrier.name} refused a message:`, err?.message ?? err);
      this.#drop(entry.id);
    }
  }

  #drop(id) {
    const index = this.#carriers.findIndex((c) => c.id === id);
    if (index < 0) return;
    const [entry] = this.#carriers.splice(index, 1);
    if (this.#writer === entry && !this.#closed) this.#moveTo(this.#carriers.at(-1) ?? null);
  }

  #armLinger() {
    if (this.#closed || this.#lingerTimer !== null) return;
    this.#lingerTimer = setTimeout(() => this.#close(`no carrier for ${this.#lingerMs} ms`), this.#lingerMs);
  }

  #close(reason) {
    if (this.#closed) return;
    this.#closed = reason;
    debug('resumable connection ended:', reason);
    clearTimeout(this.#ackTimer);
    clearTimeout(this.#lingerTimer);
    const carriers = this.#carriers.splice(0);
    this.#writer = null;
    this.#kept = [];
    this.#keptBytes = 0;
    this.#held.clear();
    for (const { carrier } of carriers) {
      try {
        carrier.close?.();
      } catch {
        // Already closed.
      }
    }
    this.wake();
    this.onclose?.(reason);
  }
}

function size(message) {
  return typeof message === 'string' ? message.length : message.byteLength;
}
