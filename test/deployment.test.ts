import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { CONFIG_VARIABLES, loadConfig } from '../src/config.ts';
import { projectPath } from '../src/paths.ts';

/** The variables compose reads from .env, for the app's sake only (never read by the app). */
const COMPOSE_ONLY = [
  'POSTGRES_USER',
  'POSTGRES_PASSWORD',
  'POSTGRES_DB',
  'POSTGRES_EXTERNAL_PORT',
  'REDIS_EXTERNAL_PORT',
  'MINIO_EXTERNAL_PORT',
  'ADMIN_BIND',
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

  it('the README configuration table lists every variable', async () => {
    const readme = await readFile(projectPath('README.md'), 'utf8');
    for (const name of [...CONFIG_VARIABLES, ...COMPOSE_ONLY]) {
      assert.ok(new RegExp(`\\| \`${name}\` +\\|`).test(readme), `${name} not in the README table`);
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
    assert.equal(config.minio?.endPoint, 'minio');
    assert.equal(config.chatPort, 5055);
    assert.equal(config.adminPort, 5056);

    // Without the secrets, compose itself refuses to start, naming what to set.
    assert.throws(() => interpolate(String(appEnv.MASTER_KEY), {}), /set MASTER_KEY/);
  });

  it('docker-compose wires services with health checks, named volumes and ordered start', async () => {
    const compose = parse(await readFile(projectPath('docker-compose.yml'), 'utf8'));
    const { services, volumes } = compose;
    for (const name of ['postgres', 'redis', 'minio']) {
      assert.ok(services[name].healthcheck, `${name} has no healthcheck`);
      assert.equal(services.app.depends_on[name].condition, 'service_healthy');
    }
    assert.deepEqual(Object.keys(volumes).sort(), ['app-data', 'minio-data', 'postgres-data']);
    const dollar = '$';
    assert.deepEqual(services.app.ports, [
      `${dollar}{CHAT_PORT:-5055}:5055`,
      // never on every interface: see the comment in docker-compose.yml
      `${dollar}{ADMIN_BIND:-127.0.0.1}:${dollar}{ADMIN_PORT:-5056}:5056`,
    ]);
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
