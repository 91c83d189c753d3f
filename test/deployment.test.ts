import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { CONFIG_VARIABLES, loadConfig } from '../src/config.ts';
import { projectPath } from '../src/paths.ts';

/** The variables compose reads from .env for itself (never read by the app). */
const COMPOSE_ONLY = [
  'DOMAIN',
  'ACME_EMAIL',
  'HTTP_PORT',
  'HTTPS_PORT',
  'APP_REPLICAS',
  'ADMIN_BIND',
  'ADMIN_PORTS',
  'POSTGRES_USER',
  'POSTGRES_PASSWORD',
  'POSTGRES_DB',
  'POSTGRES_EXTERNAL_PORT',
  'REDIS_EXTERNAL_PORT',
];
/** Config variables the container does not need to be given: DATA_DIR defaults to the volume at /app/.data. */
const NOT_IN_COMPOSE = ['DATA_DIR'];

/** Docker compose interpolation of ${VAR}, ${VAR:-default}, ${VAR:?error} and $$. */
function interpolate(value: string, env: Record<string, string>): string {
  return value.replace(/\$\$|\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}/g, (match, name, operator, argument) => {
    if (match === '$$') return '$';
    const current = env[name];
    if (current !== undefined && current !== '') return current;
    if (operator === ':?') throw new Error(`compose would stop: ${argument}`);
    return operator === ':-' ? argument : '';
  });
}

async function envExample(): Promise<Record<string, string>> {
  const text = await readFile(projectPath('.env.example'), 'utf8');
  const entries = text
    .split('\n')
    .filter((line) => /^[A-Z0-9_]+=/.test(line))
    .map((line) => {
      const index = line.indexOf('=');
      return [line.slice(0, index), line.slice(index + 1)] as const;
    });
  return Object.fromEntries(entries);
}

