// The frame codec of docs/protocol.md: JSON and binary frames, base64.


// ---- codec ------------------------------------------------------------------

/** Base64 of a byte array, in slices so large bodies do not overflow the call stack. */
export function encodeBase64(bytes) {
  let binary = '';
  const slice = 0x8000;
  for (let i = 0; i < bytes.length; i += slice) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + slice));
  }
  return btoa(binary);
}

export const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
export const BASE64_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** Bytes of canonical standard base64 (padded, no stray bits); null if it is not. */
export function decodeBase64(text) {
  if (typeof text !== 'string' || text.length % 4 !== 0 || !BASE64.test(text)) return null;
  const padding = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0;
  if (padding > 0) {
    // The bits after the last byte must be zero, as strict decoders require.
    const last = BASE64_ALPHABET.indexOf(text[text.length - padding - 1]);
    if ((padding === 2 ? last & 0x0f : last & 0x03) !== 0) return null;
  }
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/**
 * A frame that cannot be decoded: `code` is the protocol error code
 * (`bad_frame`), `id` the stream it belongs to when that could be told.
 */
export class FrameError extends Error {
  constructor(message, id) {
    super(message);
    this.name = 'FrameError';
    this.code = 'bad_frame';
    this.id = id;
  }
}

export const BINARY_TYPES = Object.freeze({ request: 0x01, response: 0x02, data: 0x03, end: 0x04, cancel: 0x05, error: 0x06, credit: 0x07 });
export const BINARY_NAMES = Object.freeze(Object.fromEntries(Object.entries(BINARY_TYPES).map(([name, code]) => [code, name])));
export const BINARY_HEADER_BYTES = 5;
export const U32_MAX = 0xffffffff;
export const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
export const utf8Encoder = new TextEncoder();
export const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
export const lenientUtf8 = new TextDecoder();

export function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

export function isU32(value) {
  return Number.isInteger(value) && value >= 0 && value <= U32_MAX;
}

// Field readers: each returns the checked value or throws a FrameError for
// stream `id`.
export const field = {
  id(obj, numeric = false) {
    if (numeric ? isU32(obj.id) : typeof obj.id === 'string' && obj.id !== '') return obj.id;
    throw new FrameError(numeric ? '`id` is missing or not a u32' : '`id` is missing or not a non-empty string');
  },
  method(obj, id) {
    if (typeof obj.method === 'string' && TOKEN.test(obj.method)) return obj.method;
    throw new FrameError('`method` is missing or not an HTTP token', id);
  },
  path(obj, id) {
    const path = obj.path;
    if (typeof path === 'string' && path.startsWith('/') && !path.startsWith('//')) return path;
    throw new FrameError('`path` must start with a single /', id);
  },
  headers(obj, id, required) {
    if (obj.headers === undefined && !required) return undefined;
    if (!isObject(obj.headers)) throw new FrameError('`headers` must be an object', id);
    const headers = {};
    for (const [name, value] of Object.entries(obj.headers)) {
      if (typeof value !== 'string') throw new FrameError(`header \`${name}\` is not a string`, id);
      headers[name] = value;
    }
    return headers;
  },
  status(obj, id) {
    if (Number.isInteger(obj.status) && obj.status >= 100 && obj.status <= 999) return obj.status;
    throw new FrameError('`status` is missing or not a status code', id);
  },
  bytes(obj, id, name) {
    const bytes = decodeBase64(obj[name]);
    if (bytes === null) throw new FrameError(`\`${name}\` is not standard base64`, id);
    return bytes;
  },
  string(obj, id, name) {
    if (typeof obj[name] === 'string') return obj[name];
    throw new FrameError(`\`${name}\` is missing or not a string`, id);
  },
  u32(obj, id, name) {
    if (isU32(obj[name])) return obj[name];
    throw new FrameError(`\`${name}\` is missing or not an integer in 0..2^32`, id);
  },
  boolean(obj, id, name) {
    if (obj[name] === undefined) return false;
    if (typeof obj[name] === 'boolean') return obj[name];
    throw new FrameError(`\`${name}\` is not a boolean`, id);
  },
  features(obj) {
    if (Array.isArray(obj.features) && obj.features.every((f) => typeof f === 'string')) return [...obj.features];
    throw new FrameError('`features` must be an array of strings');
  },
};

/**
 * Checks a frame in its canonical JSON form (as parsed from a text message;
 * see tests/vectors/README.md) and returns it as a frame: known fields only,
 * `data`/`body` as Uint8Array, v2 `headers` always present, request `end`
 * only when true. Returns null for a `type` this client does not know.
 * `numericIds` reads the canonical form of a binary-framed stream frame.
 */
export function frameFromObject(obj, numericIds = false) {
  if (!isObject(obj)) throw new FrameError('frame is not a JSON object');
  const type = obj.type;
  if (numericIds && BINARY_TYPES[type] === undefined) throw new FrameError(`\`${type}\` frames have no binary form`);
  const readId = (o) => field.id(o, numericIds);
  if (type === undefined) {
    // A v1 request: the only frame without a type.
    const id = readId(obj);
    const frame = { id, method: field.method(obj, id), path: field.path(obj, id) };
    const headers = field.headers(obj, id, false);
    if (headers !== undefined) frame.headers = headers;
    if (obj.body !== undefined) frame.body = field.bytes(obj, id, 'body');
    return frame;
  }
  if (typeof type !== 'string') throw new FrameError('`type` is not a string');
  switch (type) {
    case 'hello':
      return { type, version: field.u32(obj, undefined, 'version'), features: field.features(obj), window: field.u32(obj, undefined, 'window') };
    case 'agree': {
      const frame = { type, version: field.u32(obj, undefined, 'version'), features: field.features(obj), window: field.u32(obj, undefined, 'window') };
      for (const limit of ['max_streams', 'max_header_bytes', 'max_body_bytes', 'max_ws_message_bytes']) {
        if (obj[limit] === undefined) continue;
        if (!Number.isSafeInteger(obj[limit]) || obj[limit] < 0) throw new FrameError(`\`${limit}\` is not a count`);
        frame[limit] = obj[limit];
      }
      return frame;
    }
    case 'chunk': {
      const id = readId(obj);
      return { id, type, data: field.string(obj, id, 'data') };
    }
    case 'done': {
      const id = readId(obj);
      return { id, type, status: field.status(obj, id) };
    }
    case 'error': {
      const frame = { type };
      if (obj.id !== undefined) frame.id = readId(obj);
      frame.code = field.string(obj, frame.id, 'code');
      frame.message = field.string(obj, frame.id, 'message');
      return frame;
    }
    case 'request': {
      const id = readId(obj);
      return requestHead(type, id, obj);
    }
    case 'response': {
      const id = readId(obj);
      return { type, id, status: field.status(obj, id), headers: field.headers(obj, id, false) ?? {} };
    }
    case 'data': {
      const id = readId(obj);
      return { type, id, data: field.bytes(obj, id, 'data') };
    }
    case 'end':
    case 'cancel':
      return { type, id: readId(obj) };
    case 'credit': {
      const id = readId(obj);
      return { type, id, bytes: field.u32(obj, id, 'bytes') };
    }
    default:
      return null;
  }
}

export function requestHead(type, id, obj) {
  const frame = { type, id, method: field.method(obj, id), path: field.path(obj, id), headers: field.headers(obj, id, false) ?? {} };
  if (typeof obj.scheme === 'string') frame.scheme = obj.scheme;
  if (typeof obj.upgrade === 'string') frame.upgrade = obj.upgrade;
  if (field.boolean(obj, id, 'end')) frame.end = true;
  return frame;
}

/** The canonical JSON form of a frame (the inverse of `frameFromObject`). */
export function frameToObject(frame) {
  const obj = {};
  for (const [key, value] of Object.entries(frame)) {
    if (value === undefined) continue;
    if (key === 'end' && frame.type === 'request' && value !== true) continue;
    obj[key] = value instanceof Uint8Array ? encodeBase64(value) : value;
  }
  return obj;
}

/** Decodes one text message into a frame; null for an unknown `type`. */
export function decodeJson(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    throw new FrameError('frame is not JSON');
  }
  return frameFromObject(value);
}

