import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { z } from 'zod';
import { archiveObjectKey } from '../src/archive/archive-service.ts';
import { canonicalJson } from '../src/archive/canonical-json.ts';
import { open, seal } from '../src/crypto/keyring.ts';
import { aad } from '../src/crypto/room-keys.ts';
import { ManualClock } from '../src/infra/clock.ts';
import { sql } from '../src/infra/db.ts';
import { buildTestApp, type TestApp } from './helpers/app.ts';
import { openRoom } from './helpers/client.ts';
import { insertImage, insertMessage, roomIdOf } from './helpers/messages.ts';

const DAY = 86_400_000;
const ADMIN = { remoteAddress: '127.0.0.1' };

const roomState = (app: TestApp, roomId: string) =>
  app.resources.db.one(
    sql.type(
      z.object({
        status: z.string(),
        archive_key: z.string().nullable(),
        archive_sha256: z.string().nullable(),
        archived_at: z.number().nullable(),
        shredded_at: z.number().nullable(),
      }),
    )`SELECT status, archive_key, archive_sha256, archived_at, shredded_at FROM rooms WHERE id = ${roomId}`,
  );

const auditCount = (app: TestApp, roomId: string, action: string) =>
  app.resources.db.oneFirst(sql.type(z.object({ count: z.number() }))`
    SELECT count(*)::int AS count FROM audit_events WHERE room_id = ${roomId} AND action = ${action}`);

/** A room with a conversation and an image, ended by the guest: status `expired`. */
async function endedRoom(app: TestApp) {
  const room = await openRoom(app.chat);
  const roomId = await roomIdOf(app, room.code);
  await insertMessage(app, roomId, { slot: 1, text: 'archived <hello>', senderIp: '203.0.113.1' });
  await insertMessage(app, roomId, { slot: 2, text: 'second line', senderIp: '2001:db8::2' });
  const image = await insertImage(app, roomId, { slot: 1, caption: 'holiday' });
  const ended = await room.guest.post(`/rooms/${room.code}/end`, { confirm: 'yes' });
  assert.equal(ended.statusCode, 303);
  assert.equal((await roomState(app, roomId)).status, 'expired');
  return { ...room, roomId, image };
}

/**
 * A real failure at the last step, as a crash there would leave things: PostgreSQL refuses to
 * move any room to `status` until the returned function is called.
 */
async function refuseStatus(app: TestApp, status: 'archived' | 'shredded'): Promise<() => Promise<void>> {
  const { db } = app.resources;
  // DDL takes no bind parameters: the status is one of two fixed literals.
  const literal = status === 'archived' ? sql.fragment`'archived'` : sql.fragment`'shredded'`;
  await db.query(sql.unsafe`
    CREATE FUNCTION refuse_status() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'simulated crash before the status update'; END $$`);
  await db.query(sql.unsafe`
    CREATE TRIGGER refuse_status BEFORE UPDATE ON rooms FOR EACH ROW
    WHEN (NEW.status = ${literal}) EXECUTE FUNCTION refuse_status()`);
  return async () => {
    await db.query(sql.unsafe`DROP TRIGGER refuse_status ON rooms`);
    await db.query(sql.unsafe`DROP FUNCTION refuse_status()`);
  };
}

const archivePage = (app: TestApp, roomId: string) =>
  app.admin.inject({ url: `/rooms/${roomId}/archive`, ...ADMIN });

const metricValue = async (app: TestApp, name: string) => {
  const body = (await app.admin.inject({ url: '/metrics', ...ADMIN })).body;
  return Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(body)?.[1] ?? Number.NaN);
};

