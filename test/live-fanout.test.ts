import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import pino from 'pino';
import { z } from 'zod';
import { type Bus, createMemoryBus, createRedisBus } from '../src/infra/bus.ts';
import { sql } from '../src/infra/db.ts';
import { CrossProcessFanout, type WireEvent } from '../src/messages/live/fanout.ts';
import { buildTestApp, type TestApp } from './helpers/app.ts';
import { type Client, openRoom } from './helpers/client.ts';
import { type LiveSocket, openLive, seqsIn } from './helpers/live.ts';
import { insertMessage } from './helpers/messages.ts';
import { type RedisServer, startRedis } from './helpers/servers.ts';

/** Waits until the condition holds, checked every 10 ms, for at most 5 s. */
async function until(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${condition}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** An event as it crosses the bus: `<process id> <json>`. */
type Heard = WireEvent & { origin: string };
const parse = (raw: string): Heard => {
  const space = raw.indexOf(' ');
  return { ...(JSON.parse(raw.slice(space + 1)) as WireEvent), origin: raw.slice(0, space) };
};

describe('cross-process fan-out on its own', () => {
  let redis: RedisServer;
  const buses: Bus[] = [];
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    for (const bus of buses) await bus.close();
    await redis?.stop();
  });

  it('hands a room’s events to the other processes in it, with the sender’s id, and not back to the sender', async () => {
    const heard = { a: [] as [WireEvent, string][], b: [] as [WireEvent, string][] };
    const fanouts = await Promise.all(
      (['a', 'b'] as const).map(async (name) => {
        const bus = await createRedisBus(redis.url);
        buses.push(bus);
        const fanout = new CrossProcessFanout(bus, pino({ level: 'silent' }), {
          onEvent: (event, origin) => heard[name].push([event, origin]),
          onProcessGone: () => undefined,
          onReconnect: () => undefined,
        });
        await fanout.start();
        return fanout;
      }),
    );
    const [a, b] = fanouts as [CrossProcessFanout, CrossProcessFanout];
    await b.joinRoom('r1');
    await a.joinRoom('r1');
    // Once its subscription was active, `a` asked who is online there (hello), which `b` hears.
    await until(() => heard.b.some(([event, origin]) => event.t === 'hello' && origin === a.processId));
    a.publish('r1', { t: 'typing', r: 'r1', sl: 1, on: true });
    a.publish('r1', { t: 'ended', r: 'r1' });
    await until(() => heard.b.some(([event]) => event.t === 'ended'));
    assert.deepEqual(
      heard.b.filter(([event]) => event.t !== 'hello'),
      [
        [{ t: 'typing', r: 'r1', sl: 1, on: true }, a.processId],
        [{ t: 'ended', r: 'r1' }, a.processId],
      ],
    );
    assert.ok(
      heard.a.every(([, origin]) => origin === b.processId),
      'a process never hears its own events',
    );
    await Promise.all(fanouts.map((fanout) => fanout.close()));
  });

  it('publishes and subscribes nothing with the in-process bus (there is no other process)', async () => {
    const bus = createMemoryBus();
    const published: string[] = [];
    const publish = bus.publish.bind(bus);
    bus.publish = (channel, message) => {
      published.push(channel);
      return publish(channel, message);
    };
    const fanout = new CrossProcessFanout(bus, pino({ level: 'silent' }), {
      onEvent: () => assert.fail('no event expected'),
      onProcessGone: () => undefined,
      onReconnect: () => undefined,
    });
    await fanout.start();
    await fanout.joinRoom('r1');
    fanout.publish('r1', { t: 'ended', r: 'r1' });
    fanout.publish(null, { t: 'alive' });
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(published, []);
    await fanout.close();
  });
});

/**
 * Two app instances (two hubs, each with its own process id) on one database and one Redis, and a
 * bare bus subscriber that sees what crosses a room's channel.
 */
describe('live delivery across processes (publishing only while another process listens)', () => {
  let redis: RedisServer;
  let first: TestApp;
  let second: TestApp;
  let observer: Bus;
  let code: string;
  let roomId: string;
  let host: Client;
  let guest: Client;
  const wire: Heard[] = [];
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
    await observer.subscribe(`ccc:room:${roomId}`, (raw) => wire.push(parse(raw)));
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
    assert.ok(eventsOf('hello').some((event) => event.origin === first.services.hub.processId));
    assert.deepEqual(eventsOf('msg'), []);
  });

  it('tells a process that joins where the room stands, then publishes every message, sealed, to it', async () => {
    const guestElsewhere = await openLive(second.chatUrl, code, guest, { after: 3 });
    sockets.push(guestElsewhere);
    // The first process answers the newcomer's hello with its presence, and with the highest
    // seq it did not publish: a message committed between the newcomer's catch-up and that
    // hello would otherwise never reach it.
    await guestElsewhere.waitFor(/presence-online/);
    const heads = eventsOf('head');
    assert.equal(heads.length, 1);
    assert.deepEqual(heads[0], { t: 'head', r: roomId, s: 3, origin: first.services.hub.processId });

    await send('four');
    assert.match(await guestElsewhere.waitFor(/msg-4/), /four/);
    assert.deepEqual(
      eventsOf('msg').map((event) => [event.origin, event.t === 'msg' && event.s]),
      [[first.services.hub.processId, 4]],
    );
    assert.ok(!JSON.stringify(wire).includes('four'), 'no message text crosses the bus');
  });

  it('fills a hole up to an announced head from the database', async () => {
    const guestElsewhere = sockets.at(-1) as LiveSocket;
    // Stored, and neither delivered nor published: what a process that did not know of the
    // newcomer leaves behind.
    await insertMessage(first, roomId, { slot: 1, text: 'committed unheard' });
    await observer.publish(
      `ccc:room:${roomId}`,
      `elsewhere ${JSON.stringify({ t: 'head', r: roomId, s: 5 })}`,
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
    await until(() => wire.some((event) => event.t === 'presence' && event.origin === secondId && !event.on));
    const before = eventsOf('msg').length;
    await send('six');
    await sockets[1]?.waitFor(/msg-6/);
    assert.equal(eventsOf('msg').length, before);
  });

  it('says hello again when it could not be published, so the messages still reach a newcomer', async () => {
    // The second process has left the room (and forgotten who was online there).
    await until(() => second.services.hub.socketCount() === 0);
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
    await guestElsewhere.waitFor(/presence-online/, 5_000);
    await send('seven');
    assert.match(await guestElsewhere.waitFor(/msg-7/, 5_000), /seven/);
  });
});