/** Encodes a frame as a JSON text message. */
export function encodeJson(frame) {
  return JSON.stringify(frameToObject(frame));
}

export function jsonPayload(payload, id) {
  let value;
  try {
    value = JSON.parse(strictUtf8.decode(payload));
  } catch {
    throw new FrameError('binary payload is not UTF-8 JSON', id);
  }
  if (!isObject(value)) throw new FrameError('binary payload is not a JSON object', id);
  return value;
}

export function emptyPayload(payload, id, type) {
  if (payload.length !== 0) throw new FrameError(`binary ${type} frame has a payload`, id);
  return { type, id };
}

/** Decodes one binary message (ArrayBuffer or byte view) into a frame. */
export function decodeBinary(message) {
  const bytes = message instanceof Uint8Array ? message : ArrayBuffer.isView(message) ? new Uint8Array(message.buffer, message.byteOffset, message.byteLength) : new Uint8Array(message);
  if (bytes.length < BINARY_HEADER_BYTES) throw new FrameError('binary message shorter than its 5-byte header');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const id = view.getUint32(1);
  const payload = bytes.subarray(BINARY_HEADER_BYTES);
  const type = BINARY_NAMES[bytes[0]];
  switch (type) {
    case 'request':
      return requestHead(type, id, jsonPayload(payload, id));
    case 'response': {
      const head = jsonPayload(payload, id);
      return { type, id, status: field.status(head, id), headers: field.headers(head, id, false) ?? {} };
    }
    case 'data':
      return { type, id, data: payload.slice() };
    case 'end':
    case 'cancel':
      return emptyPayload(payload, id, type);
    case 'error': {
      const body = jsonPayload(payload, id);
      return { type, id, code: field.string(body, id, 'code'), message: field.string(body, id, 'message') };
    }
    case 'credit':
      if (payload.length !== 4) throw new FrameError('binary credit payload is not 4 bytes', id);
      return { type, id, bytes: view.getUint32(BINARY_HEADER_BYTES) };
    default:
      throw new FrameError(`unknown binary frame type 0x${bytes[0].toString(16).padStart(2, '0')}`, id);
  }
}

