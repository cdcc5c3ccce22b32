// aiortc (PyPI) offers, beeline answers: 10 MB and 1,000 small messages
// through dc-echo, checked on the aiortc side (aiortc_offer.py).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';

import { repoRoot } from './peer.mjs';

const examplesDir = path.resolve(repoRoot, process.env.BEELINE_EXAMPLES_DIR ?? 'target/debug/examples');

test('aiortc offers, beeline answers: 10 MB and 1,000 messages echoed intact', { timeout: 180_000 }, async () => {
  const python = process.env.BEELINE_PYTHON ?? 'python3';
  const script = path.join(repoRoot, 'tests/interop/aiortc_offer.py');
  const child = spawn(python, [script, path.join(examplesDir, 'dc-echo')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => { output += d; });
  child.stderr.on('data', (d) => { output += d; });
  const code = await new Promise((resolve) => child.on('exit', resolve));
  for (const line of output.split('\n').filter((l) => l.startsWith('RESULT') || l.startsWith('max-message'))) {
    console.log(`  ${line}`);
  }
  assert.equal(code, 0, output);
  assert.match(output, /RESULT ok: 10485760 bytes and 1000 small messages/);
});
