// The browser client's frame codec against the golden vectors in
// tests/vectors (format: tests/vectors/README.md), the same files the Rust
// codec checks, so the two implementations cannot drift.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { codec } from '../../client/src/index.mjs';

const vectorsDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../vectors');

function load(kind) {
  const dir = path.join(vectorsDir, kind);
  const files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
  return files.map((file) => ({ file, ...JSON.parse(readFileSync(path.join(dir, file), 'utf8')) }));
}

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const fromHex = (text) => new Uint8Array(Buffer.from(text, 'hex'));

const valid = load('valid');
const invalid = load('invalid');

test('the vector folders are there and not empty', () => {
  assert.ok(valid.length >= 20, `only ${valid.length} valid vectors`);
  assert.ok(invalid.length >= 10, `only ${invalid.length} invalid vectors`);
  for (const v of valid) assert.ok('json' in v || 'binary_hex' in v, `${v.file} has no encoding`);
});

describe('valid vectors: decode to `frame`, and `frame` encodes back', () => {
  for (const vector of valid) {
    if ('json' in vector) {
      test(`${vector.file} (json): ${vector.description}`, () => {
        const decoded = codec.decodeJson(vector.json);
        assert.notEqual(decoded, null, 'decoded as an unknown frame type');
        assert.deepEqual(codec.toCanonical(decoded), vector.frame);

        // JSON messages compare as parsed values: the encoding of `frame` is
        // its canonical JSON form, and it decodes to the same frame.
        const encoded = codec.encodeJson(codec.fromCanonical(vector.frame));
        assert.equal(typeof encoded, 'string');
        assert.deepEqual(JSON.parse(encoded), vector.frame);
        assert.deepEqual(codec.toCanonical(codec.decodeJson(encoded)), vector.frame);
      });
    }
    if ('binary_hex' in vector) {
      test(`${vector.file} (binary): ${vector.description}`, () => {
        const decoded = codec.decodeBinary(fromHex(vector.binary_hex));
        assert.deepEqual(codec.toCanonical(decoded), vector.frame);
        // An ArrayBuffer, as a data channel delivers it, decodes the same.
        assert.deepEqual(codec.toCanonical(codec.decodeBinary(fromHex(vector.binary_hex).buffer)), vector.frame);

        // Binary messages must match byte for byte.
        const encoded = codec.encodeBinary(codec.fromCanonical(vector.frame, true));
        assert.ok(encoded instanceof Uint8Array);
        assert.equal(hex(encoded), vector.binary_hex);
      });
    }
  }
});

describe('invalid vectors: the codec rejects malformed frames on the right stream', () => {
  for (const vector of invalid) {
    const decode = () => ('json' in vector ? codec.decodeJson(vector.json) : codec.decodeBinary(fromHex(vector.binary_hex)));
    if (vector.expect.code === 'bad_frame') {
      test(`${vector.file}: ${vector.description}`, () => {
        assert.throws(decode, (err) => {
          assert.ok(err instanceof codec.FrameError, `threw ${err}`);
          assert.equal(err.code, 'bad_frame');
          assert.equal(err.id ?? null, vector.expect.id);
          return true;
        });
      });
    } else {
      // Errors such as unknown_stream depend on the channel's state, not on
      // the frame: the frame itself decodes.
      test(`${vector.file} decodes (its error, ${vector.expect.code}, depends on state): ${vector.description}`, () => {
        const frame = decode();
        assert.notEqual(frame, null);
        assert.equal(frame.id, vector.expect.id);
      });
    }
  }
});

describe('codec details the vectors do not pin down', () => {
  test('binary request heads keep the key order method, path, headers, end and omit end when false', () => {
    const encoded = codec.encodeBinary({ type: 'request', id: 5, method: 'PUT', path: '/x', headers: { b: '2', a: '1' }, end: false });
    assert.equal(Buffer.from(encoded.subarray(5)).toString(), '{"method":"PUT","path":"/x","headers":{"b":"2","a":"1"}}');
  });

  test('data frames carry arbitrary bytes both ways', () => {
    const bytes = new Uint8Array(1000).map((_, i) => (i * 131) & 0xff);
    const binary = codec.decodeBinary(codec.encodeBinary({ type: 'data', id: 9, data: bytes }));
    assert.deepEqual(binary.data, bytes);
    const json = codec.decodeJson(codec.encodeJson({ type: 'data', id: '9', data: bytes }));
    assert.deepEqual(json.data, bytes);
  });

  test('unknown JSON frame types decode to null; unknown fields are dropped; a trailing newline is fine', () => {
    assert.equal(codec.decodeJson('{"type":"ping","id":"1"}'), null);
    assert.deepEqual(codec.toCanonical(codec.decodeJson('{"type":"end","id":"1","later":[1]}\n')), { type: 'end', id: '1' });
  });

  test('non-canonical base64 is rejected', () => {
    assert.throws(() => codec.decodeJson('{"type":"data","id":"1","data":"AB=="}'), codec.FrameError);
    assert.throws(() => codec.decodeJson('{"type":"data","id":"1","data":"AAE"}'), codec.FrameError);
  });

  test('binary end, cancel and credit with a wrong payload size are bad frames on their stream', () => {
    for (const message of ['0400000003ff', '0500000003ff', '070000000300000000ff']) {
      assert.throws(() => codec.decodeBinary(fromHex(message)), (err) => err instanceof codec.FrameError && err.id === 3);
    }
  });

  test('maxDataPayload keeps a data frame within the message size', () => {
    for (const id of [1, 4294967295, '1', 'a-long-string-id-0123456789']) {
      for (const max of [1024, 65536, 262144]) {
        const n = codec.maxDataPayload(id, max);
        const frame = { type: 'data', id, data: new Uint8Array(n) };
        const size = typeof id === 'number' ? codec.encodeBinary(frame).length : Buffer.byteLength(codec.encodeJson(frame));
        assert.ok(size <= max, `${size} > ${max} for id ${id}`);
        assert.ok(size > max - 8, `payload ${n} wastes room (${size} of ${max})`);
      }
    }
  });
});