/** Encodes a stream frame (numeric `id`) as a binary message. */
export function encodeBinary(frame) {
  const code = BINARY_TYPES[frame.type];
  if (code === undefined) throw new TypeError(`frame type ${frame.type} has no binary form`);
  if (!isU32(frame.id)) throw new TypeError('a binary frame needs a u32 id');
  let payload;
  switch (frame.type) {
    case 'request': {
      // Compact JSON in this key order; `headers` always, `end` only when true.
      const head = { method: frame.method, path: frame.path, headers: frame.headers ?? {} };
      if (frame.scheme !== undefined) head.scheme = frame.scheme;
      if (frame.upgrade !== undefined) head.upgrade = frame.upgrade;
      if (frame.end === true) head.end = true;
      payload = utf8Encoder.encode(JSON.stringify(head));
      break;
    }
    case 'response':
      payload = utf8Encoder.encode(JSON.stringify({ status: frame.status, headers: frame.headers ?? {} }));
      break;
    case 'data':
      payload = frame.data;
      break;
    case 'error':
      payload = utf8Encoder.encode(JSON.stringify({ code: frame.code, message: frame.message }));
      break;
    case 'credit':
      payload = new Uint8Array(4);
      new DataView(payload.buffer).setUint32(0, frame.bytes);
      break;
    default:
      payload = new Uint8Array(0);
  }
  const message = new Uint8Array(BINARY_HEADER_BYTES + payload.length);
  message[0] = code;
  new DataView(message.buffer).setUint32(1, frame.id);
  message.set(payload, BINARY_HEADER_BYTES);
  return message;
}

/** Largest `data` payload that keeps a frame for stream `id` within `maxMessageSize`. */
export function maxDataPayload(id, maxMessageSize) {
  if (typeof id === 'number') return maxMessageSize - BINARY_HEADER_BYTES;
  const overhead = encodeJson({ type: 'data', id, data: new Uint8Array(0) }).length;
  return Math.floor((maxMessageSize - overhead) / 4) * 3;
}

/**
 * The frame codec of docs/protocol.md, exported for the golden-vector tests.
 * Frames are plain objects in the canonical JSON form of
 * tests/vectors/README.md, except that `data` (and a v1 request's `body`) is
 * a Uint8Array; binary-framed streams have numeric ids.
 */
export const codec = Object.freeze({
  decodeJson,
  encodeJson,
  decodeBinary,
  encodeBinary,
  fromCanonical: frameFromObject,
  toCanonical: frameToObject,
  maxDataPayload,
  FrameError,
});
