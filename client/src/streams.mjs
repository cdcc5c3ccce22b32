// Requests over one data channel: v1 requests, v2 streams with credit, and the hello/agree negotiation (ChannelProtocol).

import { FrameError, U32_MAX, decodeBinary, encodeBase64, encodeBinary, encodeJson, frameFromObject, isObject, lenientUtf8, maxDataPayload, utf8Encoder } from './codec.mjs';
import { ChannelSendError, DEFAULT_HEAD_TIMEOUT_MS, DEFAULT_MAX_WS_MESSAGE, DEFAULT_NEGOTIATE_MS, DEFAULT_WINDOW, FEATURES, NO_BODY_METHODS, NULL_BODY_STATUSES, PROTOCOL_VERSION, RETRYABLE_ERRORS, debug } from './common.mjs';

// ---- streams ----------------------------------------------------------------

export function channelClosedError(detail) {
  return new TypeError(`beeline: direct channel closed ${detail}`);
}

export function abortReason(signal) {
  if (signal.reason !== undefined) return signal.reason;
  return new DOMException('The operation was aborted.', 'AbortError');
}

/** A failed stream, as fetch reports network errors: a TypeError, with the protocol's `code`. */
export function streamError(code, message) {
  const error = new TypeError(`beeline: ${code}${message ? `: ${message}` : ''}`);
  error.code = code;
  return error;
}

/**
 * The v1 requests in flight on one data channel, matched to `chunk`/`done`
 * frames by id.
 *
 * Knows nothing of WebRTC: it is given a `send(text)` function and fed each
 * received message through `receive`, so tests can drive it with a fake channel.
 */
export class ChannelRequests {
  #send;
  #inflight = new Map();
  #textEncoder = new TextEncoder();

  /** @param {(text: string) => void} send sends one text message; throws if it cannot. */
  constructor(send) {
    this.#send = send;
  }

  /** Number of requests whose response has not finished. */
  get size() {
    return this.#inflight.size;
  }

  /**
   * Sends one request and returns a promise of its `Response`.
   *
   * Throws synchronously (having sent nothing) when `send` throws, so the
   * caller may safely repeat the request on another path.
   *
   * @param {{method: string, path: string, headers: Object<string,string>, body?: Uint8Array}} request
   * @param {{signal?: AbortSignal, retry?: () => Promise<Response>}} [options]
   *   `retry` is called if the channel closes before the response starts;
   *   without it the promise rejects with a TypeError instead.
   */
  start(request, { signal, retry } = {}) {
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    const id = crypto.randomUUID();
    const frame = { id, method: request.method, path: request.path, headers: request.headers };
    if (request.body && request.body.length > 0) frame.body = encodeBase64(request.body);
    const text = JSON.stringify(frame);

    const entry = { id, started: false, controller: null, resolve: null, reject: null, retry, signal, onAbort: null };
    const promise = new Promise((resolve, reject) => {
      entry.resolve = resolve;
      entry.reject = reject;
    });
    entry.stream = new ReadableStream({
      start: (controller) => {
        entry.controller = controller;
      },
      cancel: () => this.#forget(entry),
    });
    this.#inflight.set(id, entry);
    try {
      this.#send(text);
    } catch (err) {
      this.#inflight.delete(id);
      throw err;
    }
    if (signal) {
      entry.onAbort = () => this.#abort(entry);
      signal.addEventListener('abort', entry.onAbort, { once: true });
    }
    return promise;
  }

  /**
   * Routes one received channel message (string or ArrayBuffer) to its
   * request. Several newline-separated frames in one message are accepted.
   */
  receive(message) {
    const text = typeof message === 'string' ? message : lenientUtf8.decode(message);
    for (const frame of parseTextFrames(text)) this.route(frame);
  }

