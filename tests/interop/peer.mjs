// Drives `dc-echo` (the transport-only example) as a child process over its
// stdin/stdout signaling lines (see crates/transport/examples/support/signal.rs).

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const examplesDir = path.resolve(repoRoot, process.env.BEELINE_EXAMPLES_DIR ?? 'target/debug/examples');

/** A running dc-echo: `onSignal(fn)` receives its lines, `send(line)` writes one. */
export function startEcho(args) {
  const file = path.join(examplesDir, 'dc-echo');
  if (!existsSync(file)) throw new Error(`${file} is missing; cargo build -p beeline-transport --examples`);
  const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const log = [];
  const listeners = [];
  const early = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (listeners.length === 0) early.push(parseLine(line));
    for (const fn of listeners) fn(parseLine(line));
  });
  createInterface({ input: child.stderr }).on('line', (line) => log.push(line));
  return {
    log,
    onSignal(fn) {
      listeners.push(fn);
      for (const signal of early.splice(0)) fn(signal);
    },
    send: (signal) => child.stdin.write(formatLine(signal)),
    async stop() {
      child.stdin.end();
      const gone = new Promise((resolve) => child.once('exit', resolve));
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      if (child.exitCode === null) await gone;
      clearTimeout(timer);
    },
  };
}

function parseLine(line) {
  if (line.startsWith('sdp ')) return { sdp: line.slice(4).replaceAll('\\n', '\r\n') };
  if (line.startsWith('candidate ')) return { candidate: line.slice('candidate '.length) };
  if (line === 'end-of-candidates') return { candidate: '' };
  return {};
}

function formatLine(signal) {
  if (signal.sdp !== undefined) return `sdp ${signal.sdp.replaceAll('\r\n', '\\n')}\n`;
  if (signal.candidate) return `candidate ${signal.candidate}\n`;
  return 'end-of-candidates\n';
}
