/**
 * The processes a benchmark run starts and stops: a throwaway durable PostgreSQL, a redis-server,
 * the app (src/main.ts, configured by env as in production), the bare relay and the load generators.
 * Plus what the orchestrator reads from them: RSS, CPU time, event-loop delay.
 */
import { type ChildProcess, fork, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, symlink } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startEmbeddedPostgres } from '../../src/infra/embedded-postgres.ts';
import { freePort } from '../../src/infra/free-port.ts';
import { projectPath } from '../../src/paths.ts';
import { type AppProcess, startNodeProcess } from '../../test/helpers/process.ts';
import { startRedis } from '../../test/helpers/servers.ts';
import type { Command, Reply } from './protocol.ts';

export type Database = Awaited<ReturnType<typeof startEmbeddedPostgres>> & {
  version: string;
  dataDir: string;
};

/** A PostgreSQL that keeps its promises: fsync and synchronous commit on (the defaults, said out loud). */
export async function startDurablePostgres(dir: string): Promise<Database> {
  const dataDir = path.join(dir, 'pg');
  const database = await startEmbeddedPostgres({
    dataDir,
    database: 'chittychat',
    settings: { fsync: 'on', synchronous_commit: 'on', full_page_writes: 'on', max_connections: '200' },
  });
  const client = new pg.Client({ connectionString: database.url });
  await client.connect();
  try {
    const { rows } = await client.query<{ version: string; fsync: string; sync: string }>(
      "SELECT version() AS version, current_setting('fsync') AS fsync, current_setting('synchronous_commit') AS sync",
    );
    const row = rows[0];
    if (row?.fsync !== 'on' || row.sync !== 'on') throw new Error('the benchmark database must be durable');
    return { ...database, version: row.version, dataDir };
  } finally {
    await client.end();
  }
}

export { startRedis };

export type Service = { url: string; pid: number; process: AppProcess };

async function waitForHttp(url: string, child: AppProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.child.exitCode !== null) throw new Error(`process exited:\n${child.lines.join('\n')}`);
    try {
      const response = await fetch(url);
      await response.arrayBuffer();
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${url} did not answer within ${timeoutMs} ms:\n${child.lines.join('\n')}`);
}

export type AppLimits = { send: number; join: number; create: number; upload: number };

/** The app the production way: its own process, PostgreSQL and Redis by URL, a random MASTER_KEY. */
export async function startApp(options: {
  databaseUrl: string;
  redisUrl: string;
  dataDir: string;
  limits: AppLimits;
  cpuProfileDir?: string;
  nodeArgs?: string[];
  /** The node binary that runs the app (default: this one). */
  node?: string;
  /** Run dist/src/main.js (built by `buildApp`) rather than src/main.ts through tsx. */
  built?: boolean;
  /** The checkout to run (default: this one; the baseline's worktree for --baseline). */
  root?: string;
}): Promise<Service & { adminUrl: string }> {
  const chatPort = await freePort();
  const adminPort = await freePort();
  const env = {
    DATABASE_URL: options.databaseUrl,
    REDIS_URL: options.redisUrl,
    MASTER_KEY: randomBytes(32).toString('base64'),
    DATA_DIR: options.dataDir,
    CHAT_PORT: String(chatPort),
    ADMIN_PORT: String(adminPort),
    BIND_HOST: '127.0.0.1',
    LOG_LEVEL: 'warn',
    NODE_ENV: 'production',
    // As the Dockerfile sets them (see there); npm start passes the same heap limit.
    MALLOC_ARENA_MAX: '2',
    NODE_OPTIONS: '--max-old-space-size=1024 --max-semi-space-size=16',
    // The benchmark must not be throttled; the defaults stay as they are for everyone else.
    SEND_RATE_PER_MINUTE: String(options.limits.send),
    JOIN_RATE_PER_MINUTE: String(options.limits.join),
    CREATE_RATE_PER_MINUTE: String(options.limits.create),
    UPLOAD_RATE_PER_MINUTE: String(options.limits.upload),
  };
  const nodeArgs = [
    // As the Dockerfile's CMD and npm start (Node takes this flag only on its command line).
    '--initial-old-space-size=128',
    ...(options.cpuProfileDir ? ['--cpu-prof', `--cpu-prof-dir=${options.cpuProfileDir}`] : []),
    ...(options.nodeArgs ?? []),
  ];
  const root = options.root ?? projectPath();
  const script = options.built
    ? path.join(root, 'dist', 'src', 'main.js')
    : path.join(root, 'src', 'main.ts');
  const child = startNodeProcess(script, env, nodeArgs, options.node);
  const url = `http://127.0.0.1:${chatPort}`;
  await waitForHttp(`${url}/health`, child, 60_000);
  return { url, adminUrl: `http://127.0.0.1:${adminPort}`, pid: child.child.pid as number, process: child };
}

/**
 * Compiles the app into dist/ as `npm run build` does (without the browser assets), incrementally
 * (dist/.tsbuildinfo), so a second run with unchanged sources takes a moment.
 */
