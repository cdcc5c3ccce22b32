// WebSockets: the record codec of docs/protocol.md §4.7 and BeelineWebSocket.

import { strictUtf8, utf8Encoder } from './codec.mjs';
import { ChannelSendError, DEFAULT_MAX_WS_MESSAGE, debug } from './common.mjs';

// ---- WebSockets (docs/protocol.md §4.7) -------------------------------------

export const RECORD_HEADER_BYTES = 5;
export const RECORD_KINDS = Object.freeze({ text: 1, binary: 2, close: 8, ping: 9, pong: 10 });

/** One WebSocket message as a record: `[kind u8][length u32][payload]`. */
export function encodeRecord(kind, payload) {
  const record = new Uint8Array(RECORD_HEADER_BYTES + payload.length);
  record[0] = kind;
  new DataView(record.buffer).setUint32(1, payload.length);
  record.set(payload, RECORD_HEADER_BYTES);
  return record;
}

/** A close record: empty, or the code then the UTF-8 reason. */
export function encodeCloseRecord(code, reason = '') {
  if (code === undefined) return encodeRecord(RECORD_KINDS.close, new Uint8Array(0));
  const text = utf8Encoder.encode(reason);
  const payload = new Uint8Array(2 + text.length);
  new DataView(payload.buffer).setUint16(0, code);
  payload.set(text, 2);
  return encodeRecord(RECORD_KINDS.close, payload);
}

/** A record kind or length this client refuses; `code` is the close code. */
export class RecordError extends Error {
  name = 'RecordError';
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

/**
 * Turns the bytes of a WebSocket stream, as they arrive in `data` frames,
 * into messages `{kind: 'text'|'binary'|'close'|'ping'|'pong', data, code?, reason?}`.
 */
export class RecordReader {
  #chunks = [];
  #size = 0;
  #limit;

  constructor(limit = DEFAULT_MAX_WS_MESSAGE) {
    this.#limit = limit;
  }

  push(bytes) {
    if (bytes.length === 0) return;
    this.#chunks.push(bytes);
    this.#size += bytes.length;
  }

  #peek(n) {
    const out = new Uint8Array(n);
    let at = 0;
    for (const chunk of this.#chunks) {
      const take = Math.min(chunk.length, n - at);
      out.set(chunk.subarray(0, take), at);
      at += take;
      if (at === n) break;
    }
    return out;
  }