  /** Routes one parsed `chunk` or `done` frame; anything else is ignored. */
  route(frame) {
    const entry = typeof frame.id === 'string' ? this.#inflight.get(frame.id) : undefined;
    if (!entry) return;
    if (frame.type === 'chunk') {
      const data = typeof frame.data === 'string' ? frame.data : '';
      if (!entry.started) this.#startResponse(entry, 200, entry.stream);
      entry.controller.enqueue(this.#textEncoder.encode(data));
    } else if (frame.type === 'done') {
      this.#forget(entry);
      if (entry.started) {
        entry.controller.close();
        return;
      }
      const status = frame.status;
      if (!Number.isInteger(status) || status < 200 || status > 599) {
        entry.reject(new TypeError(`beeline: invalid response status ${status}`));
        return;
      }
      // An empty body, as fetch gives; these statuses may not have one at all.
      entry.controller.close();
      this.#startResponse(entry, status, NULL_BODY_STATUSES.has(status) ? null : entry.stream);
    }
  }

  /**
   * Ends every request because the channel is gone: responses already
   * streaming error out; the others are retried if they were given a `retry`,
   * and reject with a TypeError otherwise.
   */
  closeAll() {
    const entries = [...this.#inflight.values()];
    for (const entry of entries) {
      this.#forget(entry);
      if (entry.started) {
        entry.controller.error(channelClosedError('while the response was streaming'));
      } else if (entry.retry) {
        entry.resolve(entry.retry());
      } else {
        entry.reject(channelClosedError('before the response started'));
      }
    }
  }

  #startResponse(entry, status, body) {
    entry.started = true;
    entry.resolve(new Response(body, { status, headers: { 'x-beeline-path': 'direct' } }));
  }

  #abort(entry) {
    if (!this.#inflight.has(entry.id)) return;
    this.#forget(entry);
    const reason = abortReason(entry.signal);
    if (entry.started) entry.controller.error(reason);
    else entry.reject(reason);
  }

  #forget(entry) {
    this.#inflight.delete(entry.id);
    if (entry.onAbort) entry.signal.removeEventListener('abort', entry.onAbort);
  }
}

/**
 * The JSON objects in one text message: the whole message when it is one
 * JSON value, else each newline-separated line that is (v1 peers may batch
 * frames). Anything that is not a JSON object is dropped.
 */
export function parseTextFrames(text) {
  let values;
  try {
    values = [JSON.parse(text)];
  } catch {
    values = [];
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      try {
        values.push(JSON.parse(line));
      } catch {
        debug('ignoring a channel message that is not JSON');
      }
    }
  }
  return values.filter(isObject);
}

/** Response headers from a frame, plus `x-beeline-path: direct`; bad ones are dropped. */
export function responseHeaders(fields) {
  const headers = new Headers();
  for (const [name, value] of Object.entries(fields)) {
    // Several set-cookie values travel joined with newlines.
    for (const one of name.toLowerCase() === 'set-cookie' ? value.split('\n') : [value]) {
      try {
        headers.append(name, one);
      } catch {
        debug(`dropping response header ${name}: not valid in a Response`);
      }
    }
  }
  headers.set('x-beeline-path', 'direct');
  return headers;
}

export function requestHeadSize(request) {
  let size = request.path.length;
  for (const [name, value] of Object.entries(request.headers)) size += name.length + value.length;
  return size;
}

export function isReadableStream(value) {
  return typeof ReadableStream === 'function' && value instanceof ReadableStream;
}

/** The whole body of a Request as the browser would send it (empty for none). */
export async function readBody(request) {
  if (NO_BODY_METHODS.has(request.method)) return new Uint8Array(0);
  return new Uint8Array(await request.arrayBuffer());
}

/**
 * True when this browser takes a ReadableStream as a request body (streaming
 * uploads, with `duplex: 'half'`). Detected as the web platform suggests: a
 * browser that supports them reads the `duplex` member and sets no
 * content-type for a stream; one that does not (Firefox, Safari) ignores
 * `duplex` and turns the stream into the string "[object ReadableStream]",
 * typed text/plain.
 */
export function supportsRequestStreams() {
  if (typeof Request !== 'function' || typeof ReadableStream !== 'function') return false;
  let duplexRead = false;
  try {
    const probe = new Request('http://beeline.invalid/', {
      method: 'POST',
      body: new ReadableStream(),
      get duplex() {
        duplexRead = true;
        return 'half';
      },
    });
    return duplexRead && !probe.headers.has('content-type');
  } catch {
    return false;
  }
}

