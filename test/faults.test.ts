import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { createDbPool, sql } from '../src/infra/db.ts';
import { startEmbeddedPostgres } from '../src/infra/embedded-postgres.ts';
import { freePort } from '../src/infra/free-port.ts';
import { buildTestApp } from './helpers/app.ts';
import { Client, openRoom, openRoomOverHttp } from './helpers/client.ts';
import { createTestDatabase } from './helpers/database.ts';
import { openLive, seqsIn } from './helpers/live.ts';
import { startAppProcess } from './helpers/process.ts';

const send = (client: Client, code: string, body: string, clientMsgId = randomUUID()) =>
  client.post(`/rooms/${code}/messages`, { body, client_msg_id: clientMsgId });

describe('PostgreSQL stopped mid-conversation', () => {
  it('refuses sends with 503 (never a false success), reports it, keeps sockets, and recovers without a reload', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'ccc-pgdown-'));
    let database = await startEmbeddedPostgres({ dataDir: path.join(dataDir, 'pg'), database: 'chat' });
    const port = database.port;
    const migrationPool = await createDbPool(database.url);
    await migrationPool.end();
    const app = await buildTestApp({
      listen: true,
      database: { url: database.url, name: 'chat', drop: async () => {} },
    });
    try {
      const { code, host, guest } = await openRoom(app.chat);
      const guestSocket = await openLive(app.chatUrl, code, guest);
      const acknowledged: string[] = [];
      const first = randomUUID();
      assert.equal((await send(host, code, 'before the outage', first)).statusCode, 303);
      acknowledged.push(first);
      await guestSocket.waitFor(/msg-1/);

      await database.stop();
      const pending = randomUUID();
      const started = Date.now();
      const refused = await send(host, code, 'during the outage', pending);
      assert.equal(refused.statusCode, 503);
      assert.ok(Date.now() - started < 5_000, 'a send must not hang while the database is down');
      assert.match(refused.body, /database is not reachable right now\. Nothing was saved/);
      const htmxRefused = await host.post(
        `/rooms/${code}/messages`,
        { body: 'again', client_msg_id: pending },
        { headers: { 'hx-request': 'true' } },
      );
      assert.equal(htmxRefused.statusCode, 503);
      assert.equal(htmxRefused.headers['hx-retarget'], '#notice');
      // The no-JS page's conversation frame says so inside the frame, and tries again by itself.
      const frame = await guest.get(`/rooms/${code}/messages?at=7`);
      assert.equal(frame.statusCode, 503);
      assert.match(String(frame.headers['content-security-policy']), /frame-ancestors 'self'/);
      assert.match(
        frame.body,
        new RegExp(`<meta http-equiv="refresh" content="5;url=/rooms/${code}/messages\\?at=7">`),
      );
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      const health = await app.chat.inject({ url: '/health' });
      assert.equal(health.statusCode, 503);
      assert.equal(health.json().database, 'down');
      assert.equal(guestSocket.socket.readyState, guestSocket.socket.OPEN, 'the socket stays up');

      database = await startEmbeddedPostgres({ dataDir: path.join(dataDir, 'pg'), database: 'chat', port });
      // The same page (same form, same client_msg_id) sends again, without a reload.
      const retried = await send(host, code, 'during the outage', pending);
      assert.equal(retried.statusCode, 303);
      acknowledged.push(pending);
      assert.match(await guestSocket.waitFor(/during the outage/), /message-theirs/);
      const retriedAgain = await send(host, code, 'during the outage', pending);
      assert.equal(retriedAgain.statusCode, 303);

      const stored = await app.resources.db.anyFirst(sql.type(z.object({ client_msg_id: z.string() }))`
        SELECT client_msg_id FROM messages ORDER BY seq`);
      assert.deepEqual(stored, acknowledged);
      guestSocket.close();
    } finally {
      await app.close();
      await database.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe('Redis stopped', () => {
  it('keeps pages and each process’s own sockets working, then catches the other process up', async () => {
    const first = await buildTestApp({ listen: true, redis: true });
    const second = await buildTestApp({
      listen: true,
      redis: first.redis,
      database: first.database,
      env: { MASTER_KEY: first.config.masterKey?.toString('base64') as string },
    });
    try {
      const { code, host, guest } = await openRoom(first.chat);
      const hostTab = await openLive(first.chatUrl, code, host);
      const guestElsewhere = await openLive(second.chatUrl, code, guest);
      assert.equal((await send(host, code, 'all good')).statusCode, 303);
      await guestElsewhere.waitFor(/msg-1/);

      await first.redis?.stop();
      const started = Date.now();
      assert.equal((await host.get(`/rooms/${code}`)).statusCode, 200);
      assert.equal((await send(host, code, 'redis is down')).statusCode, 303);
      assert.ok(Date.now() - started < 3_000, 'nothing waits on Redis');
      // delivered to this process's own sockets...
      assert.match(await hostTab.waitFor(/msg-2/), /redis is down/);
      // ...while code look-ups fail closed
      assert.equal((await new Client(first.chat).get(`/join?code=${code}`)).statusCode, 503);

      await first.redis?.start();
      // The other process hears nothing until Redis is back, then catches up from PostgreSQL.
      assert.match(await guestElsewhere.waitFor(/msg-2/, 15_000), /redis is down/);
      assert.equal((await send(host, code, 'back to normal')).statusCode, 303);
      await guestElsewhere.waitFor(/msg-3/, 5_000);
      assert.deepEqual(seqsIn(guestElsewhere.frames), [1, 2, 3]);
      hostTab.close();
      guestElsewhere.close();
    } finally {
      await second.close();
      await first.close();
    }
  });
});

describe('SIGTERM during a burst of sends', () => {
  it('acknowledges only what is stored, errors the rest, and after a restart nothing is missed', async () => {
    const database = await createTestDatabase();
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'ccc-sigterm-'));
    const chatPort = await freePort();
    const env = {
      DATABASE_URL: database.url,
      MASTER_KEY: randomBytes(32).toString('base64'),
      DATA_DIR: dataDir,
      CHAT_PORT: String(chatPort),
      ADMIN_PORT: String(await freePort()),
      BIND_HOST: '127.0.0.1',
      SEND_RATE_PER_MINUTE: '100000',
    };
    const baseUrl = `http://127.0.0.1:${chatPort}`;
    let app = startAppProcess(env);
    try {
      await app.waitForLog(/^listening$/);
      const { code, host, guest } = await openRoomOverHttp(baseUrl);
      const ids = Array.from({ length: 300 }, () => randomUUID());
      const outcomes = ids.map(async (id, index) => {
        await new Promise((resolve) => setTimeout(resolve, index * 0.5));
        try {
          const response = await host.post(`/rooms/${code}/messages`, {
            body: `burst ${index}`,
            client_msg_id: id,
          });
          return { id, acknowledged: response.statusCode === 303, status: response.statusCode };
        } catch {
          return { id, acknowledged: false, status: 0 };
        }
      });
      await new Promise((resolve) => setTimeout(resolve, 60));
      const stopping = app.stop('SIGTERM');
      const results = await Promise.all(outcomes);
      const stopped = await stopping;
      assert.equal(stopped.code, 0);
      const acknowledged = results.filter((result) => result.acknowledged).map((result) => result.id);
      const refused = results.filter((result) => !result.acknowledged);
      assert.ok(acknowledged.length > 0, 'some sends were acknowledged before the stop');
      assert.ok(refused.length > 0, 'some sends met the shutdown');
      for (const result of refused)
        assert.ok([0, 503].includes(result.status), `unexpected status ${result.status}`);

      app = startAppProcess(env);
      await app.waitForLog(/^listening$/);
      const pool = await createDbPool(database.url);
      try {
        const stored = new Set(
          await pool.anyFirst(
            sql.type(z.object({ client_msg_id: z.string() }))`SELECT client_msg_id FROM messages`,
          ),
        );
        for (const id of acknowledged) assert.ok(stored.has(id), `acknowledged ${id} is not stored`);
        // The refused ones are retried with the same ids; each ends up stored exactly once.
        for (const { id } of refused) {
          const index = ids.indexOf(id);
          const response = await host.post(`/rooms/${code}/messages`, {
            body: `burst ${index}`,
            client_msg_id: id,
          });
          assert.equal(response.statusCode, 303);
        }
        const counts = await pool.any(sql.type(z.object({ client_msg_id: z.string(), n: z.number() }))`
          SELECT client_msg_id, count(*)::int AS n FROM messages GROUP BY client_msg_id`);
        assert.equal(counts.length, ids.length);
        assert.ok(counts.every((row) => row.n === 1));
      } finally {
        await pool.end();
      }
      // A page that reconnects after the restart receives everything it has not seen.
      const socket = await openLive(baseUrl, code, guest, { after: 0 });
      await socket.waitFor(() => seqsIn(socket.frames).length >= ids.length, 10_000);
      assert.equal(new Set(seqsIn(socket.frames)).size, ids.length);
      socket.close();
    } finally {
      await app.stop();
      await database.drop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
