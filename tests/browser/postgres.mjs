// A throwaway PostgreSQL server for the browser tests, the node twin of
// crates/test-support/src/postgres.rs: Debian's binaries
// (/usr/lib/postgresql/*/bin), a cluster in a temporary directory, on
// 127.0.0.1 only (no Unix socket), trusted local connections, stopped and
// deleted by stop() (and, as a last resort, when node exits).
//
// PostgreSQL refuses to run as root, so when the tests run as root (as
// run.sh does) the cluster belongs to `nobody` and its commands run through
// `runuser`. scripts/ensure-postgres.sh installs the binaries (run.sh calls
// it through scripts/ensure-browser-deps.sh). Without them,
// startPostgresOrSkip() returns null after a loud note, unless
// BEELINE_REQUIRE_POSTGRES is set (the `just` recipes set it), in which case
// it throws.

import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, appendFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** The unprivileged user the cluster runs as when the tests run as root. */
const RUN_AS = 'nobody';
/** Database user (a superuser of the test cluster, no password). */
export const PG_USER = 'beeline';
/** The longest any one PostgreSQL command may take. */
const COMMAND_TIMEOUT_MS = 90_000;

/** Whether a missing PostgreSQL is a failure (`BEELINE_REQUIRE_POSTGRES`). */
export function postgresRequired() {
  const v = process.env.BEELINE_REQUIRE_POSTGRES ?? '';
  return v !== '' && v !== '0';
}

/** The newest /usr/lib/postgresql/<version>/bin holding initdb, or null. */
export function postgresBin() {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const found = readdirSync(root)
    .filter((name) => /^\d+$/.test(name) && existsSync(path.join(root, name, 'bin', 'initdb')))
    .map(Number)
    .sort((a, b) => a - b);
  return found.length ? path.join(root, String(found.at(-1)), 'bin') : null;
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Whether this process runs as root. */
export const isRoot = () => process.getuid?.() === 0;

/** `nobody`'s uid and gid. */
export function userIds(user = RUN_AS) {
  const id = (flag) => {
    const out = spawnSync('id', [flag, user], { encoding: 'utf8' });
    const n = Number(out.stdout.trim());
    if (out.status !== 0 || !Number.isInteger(n)) throw new Error(`no user ${user} to run as: ${out.stderr}`);
    return n;
  };
  return { uid: id('-u'), gid: id('-g') };
}

/** Clusters still running, stopped by the exit hook if a test never got to. */
const live = new Set();
let exitHookInstalled = false;
function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const pg of live) pg.stopSync();
  });
}

/** A running test cluster; call stop() when done. */
export class TestPostgres {
  constructor(bin, root, port, runAs) {
    this.bin = bin;
    this.root = root;
    this.data = path.join(root, 'data');
    this.port = port;
    this.runAs = runAs;
  }

  /**
   * Starts a cluster, or explains why not: null (after a loud note on
   * stderr) when PostgreSQL is not installed and not required; throws when
   * it is required, or installed but failing to start.
   */
  static async startOrSkip(what) {
    const bin = postgresBin();
    if (!bin) {
      if (postgresRequired()) {
        throw new Error('BEELINE_REQUIRE_POSTGRES is set but PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); run scripts/ensure-postgres.sh');
      }
      process.stderr.write(
        `\n\n!!!!!!!! SKIPPED: ${what}: PostgreSQL is not installed, so this was NOT tested. ` +
          'Run scripts/ensure-postgres.sh, or set BEELINE_REQUIRE_POSTGRES=1 to make this a failure. !!!!!!!!\n\n',
      );
      return null;
    }
    return TestPostgres.start(bin);
  }

  static async start(bin) {
    const root = mkdtempSync(path.join(tmpdir(), `beeline-pg-${process.pid}-`));
    const runAs = isRoot() ? RUN_AS : null;
    if (runAs) {
      const { uid, gid } = userIds(runAs);
      chownSync(root, uid, gid);
    }
    const pg = new TestPostgres(bin, root, await freePort(), runAs);
    installExitHook();
    live.add(pg);
    try {
      pg.#runOk('initdb', ['-D', pg.data, '-U', PG_USER, '-A', 'trust', '--no-sync', '-E', 'UTF8', '--locale=C']);
      appendFileSync(
        path.join(pg.data, 'postgresql.conf'),
        `\n# beeline test cluster\nlisten_addresses = '127.0.0.1'\nport = ${pg.port}\nunix_socket_directories = ''\nmax_connections = 300\nfsync = off\n`,
      );
      pg.#runOk('pg_ctl', ['-D', pg.data, '-l', path.join(root, 'server.log'), '-w', '-t', '60', 'start']);
    } catch (err) {
      pg.stopSync();
      err.message = `PostgreSQL could not be started: ${err.message}`;
      throw err;
    }
    return pg;
  }

  /** The URL of database `name`. */
  url(name) {
    return `postgres://${PG_USER}@127.0.0.1:${this.port}/${name}`;
  }

  /** Creates an empty database and returns its URL. */
  createDatabase(name) {
    this.psql('postgres', `CREATE DATABASE "${name}"`);
    return this.url(name);
  }

  /** Runs one SQL command with psql in database `name`; its unaligned, tuples-only output. */
  psql(name, sql) {
    const out = this.#runOk('psql', ['-h', '127.0.0.1', '-p', String(this.port), '-U', PG_USER, '-d', name, '-v', 'ON_ERROR_STOP=1', '-At', '-c', sql]);
    return out.stdout.trim();
  }

  /** The server's log so far (for failure messages). */
  serverLog() {
    try {
      return readFileSync(path.join(this.root, 'server.log'), 'utf8');
    } catch {
      return '';
    }
  }

  /** Stops the server at once and deletes the cluster. Idempotent. */
  stop() {
    this.stopSync();
  }

  stopSync() {
    if (!live.has(this)) return;
    live.delete(this);
    if (existsSync(path.join(this.data, 'postmaster.pid'))) {
      this.#run('pg_ctl', ['-D', this.data, '-m', 'immediate', '-w', '-t', '10', 'stop']);
    }
    rmSync(this.root, { recursive: true, force: true });
  }

  #run(program, args) {
    const file = path.join(this.bin, program);
    const [command, argv] = this.runAs ? ['runuser', ['-u', this.runAs, '--', file, ...args]] : [file, args];
    return spawnSync(command, argv, { cwd: this.root, encoding: 'utf8', timeout: COMMAND_TIMEOUT_MS, killSignal: 'SIGKILL' });
  }

  #runOk(program, args) {
    const out = this.#run(program, args);
    if (out.error || out.status !== 0) {
      throw new Error(
        `test PostgreSQL: ${program} ${args.join(' ')} failed ` +
          `(${out.error?.message ?? `exit ${out.status}, signal ${out.signal}`}):\n${out.stdout}\n${out.stderr}\nserver log:\n${this.serverLog()}`,
      );
    }
    return out;
  }
}
