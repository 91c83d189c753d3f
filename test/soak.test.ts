/**
 * Soak: two app processes share PostgreSQL and Redis; hosts talk through one, guests through the
 * other. Both sides send steadily (retrying refused sends with the same client_msg_id, as the
 * page does), while sockets are dropped and processes restarted. At the end a ledger check:
 * every acknowledged message is stored exactly once and reached the partner, and no socket was
 * sent the same message twice. SOAK_SECONDS sets the length (default 45; e.g. 240 for a longer run).
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { createDbPool, sql } from '../src/infra/db.ts';
import { freePort } from '../src/infra/free-port.ts';
import { type HttpClient, openRoomOverHttp } from './helpers/client.ts';
import { createTestDatabase } from './helpers/database.ts';
import { type LiveSocket, openLive, seqsIn } from './helpers/live.ts';
import { type AppProcess, startAppProcess } from './helpers/process.ts';
import { startRedis } from './helpers/servers.ts';

const SECONDS = Number(process.env.SOAK_SECONDS ?? 45);
const ROOMS = 3;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Where a reconnecting page asks to resume: before the first hole among its latest messages. */
export function resumeAfter(seen: Set<number>): number {
  if (seen.size === 0) return 0;
  const highest = Math.max(...seen);
  for (let seq = Math.max(1, highest - 50); seq < highest; seq++) if (!seen.has(seq)) return seq - 1;
  return highest;
}

type Side = {
  name: string;
  client: HttpClient;
  server: () => string;
  acknowledged: Map<string, number>;
  /** seqs of the partner's messages this side's sockets received (any connection). */
  received: Set<number>;
  seen: Set<number>;
  duplicatesWithinAConnection: number;
  socket?: LiveSocket;
  /** What happened when, for the failure message. */
  timeline: [number, string][];
};

/** The two sides' timelines around the moment a message was acknowledged. */
function explain(me: Side, partner: Side, seq: number): string {
  const at = me.timeline.find(([, what]) => what === `acknowledged ${seq}`)?.[0] ?? 0;
  const near = (side: Side) =>
    side.timeline
      .filter(([when, what]) => Math.abs(when - at) < 3_000 && !what.startsWith('received'))
      .map(([when, what]) => `  ${side.name} ${when - at} ms: ${what}`);
  const received = partner.timeline
    .filter(([when, what]) => Math.abs(when - at) < 1_500 && what.startsWith('received'))
    .map(([when, what]) => `${what.slice(9)}@${when - at}`);
  return [...near(me), ...near(partner), `  ${partner.name} received near it: ${received.join(' ')}`].join(
    '\n',
  );
}

