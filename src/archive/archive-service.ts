import { createHash, type KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { AuditLog } from '../audit/audit-log.ts';
import { open, seal } from '../crypto/keyring.ts';
import { aad, RoomKeyDestroyedError, type RoomKeys } from '../crypto/room-keys.ts';
import type { Clock } from '../infra/clock.ts';
import { type DatabasePool, sql } from '../infra/db.ts';
import { ObjectNotFoundError, type ObjectStore } from '../infra/object-store.ts';
import type { ArchiveCounters } from '../metrics.ts';
import { canonicalJson } from './canonical-json.ts';
import { buildRoomRecord, type RoomRecord, recordAsJson, roomRecordSchema } from './room-record.ts';

export const archiveObjectKey = (roomId: string) => `archives/${roomId}.json.sealed`;

export const sha256Hex = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** What reading an archive back found. Only `verified` may ever be presented as trustworthy. */
export type ArchiveReading =
  | { state: 'not_archived'; status: string }
  | { state: 'shredded' }
  | {
      state: 'verified';
      key: string;
      sha256: string;
      sealedBytes: number;
      record: RoomRecord;
      /** The bundle's bytes as written and hashed: what an operator can check with sha256sum. */
      document: Buffer;
    }
  /** It opened, but its SHA-256 is not the one recorded when it was written. */
  | { state: 'mismatch'; key: string; expected: string; actual: string; record: RoomRecord | null }
  | { state: 'missing'; key: string; expected: string }
  /** It is there but does not open (tampered, truncated, wrong room) or is not a valid bundle. */
  | { state: 'unreadable'; key: string; expected: string; reason: string };

export type ArchiveDeps = {
  db: DatabasePool;
  store: ObjectStore;
  roomKeys: RoomKeys;
  audit: AuditLog;
  clock: Clock;
  logger: Logger;
  counters: ArchiveCounters;
};

/** How many rooms one sweep archives; the rest wait for the next sweep. */
const BATCH = 100;

const archiveStateRow = z.object({
  status: z.string(),
  archive_key: z.string().nullable(),
  archive_sha256: z.string().nullable(),
});

/**
 * Writes the archive bundle of every expired room and reads bundles back with verification.
 *
 * Writing is two steps, object first and row second: a crash or a failed update between them
 * leaves the room `expired`, and the next sweep writes the (same, deterministic) bundle again
 * and then updates the row. The row only ever names an object that was fully written.
 */
export class ArchiveService {
  constructor(private readonly deps: ArchiveDeps) {}

  /** One sweep: archives up to BATCH expired rooms, oldest ended first. Failures stay expired. */
  async archiveDue(): Promise<{ archived: string[]; failed: string[] }> {
    const { db, logger, counters } = this.deps;
    counters.runs.inc();
    const due = await db.anyFirst(sql.type(z.object({ id: z.string() }))`
      SELECT id FROM rooms WHERE status = 'expired' ORDER BY ended_at, id LIMIT ${BATCH}`);
    const archived: string[] = [];
    const failed: string[] = [];
    for (const roomId of due) {
      try {
        if (await this.archiveRoom(roomId)) {
          archived.push(roomId);
          counters.written.inc();
        }
      } catch (error) {
        failed.push(roomId);
        counters.failures.inc();
        logger.error(
          { err: error, roomId },
          'archive could not be written; the room stays expired and is retried',
        );
      }
    }
    if (archived.length > 0) logger.info({ count: archived.length }, 'rooms archived');
    return { archived, failed };
  }

  /** Writes one room's bundle and marks it archived; false when it is not (or no longer) expired. */
  async archiveRoom(roomId: string): Promise<boolean> {
    const { db, store, roomKeys, audit, clock, logger } = this.deps;
    const record = await buildRoomRecord({ db, roomKeys, logger }, roomId);
    if (record?.room.status !== 'expired') return false;
    const plaintext = Buffer.from(canonicalJson(recordAsJson(record)), 'utf8');
    const sha256 = sha256Hex(plaintext);
    const key = archiveObjectKey(roomId);
    const dataKey = await roomKeys.dataKey(roomId);
    await store.put(key, seal(dataKey, plaintext, aad.archive(roomId)));
    await this.removeOrphanObjects(roomId, record);
    return db.transaction(async (tx) => {
      const updated = await tx.maybeOne(sql.type(z.object({ code: z.string() }))`
        UPDATE rooms
        SET status = 'archived', archived_at = ${sql.timestamp(clock.now())}, archive_key = ${key},
            archive_sha256 = ${sha256}
        WHERE id = ${roomId} AND status = 'expired'
        RETURNING code`);
      if (!updated) return false;
      await audit.record(
        {
          source: 'system',
          action: 'room.archive',
          roomId,
          roomCode: updated.code,
          detail: { key, sha256, messages: record.messages.length, attachments: record.attachments.length },
        },
        tx,
      );
      return true;
    });
  }

  /**
   * Removes the image objects of this room that no attachments row names: an upload stores its
   * objects before its message commits, and a process that died in between left them behind.
   * Once the room is over no upload can commit any more, so whatever is unnamed now stays so.
   */
  private async removeOrphanObjects(roomId: string, record: RoomRecord): Promise<void> {
    const named = new Set(
      record.attachments.flatMap((attachment) => [attachment.objectKey, attachment.thumbKey]),
    );
    const orphans = (await this.deps.store.list(`attachments/${roomId}/`)).filter((key) => !named.has(key));
    for (const key of orphans) await this.deps.store.delete(key);
    if (orphans.length > 0) {
      this.deps.logger.warn({ roomId, count: orphans.length }, 'removed image objects no message refers to');
    }
  }

  /** Reads a room's bundle back from the object store and checks it against the recorded hash. */
  async read(roomId: string): Promise<ArchiveReading> {
    const { db, store, roomKeys, logger } = this.deps;
    const row = await db.maybeOne(sql.type(archiveStateRow)`
      SELECT status, archive_key, archive_sha256 FROM rooms WHERE id = ${roomId}`);
    if (!row) throw new Error(`room ${roomId} does not exist`);
    if (row.status === 'shredded') return { state: 'shredded' };
    if (row.status !== 'archived' || !row.archive_key || !row.archive_sha256) {
      return { state: 'not_archived', status: row.status };
    }
    const key = row.archive_key;
    const expected = row.archive_sha256;
    let dataKey: KeyObject;
    try {
      dataKey = await roomKeys.dataKey(roomId);
    } catch (error) {
      // Retention is under way: the key is gone, the row not yet marked shredded.
      if (error instanceof RoomKeyDestroyedError) return { state: 'shredded' };
      throw error;
    }
    let sealed: Buffer;
    try {
      sealed = await store.get(key);
    } catch (error) {
      if (error instanceof ObjectNotFoundError) return { state: 'missing', key, expected };
      throw error;
    }
    let plaintext: Buffer;
    try {
      plaintext = open(dataKey, sealed, aad.archive(roomId));
    } catch {
      logger.warn({ roomId, key }, 'archive bundle did not open');
      return {
        state: 'unreadable',
        key,
        expected,
        reason: 'The stored bundle does not decrypt: it was modified, truncated or belongs to another room.',
      };
    }
    const actual = sha256Hex(plaintext);
    const record = parseRecord(plaintext, roomId);
    if (actual !== expected) {
      logger.warn({ roomId, key, expected, actual }, 'archive bundle hash mismatch');
      return { state: 'mismatch', key, expected, actual, record };
    }
    if (!record) {
      return { state: 'unreadable', key, expected, reason: 'The bundle is not a valid archive document.' };
    }
    return {
      state: 'verified',
      key,
      sha256: actual,
      sealedBytes: sealed.length,
      record,
      document: plaintext,
    };
  }
}

function parseRecord(plaintext: Buffer, roomId: string): RoomRecord | null {
  try {
    const parsed = roomRecordSchema.safeParse(JSON.parse(plaintext.toString('utf8')));
    return parsed.success && parsed.data.room.id === roomId ? parsed.data : null;
  } catch {
    return null;
  }
}
