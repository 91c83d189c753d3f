/**
 * The app behind a real proxy. deploy/Caddyfile (what docker-compose.yml runs) through the caddy
 * binary: it adapts and validates as compose uses it, and carries HTTPS and WebSockets to the
 * app, which trusts exactly it. Two app processes on one PostgreSQL, Redis and S3 server behind a
 * round-robin proxy share the traffic, and when one is killed mid-chat the conversation goes on
 * through the other. That one runs behind HAProxy: Debian's Caddy (2.6) closes a POST's body when
 * dialing a dead upstream fails, so its retry on the other one fails too (502, then both marked
 * down); Caddy 2.11.4, which compose pins, keeps the body (caddyserver/caddy#7547, #7715, #7719).
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import tls from 'node:tls';
import pg from 'pg';
import pino from 'pino';
import { createDbPool } from '../src/infra/db.ts';
import { freePort } from '../src/infra/free-port.ts';
import { startSweeper } from '../src/rooms/sweeper.ts';
import { HttpClient, openRoomOverHttp } from './helpers/client.ts';
import { createTestDatabase } from './helpers/database.ts';
import { type LiveSocket, openLive, seqsIn } from './helpers/live.ts';
import { type AppProcess, startAppProcess } from './helpers/process.ts';
import {
  type CaddyProxy,
  type Haproxy,
  hasCaddy,
  hasHaproxy,
  runCaddy,
  shippedCaddyfile,
  startCaddy,
  startHaproxy,
} from './helpers/proxy.ts';
import { type RedisServer, type S3Server, startRedis, startS3 } from './helpers/servers.ts';

/** Node 24's default CA list (not yet in this @types/node). */
const caList = tls as unknown as {
  getCACertificates(kind: 'default'): string[];
  setDefaultCACertificates(certificates: string[]): void;
};

const skip = !hasCaddy() && 'caddy is not installed (apt-get install -y caddy; .ci/run installs it)';

