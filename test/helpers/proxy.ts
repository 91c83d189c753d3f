import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { projectPath } from '../../src/paths.ts';
import { waitForPort } from './servers.ts';

export function hasCaddy(): boolean {
  return spawnSync('caddy', ['version'], { stdio: 'ignore' }).status === 0;
}

export function hasHaproxy(): boolean {
  return spawnSync('haproxy', ['-v'], { stdio: 'ignore' }).status === 0;
}

/** The upstream block of the shipped Caddyfile: Docker's DNS for the compose service `app`. */
const DOCKER_UPSTREAMS = /^\t\tdynamic a app 5055 \{\n\t\t\trefresh 5s\n\t\t\}\n/m;

/**
 * The shipped deploy/Caddyfile as a test runs it: the same site and proxy settings, with the
 * replicas given by address (there is no Docker DNS here) and global options added (free ports,
 * no trust-store changes on this machine).
 */
export async function shippedCaddyfile(options: {
  upstreams: string[];
  globalOptions?: string[];
}): Promise<string> {
  const shipped = await readFile(projectPath('deploy', 'Caddyfile'), 'utf8');
  if (!DOCKER_UPSTREAMS.test(shipped))
    throw new Error('deploy/Caddyfile no longer has the expected upstream block');
  const withUpstreams = shipped.replace(DOCKER_UPSTREAMS, `\t\tto ${options.upstreams.join(' ')}\n`);
  const extra = (options.globalOptions ?? []).map((line) => `\t${line}\n`).join('');
  return withUpstreams.replace(/^\{\n/m, `{\n${extra}`);
}

/** `caddy adapt` or `caddy validate` of a Caddyfile with these variables. */
export function runCaddy(
  command: 'adapt' | 'validate',
  caddyfile: string,
  env: Record<string, string>,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return withCaddyHome(async (home) => {
    const file = path.join(home, 'Caddyfile');
    await writeFile(file, caddyfile);
    return new Promise((resolve) => {
      const child = spawn('caddy', [command, '--config', file, '--adapter', 'caddyfile'], {
        env: caddyEnv(home, env),
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk) => {
        stdout += chunk;
      });
      child.stderr.on('data', (chunk) => {
        stderr += chunk;
      });
      child.on('exit', (code) => resolve({ code, stdout, stderr }));
    });
  });
}

async function withCaddyHome<T>(work: (home: string) => Promise<T>): Promise<T> {
  const home = await mkdtemp(path.join(os.tmpdir(), 'ccc-caddy-'));
  try {
    return await work(home);
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}

/** Caddy keeps its certificates and state under HOME/XDG dirs: a private folder per run. */
function caddyEnv(home: string, env: Record<string, string>): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '',
    HOME: home,
    XDG_DATA_HOME: path.join(home, 'data'),
    XDG_CONFIG_HOME: path.join(home, 'config'),
    ...env,
  };
}

export type CaddyProxy = {
  /** Caddy's data folder: its local CA is in caddy/pki/authorities/local/root.crt. */
  dataDir: string;
  lines: string[];
  stop(): Promise<void>;
};

/** A running `caddy run` with this Caddyfile; resolves once it serves its configuration. */
export async function startCaddy(caddyfile: string, env: Record<string, string>): Promise<CaddyProxy> {
  const home = await mkdtemp(path.join(os.tmpdir(), 'ccc-caddy-'));
  const file = path.join(home, 'Caddyfile');
  await writeFile(file, caddyfile);
  const child: ChildProcess = spawn('caddy', ['run', '--config', file, '--adapter', 'caddyfile'], {
    env: caddyEnv(home, env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const lines: string[] = [];
  await new Promise<void>((resolve, reject) => {
    let buffer = '';
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      buffer += chunk;
      const complete = buffer.split('\n');
      buffer = complete.pop() ?? '';
      for (const line of complete) {
        lines.push(line);
        if (line.includes('serving initial configuration')) resolve();
      }
    });
    void exited.then(() => reject(new Error(`caddy exited before serving:\n${lines.join('\n')}`)));
  });
  return {
    dataDir: path.join(home, 'data'),
    lines,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
      process.removeListener('exit', killOnExit);
      await rm(home, { recursive: true, force: true });
    },
  };
}

export type Haproxy = { stop(): Promise<void> };

/**
 * HAProxy on `port`, balancing round robin over `upstreams` (host:port) as the compose proxy
 * does: WebSockets carried, X-Forwarded-For added, and a request whose connection to a dead
 * upstream fails is sent to another (retries with redispatch; the request is not lost).
 */
export async function startHaproxy(port: number, upstreams: string[]): Promise<Haproxy> {
  const home = await mkdtemp(path.join(os.tmpdir(), 'ccc-haproxy-'));
  const file = path.join(home, 'haproxy.cfg');
  await writeFile(
    file,
    [
      'defaults',
      '  mode http',
      '  timeout connect 2s',
      '  timeout client 60s',
      '  timeout server 60s',
      '  timeout tunnel 1h',
      '  retries 3',
      '  option redispatch 1',
      '  retry-on conn-failure empty-response',
      'frontend chat',
      `  bind 127.0.0.1:${port}`,
      '  option forwardfor',
      '  default_backend app',
      'backend app',
      '  balance roundrobin',
      ...upstreams.map((upstream, index) => `  server app${index} ${upstream}`),
      '',
    ].join('\n'),
  );
  const child = spawn('haproxy', ['-db', '-f', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let errors = '';
  child.stderr.on('data', (chunk) => {
    errors += chunk;
  });
  await Promise.race([
    waitForPort(port),
    exited.then(() => Promise.reject(new Error(`haproxy exited: ${errors}`))),
  ]);
  return {
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
      process.removeListener('exit', killOnExit);
      await rm(home, { recursive: true, force: true });
    },
  };
}
