import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { z } from 'zod';
import { createDbPool, type DatabasePool, migrate, sql } from '../src/infra/db.ts';
import { projectPath } from '../src/paths.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';

/** Matches a Slonik error whose underlying PostgreSQL error names this constraint. */
const violates = (constraint: string) => (error: unknown) =>
  (error as { cause?: { constraint?: string } }).cause?.constraint === constraint;

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
    assert.deepEqual(
      [...a.applied, ...b.applied],
      ['001_init_schema.sql', '002_write_messages_function.sql'],
    );
    const again = await migrate(pool, dir);
    assert.deepEqual(again.applied, []);
    assert.deepEqual(again.alreadyApplied, ['001_init_schema.sql', '002_write_messages_function.sql']);
    const recorded = await pool.anyFirst(
      sql.type(z.object({ name: z.string() }))`SELECT name FROM schema_migrations`,
    );
    assert.deepEqual(recorded, ['001_init_schema.sql', '002_write_messages_function.sql']);
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
});
