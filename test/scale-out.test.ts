import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HttpClient, offeredNames, openRoomOverHttp } from './helpers/client.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { openLive, seqsIn } from './helpers/live.ts';
import { type AppProcess, startAppProcess } from './helpers/process.ts';
import { type RedisServer, startRedis } from './helpers/servers.ts';

describe('two app processes sharing PostgreSQL and Redis', () => {
  let database: TestDatabase;
  let redis: RedisServer;
  let dataDir: string;
  let first: AppProcess;
  let second: AppProcess;
  let firstUrl: string;
  let secondUrl: string;

  before(async () => {
    database = await createTestDatabase();
    redis = await startRedis();
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'ccc-scale-'));
    const env = {
      DATABASE_URL: database.url,
      REDIS_URL: redis.url,
      MASTER_KEY: randomBytes(32).toString('base64'),
      DATA_DIR: dataDir,
      CHAT_PORT: '0',
      ADMIN_PORT: '0',
      BIND_HOST: '127.0.0.1',
      CREATE_RATE_PER_MINUTE: '1000',
      JOIN_RATE_PER_MINUTE: '1000',
    };
    first = startAppProcess(env);
    second = startAppProcess(env);
    firstUrl = String((await first.waitForLog('listening')).chatUrl).replace('localhost', '127.0.0.1');
    secondUrl = String((await second.waitForLog('listening')).chatUrl).replace('localhost', '127.0.0.1');
  });

  after(async () => {
    await Promise.all([first?.stop(), second?.stop()]);
    await redis?.stop();
    await database?.drop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('serves host on one and guest on the other, live both ways, with presence and typing', async () => {
    assert.notEqual(firstUrl, secondUrl);
    const { code, host, guest, hostName, guestName } = await openRoomOverHttp(firstUrl, secondUrl);
    const hostSocket = await openLive(firstUrl, code, host);
    const guestSocket = await openLive(secondUrl, code, guest);

    // presence crosses: each sees the other online
    await hostSocket.waitFor((frame) => frame.includes('presence-online') && frame.includes(guestName));
    await guestSocket.waitFor((frame) => frame.includes('presence-online') && frame.includes(hostName));

    assert.equal((await host.post(`/rooms/${code}/messages`, { body: 'from process one' })).statusCode, 303);
    assert.match(await guestSocket.waitFor(/msg-1/), /message-theirs[\s\S]*from process one/);
    assert.equal((await guest.post(`/rooms/${code}/messages`, { body: 'from process two' })).statusCode, 303);
    assert.match(await hostSocket.waitFor(/msg-2/), /message-theirs[\s\S]*from process two/);

    guestSocket.socket.send('{"typing":true}');
    assert.match(await hostSocket.waitFor(/is typing/), new RegExp(guestName));

    guestSocket.close();
    await hostSocket.waitFor((frame) => frame.includes('presence-away') && frame.includes(guestName));

    // a burst from both sides arrives complete and once
    const socketOfGuest = await openLive(secondUrl, code, guest, { after: 2 });
    await Promise.all(
      Array.from({ length: 20 }, (_, index) =>
        (index % 2 === 0 ? host : guest).post(`/rooms/${code}/messages`, { body: `burst ${index}` }),
      ),
    );
    await socketOfGuest.waitFor(/msg-22/);
    await hostSocket.waitFor(/msg-22/);
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.deepEqual(
      [...seqsIn(socketOfGuest.frames)].sort((a, b) => a - b),
      Array.from({ length: 20 }, (_, index) => index + 3),
    );
    hostSocket.close();
    socketOfGuest.close();
  });

  it('tells the host’s page on one process of a guest who joined, without a socket, on the other', async () => {
    const host = new HttpClient(firstUrl);
    const code = String((await host.post('/rooms')).headers.location)
      .split('/')
      .pop() as string;
    const hostName = offeredNames((await host.get(`/rooms/${code}`)).body)[0] as string;
    assert.equal((await host.post(`/rooms/${code}/activate`, { name: hostName })).statusCode, 303);
    const hostSocket = await openLive(firstUrl, code, host);
    assert.match(await hostSocket.waitFor(/partner-status/), /Waiting for someone to join/);
    const guest = new HttpClient(secondUrl);
    const guestName = offeredNames((await guest.get(`/join?code=${code}`)).body)[0] as string;
    assert.equal((await guest.post(`/rooms/${code}/join`, { name: guestName })).statusCode, 303);
    assert.match(await hostSocket.waitFor((frame) => frame.includes(guestName)), /presence-away/);
    hostSocket.close();
  });

  it('closes the partner’s socket on the other process when the chat ends', async () => {
    const { code, host, guest } = await openRoomOverHttp(firstUrl, secondUrl);
    const guestSocket = await openLive(secondUrl, code, guest);
    assert.equal((await host.post(`/rooms/${code}/end`, { confirm: 'yes' })).statusCode, 303);
    assert.match(await guestSocket.waitFor(/chat-ended/), /This chat has ended/);
    assert.equal((await guestSocket.closed).code, 1000);
  });

  it('drains and exits cleanly on SIGTERM, telling sockets to reconnect (1012)', async () => {
    const { code, guest } = await openRoomOverHttp(secondUrl);
    const socket = await openLive(secondUrl, code, guest);
    const stopped = await second.stop('SIGTERM');
    assert.equal(stopped.code, 0);
    assert.ok(stopped.ms < 10_000);
    assert.equal((await socket.closed).code, 1012);
  });
});
