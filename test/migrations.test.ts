import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { z } from 'zod';
import { createDbPool, type DatabasePool, migrate, sql } from '../src/infra/db.ts';
import { projectPath } from '../src/paths.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { runScript } from './helpers/process.ts';

/** Matches a Slonik error whose underlying PostgreSQL error names this constraint. */
const violates = (constraint: string) => (error: unknown) =>
  (error as { cause?: { constraint?: string } }).cause?.constraint === constraint;

const MIGRATIONS = [
  '001_init_schema.sql',
  '002_write_messages_function.sql',
  '003_lighter_message_inserts.sql',
  '004_packed_message_bodies.sql',
];

describe('migrations', () => {
  let database: TestDatabase;
  let pool: DatabasePool;
  let other: DatabasePool;
  before(async () => {
    database = await createTestDatabase({ migrated: false });
    pool = await createDbPool(database.url);
    other = await createDbPool(database.url);
  });
  after(async () => {
    await pool.end();
    await other.end();
    await database.drop();
  });

  it('apply once when two processes start at the same time, then are a no-op', async () => {
    const dir = projectPath('migrations');
    const [a, b] = await Promise.all([migrate(pool, dir), migrate(other, dir)]);
    assert.deepEqual([...a.applied, ...b.applied], MIGRATIONS);
    const again = await migrate(pool, dir);
    assert.deepEqual(again.applied, []);
    assert.deepEqual(again.alreadyApplied, MIGRATIONS);
    const recorded = await pool.anyFirst(
      sql.type(z.object({ name: z.string() }))`SELECT name FROM schema_migrations`,
    );
    assert.deepEqual(recorded, MIGRATIONS);
  });

  it('run from npm run migrate: up to date is exit 0; an unreachable database is one line and exit 1', async () => {
    const key = Buffer.alloc(32, 7).toString('base64');
    const current = await runScript('migrate', { DATABASE_URL: database.url, MASTER_KEY: key });
    assert.equal(current.code, 0, current.output);
    assert.match(current.output, /database is up to date/);
    const unreachable = await runScript('migrate', {
      DATABASE_URL: 'postgres://u:p@127.0.0.1:1/db',
      MASTER_KEY: key,
    });
    assert.equal(unreachable.code, 1);
    assert.match(unreachable.output, /^migrate: could not open the database: .*ECONNREFUSED/);
    assert.doesNotMatch(unreachable.output, /\n\s+at /);
  });

  it('create every table of the design', async () => {
    const tables = await pool.anyFirst(
      sql.type(z.object({ table_name: z.string() }))`
        SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name`,
    );
    for (const table of ['attachments', 'audit_events', 'messages', 'participants', 'room_keys', 'rooms']) {
      assert.ok(tables.includes(table), `missing table ${table}`);
    }
  });

  it('enforce the constraints the design implies', async () => {
    const room = (code: string, status = 'pending') => sql.type(z.object({ id: z.string() }))`
      INSERT INTO rooms (code, status, created_at, created_ip, pending_until, last_activity_at,
                         activated_at, expires_at, ended_at, end_reason)
      VALUES (${code}, ${status}, now(), '127.0.0.1', now(), now(),
              ${status === 'pending' ? null : sql.timestamp(new Date())},
              ${status === 'pending' ? null : sql.timestamp(new Date())},
              ${status === 'expired' ? sql.timestamp(new Date()) : null},
              ${status === 'expired' ? 'expired' : null})
      RETURNING id`;
    const id = await pool.oneFirst(room('AB23'));
    // a live code is unique; an expired room frees it
    await assert.rejects(pool.query(room('AB23')), violates('rooms_live_code'));
    await pool.query(room('CD45', 'expired'));
    await pool.query(room('CD45'));
    // the code alphabet has no ambiguous characters
    await assert.rejects(pool.query(room('AB0O')), /check/i);
    await assert.rejects(pool.query(room('AB23', 'bogus')), /check/i);

    const participant = (slot: number, hash: Buffer) => sql.unsafe`
      INSERT INTO participants (room_id, slot, device_hash, first_ip, last_ip, joined_at, last_seen_at)
      VALUES (${id}, ${slot}, ${sql.binary(hash)}, '127.0.0.1', '127.0.0.1', now(), now())`;
    await pool.query(participant(1, Buffer.alloc(32, 1)));
    await assert.rejects(
      pool.query(participant(1, Buffer.alloc(32, 2))),
      violates('participants_room_id_slot_key'),
    );
    await assert.rejects(pool.query(participant(3, Buffer.alloc(32, 3))), /check/i);
    await assert.rejects(pool.query(participant(2, Buffer.alloc(16, 3))), /check/i);

    const message = (seq: number) => sql.unsafe`
      INSERT INTO messages (room_id, seq, kind, created_at) VALUES (${id}, ${seq}, 'system', now())`;
    await pool.query(message(1));
    await assert.rejects(pool.query(message(1)), violates('messages_pkey'));
    await assert.rejects(
      pool.query(sql.unsafe`INSERT INTO messages (room_id, seq, kind, created_at)
                            VALUES (gen_random_uuid(), 1, 'system', now())`),
      /foreign key/i,
    );
  });

  it('let the writer’s function reserve only rooms at their expected seq, and name exactly the rows it skipped', async () => {
    const roomIds = await pool.manyFirst(sql.type(z.object({ id: z.string() }))`
      INSERT INTO rooms (code, status, created_at, created_ip, pending_until, last_activity_at, activated_at, expires_at)
      SELECT code, 'active', now(), '127.0.0.1', now(), now(), now(), now() + interval '1 hour'
      FROM unnest(ARRAY['WF22', 'WF33']) AS code
      RETURNING id`);
    const [first, second] = [...roomIds].sort() as [string, string];
    const senders = await pool.manyFirst(sql.type(z.object({ id: z.string() }))`
      INSERT INTO participants (room_id, slot, device_hash, first_ip, last_ip, joined_at, last_seen_at)
      SELECT room_id, 1, sha256(room_id::text::bytea), '127.0.0.1', '127.0.0.1', now(), now()
      FROM unnest(${sql.array([first, second], 'uuid')}) AS room_id
      RETURNING id`);
    const sender = new Map([first, second].map((room, index) => [room, senders[index] as string]));
    type Row = { room: string; seq: number; clientMsgId: string };
    // Bodies of different lengths, packed as the writer packs them (migration 004).
    const bodyOf = (row: Row) => Buffer.from(`sealed ${row.room.slice(0, 4)} ${'x'.repeat(row.seq * 7)}`);
    const at = new Date('2026-11-26T08:15:42.123Z');
    const write = (expected: [number, number], rows: Row[]) => {
      const counts = [first, second].map((room) => rows.filter((row) => row.room === room).length);
      const column = <T>(pick: (row: Row) => T) => rows.map(pick);
      const bodies = rows.map(bodyOf);
      const starts = bodies.map(
        (_, index) => 1 + bodies.slice(0, index).reduce((sum, body) => sum + body.length, 0),
      );
      return pool.one(sql.type(z.object({ reserved: z.array(z.string()), skipped: z.array(z.string()) }))`
        SELECT reserved_rooms AS reserved, skipped_rows AS skipped FROM write_packed_messages_if_expected(
          ${sql.array([first, second], 'uuid')}, ${sql.array(expected, 'int8')}, ${sql.array(counts, 'int4')},
          ${at.toISOString()}::timestamptz,
          ${sql.array(
            column((row) => row.room),
            'uuid',
          )}, ${sql.array(
            column((row) => row.seq),
            'int8',
          )},
          ${sql.array(
            column((row) => sender.get(row.room) as string),
            'uuid',
          )},
          ${sql.array(
            column(() => 'text'),
            'text',
          )}, ${sql.array(
            column((row) => row.clientMsgId),
            'uuid',
          )},
          ${sql.binary(Buffer.concat(bodies))}, ${sql.array(starts, 'int4')},
          ${sql.array(
            bodies.map((body) => body.length),
            'int4',
          )},
          ${sql.array(
            column(() => '127.0.0.1'),
            'inet',
          )})`);
    };
    const ids = Array.from({ length: 4 }, () => crypto.randomUUID());
    const stored = await write(
      [0, 0],
      [
        { room: first, seq: 1, clientMsgId: ids[0] as string },
        { room: first, seq: 2, clientMsgId: ids[1] as string },
        { room: second, seq: 1, clientMsgId: ids[2] as string },
      ],
    );
    assert.deepEqual([...stored.reserved].sort(), [first, second]);
    assert.deepEqual(stored.skipped, []);

    // A repeated client_msg_id among new rows: only that row is skipped (its seq stays unused);
    // a room not at its expected seq is not reserved, and nothing of it is written.
    const mixed = await write(
      [2, 0],
      [
        { room: first, seq: 3, clientMsgId: ids[1] as string },
        { room: first, seq: 4, clientMsgId: ids[3] as string },
        { room: second, seq: 1, clientMsgId: crypto.randomUUID() },
      ],
    );
    assert.deepEqual(mixed.reserved, [first]);
    assert.deepEqual(mixed.skipped, [`${first}:3`]);
    const rows = await pool.any(sql.type(
      z.object({
        room_id: z.string(),
        seq: z.number(),
        body_sealed: z.instanceof(Buffer),
        created_at: z.number(),
      }),
    )`
      SELECT room_id, seq, body_sealed, created_at FROM messages
      WHERE room_id IN (${first}, ${second}) ORDER BY room_id, seq`);
    assert.deepEqual(
      rows.map((row) => `${row.room_id === first ? 'first' : 'second'}:${row.seq}`),
      ['first:1', 'first:2', 'first:4', 'second:1'],
    );
    // Each row has exactly its own body, and the batch's time to the millisecond.
    for (const row of rows) {
      assert.equal(
        row.body_sealed.toString(),
        bodyOf({ room: row.room_id, seq: row.seq, clientMsgId: '' }).toString(),
      );
      assert.equal(row.created_at, at.getTime());
    }
    const lastSeqs = await pool.anyFirst(sql.type(z.object({ last_seq: z.number() }))`
      SELECT last_seq FROM rooms WHERE id IN (${first}, ${second}) ORDER BY id`);
    assert.deepEqual(lastSeqs, [4, 1]);
  });
});