export function asBytes(chunk) {
  if (chunk instanceof Uint8Array) return chunk;
  if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (chunk instanceof ArrayBuffer) return new Uint8Array(chunk);
  if (typeof chunk === 'string') return utf8Encoder.encode(chunk);
  throw new TypeError('beeline: request body chunks must be bytes');
}

/**
 * The version-2 streams on one data channel (docs/protocol.md §4–§5).
 *
 * Knows nothing of WebRTC: it is given a `link` and fed each decoded frame
 * through `receive`, so tests can drive it with a fake channel. The link is
 * `{ send(message), maxMessageSize, congested?(), drained?() }`: `send` sends
 * one text or binary message and throws a ChannelSendError when it cannot;
 * `congested()` is true while the channel's send buffer is too full for body
 * data, and `drained()` resolves when it may have emptied.
 */
export class ChannelStreams {
  #link;
  #binary;
  #cancel;
  #credit;
  #sendWindow;
  #recvWindow;
  #grantThreshold;
  #maxStreams;
  #maxHeaderBytes;
  #headTimeoutMs;
  #streams = new Map();
  #nextId = 1;
  #slots = 0; // streams open or about to be: at most maxStreams
  #slotWaiters = [];
  #closed = false;

  /**
   * @param {object} link see the class comment
   * @param {object} options what `hello`/`agree` settled
   * @param {boolean} [options.binary] binary framing (else JSON)
   * @param {boolean} [options.cancel] the `cancel` feature
   * @param {boolean} [options.credit] the `credit` feature
   * @param {number} [options.sendWindow] the home's window for request bodies (agree.window)
   * @param {number} [options.recvWindow] our window for response bodies (hello.window)
   * @param {number} [options.maxStreams] streams the home serves at once; more wait here
   * @param {number} [options.maxHeaderBytes] larger request heads are refused here
   * @param {number} [options.headTimeoutMs] a stream without its response head
   *   after this long fails with a TimeoutError (0: no limit)
   */
  constructor(link, { binary = false, cancel = false, credit = false, sendWindow = DEFAULT_WINDOW, recvWindow = DEFAULT_WINDOW, maxStreams = Infinity, maxHeaderBytes = Infinity, headTimeoutMs = DEFAULT_HEAD_TIMEOUT_MS } = {}) {
    this.#link = link;
    this.#headTimeoutMs = headTimeoutMs > 0 ? headTimeoutMs : 0;
    this.#binary = binary;
    this.#cancel = cancel;
    this.#credit = credit;
    this.#sendWindow = credit ? sendWindow : Infinity;
    this.#recvWindow = recvWindow;
    this.#grantThreshold = Math.max(1, Math.floor(recvWindow / 4));
    this.#maxStreams = maxStreams > 0 ? maxStreams : Infinity;
    this.#maxHeaderBytes = maxHeaderBytes > 0 ? maxHeaderBytes : Infinity;
  }

  /** True when streams use binary frames. */
  get binary() {
    return this.#binary;
  }

  /** Number of streams in flight (either direction unfinished). */
  get size() {
    return this.#streams.size;
  }

