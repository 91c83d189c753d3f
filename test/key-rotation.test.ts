import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { keyIdOf } from '../src/crypto/keyring.ts';
import { sql } from '../src/infra/db.ts';
import { buildTestApp } from './helpers/app.ts';
import { Client, openRoom } from './helpers/client.ts';
import { createTestDatabase } from './helpers/database.ts';
import { runScript } from './helpers/process.ts';

const runRotation = (env: Record<string, string>) => runScript('rotate-master-key', env);

describe('master key rotation', () => {
  it('rewraps every room key under the new key; old rooms read fine once the old key is gone', async () => {
    const database = await createTestDatabase();
    const oldKey = randomBytes(32).toString('base64');
    const newKey = randomBytes(32).toString('base64');
    const before = await buildTestApp({ database, env: { MASTER_KEY: oldKey } });
    const rooms: { code: string; guest: Client }[] = [];
    try {
      for (let index = 0; index < 3; index++) {
        const room = await openRoom(before.chat);
        await room.host.post(`/rooms/${room.code}/messages`, { body: `secret number ${index}` });
        rooms.push(room);
      }
    } finally {
      await before.close();
    }

    const env = {
      DATABASE_URL: database.url,
      MASTER_KEY: newKey,
      MASTER_KEY_PREVIOUS: oldKey,
      LOG_LEVEL: 'info',
    };
    const first = await runRotation(env);
    assert.equal(first.code, 0, first.output);
    assert.match(first.output, /"rewrapped":3/);
    // safe to run again: nothing left to do
    const second = await runRotation(env);
    assert.equal(second.code, 0, second.output);
    assert.match(second.output, /"rewrapped":0/);

    const after = await buildTestApp({ database, env: { MASTER_KEY: newKey } });
    try {
      const keyIds = await after.resources.db.anyFirst(sql.type(z.object({ kek_id: z.string() }))`
        SELECT DISTINCT kek_id FROM room_keys`);
      assert.deepEqual(keyIds, [keyIdOf(Buffer.from(newKey, 'base64'))]);
      for (const [index, { code, guest }] of rooms.entries()) {
        const reader = new Client(after.chat);
        for (const [name, value] of guest.cookies) reader.cookies.set(name, value);
        const page = await reader.get(`/rooms/${code}`);
        assert.equal(page.statusCode, 200);
        assert.match(page.body, new RegExp(`secret number ${index}`));
      }
    } finally {
      await after.close();
    }

    // Started again on the old key only (as `npm start` would with its old key file): those rooms
    // answer a clear 503, the admin page still shows their metadata, and start-up can name the key.
    const wrong = await buildTestApp({ database, env: { MASTER_KEY: oldKey } });
    try {
      const newKeyId = keyIdOf(Buffer.from(newKey, 'base64'));
      assert.deepEqual(await wrong.services.roomKeys.unconfiguredKeyIds(), [{ keyId: newKeyId, rooms: 3 }]);
      const { code, guest } = rooms[0] as (typeof rooms)[number];
      const reader = new Client(wrong.chat);
      for (const [name, value] of guest.cookies) reader.cookies.set(name, value);
      const page = await reader.get(`/rooms/${code}`);
      assert.equal(page.statusCode, 503);
      assert.match(page.body, /key that opens this room is not configured/);
      const roomId = await wrong.resources.db.oneFirst(sql.type(z.object({ id: z.string() }))`
        SELECT id FROM rooms WHERE code = ${code}`);
      const admin = await wrong.admin.inject({ url: `/rooms/${roomId}` });
      assert.equal(admin.statusCode, 200);
      assert.match(admin.body, new RegExp(`Master key not configured[\\s\\S]*${newKeyId}`));
      assert.match(admin.body, /<td[^>]*>[^<]*\d+\.\d+\.\d+\.\d+/, 'participants and their IPs still shown');
      assert.equal((await wrong.admin.inject({ url: `/rooms/${roomId}/transcript.json` })).statusCode, 503);
    } finally {
      await wrong.close();
    }

    // without the old key in MASTER_KEY_PREVIOUS, a run cannot open old keys and says so
    const stale = await createTestDatabase();
    const staleApp = await buildTestApp({ database: stale, env: { MASTER_KEY: oldKey } });
    await openRoom(staleApp.chat);
    await staleApp.close();
    const refused = await runRotation({ DATABASE_URL: stale.url, MASTER_KEY: newKey });
    assert.equal(refused.code, 2);
    assert.match(refused.output, /MASTER_KEY_PREVIOUS/);
    // a database it cannot reach: one line and exit 1, no stack trace
    const unreachable = await runRotation({
      DATABASE_URL: 'postgres://u:p@127.0.0.1:1/db',
      MASTER_KEY: newKey,
    });
    assert.equal(unreachable.code, 1);
    assert.match(unreachable.output, /^rotate-master-key: could not open the database: .*ECONNREFUSED/);
    assert.doesNotMatch(unreachable.output, /\n\s+at /);
    await stale.drop();
    await database.drop();
  });
});
