// Builds beeline's browser client from client/src into one minified ES
// module:
//   crates/signal-server/assets/client.js  the bundle signal-api serves at
//                                          {base}/client.js (committed, so
//                                          `cargo build` needs no npm)
//   client/dist/client.js                  the same bytes, for the package's
//                                          `exports` (not committed)
//   client/dist/client.debug.js            unminified, for reading (not committed)
//
// `--check` builds in memory and fails when the committed bundle differs
// from what the sources give (what `just client-check` runs in `just test`).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import * as esbuild from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, '..');
const served = path.resolve(pkg, '../crates/signal-server/assets/client.js');
const check = process.argv.includes('--check');

const banner = `// beeline client ${JSON.parse(readFileSync(path.join(pkg, 'package.json'), 'utf8')).version}: built from client/src by client/scripts/build.mjs (npm run build); do not edit.`;

async function build(minify) {
  const result = await esbuild.build({
    entryPoints: [path.join(pkg, 'src/index.mjs')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['es2022'],
    minify,
    charset: 'utf8',
    legalComments: 'none',
    banner: { js: banner },
    write: false,
    logLevel: 'warning',
  });
  return result.outputFiles[0].text;
}

const bundle = await build(true);
const sizes = `${bundle.length} B, ${gzipSync(bundle, { level: 9 }).length} B gzipped`;
if (check) {
  let committed = null;
  try {
    committed = readFileSync(served, 'utf8');
  } catch {
    // Reported below.
  }
  if (committed !== bundle) {
    console.error(`client-check: ${path.relative(process.cwd(), served)} is not what client/src builds to (${sizes}).`);
    console.error('Run `just client-build` (or `npm run build` in client/) and commit the bundle.');
    process.exit(1);
  }
  console.log(`client-check: the committed bundle matches client/src (${sizes})`);
} else {
  writeFileSync(served, bundle);
  mkdirSync(path.join(pkg, 'dist'), { recursive: true });
  writeFileSync(path.join(pkg, 'dist/client.js'), bundle);
  writeFileSync(path.join(pkg, 'dist/client.debug.js'), await build(false));
  console.log(`client: built ${path.relative(process.cwd(), served)} (${sizes}) and client/dist/`);
}