export async function buildApp(root = projectPath()): Promise<void> {
  // The package's own `bin` entry: TypeScript 7 exports no `typescript/bin/tsc` subpath.
  const manifest = createRequire(path.join(root, 'package.json')).resolve('typescript/package.json');
  const { bin } = JSON.parse(await readFile(manifest, 'utf8')) as { bin: { tsc: string } };
  const tsc = path.join(path.dirname(manifest), bin.tsc);
  const args = [tsc, '-p', path.join(root, 'tsconfig.build.json'), '--incremental'];
  args.push('--tsBuildInfoFile', path.join(root, 'dist', '.tsbuildinfo'));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`tsc failed:\n${output}`))));
  });
}

/**
 * The baseline of an A/B run: `revision` checked out in a temporary git worktree under `dir` and
 * built there. Its node_modules is this checkout's when the lock files match, else `npm ci`.
 * Returns the worktree's root and the function that removes it.
 */
export async function prepareBaseline(
  revision: string,
  dir: string,
): Promise<{ root: string; commit: string; remove: () => Promise<void> }> {
  const root = path.join(dir, 'baseline');
  const git = (...args: string[]) => {
    const result = spawnSync('git', args, { cwd: projectPath(), encoding: 'utf8' });
    if (result.status !== 0) throw new Error(`git ${args.join(' ')}: ${result.stderr.trim()}`);
    return result.stdout.trim();
  };
  const commit = git('rev-parse', '--verify', `${revision}^{commit}`);
  git('worktree', 'add', '--detach', root, commit);
  const remove = async () => {
    git('worktree', 'remove', '--force', root);
  };
  try {
    const lock = (folder: string) => readFile(path.join(folder, 'package-lock.json'), 'utf8');
    if ((await lock(root)) === (await lock(projectPath()))) {
      await symlink(projectPath('node_modules'), path.join(root, 'node_modules'), 'dir');
    } else {
      const npm = spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: root, encoding: 'utf8' });
      if (npm.status !== 0) throw new Error(`npm ci in the baseline failed: ${npm.stderr.trim()}`);
    }
    await buildApp(root);
  } catch (error) {
    await remove();
    throw error;
  }
  return { root, commit, remove };
}

