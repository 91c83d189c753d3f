import { z } from 'zod';
import { buildRoomRecord, type RecordAttachment, type RoomRecord } from '../archive/room-record.ts';
import { MasterKeyMissingError } from '../crypto/keyring.ts';
import type { RoomKeys } from '../crypto/room-keys.ts';
import { type DatabasePool, sql } from '../infra/db.ts';
import type { Logger } from '../infra/logger.ts';

const lifecycleRow = z.object({
  archived_at: z.number().nullable(),
  archive_key: z.string().nullable(),
  archive_sha256: z.string().nullable(),
  shredded_at: z.number().nullable(),
  key_destroyed_at: z.number().nullable(),
});

export type RoomDetail = {
  record: RoomRecord;
  archivedAt: number | null;
  archiveKey: string | null;
  archiveSha256: string | null;
  shreddedAt: number | null;
  keyDestroyedAt: number | null;
  /** The content can no longer be read: the room is shredded or its key is already destroyed. */
  shredded: boolean;
  /** The id of the master key that wraps this room's key, when this process does not have it. */
  missingMasterKeyId: string | null;
  attachmentsById: Map<string, RecordAttachment>;
};

/** Everything the admin room page shows: the live record plus what only the row knows. */
export async function loadRoomDetail(
  deps: { db: DatabasePool; roomKeys: RoomKeys; logger?: Logger },
  roomId: string,
): Promise<RoomDetail | null> {
  let missingMasterKeyId: string | null = null;
  try {
    await deps.roomKeys.dataKey(roomId);
  } catch (error) {
    // Other cases (no key yet, destroyed) are the record's to show as they always are.
    if (error instanceof MasterKeyMissingError) missingMasterKeyId = error.keyId;
  }
  // A missing master key is a configuration fault: the page still shows all it can.
  const record = await buildRoomRecord(deps, roomId, { unreadableWithoutMasterKey: true });
  if (!record) return null;
  const row = await deps.db.one(sql.type(lifecycleRow)`
    SELECT r.archived_at, r.archive_key, r.archive_sha256, r.shredded_at, k.destroyed_at AS key_destroyed_at
    FROM rooms r LEFT JOIN room_keys k ON k.room_id = r.id
    WHERE r.id = ${roomId}`);
  return {
    record,
    archivedAt: row.archived_at,
    archiveKey: row.archive_key,
    archiveSha256: row.archive_sha256,
    shreddedAt: row.shredded_at,
    keyDestroyedAt: row.key_destroyed_at,
    shredded: record.room.status === 'shredded' || row.key_destroyed_at !== null,
    missingMasterKeyId,
    attachmentsById: new Map(record.attachments.map((attachment) => [attachment.id, attachment])),
  };
}

/** A room's code, or null when there is no room with this id. */
export function roomCodeOf(db: DatabasePool, roomId: string): Promise<string | null> {
  return db.maybeOneFirst(
    sql.type(z.object({ code: z.string() }))`SELECT code FROM rooms WHERE id = ${roomId}`,
  );
}
