import { z } from 'zod';
import { sql } from '../infra/db.ts';
import type { ArchiveDeps } from './archive-service.ts';

export type RetentionDeps = ArchiveDeps & {
  /** ARCHIVE_RETENTION_DAYS; undefined keeps archives for ever. */
  retentionDays: number | undefined;
};

const BATCH = 100;
const DAY_MS = 86_400_000;

const dueRow = z.object({ id: z.string(), code: z.string(), archive_key: z.string().nullable() });
const objectKeysRow = z.object({ object_key: z.string(), thumb_key: z.string() });

/**
 * Crypto-shredding after ARCHIVE_RETENTION_DAYS (counted from archived_at). Per room, in an
 * order that any crash can resume: (1) one transaction destroys the room key, clears every
 * message body and marks the attachments deleted; (2) the objects (images, thumbnails, the
 * archive) are removed; (3) the room is marked shredded. Until (3) the room stays `archived` and
 * is picked up again, and each step is harmless to repeat. After (1) nothing can be decrypted
 * any more, even if an object delete fails and is retried later.
 */
export class RetentionService {
  constructor(private readonly deps: RetentionDeps) {}

  async shredDue(): Promise<{ shredded: string[]; failed: string[] }> {
    const { db, clock, logger, counters, retentionDays } = this.deps;
    if (retentionDays === undefined) return { shredded: [], failed: [] };
    const cutoff = new Date(clock.now().getTime() - retentionDays * DAY_MS);
    const due = await db.any(sql.type(dueRow)`
      SELECT id, code, archive_key FROM rooms
      WHERE status = 'archived' AND archived_at <= ${sql.timestamp(cutoff)}
      ORDER BY archived_at, id LIMIT ${BATCH}`);
    const shredded: string[] = [];
    const failed: string[] = [];
    for (const room of due) {
      try {
        await this.shredRoom(room);
        shredded.push(room.id);
        counters.shredded.inc();
      } catch (error) {
        failed.push(room.id);
        counters.shredFailures.inc();
        logger.error({ err: error, roomId: room.id }, 'room could not be shredded; it is retried next sweep');
      }
    }
    if (shredded.length > 0) logger.info({ count: shredded.length }, 'rooms shredded after retention');
    return { shredded, failed };
  }

  private async shredRoom(room: z.infer<typeof dueRow>): Promise<void> {
    const { db, store, roomKeys, audit, clock } = this.deps;
    const now = sql.timestamp(clock.now());
    const attachmentKeys = await db.transaction(async (tx) => {
      await roomKeys.destroy(tx, room.id);
      await tx.query(sql.unsafe`
        UPDATE messages SET body_sealed = NULL WHERE room_id = ${room.id} AND body_sealed IS NOT NULL`);
      await tx.query(sql.unsafe`
        UPDATE attachments SET deleted_at = ${now} WHERE room_id = ${room.id} AND deleted_at IS NULL`);
      return tx.any(sql.type(objectKeysRow)`
        SELECT object_key, thumb_key FROM attachments WHERE room_id = ${room.id}`);
    });
    const objectKeys = [
      ...attachmentKeys.flatMap((row) => [row.object_key, row.thumb_key]),
      ...(room.archive_key ? [room.archive_key] : []),
    ];
    for (const key of objectKeys) await store.delete(key);
    await db.transaction(async (tx) => {
      const updated = await tx.maybeOne(sql.type(z.object({ id: z.string() }))`
        UPDATE rooms SET status = 'shredded', shredded_at = ${now}
        WHERE id = ${room.id} AND status = 'archived'
        RETURNING id`);
      if (!updated) return;
      await audit.record(
        {
          source: 'system',
          action: 'room.shred',
          roomId: room.id,
          roomCode: room.code,
          detail: { objectsRemoved: objectKeys.length },
        },
        tx,
      );
    });
  }
}