  /**
   * Opens a stream and resolves with its `Response` as soon as the response
   * head arrives; the body streams after it.
   *
   * Rejects with a ChannelSendError, having sent nothing, when the channel
   * refuses the request head, so the caller may repeat the request on
   * another path (a ReadableStream body has not been read then either).
   *
   * @param {{method: string, path: string, headers: Object<string,string>, body?: ReadableStream|Uint8Array|null}} request
   * @param {{signal?: AbortSignal, retry?: () => Promise<Response>}} [options]
   *   `retry` is called if the stream fails before its response starts in a
   *   way that means the upstream never saw it; else the promise rejects.
   */
  async start(request, { signal, retry } = {}) {
    if (signal?.aborted) throw abortReason(signal);
    if (requestHeadSize(request) > this.#maxHeaderBytes) throw new ChannelSendError('request head above the home peer\'s limit');
    await this.#acquireSlot(signal);
    try {
      if (this.#link.congested?.()) await this.#link.drained();
      if (signal?.aborted) throw abortReason(signal);
      if (this.#closed) throw new ChannelSendError('channel closed');
      return this.#open(request, signal, retry);
    } catch (err) {
      this.#releaseSlot();
      throw err;
    }
  }

  // Sends the head of a new stream (a slot is held) and returns its response promise.
  #open(request, signal, retry) {
    const id = this.#allocateId();
    const body = request.body instanceof Uint8Array ? (request.body.length > 0 ? request.body : null) : request.body ?? null;
    const head = { type: 'request', id, method: request.method, path: request.path, headers: request.headers ?? {} };
    // The scheme the page addressed, told to the home service as
    // x-forwarded-proto (docs/protocol.md §4.2).
    if (request.scheme === 'http' || request.scheme === 'https') head.scheme = request.scheme;
    if (request.upgrade) head.upgrade = request.upgrade;
    if (body === null) head.end = true;
    const message = this.#encode(head);
    if ((typeof message === 'string' ? utf8Encoder.encode(message).length : message.length) > this.#link.maxMessageSize) {
      throw new ChannelSendError('request head larger than a channel message');
    }

    const entry = {
      id,
      signal,
      retry,
      onAbort: null,
      resolve: null,
      reject: null,
      controller: null,
      stream: null,
      head: false, // the response head arrived
      settled: false, // the page has its outcome: a closed or errored body, or a rejection
      live: true, // the stream is open on the channel
      responseEnded: false,
      uploadDone: body === null,
      reader: null,
      pending: [], // response bytes received, not yet read by the page
      wantData: false, // the page is waiting for bytes
      recvRemaining: this.#recvWindow,
      owed: 0, // bytes read by the page and not yet granted back
      sendWindow: this.#sendWindow,
      wakeUpload: null,
      upgrade: Boolean(request.upgrade), // a WebSocket stream (§4.7)
    };
    const promise = new Promise((resolve, reject) => {
      entry.resolve = resolve;
      entry.reject = reject;
    });
    entry.stream = new ReadableStream(
      {
        start: (controller) => {
          entry.controller = controller;
        },
        pull: () => this.#pull(entry),
        cancel: () => this.#cancelByPage(entry),
      },
      // Nothing is queued ahead of the page's reads, so pulls track its pace.
      { highWaterMark: 0 },
    );
    this.#streams.set(id, entry);
    try {
      this.#link.send(message);
    } catch (err) {
      this.#streams.delete(id);
      throw err instanceof ChannelSendError ? err : new ChannelSendError(err?.message ?? String(err));
    }
    if (signal) {
      entry.onAbort = () => this.#abort(entry);
      signal.addEventListener('abort', entry.onAbort, { once: true });
    }
    if (body !== null) this.#upload(entry, body);
    if (this.#headTimeoutMs > 0) {
      entry.headTimer = setTimeout(() => this.#headTimedOut(entry), this.#headTimeoutMs);
      // Outside a browser (Node), the timer alone must not keep a process up.
      entry.headTimer?.unref?.();
    }
    return promise;
  }

  // No response head in time: the stream is cancelled (the home peer drops
  // the upstream request) and the page's promise rejects.
  #headTimedOut(entry) {
    if (entry.head || entry.settled) return;
    if (entry.live && this.#cancel) this.#sendQuietly({ type: 'cancel', id: entry.id });
    this.#end(entry);
    this.#settle(entry, new DOMException(`beeline: no response head within ${this.#headTimeoutMs} ms`, 'TimeoutError'));
  }

  /** Handles one decoded frame from the home peer. */
  receive(frame) {
    if (frame.type === 'error' && frame.id === undefined) {
      debug(`home peer reported ${frame.code}: ${frame.message}`);
      return;
    }
    const entry = this.#streams.get(frame.id);
    // Frames for streams that ended (cancelled, failed) are ignored.
    if (!entry) return;
    switch (frame.type) {
      case 'response':
        this.#onResponse(entry, frame);
        break;
      case 'data':
        this.#onData(entry, frame.data);
        break;
      case 'end':
        this.#onEnd(entry);
        break;
      case 'cancel':
        this.#end(entry);
        this.#settle(entry, new DOMException('The home peer cancelled the request.', 'AbortError'));
        break;
      case 'error':
        this.#end(entry);
        this.#settle(entry, streamError(frame.code, frame.message), RETRYABLE_ERRORS.has(frame.code));
        break;
      case 'credit':
        entry.sendWindow += frame.bytes;
        entry.wakeUpload?.();
        break;
      default:
        // A frame type the home peer should not send (request); ignore it.
        break;
    }
  }

  /** A frame from the home peer that could not be decoded. */
  receiveBad(error) {
    const entry = error.id === undefined ? undefined : this.#streams.get(error.id);
    if (!entry) {
      debug('ignoring a bad frame from the home peer:', error.message);
      return;
    }
    this.#protocolError(entry, 'bad_frame', error.message);
  }

  /**
   * Ends every stream because the channel is gone: bodies already streaming
   * error out; the others are retried if they were given a `retry`, and
   * reject with a TypeError otherwise.
   */
  closeAll() {
    this.#closed = true;
    for (const entry of [...this.#streams.values()]) {
      this.#end(entry);
      this.#settle(entry, channelClosedError(entry.head ? 'while the response was streaming' : 'before the response started'), true);
    }
    for (const wake of this.#slotWaiters.splice(0)) wake();
  }

  // -- sending --

  #encode(frame) {
    return typeof frame.id === 'number' ? encodeBinary(frame) : encodeJson(frame);
  }

  // Sends a control frame; a channel that is going away is handled by closeAll.
  #sendQuietly(frame) {
    try {
      this.#link.send(this.#encode(frame));
    } catch (err) {
      debug(`could not send ${frame.type}:`, err?.message ?? err);
    }
  }

  #allocateId() {
    for (;;) {
      const n = this.#nextId;
      this.#nextId = n >= U32_MAX ? 1 : n + 1;
      const id = this.#binary ? n : String(n);
      if (!this.#streams.has(id)) return id;
    }
  }

  // Takes one of the home's max_streams, waiting for one to free up.
  async #acquireSlot(signal) {
    while (!this.#closed && this.#slots >= this.#maxStreams) {
      await new Promise((resolve) => {
        this.#slotWaiters.push(resolve);
        signal?.addEventListener('abort', resolve, { once: true });
      });
      if (signal?.aborted) throw abortReason(signal);
    }
    this.#slots += 1;
  }

  // Wakes every waiter; each checks again, so one that was aborted meanwhile
  // cannot swallow the slot.
  #releaseSlot() {
    this.#slots -= 1;
    for (const wake of this.#slotWaiters.splice(0)) wake();
  }

  // Streams the request body in `data` frames within the home's window, the
  // channel's message size and its send buffer, then sends `end`.
  async #upload(entry, body) {
    const maxPayload = maxDataPayload(entry.id, this.#link.maxMessageSize);
    try {
      if (body instanceof Uint8Array) {
        await this.#sendBody(entry, body, maxPayload);
      } else {
        entry.reader = body.getReader();
        for (;;) {
          const { value, done } = await entry.reader.read();
          if (done || entry.uploadDone) break;
          await this.#sendBody(entry, asBytes(value), maxPayload);
        }
      }
      if (entry.uploadDone) return;
      entry.uploadDone = true;
      entry.reader = null;
      // The stream stays open until the response ends (which, had it come
      // first, would have stopped this upload).
      this.#link.send(this.#encode({ type: 'end', id: entry.id }));
      // A WebSocket's two directions end apart: this was the last.
      if (entry.upgrade && entry.responseEnded) this.#end(entry);
    } catch (err) {
      if (entry.uploadDone) return;
      // The page's body failed, or the channel went away mid-upload.
      debug('request body upload failed:', err?.message ?? err);
      if (entry.live && this.#cancel) this.#sendQuietly({ type: 'cancel', id: entry.id });
      this.#end(entry);
      this.#settle(entry, err instanceof TypeError ? err : streamError('upload_failed', err?.message ?? String(err)));
    }
  }

  async #sendBody(entry, bytes, maxPayload) {
    let offset = 0;
    while (offset < bytes.length) {
      // Wait for window and for room in the send buffer; the send below
      // follows the last check without yielding.
      for (;;) {
        if (entry.uploadDone) return;
        if (entry.sendWindow <= 0) {
          await new Promise((resolve) => {
            entry.wakeUpload = resolve;
          });
          entry.wakeUpload = null;
          continue;
        }
        if (this.#link.congested?.()) {
          await this.#link.drained();
          continue;
        }
        break;
      }
      const n = Math.min(bytes.length - offset, maxPayload, entry.sendWindow);
      this.#link.send(this.#encode({ type: 'data', id: entry.id, data: bytes.subarray(offset, offset + n) }));
      entry.sendWindow -= n;
      offset += n;
    }
  }

  // -- receiving --

  #onResponse(entry, frame) {
    clearTimeout(entry.headTimer);
    if (entry.head) {
      this.#protocolError(entry, 'bad_frame', 'second response head');
      return;
    }
    if (entry.upgrade && frame.status === 101) {
      // A WebSocket: no Response (101 cannot be one); the caller reads the
      // records from the body stream.
      entry.head = true;
      entry.resolve({ status: 101, headers: frame.headers, body: entry.stream });
      return;
    }
    if (frame.status < 200 || frame.status > 599) {
      this.#protocolError(entry, 'bad_frame', `response status ${frame.status} cannot be given to the page`);
      return;
    }
    entry.head = true;
    const nullBody = NULL_BODY_STATUSES.has(frame.status);
    try {
      entry.resolve(new Response(nullBody ? null : entry.stream, { status: frame.status, headers: responseHeaders(frame.headers) }));
    } catch (err) {
      this.#protocolError(entry, 'bad_frame', err?.message ?? String(err));
    }
  }

  #onData(entry, bytes) {
    if (!entry.head || entry.responseEnded) {
      this.#protocolError(entry, 'bad_frame', 'data outside a response');
      return;
    }
    if (this.#credit) {
      entry.recvRemaining -= bytes.length;
      if (entry.recvRemaining < 0) {
        this.#protocolError(entry, 'flow_control', 'data beyond the granted window');
        return;
      }
    }
    if (entry.settled || bytes.length === 0) return;
    if (entry.wantData) {
      entry.wantData = false;
      this.#hand(entry, bytes);
    } else {
      entry.pending.push(bytes);
    }
  }