/** The app configured as compose configures it: PostgreSQL, Redis and S3, trusting the proxy. */
async function stack() {
  const database = await createTestDatabase();
  const redis = await startRedis();
  const s3 = await startS3();
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'ccc-proxy-'));
  const env = {
    DATABASE_URL: database.url,
    REDIS_URL: redis.url,
    MINIO_ENDPOINT: s3.config.endPoint,
    MINIO_PORT: String(s3.config.port),
    MINIO_ACCESS_KEY: s3.config.accessKey,
    MINIO_SECRET_KEY: s3.config.secretKey,
    MASTER_KEY: randomBytes(32).toString('base64'),
    DATA_DIR: dataDir,
    CHAT_PORT: '0',
    ADMIN_PORT: '0',
    BIND_HOST: '127.0.0.1',
    // Caddy connects from loopback here, as from 172.30.55.2 under compose.
    TRUST_PROXY: '127.0.0.1',
    CREATE_RATE_PER_MINUTE: '1000',
    JOIN_RATE_PER_MINUTE: '1000',
  };
  return {
    database,
    env,
    async close(redisServer: RedisServer = redis, s3Server: S3Server = s3) {
      await redisServer.stop();
      await s3Server.stop();
      await database.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

async function listening(app: AppProcess): Promise<{ chat: string; admin: string }> {
  const line = await app.waitForLog('listening');
  const local = (url: unknown) => String(url).replace('localhost', '127.0.0.1');
  return { chat: local(line.chatUrl), admin: local(line.adminUrl) };
}

describe('the shipped Caddyfile, through the caddy binary', { skip }, () => {
  it('adapts to plain HTTP on :80 without DOMAIN and to HTTPS for DOMAIN, proxying the chat port only', async () => {
    const caddyfile = await readFile('deploy/Caddyfile', 'utf8');
    const plain = await runCaddy('adapt', caddyfile, {});
    assert.equal(plain.code, 0, plain.stderr);
    const plainConfig = JSON.parse(plain.stdout);
    const [server] = Object.values<{ listen: string[]; routes: unknown[] }>(plainConfig.apps.http.servers);
    assert.deepEqual(server?.listen, [':80']);
    assert.equal(plainConfig.apps.tls, undefined, 'no certificate without DOMAIN');
    assert.equal(plainConfig.admin.disabled, true);
    const upstreams = [...plain.stdout.matchAll(/"dynamic_upstreams":(\{[^}]*\})/g)].map((m) =>
      JSON.parse(m[1] ?? ''),
    );
    assert.deepEqual(upstreams, [{ name: 'app', port: '5055', refresh: 5_000_000_000, source: 'a' }]);
    assert.doesNotMatch(plain.stdout, /5056/, 'the admin port is never proxied');

    const https = await runCaddy('adapt', caddyfile, { SITE_ADDRESS: 'chat.example.com' });
    assert.equal(https.code, 0, https.stderr);
    const httpsConfig = JSON.parse(https.stdout);
    const [secure] = Object.values<{ listen: string[] }>(httpsConfig.apps.http.servers);
    assert.deepEqual(secure?.listen, [':443']);
    assert.deepEqual(httpsConfig.apps.tls.automation.policies[0].subjects, ['chat.example.com']);
    assert.equal(httpsConfig.apps.tls.automation.policies[0].issuers[0].email, '{env.ACME_EMAIL}');
  });

  it('validates for a DOMAIN with ACME_EMAIL, and refuses a DOMAIN without one, saying so', async () => {
    const caddyfile = await readFile('deploy/Caddyfile', 'utf8');
    const valid = await runCaddy('validate', caddyfile, {
      SITE_ADDRESS: 'chat.example.com',
      ACME_EMAIL: 'ops@example.com',
    });
    assert.equal(valid.code, 0, valid.stderr);
    const noEmail = await runCaddy('validate', caddyfile, { SITE_ADDRESS: 'chat.example.com' });
    assert.notEqual(noEmail.code, 0);
    assert.match(noEmail.stderr, /ACME_EMAIL/);
  });

  describe('over HTTPS (Caddy’s local CA for localhost, as Let’s Encrypt for DOMAIN)', () => {
    let parts: Awaited<ReturnType<typeof stack>>;
    let app: AppProcess;
    let proxy: CaddyProxy;
    let base: string;
    const defaultCAs = caList.getCACertificates('default');

    before(async () => {
      parts = await stack();
      app = startAppProcess(parts.env);
      const { chat } = await listening(app);
      const port = await freePort();
      proxy = await startCaddy(
        await shippedCaddyfile({
          upstreams: [new URL(chat).host],
          // This machine's trust store stays as it is; the redirect listener on a free port.
          globalOptions: ['skip_install_trust', `http_port ${await freePort()}`, `https_port ${port}`],
        }),
        { SITE_ADDRESS: `localhost:${port}` },
      );
      const root = await readFile(path.join(proxy.dataDir, 'caddy/pki/authorities/local/root.crt'), 'utf8');
      caList.setDefaultCACertificates([...defaultCAs, root]);
      base = `https://localhost:${port}`;
    });

    after(async () => {
      caList.setDefaultCACertificates(defaultCAs);
      await proxy?.stop();
      await app?.stop();
      await parts?.close();
    });

    it('serves the chat with the __Host- cookie, records the client’s address (not a forged one), and carries the WebSocket', async () => {
      const host = new HttpClient(base);
      const created = await host.post('/rooms', {}, { 'x-forwarded-for': '203.0.113.9' });
      assert.equal(created.statusCode, 303);
      assert.match(created.headers['set-cookie'] ?? '', /^__Host-ccc_device=[^;]+;.*Secure/i);
      const code = String(created.headers.location).split('/').pop() as string;

      // The app believed the proxy, and the proxy did not pass on the client's own header.
      const client = new pg.Client(parts.database.url);
      await client.connect();
      const { rows } = await client.query('SELECT host(created_ip) AS ip FROM rooms WHERE code = $1', [code]);
      await client.end();
      assert.deepEqual(rows, [{ ip: '127.0.0.1' }]);

      const opened = await openRoomOverHttp(base);
      const guestSocket = await openLive(base, opened.code, opened.guest);
      assert.equal(
        (await opened.host.post(`/rooms/${opened.code}/messages`, { body: 'over TLS' })).statusCode,
        303,
      );
      assert.match(await guestSocket.waitFor(/msg-1/), /over TLS/);
      guestSocket.close();
    });
  });
});

describe('two app processes behind a round-robin proxy, one killed mid-chat', {
  skip: !hasHaproxy() && 'haproxy is not installed (apt-get install -y haproxy; .ci/run installs it)',
}, () => {
  let parts: Awaited<ReturnType<typeof stack>>;
  let processes: { app: AppProcess; chat: string; admin: string }[];
  let proxy: Haproxy;
  let base: string;

  before(async () => {
    parts = await stack();
    const apps = [startAppProcess(parts.env), startAppProcess(parts.env)];
    processes = await Promise.all(apps.map(async (app) => ({ app, ...(await listening(app)) })));
    const port = await freePort();
    proxy = await startHaproxy(
      port,
      processes.map(({ chat }) => new URL(chat).host),
    );
    base = `http://127.0.0.1:${port}`;
  });

  after(async () => {
    await proxy?.stop();
    await Promise.all(processes?.map(({ app }) => app.stop()) ?? []);
    await parts?.close();
  });

  /** The live sockets each process holds, from its own metrics. */
  const socketsHeld = () =>
    Promise.all(
      processes.map(async ({ admin }) => {
        const text = await (await fetch(`${admin}/metrics`)).text();
        return Number(/^ccc_open_sockets (\d+)/m.exec(text)?.[1] ?? Number.NaN);
      }),
    );

  it('puts the two devices on different processes, and after one dies the other carries the chat with nothing lost', async () => {
    const { code, host, guest, hostName } = await openRoomOverHttp(base);
    const hostSocket = await openLive(base, code, host);
    await hostSocket.waitFor(/partner-status/);
    const hostOn = (await socketsHeld()).indexOf(1);
    assert.notEqual(hostOn, -1, 'one process holds the host’s socket');
    let guestSocket: LiveSocket = await openLive(base, code, guest);
    await guestSocket.waitFor((frame) => frame.includes('presence-online') && frame.includes(hostName));
    // Round robin: the two sockets, opened one after the other, are held by different processes.
    assert.deepEqual(await socketsHeld(), [1, 1]);

    const acknowledged: string[] = [];
    /** Sends as a page does: the same client_msg_id again if the answer was lost. */
    const send = async (from: HttpClient, body: string) => {
      const id = randomUUID();
      const statuses: number[] = [];
      for (let attempt = 0; attempt < 3; attempt++) {
        const response = await from.post(`/rooms/${code}/messages`, { body, client_msg_id: id });
        if (response.statusCode === 303) {
          acknowledged.push(id);
          return;
        }
        statuses.push(response.statusCode);
      }
      assert.fail(`"${body}" was refused three times (${statuses})`);
    };
    await send(host, 'one');
    await send(guest, 'two');
    await hostSocket.waitFor(/msg-2/);
    await guestSocket.waitFor(/msg-2/);

    // The process holding the guest's socket dies (no drain, no goodbye).
    const victim = processes[1 - hostOn] as (typeof processes)[number];
    const lastSeen = Math.max(...seqsIn(guestSocket.frames));
    const oldGuestFrames = guestSocket.frames;
    victim.app.child.kill('SIGKILL');
    await victim.app.exited;
    assert.notEqual((await guestSocket.closed).code, 1000);

    // The host, on the survivor, goes on; the proxy sends everything to the process that is up.
    await send(host, 'three');
    await send(host, 'four');
    guestSocket = await openLive(base, code, guest, { after: lastSeen });
    await guestSocket.waitFor(/msg-4/);
    await send(guest, 'five');
    await hostSocket.waitFor(/msg-5/);
    await guestSocket.waitFor(/msg-5/);

    // Every acknowledged message is stored once, and the guest saw each exactly once.
    const client = new pg.Client(parts.database.url);
    await client.connect();
    const { rows } = await client.query<{ client_msg_id: string }>(
      'SELECT client_msg_id FROM messages ORDER BY seq',
    );
    await client.end();
    assert.deepEqual(
      rows.map((row) => row.client_msg_id),
      acknowledged,
    );
    const seen = [...seqsIn(oldGuestFrames).filter((seq) => seq <= lastSeen), ...seqsIn(guestSocket.frames)];
    assert.deepEqual(
      [...new Set(seen)].sort((a, b) => a - b),
      [1, 2, 3, 4, 5],
    );
    assert.deepEqual(
      seqsIn(guestSocket.frames).sort((a, b) => a - b),
      [3, 4, 5],
    );
    hostSocket.close();
    guestSocket.close();
  });

  it('lets one process sweep at a time (the sweeper’s advisory lock)', async () => {
    // Two pools: two processes' connections, as each replica has its own.
    const pools = [await createDbPool(parts.database.url), await createDbPool(parts.database.url)];
    let release: () => void = () => undefined;
    const holding = new Promise<void>((resolve) => {
      release = resolve;
    });
    let entered: () => void = () => undefined;
    const inside = new Promise<void>((resolve) => {
      entered = resolve;
    });
    const [first, second] = pools.map((db, index) =>
      startSweeper({
        db,
        intervalMs: 60_000,
        autoStart: false,
        logger: pino({ level: 'silent' }),
        tasks: [
          {
            name: `task ${index}`,
            run: async () => {
              entered();
              await holding;
            },
          },
        ],
      }),
    );
    try {
      const running = first?.runOnce();
      await inside;
      assert.equal(await second?.runOnce(), false, 'the second process skips while the first sweeps');
      release();
      assert.equal(await running, true);
      assert.equal(await second?.runOnce(), true, 'and sweeps once the lock is free');
    } finally {
      await Promise.all(pools.map((db) => db.end()));
    }
  });
});