describe('deployment files', () => {
  it('.env.example lists every variable the app reads and every one compose reads', async () => {
    const example = await envExample();
    for (const name of [...CONFIG_VARIABLES, ...COMPOSE_ONLY]) assert.ok(name in example, `${name} missing`);
  });

  it('the README configuration table lists every variable of the app, docs/operations.md those of compose', async () => {
    const tables = [
      { file: 'README.md', names: CONFIG_VARIABLES },
      { file: 'docs/operations.md', names: COMPOSE_ONLY },
    ];
    for (const { file, names } of tables) {
      const text = await readFile(projectPath(file), 'utf8');
      for (const name of names)
        assert.ok(new RegExp(`\\| \`${name}\` +\\|`).test(text), `${name} not in the table of ${file}`);
    }
  });

  it('docker-compose gives the app every variable it reads, and they pass validation', async () => {
    const compose = parse(await readFile(projectPath('docker-compose.yml'), 'utf8'));
    const appEnv: Record<string, string> = compose.services.app.environment;
    for (const name of CONFIG_VARIABLES) {
      if (NOT_IN_COMPOSE.includes(name)) continue;
      assert.ok(name in appEnv, `docker-compose app service does not set ${name}`);
    }
    for (const name of Object.keys(appEnv))
      assert.ok(CONFIG_VARIABLES.includes(name), `${name} is not read by the app`);

    // As an operator would run it: .env from .env.example, with the secrets filled in.
    const dotenv = {
      ...(await envExample()),
      MASTER_KEY: randomBytes(32).toString('base64'),
      POSTGRES_PASSWORD: 'pw',
      MINIO_ACCESS_KEY: 'access',
      MINIO_SECRET_KEY: 'secret-key',
    };
    const resolved = Object.fromEntries(
      Object.entries(appEnv).map(([name, value]) => [name, interpolate(String(value), dotenv)]),
    );
    const config = loadConfig(resolved);
    assert.equal(config.databaseUrl, 'postgres://chitty_user:pw@postgres:5432/chittychat');
    assert.equal(config.redisUrl, 'redis://redis:6379');
    assert.equal(config.minio?.endPoint, 's3');
    assert.equal(config.minio?.port, 8333);
    assert.equal(config.chatPort, 5055);
    assert.equal(config.adminPort, 5056);

    // Without the secrets, compose itself refuses to start, naming what to set.
    assert.throws(() => interpolate(String(appEnv.MASTER_KEY), {}), /set MASTER_KEY/);
  });

  it('docker-compose wires services with health checks, named volumes and ordered start', async () => {
    const compose = parse(await readFile(projectPath('docker-compose.yml'), 'utf8'));
    const { services, volumes } = compose;
    for (const name of ['postgres', 'redis', 's3']) {
      assert.ok(services[name].healthcheck, `${name} has no healthcheck`);
      assert.equal(services.app.depends_on[name].condition, 'service_healthy');
    }
    assert.ok(services.app.healthcheck === undefined, 'the image has its own HEALTHCHECK');
    assert.equal(services.proxy.depends_on.app.condition, 'service_healthy');
    assert.deepEqual(Object.keys(volumes).sort(), [
      'app-data',
      'caddy-config',
      'caddy-data',
      'postgres-data',
      's3-data',
    ]);
    for (const [name, service] of Object.entries<{ image?: string }>(services)) {
      if (service.image === undefined) continue;
      assert.match(service.image, /:[0-9]/, `${name}: an image pinned to a version, never latest`);
    }
    assert.match(
      services.s3.image,
      /^chrislusf\/seaweedfs:\d+\.\d+$/,
      'the S3 server is pinned to a release',
    );
  });

  it('docker-compose publishes the chat through the proxy only, and the admin port on one host address', async () => {
    const compose = parse(await readFile(projectPath('docker-compose.yml'), 'utf8'));
    const { services, networks } = compose;
    const dollar = '$';
    // never on every interface: see the comment in docker-compose.yml
    assert.deepEqual(services.app.ports, [
      `${dollar}{ADMIN_BIND:-127.0.0.1}:${dollar}{ADMIN_PORTS:-5056-5065}:5056`,
    ]);
    assert.deepEqual(services.proxy.ports, [
      `${dollar}{HTTP_PORT:-80}:80`,
      `${dollar}{HTTPS_PORT:-443}:443`,
      `${dollar}{HTTPS_PORT:-443}:443/udp`,
    ]);
    assert.ok(services.proxy.volumes.includes('./deploy/Caddyfile:/etc/caddy/Caddyfile:ro'));
    const caddyfile = await readFile(projectPath('deploy', 'Caddyfile'), 'utf8');
    const code = caddyfile.replace(/#.*$/gm, '');
    assert.match(code, /dynamic a app 5055/);
    assert.doesNotMatch(code, /5056/, 'the admin port is never proxied');

    // The app trusts exactly the proxy: its fixed address, outside the range other containers get.
    const proxyAddress = services.proxy.networks.default.ipv4_address;
    assert.equal(services.app.environment.TRUST_PROXY, proxyAddress);
    const [pool] = networks.default.ipam.config;
    const inside = (address: string, cidr: string) => {
      const [base = '', bits = '32'] = cidr.split('/');
      const number = (ip: string) => ip.split('.').reduce((value, part) => value * 256 + Number(part), 0);
      const size = 2 ** (32 - Number(bits));
      return Math.floor(number(address) / size) === Math.floor(number(base) / size);
    };
    assert.ok(inside(proxyAddress, pool.subnet) && !inside(proxyAddress, pool.ip_range));
  });

  it('docker-compose scales the app: no fixed container name, replicas from APP_REPLICAS', async () => {
    const compose = parse(await readFile(projectPath('docker-compose.yml'), 'utf8'));
    for (const [name, service] of Object.entries<{ container_name?: string }>(compose.services))
      assert.equal(service.container_name, undefined, `${name} has a fixed container_name`);
    assert.equal(compose.services.app.deploy.replicas, `${'$'}{APP_REPLICAS:-1}`);
  });

  it('docker-compose.yml passes dclint (the Compose Specification schema and its rules), which refuses a broken file', async () => {
    const run = promisify(execFile);
    const dclint = projectPath('node_modules', '.bin', 'dclint');
    await run(dclint, [projectPath('docker-compose.yml')], { cwd: projectPath() });
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ccc-compose-'));
    try {
      const broken = (await readFile(projectPath('docker-compose.yml'), 'utf8')).replace(
        /^ {2}proxy:$/m,
        '  proxy:\n    restart_policy: always',
      );
      await writeFile(path.join(dir, 'docker-compose.yml'), broken);
      const failure = await run(dclint, [path.join(dir, 'docker-compose.yml')], { cwd: projectPath() }).then(
        () => assert.fail('dclint accepted a key the Compose Specification does not have'),
        (error: { stdout: string }) => error.stdout,
      );
      assert.match(failure, /invalid-schema/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('documents the operator scripts as the image runs them (compiled: the image has no tsx)', async () => {
    const readme = await readFile(projectPath('README.md'), 'utf8');
    const buildConfig = JSON.parse(await readFile(projectPath('tsconfig.build.json'), 'utf8'));
    assert.ok(buildConfig.include.includes('scripts'), 'the build compiles scripts/ into dist/scripts');
    for (const script of ['migrate', 'gen-master-key', 'rotate-master-key', 'hash-admin-password']) {
      await readFile(projectPath('scripts', `${script}.ts`));
      assert.match(
        readme,
        new RegExp(`docker compose exec (?:-T )?app node dist/scripts/${script}\\.js`),
        `README shows ${script} in the container`,
      );
    }
  });

  it('the Dockerfile builds in stages and runs as a non-root user with a health check', async () => {
    const dockerfile = await readFile(projectPath('Dockerfile'), 'utf8');
    assert.equal(dockerfile.match(/^FROM /gm)?.length, 2);
    const runtime = dockerfile.slice(dockerfile.lastIndexOf('FROM '));
    assert.match(runtime, /npm ci --omit=dev/);
    assert.match(runtime, /^USER node$/m);
    assert.match(runtime, /HEALTHCHECK[\s\S]*\/health/);
    assert.match(runtime, /^CMD \["node", (?:"--[a-z-]+=\d+", )*"dist\/src\/main\.js"\]$/m);
    const buildConfig = JSON.parse(await readFile(projectPath('tsconfig.build.json'), 'utf8'));
    assert.equal(buildConfig.extends, './tsconfig.json');
  });

  it('runs the app with one heap limit, young-generation size and floor in the image, in npm start and in the benchmark', async () => {
    const dockerfile = await readFile(projectPath('Dockerfile'), 'utf8');
    const runtime = dockerfile.slice(dockerfile.lastIndexOf('FROM '));
    const limit = /^ENV NODE_OPTIONS="(--max-old-space-size=\d+ --max-semi-space-size=\d+)"$/m.exec(
      runtime,
    )?.[1];
    assert.ok(limit, 'the image sets a heap limit and a young-generation size');
    const floor = /^CMD \["node", "(--initial-old-space-size=\d+)", "dist\/src\/main\.js"\]$/m.exec(
      runtime,
    )?.[1];
    assert.ok(floor, 'the image sets a floor under the old generation');
    const start = JSON.parse(await readFile(projectPath('package.json'), 'utf8')).scripts.start as string;
    assert.match(start, new RegExp(`node ${limit} ${floor} dist/src/main\\.js$`));
    const bench = await readFile(projectPath('scripts', 'bench', 'stack.ts'), 'utf8');
    assert.ok(bench.includes(`NODE_OPTIONS: '${limit}'`), 'the benchmark runs the app as the image does');
    assert.ok(bench.includes(`'${floor}'`), 'the benchmark runs the app with the same floor');
  });
});