  #onEnd(entry) {
    if (!entry.head) {
      this.#protocolError(entry, 'bad_frame', 'end before the response head');
      return;
    }
    entry.responseEnded = true;
    if (entry.upgrade && !entry.uploadDone) {
      // The home closed its direction; ours stays open for our close.
      if (entry.pending.length === 0) this.#closeBody(entry);
      return;
    }
    if (!entry.uploadDone) {
      // The home answered without taking the whole body; stop sending it.
      if (this.#cancel) this.#sendQuietly({ type: 'cancel', id: entry.id });
    }
    this.#end(entry);
    if (entry.pending.length === 0) this.#closeBody(entry);
  }

  // The page wants more of the body.
  #pull(entry) {
    if (entry.settled) return;
    const bytes = entry.pending.shift();
    if (bytes === undefined) {
      entry.wantData = true;
      return;
    }
    this.#hand(entry, bytes);
    if (entry.pending.length === 0 && entry.responseEnded) this.#closeBody(entry);
  }

  // Gives bytes to the page, and grants the window back once enough was read.
  #hand(entry, bytes) {
    entry.controller.enqueue(bytes);
    if (!this.#credit || !entry.live) return;
    entry.owed += bytes.length;
    if (entry.owed >= this.#grantThreshold) {
      const grant = entry.owed;
      entry.owed = 0;
      entry.recvRemaining += grant;
      this.#sendQuietly({ type: 'credit', id: entry.id, bytes: grant });
    }
  }

  // -- ending --

  #abort(entry) {
    if (entry.settled) return;
    if (entry.live && this.#cancel) this.#sendQuietly({ type: 'cancel', id: entry.id });
    this.#end(entry);
    this.#settle(entry, abortReason(entry.signal));
  }

  #cancelByPage(entry) {
    if (entry.live && this.#cancel) this.#sendQuietly({ type: 'cancel', id: entry.id });
    this.#end(entry);
    entry.settled = true;
    entry.pending = [];
    this.#forgetSignal(entry);
  }

  // Reports a home peer's protocol violation on its stream and fails it.
  #protocolError(entry, code, message) {
    debug(`stream ${entry.id}: ${code}: ${message}`);
    if (entry.live) this.#sendQuietly({ type: 'error', id: entry.id, code, message });
    this.#end(entry);
    this.#settle(entry, streamError(code, message));
  }

  // Ends the stream on the channel: no more frames are sent or accepted for it.
  #end(entry) {
    clearTimeout(entry.headTimer);
    if (!entry.live) return;
    entry.live = false;
    this.#streams.delete(entry.id);
    this.#releaseSlot();
    if (!entry.uploadDone) {
      entry.uploadDone = true;
      entry.reader?.cancel().catch(() => {});
      entry.reader = null;
    }
    entry.wakeUpload?.();
  }

  // Gives the page its outcome when the stream failed.
  #settle(entry, error, retryable = false) {
    if (entry.settled) return;
    entry.settled = true;
    entry.pending = [];
    this.#forgetSignal(entry);
    if (entry.head) {
      entry.controller.error(error);
    } else if (retryable && entry.retry) {
      entry.resolve(entry.retry());
    } else {
      entry.reject(error);
    }
  }

  #closeBody(entry) {
    if (entry.settled) return;
    entry.settled = true;
    this.#forgetSignal(entry);
    entry.controller.close();
  }

  #forgetSignal(entry) {
    if (entry.onAbort) entry.signal.removeEventListener('abort', entry.onAbort);
    entry.onAbort = null;
  }
}