for (const backend of ['files', 's3'] as const) {
  describe(`archive on ${backend}`, () => {
    let app: TestApp;
    before(async () => {
      app = await buildTestApp({ s3: backend === 's3' });
      assert.equal(app.resources.store.kind, backend === 's3' ? 'minio' : 'fs');
    });
    after(() => app.close());

    it('writes a sealed canonical bundle of an expired room, records its hash, and reads it back verified', async () => {
      const { roomId, code, image, hostName } = await endedRoom(app);
      assert.equal(await app.services.sweeper.runOnce(), true);

      const state = await roomState(app, roomId);
      assert.equal(state.status, 'archived');
      assert.equal(state.archive_key, archiveObjectKey(roomId));
      assert.ok(state.archived_at);
      assert.equal(await auditCount(app, roomId, 'room.archive'), 1);

      const sealed = await app.resources.store.get(archiveObjectKey(roomId));
      assert.ok(!sealed.includes(Buffer.from('archived <hello>')), 'nothing readable at rest');
      const dataKey = await app.services.roomKeys.dataKey(roomId);
      const plaintext = open(dataKey, sealed, aad.archive(roomId));
      assert.equal(createHash('sha256').update(plaintext).digest('hex'), state.archive_sha256);
      const bundle = JSON.parse(plaintext.toString('utf8'));
      assert.equal(plaintext.toString('utf8'), canonicalJson(bundle), 'canonical: sorted keys, no spaces');
      assert.equal(bundle.room.code, code);
      assert.deepEqual(
        bundle.messages.map((m: { text: string; senderIp: string; createdAt: string }) => [
          m.text,
          m.senderIp,
        ]),
        [
          ['archived <hello>', '203.0.113.1'],
          ['second line', '2001:db8::2'],
          ['holiday', '192.0.2.10'],
        ],
      );
      assert.equal(bundle.messages[0].senderName, hostName);
      assert.match(bundle.messages[0].createdAt, /^\d{4}-\d\d-\d\dT/);
      assert.deepEqual(
        bundle.participants.map((p: { firstIp: string; userAgent: string; devicePrefix: string }) => [
          p.firstIp,
          p.userAgent,
          p.devicePrefix.length,
        ]),
        [
          ['192.0.2.10', 'test-client/1.0', 12],
          ['198.51.100.20', 'test-client/1.0', 12],
        ],
      );
      assert.deepEqual(
        bundle.attachments.map((a: { id: string; objectKey: string; thumbKey: string; bytes: number }) => [
          a.id,
          a.objectKey,
          a.thumbKey,
        ]),
        [[image.id, image.objectKey, image.thumbKey]],
      );
      assert.ok(bundle.attachments[0].bytes > 0);

      const page = await archivePage(app, roomId);
      assert.equal(page.statusCode, 200);
      assert.match(page.body, /data-archive-state="verified"/);
      assert.match(page.body, /✔ Verified/);
      assert.ok(page.body.includes(state.archive_sha256 as string));
      assert.ok(page.body.includes('archived &lt;hello&gt;'));
      assert.doesNotMatch(page.body, /NOT VERIFIED/);
      // The verified bundle downloads as written: its sha256sum is the recorded hash.
      const download = await app.admin.inject({ url: `/rooms/${roomId}/archive.json`, ...ADMIN });
      assert.equal(download.statusCode, 200);
      assert.equal(createHash('sha256').update(download.rawPayload).digest('hex'), state.archive_sha256);
      assert.equal(download.headers['x-archive-sha256'], state.archive_sha256);
      assert.match(String(download.headers['content-disposition']), /attachment; filename="archive-/);
      const dashboard = await app.admin.inject({ url: '/?status=archived', ...ADMIN });
      assert.match(dashboard.body, new RegExp(`<tr data-room="${code}">`));
    });

    it('removes image objects that no message names (an upload whose commit never happened)', async () => {
      const { roomId, image } = await endedRoom(app);
      const orphan = `attachments/${roomId}/${randomUUID()}.image`;
      await app.resources.store.put(orphan, Buffer.from('sealed bytes of an upload that never committed'));
      assert.equal(await app.services.sweeper.runOnce(), true);
      assert.equal((await roomState(app, roomId)).status, 'archived');
      assert.deepEqual(
        await app.resources.store.list(`attachments/${roomId}/`),
        [image.objectKey, image.thumbKey].sort(),
      );
    });

    it('reports a modified bundle loudly and never as verified', async () => {
      const { roomId } = await endedRoom(app);
      await app.services.sweeper.runOnce();
      const key = archiveObjectKey(roomId);
      const sealed = await app.resources.store.get(key);
      sealed[sealed.length - 20] = (sealed[sealed.length - 20] as number) ^ 0x01;
      await app.resources.store.put(key, sealed);

      const page = await archivePage(app, roomId);
      assert.equal(page.statusCode, 200);
      assert.match(page.body, /data-archive-state="unreadable"/);
      assert.match(page.body, /NOT VERIFIED — bundle unreadable/);
      assert.doesNotMatch(page.body, /✔ Verified|data-archive-state="verified"/);
      assert.ok(!page.body.includes('archived &lt;hello&gt;'), 'no content from a bundle that does not open');
    });

    it('reports content that opens but does not match the recorded hash', async () => {
      const { roomId } = await endedRoom(app);
      await app.services.sweeper.runOnce();
      const key = archiveObjectKey(roomId);
      const dataKey = await app.services.roomKeys.dataKey(roomId);
      const bundle = JSON.parse(
        open(dataKey, await app.resources.store.get(key), aad.archive(roomId)).toString(),
      );
      bundle.messages[0].text = 'rewritten history';
      const forged = Buffer.from(canonicalJson(bundle));
      await app.resources.store.put(key, seal(dataKey, forged, aad.archive(roomId)));

      const page = await archivePage(app, roomId);
      assert.match(page.body, /data-archive-state="mismatch"/);
      assert.match(page.body, /NOT VERIFIED — hash mismatch/);
      assert.ok(page.body.includes(createHash('sha256').update(forged).digest('hex')), 'actual hash shown');
      assert.match(page.body, /Content as found \(unverified\)/);
      assert.doesNotMatch(page.body, /✔ Verified|data-archive-state="verified"/);
      const download = await app.admin.inject({ url: `/rooms/${roomId}/archive.json`, ...ADMIN });
      assert.equal(download.statusCode, 409, 'an unverified bundle never downloads as the archive');
    });

    it('reports a missing bundle', async () => {
      const { roomId } = await endedRoom(app);
      await app.services.sweeper.runOnce();
      await app.resources.store.delete(archiveObjectKey(roomId));
      const page = await archivePage(app, roomId);
      assert.match(page.body, /data-archive-state="missing"/);
      assert.match(page.body, /NOT VERIFIED — bundle missing/);
      assert.doesNotMatch(page.body, /✔ Verified/);
    });
  });
}

describe('archive failures', () => {
  let app: TestApp;
  before(async () => {
    app = await buildTestApp();
  });
  after(() => app.close());

  it('finishes on the next sweep when the row update failed after the object was written', async () => {
    const { roomId } = await endedRoom(app);
    const allow = await refuseStatus(app, 'archived');
    try {
      const failuresBefore = await metricValue(app, 'ccc_archive_failures_total');
      await app.services.sweeper.runOnce();
      assert.equal((await roomState(app, roomId)).status, 'expired');
      const firstObject = await app.resources.store.get(archiveObjectKey(roomId));
      assert.ok(firstObject.length > 0, 'the object was written before the failure');
      assert.equal(await metricValue(app, 'ccc_archive_failures_total'), failuresBefore + 1);
      assert.ok(app.logs.some((line) => line.includes('archive could not be written')));
    } finally {
      await allow();
    }

    await app.services.sweeper.runOnce();
    const state = await roomState(app, roomId);
    assert.equal(state.status, 'archived');
    const dataKey = await app.services.roomKeys.dataKey(roomId);
    const plaintext = open(
      dataKey,
      await app.resources.store.get(archiveObjectKey(roomId)),
      aad.archive(roomId),
    );
    assert.equal(createHash('sha256').update(plaintext).digest('hex'), state.archive_sha256);
    assert.equal(await auditCount(app, roomId, 'room.archive'), 1);
    assert.match((await archivePage(app, roomId)).body, /data-archive-state="verified"/);
  });

  it('leaves the room expired when the object store fails, counts it, and retries', async () => {
    const { roomId } = await endedRoom(app);
    // A file where the archives directory must go: every write under it fails.
    const blocker = path.join(app.config.dataDir, 'objects', 'archives');
    await rm(blocker, { recursive: true, force: true });
    await writeFile(blocker, 'not a directory');
    const failuresBefore = await metricValue(app, 'ccc_archive_failures_total');
    const runsBefore = await metricValue(app, 'ccc_archive_runs_total');
    try {
      await app.services.sweeper.runOnce();
      assert.equal((await roomState(app, roomId)).status, 'expired');
      assert.equal(await metricValue(app, 'ccc_archive_failures_total'), failuresBefore + 1);
      assert.equal(await metricValue(app, 'ccc_archive_runs_total'), runsBefore + 1);
      assert.match((await archivePage(app, roomId)).body, /data-archive-state="not_archived"/);
    } finally {
      await rm(blocker, { force: true });
    }
    await app.services.sweeper.runOnce();
    assert.equal((await roomState(app, roomId)).status, 'archived');
  });
});

describe('retention', () => {
  let app: TestApp;
  let clock: ManualClock;
  before(async () => {
    clock = new ManualClock();
    app = await buildTestApp({ clock, env: { ARCHIVE_RETENTION_DAYS: '30' } });
  });
  after(() => app.close());

  it('shreds a room ARCHIVE_RETENTION_DAYS after archiving; it stays listed as shredded', async () => {
    const { roomId, code, image } = await endedRoom(app);
    await app.services.sweeper.runOnce();
    assert.equal((await roomState(app, roomId)).status, 'archived');

    clock.advance(29 * DAY);
    await app.services.sweeper.runOnce();
    assert.equal((await roomState(app, roomId)).status, 'archived', 'not before its time');

    clock.advance(1 * DAY + 1_000);
    await app.services.sweeper.runOnce();
    const state = await roomState(app, roomId);
    assert.equal(state.status, 'shredded');
    assert.equal(state.shredded_at, clock.now().getTime());
    assert.equal(await auditCount(app, roomId, 'room.shred'), 1);

    const { db, store } = app.resources;
    const leftovers = await db.one(sql.type(
      z.object({ wrapped: z.boolean(), destroyed: z.boolean(), bodies: z.number(), live_images: z.number() }),
    )`
      SELECT (SELECT wrapped_key IS NOT NULL FROM room_keys WHERE room_id = ${roomId}) AS wrapped,
             (SELECT destroyed_at IS NOT NULL FROM room_keys WHERE room_id = ${roomId}) AS destroyed,
             (SELECT count(*) FROM messages WHERE room_id = ${roomId} AND body_sealed IS NOT NULL)::int AS bodies,
             (SELECT count(*) FROM attachments WHERE room_id = ${roomId} AND deleted_at IS NULL)::int AS live_images`);
    assert.deepEqual(leftovers, { wrapped: false, destroyed: true, bodies: 0, live_images: 0 });
    for (const key of [image.objectKey, image.thumbKey, archiveObjectKey(roomId)]) {
      await assert.rejects(store.get(key), { name: 'ObjectNotFoundError' }, key);
    }

    const dashboard = await app.admin.inject({ url: '/?status=shredded', ...ADMIN });
    const row = new RegExp(`<tr data-room="${code}">([\\s\\S]*?)</tr>`).exec(dashboard.body)?.[1] ?? '';
    assert.match(row, /admin-badge-shredded">shredded</);
    assert.match(
      row,
      /<td data-label="Messages" class="admin-num">3<\/td>\s*<td data-label="Images" class="admin-num">1<\/td>/,
      'metadata kept',
    );

    const page = await app.admin.inject({ url: `/rooms/${roomId}`, ...ADMIN });
    assert.equal(page.statusCode, 200);
    assert.match(page.body, /Content shredded/);
    assert.match(page.body, /198\.51\.100\.20/, 'participant metadata remains');
    assert.ok(!page.body.includes('archived &lt;hello&gt;'));
    assert.equal(
      (await app.admin.inject({ url: `/rooms/${roomId}/transcript.json`, ...ADMIN })).statusCode,
      410,
    );
    assert.equal(
      (await app.admin.inject({ url: `/rooms/${roomId}/attachments/${image.id}`, ...ADMIN })).statusCode,
      410,
    );
    assert.match((await archivePage(app, roomId)).body, /data-archive-state="shredded"/);
  });

  it('finishes an interrupted shred on the next sweep', async () => {
    const { roomId, image } = await endedRoom(app);
    await app.services.sweeper.runOnce();
    const { store } = app.resources;
    const allow = await refuseStatus(app, 'shredded');
    clock.advance(31 * DAY);
    try {
      await app.services.sweeper.runOnce();
      assert.equal((await roomState(app, roomId)).status, 'archived');
      await assert.rejects(store.get(image.objectKey), { name: 'ObjectNotFoundError' });
      // key gone, row not yet marked: already unreadable, and not shown as verified
      assert.match((await archivePage(app, roomId)).body, /data-archive-state="shredded"/);
      assert.match((await app.admin.inject({ url: `/rooms/${roomId}`, ...ADMIN })).body, /Content shredded/);
    } finally {
      await allow();
    }
    await app.services.sweeper.runOnce();
    assert.equal((await roomState(app, roomId)).status, 'shredded');
    assert.equal(await auditCount(app, roomId, 'room.shred'), 1);
  });
});

describe('without ARCHIVE_RETENTION_DAYS', () => {
  it('keeps archives for ever', async () => {
    const clock = new ManualClock();
    const app = await buildTestApp({ clock });
    try {
      const { roomId } = await endedRoom(app);
      await app.services.sweeper.runOnce();
      clock.advance(3650 * DAY);
      await app.services.sweeper.runOnce();
      assert.equal((await roomState(app, roomId)).status, 'archived');
      assert.match((await archivePage(app, roomId)).body, /data-archive-state="verified"/);
    } finally {
      await app.close();
    }
  });
});