  #take(n) {
    const out = this.#peek(n);
    let left = n;
    while (left > 0) {
      const chunk = this.#chunks[0];
      if (chunk.length <= left) {
        this.#chunks.shift();
        left -= chunk.length;
      } else {
        this.#chunks[0] = chunk.subarray(left);
        left = 0;
      }
    }
    this.#size -= n;
    return out;
  }

  /** The next whole message, or null when more bytes are needed; throws RecordError. */
  next() {
    if (this.#size < RECORD_HEADER_BYTES) return null;
    const header = this.#peek(RECORD_HEADER_BYTES);
    const kind = header[0];
    const length = new DataView(header.buffer).getUint32(1);
    const control = kind === RECORD_KINDS.close || kind === RECORD_KINDS.ping || kind === RECORD_KINDS.pong;
    if (kind === RECORD_KINDS.text || kind === RECORD_KINDS.binary) {
      if (length > this.#limit) throw new RecordError(`a ${length}-byte message is over the ${this.#limit}-byte limit`, 1009);
    } else if (!control) {
      throw new RecordError(`unknown record kind ${kind}`, 1002);
    } else if (length > 125 || (kind === RECORD_KINDS.close && length === 1)) {
      throw new RecordError('malformed control record', 1002);
    }
    if (this.#size < RECORD_HEADER_BYTES + length) return null;
    this.#take(RECORD_HEADER_BYTES);
    const payload = this.#take(length);
    switch (kind) {
      case RECORD_KINDS.text: {
        let data;
        try {
          data = strictUtf8.decode(payload);
        } catch {
          throw new RecordError('a text message is not valid UTF-8', 1007);
        }
        return { kind: 'text', data };
      }
      case RECORD_KINDS.binary:
        return { kind: 'binary', data: payload };
      case RECORD_KINDS.ping:
        return { kind: 'ping', data: payload };
      case RECORD_KINDS.pong:
        return { kind: 'pong', data: payload };
      default: {
        if (payload.length === 0) return { kind: 'close', code: 1005, reason: '' };
        const code = new DataView(payload.buffer, payload.byteOffset).getUint16(0);
        let reason;
        try {
          reason = strictUtf8.decode(payload.subarray(2));
        } catch {
          throw new RecordError('a close reason is not valid UTF-8', 1007);
        }
        return { kind: 'close', code, reason };
      }
    }
  }
}

export const WS_CONNECTING = 0;
export const WS_OPEN = 1;
export const WS_CLOSING = 2;
export const WS_CLOSED = 3;

export function makeEvent(type, init = {}) {
  if (type === 'message' && typeof MessageEvent === 'function') return new MessageEvent('message', init);
  if (type === 'close' && typeof CloseEvent === 'function') return new CloseEvent('close', init);
  const event = new Event(type);
  for (const [key, value] of Object.entries(init)) Object.defineProperty(event, key, { value, enumerable: true });
  return event;
}

/**
 * A WebSocket-compatible object (`client.websocket(url, protocols)`). Over
 * the data channel when it is open and the home agreed `websocket`; over
 * the normal path otherwise: a browser WebSocket to the same URL, which
 * signal-api relays to the home. A socket stays on the path it opened on;
 * when that path dies the page gets a close (1006 on the channel, 1011
 * from the relay) and may open a new one. `path` says which: 'direct' or
 * 'relay'.
 */
export class BeelineWebSocket extends EventTarget {
  static CONNECTING = WS_CONNECTING;
  static OPEN = WS_OPEN;
  static CLOSING = WS_CLOSING;
  static CLOSED = WS_CLOSED;
  CONNECTING = WS_CONNECTING;
  OPEN = WS_OPEN;
  CLOSING = WS_CLOSING;
  CLOSED = WS_CLOSED;

  onopen = null;
  onmessage = null;
  onerror = null;
  onclose = null;

  #url;
  #readyState = WS_CONNECTING;
  #protocol = '';
  #binaryType = 'blob';
  #buffered = 0;
  #path;
  #native = null;
  #controller = null; // our direction of the stream
  #closeSent = false;
  #closeReceived = null;
  #closedOnce = false;
  #closeCalled = false;

  /**
   * @param {string} url absolute ws(s):// URL (what `url` reports)
   * @param {string[]} protocols requested subprotocols
   * @param {{streams?: ChannelStreams, maxMessage?: number, relayUrl: string, path: string, headers: Object<string,string>, NativeWebSocket?: typeof WebSocket, label?: string, later?: Promise<object>}} how
   *   `label`: what `path` says of a native socket to `relayUrl` (default 'relay');
   *   `later`: a promise of the `how` to use, for a socket opened while the channel negotiates
   */
  constructor(url, protocols, how) {
    super();
    this.#url = url;
    if (how.later) {
      // The path is chosen once the channel's protocol is settled.
      this.#path = 'direct';
      how.later.then(
        (chosen) => this.#start(protocols, chosen),
        () => this.#fail(1006, ''),
      );
      return;
    }
    this.#start(protocols, how);
  }

  #start(protocols, how) {
    if (this.#readyState === WS_CLOSING) {
      // close() while the path was being chosen: as a browser fails a
      // connecting socket.
      this.#fail(1006, '');
      return;
    }
    if (how.streams) {
      this.#path = 'direct';
      this.#openDirect(how.streams, how.path, protocols, how.headers, how.maxMessage ?? DEFAULT_MAX_WS_MESSAGE, how.fallback);
    } else {
      this.#path = how.label ?? 'relay';
      this.#openNative(how.NativeWebSocket ?? globalThis.WebSocket, how.relayUrl, protocols, how.retry);
    }
  }

  get url() { return this.#url; }
  get readyState() { return this.#native ? this.#native.readyState : this.#readyState; }
  get protocol() { return this.#native ? this.#native.protocol : this.#protocol; }
  get extensions() { return this.#native ? this.#native.extensions : ''; }
  get bufferedAmount() { return this.#native ? this.#native.bufferedAmount : this.#buffered; }
  get binaryType() { return this.#binaryType; }
  set binaryType(value) {
    if (value !== 'blob' && value !== 'arraybuffer') return;
    this.#binaryType = value;
    if (this.#native) this.#native.binaryType = value;
  }
  /** 'direct' (the data channel), 'loopback' (home-peer's loopback listener) or 'relay' (the normal path). */
  get path() { return this.#path; }

  #emit(type, init) {
    const event = makeEvent(type, init);
    const handler = this[`on${type}`];
    if (typeof handler === 'function') {
      try {
        handler.call(this, event);
      } catch (err) {
        setTimeout(() => { throw err; });
      }
    }
    this.dispatchEvent(event);
  }

  // ---- the normal path ----

  // `retry`, when given, is asked for another path if the socket fails
  // before it opens (a loopback listener that is gone): its answer is opened
  // instead, and the page sees neither the error nor the close.
  #openNative(NativeWebSocket, relayUrl, protocols, retry) {
    const native = protocols.length > 0 ? new NativeWebSocket(relayUrl, protocols) : new NativeWebSocket(relayUrl);
    native.binaryType = this.#binaryType;
    this.#native = native;
    let opened = false;
    let errored = false;
    const retrying = () => !opened && typeof retry === 'function' && !this.#closeCalled;
    native.onopen = () => {
      opened = true;
      this.#emit('open');
    };
    native.onmessage = (e) => this.#emit('message', { data: e.data, origin: new URL(this.#url).origin });
    native.onerror = () => {
      if (retrying()) errored = true;
      else this.#emit('error');
    };
    native.onclose = (e) => {
      if (retrying()) {
        const next = retry();
        if (next) {
          native.onopen = native.onmessage = native.onerror = native.onclose = null;
          this.#native = null;
          this.#start(protocols, next);
          return;
        }
        if (errored) this.#emit('error');
      }
      this.#emit('close', { code: e.code, reason: e.reason, wasClean: e.wasClean });
    };
  }

  // ---- the data channel ----

  async #openDirect(streams, path, protocols, headers, maxMessage, fallback) {
    const outgoing = new ReadableStream({
      start: (controller) => {
        this.#controller = controller;
      },
    });
    const head = { ...headers };
    if (protocols.length > 0) head['sec-websocket-protocol'] = protocols.join(', ');
    let answer;
    try {
      answer = await streams.start({ method: 'GET', path, headers: head, upgrade: 'websocket', body: outgoing });
    } catch (err) {
      if (err instanceof ChannelSendError && fallback) {
        // Nothing was sent: the normal path it is.
        this.#path = 'relay';
        this.#openNative(fallback.NativeWebSocket ?? globalThis.WebSocket, fallback.relayUrl, protocols);
        return;
      }
      debug('WebSocket over the channel failed:', err?.message ?? err);
      this.#fail(1006, '');
      return;
    }
    if (answer.status !== 101) {
      // The home service refused the handshake, as a browser sees it: an
      // error, then close 1006.
      answer.body?.cancel?.().catch?.(() => {});
      this.#fail(1006, '');
      return;
    }
    const chosen = answer.headers?.['sec-websocket-protocol'];
    if (chosen && !protocols.includes(chosen)) {
      this.#fail(1006, '');
      return;
    }
    if (this.#readyState === WS_CLOSING) {
      // close() was called while connecting.
      this.#sendRecord(encodeCloseRecord(1000, ''));
      this.#finishSending();
    } else {
      this.#readyState = WS_OPEN;
    }
    this.#protocol = chosen ?? '';
    if (this.#readyState === WS_OPEN) this.#emit('open');
    this.#readLoop(answer.body.getReader(), new RecordReader(maxMessage));
  }

  async #readLoop(reader, records) {
    try {
      for (;;) {
        let message;
        while ((message = records.next()) !== null) {
          if (message.kind === 'close') {
            this.#closeReceived = message;
            if (!this.#closeSent) {
              // Answer with the same code, as a browser does.
              const code = message.code === 1005 ? undefined : message.code;
              this.#sendRecord(encodeCloseRecord(code, ''));
              this.#finishSending();
            }
            this.#readyState = WS_CLOSING;
          } else if (message.kind === 'text' || message.kind === 'binary') {
            if (this.#readyState !== WS_OPEN) continue;
            const data = message.kind === 'text'
              ? message.data
              : this.#binaryType === 'arraybuffer'
                ? message.data.buffer.slice(message.data.byteOffset, message.data.byteOffset + message.data.length)
                : new Blob([message.data]);
            this.#emit('message', { data, origin: new URL(this.#url).origin });
          }
          // Pings and pongs are not a page's business.
        }
        const { value, done } = await reader.read();
        if (done) break;
        records.push(value);
      }
    } catch (err) {
      if (err instanceof RecordError) {
        this.#sendRecord(encodeCloseRecord(err.code, err.message.slice(0, 100)));
        this.#finishSending();
        reader.cancel().catch(() => {});
        this.#fail(err.code, err.message.slice(0, 100));
        return;
      }
      debug('WebSocket stream failed:', err?.message ?? err);
      this.#fail(1006, '');
      return;
    }
    // The home ended its direction.
    const close = this.#closeReceived;
    if (close) {
      this.#finishSending();
      this.#closed(close.code, close.reason, true);
    } else {
      this.#fail(1006, '');
    }
  }

  #sendRecord(record) {
    if (this.#closeSent || !this.#controller) return;
    if (record[0] === RECORD_KINDS.close) this.#closeSent = true;
    try {
      this.#controller.enqueue(record);
    } catch {
      // The stream is gone; the read side reports it.
    }
  }

  #finishSending() {
    try {
      this.#controller?.close();
    } catch {
      // Already closed.
    }
  }

  #fail(code, reason) {
    if (this.#closedOnce) return;
    this.#emit('error');
    this.#closed(code, reason, false);
  }

  #closed(code, reason, wasClean) {
    if (this.#closedOnce) return;
    this.#closedOnce = true;
    this.#readyState = WS_CLOSED;
    this.#finishSending();
    this.#emit('close', { code, reason, wasClean });
  }

  /** Sends a string, ArrayBuffer, typed array, DataView or Blob. */
  send(data) {
    if (this.#native) return this.#native.send(data);
    if (this.#readyState === WS_CONNECTING) throw new DOMException('WebSocket is still connecting', 'InvalidStateError');
    if (this.#readyState !== WS_OPEN) return;
    if (typeof data === 'string') {
      this.#queue(Promise.resolve(encodeRecord(RECORD_KINDS.text, utf8Encoder.encode(data))));
    } else if (data instanceof ArrayBuffer) {
      this.#queue(Promise.resolve(encodeRecord(RECORD_KINDS.binary, new Uint8Array(data.slice(0)))));
    } else if (ArrayBuffer.isView(data)) {
      const copy = new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
      this.#queue(Promise.resolve(encodeRecord(RECORD_KINDS.binary, copy)));
    } else if (typeof Blob === 'function' && data instanceof Blob) {
      this.#queue(data.arrayBuffer().then((buffer) => encodeRecord(RECORD_KINDS.binary, new Uint8Array(buffer))));
    } else {
      this.#queue(Promise.resolve(encodeRecord(RECORD_KINDS.text, utf8Encoder.encode(String(data)))));
    }
  }

  // Keeps messages in order even when a Blob must be read first.
  #sendChain = Promise.resolve();

  #queue(recordPromise) {
    this.#sendChain = this.#sendChain.then(async () => {
      const record = await recordPromise;
      this.#buffered += record.length;
      this.#sendRecord(record);
      // Handed to the stream's upload, which sends within the window.
      this.#buffered -= record.length;
    });
  }

  /** Closes with `code` (1000 or 3000–4999) and `reason` (at most 123 bytes). */
  close(code, reason) {
    if (code !== undefined && code !== 1000 && (code < 3000 || code > 4999 || !Number.isInteger(code))) {
      throw new DOMException(`The close code must be 1000 or in 3000-4999; ${code} is neither.`, 'InvalidAccessError');
    }
    const text = reason === undefined ? '' : String(reason);
    if (utf8Encoder.encode(text).length > 123) throw new DOMException('The close reason is longer than 123 bytes.', 'SyntaxError');
    this.#closeCalled = true;
    if (this.#native) return this.#native.close(code, reason);
    if (this.#readyState === WS_CLOSING || this.#readyState === WS_CLOSED) return;
    if (this.#readyState === WS_CONNECTING) {
      this.#readyState = WS_CLOSING;
      return;
    }
    this.#readyState = WS_CLOSING;
    this.#sendChain = this.#sendChain.then(() => {
      this.#sendRecord(encodeCloseRecord(code ?? (reason === undefined ? undefined : 1000), text));
      this.#finishSending();
    });
  }
}