/**
 * One data channel's protocol: sends `hello` when the channel opens, speaks
 * v1 until `agree` arrives (or for good when none comes within the
 * negotiation timeout), and routes every received message to the v1 requests
 * or the v2 streams.
 *
 * Knows nothing of WebRTC: it is given the same `link` as ChannelStreams.
 */
export class ChannelProtocol {
  #link;
  #window;
  #features;
  #timeoutMs;
  #headTimeoutMs;
  #timer = null;
  #state = 'idle'; // 'idle' | 'negotiating' | 'settled' | 'closed'
  #resolveNegotiated;
  #info = null;

  /** The v1 requests (always available: a v2 home peer serves v1 too). */
  requests;
  /** The v2 streams, once `agree` arrived; else null. */
  streams = null;
  /** Resolves with `info` once negotiation settles (`{version: 1}` when it never does). */
  negotiated;

  /**
   * @param {object} link `{ send(message), maxMessageSize, congested?(), drained?() }`
   * @param {object} [options]
   * @param {number} [options.window] hello.window: our per-stream window for response bodies
   * @param {string[]} [options.features] the features to ask for
   * @param {number} [options.timeoutMs] how long to wait for `agree` before settling on v1
   */
  constructor(link, { window = DEFAULT_WINDOW, features = FEATURES, timeoutMs = DEFAULT_NEGOTIATE_MS, headTimeoutMs = DEFAULT_HEAD_TIMEOUT_MS } = {}) {
    this.#link = link;
    this.#headTimeoutMs = headTimeoutMs;
    this.#window = window;
    this.#features = [...features];
    this.#timeoutMs = timeoutMs;
    this.requests = new ChannelRequests((text) => link.send(text));
    this.negotiated = new Promise((resolve) => {
      this.#resolveNegotiated = resolve;
    });
  }

