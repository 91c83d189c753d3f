import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { DatabasePool } from '../src/infra/db.ts';
import { buildTestApp, type TestApp } from './helpers/app.ts';
import { type Client, openRoom } from './helpers/client.ts';
import { type LiveSocket, openLive, seqsIn } from './helpers/live.ts';
import { insertMessage, roomIdOf } from './helpers/messages.ts';

const send = async (client: Client, code: string, body: string) => {
  const answer = await client.post(`/rooms/${code}/messages`, { body });
  assert.equal(answer.statusCode, 303, answer.body);
};

/**
 * Watches the catch-up reads (the transcript query, `FROM messages m`) of an app's pool, which
 * the hub shares; `hold()` makes the next ones wait until the returned function is called.
 */
function watchCatchUpReads(db: DatabasePool) {
  const reads: string[] = [];
  let gate: Promise<void> | undefined;
  const original = db.any.bind(db);
  Object.assign(db, {
    any: (query: Parameters<DatabasePool['any']>[0]) => {
      if (!query.sql.includes('FROM messages m')) return original(query);
      reads.push(String(query.values[0]));
      const open = gate;
      return open ? open.then(() => original(query)) : original(query);
    },
  });
  return {
    reads,
    hold(): () => void {
      let release: () => void = () => undefined;
      gate = new Promise((resolve) => {
        release = () => {
          gate = undefined;
          resolve();
        };
      });
      return release;
    },
  };
}

/** Waits until the condition holds (checked on each turn of the event loop), at most `ms`. */
async function until(condition: () => boolean, what: string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('catching sockets up from the database (one routine)', () => {
  let app: TestApp;
  let watch: ReturnType<typeof watchCatchUpReads>;
  before(async () => {
    app = await buildTestApp({ listen: true });
    watch = watchCatchUpReads(app.resources.db);
  });
  after(() => app.close());

  it('connecting: what the page missed, then what came meanwhile, in order and once', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    for (const text of ['a', 'b', 'c']) await send(host, code, text);
    watch.reads.length = 0;
    const release = watch.hold();
    const socket = await openLive(app.chatUrl, code, guest, { after: 1 });
    await until(() => watch.reads.length === 1, 'the catch-up read started');
    // Committed while the catch-up read waits: held back, then sent after it.
    await send(host, code, 'd');
    release();
    await socket.waitFor(/msg-4/);
    await send(host, code, 'e');
    await socket.waitFor(/msg-5/);
    assert.deepEqual(seqsIn(socket.frames), [2, 3, 4, 5]);
    assert.equal(watch.reads.length, 1, 'one read');
    socket.close();
  });

  it('a hole: every socket of the room that lacks a message gets it from one read', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    const tabs = [await openLive(app.chatUrl, code, guest), await openLive(app.chatUrl, code, guest)];
    const other = await openLive(app.chatUrl, code, host);
    await send(host, code, 'one');
    await Promise.all([...tabs, other].map((tab) => tab.waitFor(/msg-1/)));
    watch.reads.length = 0;
    // Stored without a live event, as if its event were lost on the way.
    await insertMessage(app, await roomIdOf(app, code), { slot: 1, text: 'silently stored' });
    await send(host, code, 'three');
    for (const socket of [...tabs, other]) {
      assert.match(await socket.waitFor(/msg-2/, 3_000), /silently stored/);
      assert.deepEqual(seqsIn(socket.frames), [1, 3, 2]);
    }
    assert.equal(watch.reads.length, 1, 'one read for the three sockets');
    for (const socket of [...tabs, other]) socket.close();
  });
});

describe('catching up after the bus was down', () => {
  let first: TestApp;
  let second: TestApp;
  const sockets: LiveSocket[] = [];
  before(async () => {
    first = await buildTestApp({ listen: true, redis: true });
    second = await buildTestApp({
      listen: true,
      redis: first.redis,
      database: first.database,
      env: { MASTER_KEY: first.config.masterKey?.toString('base64') as string },
    });
  });
  after(async () => {
    for (const socket of sockets) socket.close();
    await second?.close();
    await first?.close();
  });

  it('reads each room once for all its sockets, and each socket gets what it missed, in order, once', async () => {
    const rooms = [await openRoom(first.chat), await openRoom(first.chat)];
    // Three pages of the first room and one of the second, all served by the second process.
    const [one, two] = rooms as [(typeof rooms)[number], (typeof rooms)[number]];
    const pages = [
      await openLive(second.chatUrl, one.code, one.guest),
      await openLive(second.chatUrl, one.code, one.guest),
      await openLive(second.chatUrl, one.code, one.host),
      await openLive(second.chatUrl, two.code, two.guest),
    ];
    sockets.push(...pages);
    await send(one.host, one.code, 'before');
    await Promise.all(pages.slice(0, 3).map((page) => page.waitFor(/msg-1/)));

    const watch = watchCatchUpReads(second.resources.db);
    await first.redis?.stop();
    // Stored and acknowledged by the first process; its events are lost with Redis.
    for (const text of ['during one', 'during two']) await send(one.host, one.code, text);
    await send(two.host, two.code, 'during, second room');
    await first.redis?.start();

    for (const page of pages.slice(0, 3)) {
      assert.match(await page.waitFor(/msg-3/, 15_000), /during two/);
      assert.deepEqual(seqsIn(page.frames), [1, 2, 3]);
    }
    assert.match(await (pages[3] as LiveSocket).waitFor(/msg-1/, 15_000), /during, second room/);
    assert.deepEqual(
      [...watch.reads].sort(),
      [await roomIdOf(first, one.code), await roomIdOf(first, two.code)].sort(),
      'one read per room',
    );
  });
});