describe('soak with reconnects and restarts', () => {
  it(`keeps the ledger for ${SECONDS} s`, { timeout: (SECONDS + 120) * 1000 }, async (t) => {
    const database = await createTestDatabase();
    const redis = await startRedis();
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'ccc-soak-'));
    const ports = { a: await freePort(), b: await freePort() };
    const env = (chatPort: number) => ({
      DATABASE_URL: database.url,
      REDIS_URL: redis.url,
      MASTER_KEY: masterKey,
      DATA_DIR: dataDir,
      CHAT_PORT: String(chatPort),
      ADMIN_PORT: '0',
      BIND_HOST: '127.0.0.1',
      CREATE_RATE_PER_MINUTE: '10000',
      JOIN_RATE_PER_MINUTE: '10000',
      SEND_RATE_PER_MINUTE: '100000',
    });
    const masterKey = randomBytes(32).toString('base64');
    const processes: Record<'a' | 'b', AppProcess> = {
      a: startAppProcess(env(ports.a)),
      b: startAppProcess(env(ports.b)),
    };
    await Promise.all([processes.a.waitForLog('listening'), processes.b.waitForLog('listening')]);
    const url = (which: 'a' | 'b') => `http://127.0.0.1:${ports[which]}`;

    let sending = true;
    let connecting = true;
    const sides: { room: string; host: Side; guest: Side }[] = [];
    try {
      for (let index = 0; index < ROOMS; index++) {
        const room = await openRoomOverHttp(url('a'), url('b'));
        const side = (name: string, client: HttpClient, which: 'a' | 'b'): Side => ({
          name,
          client,
          server: () => url(which),
          acknowledged: new Map(),
          received: new Set(),
          seen: new Set(),
          duplicatesWithinAConnection: 0,
          timeline: [],
        });
        sides.push({
          room: room.code,
          host: side('host', room.host, 'a'),
          guest: side('guest', room.guest, 'b'),
        });
      }

      const keepConnected = async (code: string, me: Side) => {
        while (connecting) {
          try {
            const onThisConnection = new Set<number>();
            const after = resumeAfter(me.seen);
            const socket = await openLive(me.server(), code, me.client, {
              after,
              onFrame: (frame) => {
                for (const seq of seqsIn([frame])) {
                  if (onThisConnection.has(seq)) me.duplicatesWithinAConnection += 1;
                  onThisConnection.add(seq);
                  me.seen.add(seq);
                  if (frame.includes('message-theirs')) me.received.add(seq);
                  me.timeline.push([Date.now(), `received ${seq}`]);
                }
              },
            });
            me.socket = socket;
            me.timeline.push([Date.now(), `connected to ${me.server()} after ${after}`]);
            const closed = await socket.closed;
            me.timeline.push([Date.now(), `closed ${closed.code}`]);
          } catch {
            // the process is restarting: try again shortly
          }
          if (connecting) await sleep(100 + Math.random() * 300);
        }
      };

      const keepSending = async (code: string, me: Side) => {
        let counter = 0;
        while (sending) {
          const id = randomUUID();
          const body = `${me.name} ${counter++} ${id}`;
          // Retry the same message (same client_msg_id) until it is acknowledged, as a page would.
          for (;;) {
            try {
              const response = await me.client.post(`/rooms/${code}/messages`, { body, client_msg_id: id });
              if (response.statusCode === 303) {
                const seq = Number(/#msg-(\d+)$/.exec(String(response.headers.location))?.[1]);
                me.acknowledged.set(id, seq);
                me.timeline.push([Date.now(), `acknowledged ${seq}`]);
                break;
              }
            } catch {
              // connection refused or reset: the process is restarting
            }
            await sleep(200);
          }
          await sleep(80 + Math.random() * 120);
        }
      };

      const connectors = sides.flatMap(({ room, host, guest }) => [
        keepConnected(room, host),
        keepConnected(room, guest),
      ]);
      const senders = sides.flatMap(({ room, host, guest }) => [
        keepSending(room, host),
        keepSending(room, guest),
      ]);

      let restarts = 0;
      let dropped = 0;
      const chaos = (async () => {
        const started = Date.now();
        let round = 0;
        while (Date.now() - started < SECONDS * 1000) {
          await sleep(4_000);
          round += 1;
          if (round % 3 === 0) {
            const which = round % 2 === 0 ? 'a' : 'b';
            const stopped = await processes[which].stop('SIGTERM');
            assert.equal(stopped.code, 0, `process ${which} exits cleanly`);
            await sleep(500);
            processes[which] = startAppProcess(env(ports[which]));
            await processes[which].waitForLog('listening');
            restarts += 1;
          } else {
            const all = sides.flatMap(({ host, guest }) => [host, guest]);
            all[round % all.length]?.socket?.socket.terminate();
            dropped += 1;
          }
        }
      })();

      await chaos;
      // Every message started is retried until acknowledged; then the sockets get time to settle.
      sending = false;
      await Promise.all(senders);
      const complete = () =>
        sides.every(
          ({ host, guest }) =>
            [...guest.acknowledged.values()].every((seq) => host.received.has(seq)) &&
            [...host.acknowledged.values()].every((seq) => guest.received.has(seq)),
        );
      const deadline = Date.now() + 20_000;
      while (!complete() && Date.now() < deadline) await sleep(200);
      connecting = false;
      for (const { host, guest } of sides) {
        host.socket?.close();
        guest.socket?.close();
      }
      await Promise.allSettled(connectors);

      const pool = await createDbPool(database.url);
      try {
        const stored = await pool.any(sql.type(
          z.object({ client_msg_id: z.string(), n: z.number(), seq: z.number() }),
        )`
          SELECT client_msg_id, count(*)::int AS n, min(seq)::int AS seq FROM messages GROUP BY client_msg_id`);
        const byId = new Map(stored.map((row) => [row.client_msg_id, row]));
        let acknowledgedTotal = 0;
        for (const { room, host, guest } of sides) {
          for (const [me, partner] of [
            [host, guest],
            [guest, host],
          ] as const) {
            for (const [id, seq] of me.acknowledged) {
              acknowledgedTotal += 1;
              const row = byId.get(id);
              assert.ok(row, `${room}: acknowledged ${id} is not stored`);
              assert.equal(row.n, 1, `${room}: ${id} stored ${row.n} times`);
              assert.equal(row.seq, seq, `${room}: ${id} acknowledged as ${seq} but stored as ${row.seq}`);
              assert.ok(
                partner.received.has(seq),
                `${room}: ${me.name}'s message ${seq} never reached the ${partner.name}\n${explain(me, partner, seq)}`,
              );
            }
            assert.equal(
              me.duplicatesWithinAConnection,
              0,
              `${room}: a socket of the ${me.name} got a message twice`,
            );
          }
        }
        assert.equal(stored.length, acknowledgedTotal, 'nothing stored that was not acknowledged');
        t.diagnostic(
          `${acknowledgedTotal} messages acknowledged, ${restarts} process restarts, ${dropped} sockets dropped`,
        );
        assert.ok(restarts >= 1 && dropped >= 1, 'the run had both restarts and dropped sockets');
        assert.ok(acknowledgedTotal > SECONDS * ROOMS, `only ${acknowledgedTotal} messages in ${SECONDS} s`);
      } finally {
        await pool.end();
      }
    } finally {
      sending = false;
      connecting = false;
      await Promise.allSettled([processes.a.stop(), processes.b.stop()]);
      await redis.stop();
      await database.drop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