  /**
   * What was agreed: `{version: 1}` or `{version: 2, features, binary}`;
   * null while negotiating.
   */
  get info() {
    return this.#info;
  }

  /** The version new requests use: 2 once agreed, else 1. */
  get version() {
    return this.streams ? 2 : 1;
  }

  /** Starts negotiation: call once, when the channel opens. */
  open() {
    if (this.#state !== 'idle') return;
    this.#state = 'negotiating';
    try {
      this.#link.send(encodeJson({ type: 'hello', version: PROTOCOL_VERSION, features: this.#features, window: this.#window }));
    } catch (err) {
      debug('could not send hello; speaking v1:', err?.message ?? err);
      this.#settle({ version: 1 });
      return;
    }
    this.#timer = setTimeout(() => {
      debug(`no agree within ${this.#timeoutMs} ms; speaking v1`);
      this.#settle({ version: 1 });
    }, this.#timeoutMs);
  }

  // Hands the frame `decode` returns to the streams; a malformed frame is
  // reported to them instead (it fails its own stream, if it names one).
  #deliver(decode) {
    let frame;
    try {
      frame = decode();
    } catch (err) {
      if (err instanceof FrameError) this.streams.receiveBad(err);
      else throw err;
      return;
    }
    this.streams.receive(frame);
  }

  /** Handles one message from the channel (string, ArrayBuffer or byte view). */
  receive(message) {
    if (typeof message !== 'string') {
      if (this.streams?.binary) {
        this.#deliver(() => decodeBinary(message));
        return;
      }
      // Before binary framing is agreed, a binary message is UTF-8 JSON text.
      message = lenientUtf8.decode(message);
    }
    for (const obj of parseTextFrames(message)) this.#route(obj);
  }

  /** Fails or retries everything in flight; the channel is gone. */
  closeAll() {
    clearTimeout(this.#timer);
    if (this.#state !== 'settled') this.#settle({ version: 1 });
    this.#state = 'closed';
    this.requests.closeAll();
    this.streams?.closeAll();
  }

  #route(obj) {
    switch (obj.type) {
      case 'chunk':
      case 'done':
        this.requests.route(obj);
        return;
      case 'agree':
        this.#onAgree(obj);
        return;
      case 'response':
      case 'data':
      case 'end':
      case 'cancel':
      case 'error':
      case 'credit': {
        if (!this.streams) {
          if (obj.type === 'error') debug(`home peer reported ${obj.code}: ${obj.message}`);
          return;
        }
        this.#deliver(() => frameFromObject(obj));
        return;
      }
      default:
        // Unknown types (and v1 requests, which a home never sends) are ignored.
        return;
    }
  }

  #onAgree(obj) {
    if (this.#state !== 'negotiating') {
      debug('ignoring an agree that came too late or twice');
      return;
    }
    let agree;
    try {
      agree = frameFromObject(obj);
    } catch (err) {
      debug('ignoring a malformed agree; speaking v1:', err?.message ?? err);
      this.#settle({ version: 1 });
      return;
    }
    clearTimeout(this.#timer);
    if (agree.version < 2) {
      this.#settle({ version: 1 });
      return;
    }
    const features = this.#features.filter((f) => agree.features.includes(f));
    const has = (f) => features.includes(f);
    this.streams = new ChannelStreams(this.#link, {
      binary: has('binary'),
      cancel: has('cancel'),
      credit: has('credit'),
      sendWindow: agree.window,
      recvWindow: this.#window,
      maxStreams: agree.max_streams,
      maxHeaderBytes: agree.max_header_bytes,
      headTimeoutMs: this.#headTimeoutMs,
    });
    this.#settle({ version: 2, features, binary: has('binary'), window: agree.window, maxStreams: agree.max_streams, maxWsMessage: agree.max_ws_message_bytes || DEFAULT_MAX_WS_MESSAGE });
  }

  #settle(info) {
    if (this.#state === 'settled' || this.#state === 'closed') return;
    this.#state = 'settled';
    this.#info = Object.freeze(info);
    this.#resolveNegotiated(this.#info);
  }
}