/** A database of its own on the benchmark's PostgreSQL (the baseline's: the two apps share no rows). */
export async function createDatabase(url: string, name: string): Promise<string> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`);
  } finally {
    await client.end();
  }
  const other = new URL(url);
  other.pathname = `/${name}`;
  return other.toString();
}

export async function startRelay(): Promise<Service> {
  const child = startNodeProcess(projectPath('scripts', 'bench', 'relay.ts'), { RELAY_PORT: '0' });
  const line = await child.waitForLog('listening', 30_000);
  return { url: String(line.url), pid: child.child.pid as number, process: child };
}

/** A load-generator process, called like a function over IPC. */
export class Worker {
  private readonly child: ChildProcess;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();

  constructor(readonly index: number) {
    this.child = fork(projectPath('scripts', 'bench', 'loadgen.ts'), [], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.child.on('message', (reply: Reply) => {
      const waiter = this.pending.get(reply.id);
      if (!waiter) return;
      this.pending.delete(reply.id);
      if (reply.ok) waiter.resolve(reply.result);
      else waiter.reject(new Error(`load generator ${this.index}: ${reply.error}`));
    });
    this.child.on('exit', (code) => {
      for (const waiter of this.pending.values()) waiter.reject(new Error(`load generator exited (${code})`));
      this.pending.clear();
    });
  }

  get pid(): number {
    return this.child.pid as number;
  }

  call<T>(command: Command, timeoutMs: number): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new Error(`load generator ${this.index}: ${command.cmd} did not finish within ${timeoutMs} ms`),
        );
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value as T);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.child.send({ ...command, id });
    });
  }

  stop(): void {
    if (this.child.exitCode === null) this.child.kill('SIGTERM');
  }
}

/** Resident set size of a process, from /proc/PID/status, in bytes. */
export async function rssOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  return match ? Number(match[1]) * 1024 : 0;
}

/** The soft limit on open files and how many the process has open. */
export async function fileDescriptors(pid: number): Promise<{ open: number; limit: number }> {
  const limits = await readFile(`/proc/${pid}/limits`, 'utf8');
  const match = /^Max open files\s+(\d+)/m.exec(limits);
  const open = (await readdir(`/proc/${pid}/fd`)).length;
  return { open, limit: match ? Number(match[1]) : Number.POSITIVE_INFINITY };
}

const TICKS_PER_SECOND = 100;

async function cpuTicks(pid: number): Promise<number> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of /proc/PID/stat; fields[0] here is field 3.
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return 0;
  }
}

/** The PostgreSQL server processes: the postmaster (from postmaster.pid) and its children. */
export async function postgresPids(dataDir: string): Promise<number[]> {
  let postmaster: number;
  try {
    postmaster = Number.parseInt(
      (await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0] ?? '',
      10,
    );
  } catch {
    return [];
  }
  const pids = [postmaster];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === postmaster) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** The redis-server listening on this port (its process title names the address). */
export async function redisPids(port: number): Promise<number[]> {
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const command = await readFile(`/proc/${entry}/cmdline`, 'utf8');
      if (command.startsWith('redis-server') && command.includes(`:${port}`)) return [Number(entry)];
    } catch {
      // gone meanwhile
    }
  }
  return [];
}

async function machineTicks(): Promise<{ busy: number; total: number }> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0] ?? '';
  const values = line.trim().split(/\s+/).slice(1).map(Number);
  const total = values.reduce((sum, value) => sum + value, 0);
  const idle = (values[3] ?? 0) + (values[4] ?? 0);
  return { busy: total - idle, total };
}

export type CpuGroups = Record<string, () => Promise<number[]>>;
/** CPU used between start and stop, in cores (1.0 = one core busy the whole time), per group and for the machine. */
export type CpuUse = Record<string, number> & { machine: number };

export async function measureCpu(groups: CpuGroups): Promise<() => Promise<CpuUse>> {
  // Per process: PostgreSQL backends come and go, and a group's total would drop when one exits.
  const sample = async () => {
    const perGroup: Record<string, Map<number, number>> = {};
    for (const [name, pids] of Object.entries(groups)) {
      const ticks = new Map<number, number>();
      for (const pid of await pids()) ticks.set(pid, await cpuTicks(pid));
      perGroup[name] = ticks;
    }
    return { perGroup, machine: await machineTicks(), at: Date.now() };
  };
  const before = await sample();
  return async () => {
    const after = await sample();
    const seconds = (after.at - before.at) / 1000;
    const use: Record<string, number> = {};
    for (const name of Object.keys(groups)) {
      let ticks = 0;
      for (const [pid, now] of after.perGroup[name] ?? [])
        ticks += now - (before.perGroup[name]?.get(pid) ?? 0);
      use[name] = Math.max(0, ticks) / TICKS_PER_SECOND / seconds;
    }
    const cores = os.availableParallelism();
    const machine =
      ((after.machine.busy - before.machine.busy) / Math.max(1, after.machine.total - before.machine.total)) *
      cores;
    // Everything else on the machine: Redis, the kernel, and whatever else runs here meanwhile.
    const others = Math.max(0, machine - Object.values(use).reduce((sum, value) => sum + value, 0));
    return { ...use, others, machine } as CpuUse;
  };
}

/**
 * Leaves the database as a long-running one would be before a measurement: statistics current,
 * no vacuum or checkpoint owed for what the set-up wrote (10,000 rooms for the socket step).
 */
export async function settleDatabase(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query('VACUUM (ANALYZE)');
    await client.query('CHECKPOINT');
  } finally {
    await client.end();
  }
}

/** The sampling interval of the app's event-loop monitor (prom-client's default precision). */
const APP_MONITOR_RESOLUTION_MS = 10;

/**
 * Event-loop delay p99 since the last call, in ms. The app reports it through prom-client's
 * default metrics on the admin listener (`ccc_nodejs_eventloop_lag_p99_seconds`, from
 * monitorEventLoopDelay with a 10 ms resolution, reset at every scrape); the relay serves its own
 * at /eld. monitorEventLoopDelay records the whole interval between two samples, so the delay is
 * that minus the resolution.
 */
export async function eventLoopP99(target: 'app' | 'base' | 'relay', url: string): Promise<number | null> {
  try {
    if (target === 'relay') {
      const response = await fetch(`${url}/eld`);
      return ((await response.json()) as { p99Ms: number }).p99Ms;
    }
    const text = await (await fetch(`${url}/metrics`)).text();
    const match = /^ccc_nodejs_eventloop_lag_p99_seconds(?:\{[^}]*\})? ([0-9.eE+-]+)$/m.exec(text);
    return match ? Math.max(0, Number(match[1]) * 1000 - APP_MONITOR_RESOLUTION_MS) : null;
  } catch {
    return null;
  }
}

/** Open chat sockets as the app counts them (`ccc_open_sockets`). */
export async function appOpenSockets(adminUrl: string): Promise<number | null> {
  try {
    const text = await (await fetch(`${adminUrl}/metrics`)).text();
    const match = /^ccc_open_sockets(?:\{[^}]*\})? ([0-9.eE+-]+)$/m.exec(text);
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}

export async function machineInfo(database: Database, appNode?: string): Promise<Record<string, unknown>> {
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  return {
    cpuModel: model,
    cores: os.availableParallelism(),
    memoryGiB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    node: process.version,
    appNode: appNode
      ? spawnSync(appNode, ['--version'], { encoding: 'utf8' }).stdout.trim()
      : process.version,
    postgres: database.version,
    redis: spawnSync('redis-server', ['--version'], { encoding: 'utf8' }).stdout.trim(),
    os: `${os.type()} ${os.release()}`,
    sharedCores:
      'the app, PostgreSQL, Redis, the relay and the load generators all run on this machine and share its cores',
  };
}
