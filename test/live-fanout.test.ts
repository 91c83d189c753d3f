import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { z } from 'zod';
import { type Bus, createRedisBus } from '../src/infra/bus.ts';
import { sql } from '../src/infra/db.ts';
import { buildTestApp, type TestApp } from './helpers/app.ts';
import { type Client, openRoom } from './helpers/client.ts';
import { type LiveSocket, openLive, seqsIn } from './helpers/live.ts';
import { type RedisServer, startRedis } from './helpers/servers.ts';

type WireEvent = { t: string; o: string; r?: string; s?: number; on?: boolean };

/**
 * Two app instances (two hubs, each with its own process id) on one database and one Redis, and a
 * bare bus subscriber that sees what crosses a room's channel.
 */
describe('live delivery publishes a room’s messages only while another process listens', () => {
  let redis: RedisServer;
  let first: TestApp;
  let second: TestApp;
  let observer: Bus;
  let code: string;
  let roomId: string;
  let host: Client;
  let guest: Client;
  const wire: WireEvent[] = [];
  const sockets: LiveSocket[] = [];

  const send = async (text: string) => {
    const answer = await host.post(`/rooms/${code}/messages`, { body: text });
    assert.equal(answer.statusCode, 303);
  };
  const eventsOf = (type: string) => wire.filter((event) => event.t === type);

  before(async () => {
    redis = await startRedis();
    const env = { MASTER_KEY: randomBytes(32).toString('base64') };
    first = await buildTestApp({ listen: true, redis, env });
    second = await buildTestApp({ listen: true, redis, env, database: first.database });
    observer = await createRedisBus(redis.url);
    ({ code, host, guest } = await openRoom(first.chat));
    roomId = await first.resources.db.oneFirst(sql.type(z.object({ id: z.string() }))`
      SELECT id FROM rooms WHERE code = ${code} AND status = 'active'`);
    await observer.subscribe(`ccc:room:${roomId}`, (raw) => wire.push(JSON.parse(raw) as WireEvent));
  });

  after(async () => {
    for (const socket of sockets) socket.close();
    await observer?.close();
    await second?.close();
    await first?.close();
    await redis?.stop();
  });

  it('keeps the messages of a room whose sockets are all in one process off the bus', async () => {
    const hostSocket = await openLive(first.chatUrl, code, host);
    const guestSocket = await openLive(first.chatUrl, code, guest);
    sockets.push(hostSocket, guestSocket);
    await guestSocket.waitFor(/presence-online/);
    for (const text of ['one', 'two', 'three']) await send(text);
    await guestSocket.waitFor(/msg-3/);
    assert.deepEqual(seqsIn(guestSocket.frames), [1, 2, 3]);
    // The channel is live (the first process said hello there), yet no message crossed it.
    assert.ok(eventsOf('hello').some((event) => event.o === first.services.hub.processId));
    assert.deepEqual(eventsOf('msg'), []);
  });

  it('tells a process that joins where the room stands, then publishes every message to it', async () => {
    const guestElsewhere = await openLive(second.chatUrl, code, guest, { after: 3 });
    sockets.push(guestElsewhere);
    // The first process answers the newcomer's hello with its presence, and with the highest
    // seq it did not publish: a message committed between the newcomer's catch-up and that
    // hello would otherwise never reach it.
    await guestElsewhere.waitFor(/presence-online/);
    const heads = eventsOf('head');
    assert.equal(heads.length, 1);
    assert.equal(heads[0]?.o, first.services.hub.processId);
    assert.equal(heads[0]?.s, 3);

    await send('four');
    assert.match(await guestElsewhere.waitFor(/msg-4/), /four/);
    assert.deepEqual(
      eventsOf('msg').map((event) => event.s),
      [4],
    );
  });

  it('fills a hole up to an announced head from the database', async () => {
    const guestElsewhere = sockets.at(-1) as LiveSocket;
    // Stored, and neither delivered nor published: what a process that did not know of the
    // newcomer leaves behind.
    const participantId = await first.resources.db.oneFirst(sql.type(z.object({ id: z.string() }))`
      SELECT id FROM participants WHERE room_id = ${roomId} AND slot = 1`);
    const written = await first.services.writer.write({
      roomId,
      participantId,
      kind: 'text',
      clientMsgId: null,
      text: 'committed unheard',
      senderIp: '127.0.0.1',
    });
    assert.equal(written.seq, 5);
    await observer.publish(
      `ccc:room:${roomId}`,
      JSON.stringify({ t: 'head', o: 'elsewhere', r: roomId, s: 5 }),
    );
    assert.match(await guestElsewhere.waitFor(/msg-5/, 3_000), /committed unheard/);
    assert.deepEqual(seqsIn(guestElsewhere.frames), [4, 5]);
  });

  it('stops publishing once the other process has no socket left in the room', async () => {
    const guestElsewhere = sockets.pop() as LiveSocket;
    guestElsewhere.close();
    // The second process says it has no one left in the room (the guest is still online through
    // the first process, so no page sees a change), and the next message stays in the first.
    const secondId = second.services.hub.processId;
    const deadline = Date.now() + 3_000;
    while (!wire.some((event) => event.t === 'presence' && event.o === secondId && !event.on)) {
      assert.ok(Date.now() < deadline, 'the second process never said it left');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const before = eventsOf('msg').length;
    await send('six');
    await sockets[1]?.waitFor(/msg-6/);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(eventsOf('msg').length, before);
  });

  it('says hello again when it could not be published, so the messages still reach a newcomer', async () => {
    // Drop every publishing connection (they reconnect within a few hundred ms): the newcomer's
    // hello, and its presence, fail to go out, and without them no one would publish to it.
    const admin = new Redis(redis.url);
    try {
      const clients = String(await admin.client('LIST'))
        .split('\n')
        .filter((line) => line.includes('name=ccc-pub'));
      assert.ok(clients.length >= 2);
      for (const line of clients) await admin.client('KILL', 'ID', /id=(\d+)/.exec(line)?.[1] as string);
    } finally {
      admin.disconnect();
    }
    const guestElsewhere = await openLive(second.chatUrl, code, guest, { after: 6 });
    sockets.push(guestElsewhere);
    await new Promise((resolve) => setTimeout(resolve, 500));
    await send('seven');
    assert.match(await guestElsewhere.waitFor(/msg-7/, 5_000), /seven/);
  });
});
