import type { KeyObject } from 'node:crypto';
import { z } from 'zod';
import type { Clock } from '../infra/clock.ts';
import { type DatabasePool, type DatabaseTransactionConnection, sql } from '../infra/db.ts';
import { associatedData, Keyring } from './keyring.ts';

/** Where a sealed value lives; it is bound into the ciphertext as associated data. */
export const aad = {
  message: (roomId: string, seq: number) => associatedData('message', roomId, seq),
  attachment: (roomId: string, attachmentId: string, variant: 'image' | 'thumb') =>
    associatedData('attachment', roomId, attachmentId, variant),
  archive: (roomId: string) => associatedData('archive', roomId),
};

export class RoomKeyDestroyedError extends Error {
  override name = 'RoomKeyDestroyedError';
}

const roomKeyRow = z.object({ kek_id: z.string(), wrapped_key: z.instanceof(Buffer).nullable() });

/** How many unwrapped room keys one process keeps (~1 KB each). */
const CACHE_LIMIT = 50_000;

/**
 * The per-room data keys (DEKs): created with the room, stored wrapped by the master key, kept
 * unwrapped in a bounded in-process cache, destroyed when retention ends (crypto-shredding).
 */
export class RoomKeys {
  private readonly cache = new Map<string, KeyObject>();

  constructor(
    private readonly db: DatabasePool,
    private readonly keyring: Keyring,
    private readonly clock: Clock,
  ) {}

  /** Creates and stores a new data key for a room, inside the caller's transaction. */
  async create(tx: DatabaseTransactionConnection, roomId: string): Promise<KeyObject> {
    const dataKey = Keyring.newDataKey();
    const wrapped = this.keyring.wrapDataKey(dataKey, roomId);
    await tx.query(sql.unsafe`
      INSERT INTO room_keys (room_id, kek_id, wrapped_key, created_at)
      VALUES (${roomId}, ${wrapped.keyId}, ${sql.binary(wrapped.wrapped)}, ${sql.timestamp(this.clock.now())})`);
    return dataKey;
  }

  /** The room's data key; throws `RoomKeyDestroyedError` once it has been shredded. */
  async dataKey(roomId: string): Promise<KeyObject> {
    const cached = this.cache.get(roomId);
    if (cached) return cached;
    const row = await this.db.maybeOne(sql.type(roomKeyRow)`
      SELECT kek_id, wrapped_key FROM room_keys WHERE room_id = ${roomId}`);
    if (!row) throw new Error(`room ${roomId} has no key`);
    if (!row.wrapped_key) throw new RoomKeyDestroyedError(`the key of room ${roomId} has been destroyed`);
    const dataKey = this.keyring.unwrapDataKey({ keyId: row.kek_id, wrapped: row.wrapped_key }, roomId);
    this.remember(roomId, dataKey);
    return dataKey;
  }

  /**
   * Master key ids that wrap live room keys but are not configured here, with how many rooms each:
   * those rooms cannot be opened (e.g. started again on an old key file after a rotation).
   */
  async unconfiguredKeyIds(): Promise<{ keyId: string; rooms: number }[]> {
    const rows = await this.db.any(sql.type(z.object({ kek_id: z.string(), rooms: z.number() }))`
      SELECT kek_id, count(*)::int AS rooms FROM room_keys WHERE wrapped_key IS NOT NULL GROUP BY kek_id`);
    return rows
      .filter((row) => !this.keyring.hasKey(row.kek_id))
      .map((row) => ({ keyId: row.kek_id, rooms: row.rooms }));
  }

  /** The cached key, if any: for hot paths that may not wait on the database. */
  cachedDataKey(roomId: string): KeyObject | undefined {
    return this.cache.get(roomId);
  }

  /** Forgets the key in this process (another process may have shredded it). */
  forget(roomId: string): void {
    this.cache.delete(roomId);
  }

  /** Destroys the wrapped key for good; whatever was sealed with it can never be opened again. */
  async destroy(tx: DatabaseTransactionConnection, roomId: string): Promise<void> {
    await tx.query(sql.unsafe`
      UPDATE room_keys SET wrapped_key = NULL, destroyed_at = ${sql.timestamp(this.clock.now())}
      WHERE room_id = ${roomId} AND wrapped_key IS NOT NULL`);
    this.cache.delete(roomId);
  }

  /**
   * Rewraps every key not yet under the current master key. Each key is rewrapped in its own
   * short transaction, so the run can stop anywhere and be started again.
   */
  async rewrapAll(onProgress?: (done: number) => void): Promise<{ rewrapped: number; failed: string[] }> {
    const currentKeyId = this.keyring.currentKeyId;
    let rewrapped = 0;
    const failed: string[] = [];
    for (;;) {
      const batch = await this.db.any(sql.type(z.object({ room_id: z.string() }))`
        SELECT room_id FROM room_keys
        WHERE wrapped_key IS NOT NULL AND kek_id <> ${currentKeyId}
          AND NOT (room_id = ANY(${sql.array(failed, 'uuid')}))
        ORDER BY room_id LIMIT 500`);
      if (batch.length === 0) break;
      for (const { room_id: roomId } of batch) {
        try {
          await this.db.transaction(async (tx) => {
            const row = await tx.maybeOne(sql.type(roomKeyRow)`
              SELECT kek_id, wrapped_key FROM room_keys WHERE room_id = ${roomId} FOR UPDATE`);
            if (!row?.wrapped_key || row.kek_id === currentKeyId) return;
            const dataKey = this.keyring.unwrapDataKey(
              { keyId: row.kek_id, wrapped: row.wrapped_key },
              roomId,
            );
            const wrapped = this.keyring.wrapDataKey(dataKey, roomId);
            await tx.query(sql.unsafe`
              UPDATE room_keys
              SET kek_id = ${wrapped.keyId}, wrapped_key = ${sql.binary(wrapped.wrapped)},
                  rewrapped_at = ${sql.timestamp(this.clock.now())}
              WHERE room_id = ${roomId}`);
          });
          rewrapped += 1;
          onProgress?.(rewrapped);
        } catch {
          failed.push(roomId);
        }
      }
    }
    return { rewrapped, failed };
  }

  private remember(roomId: string, dataKey: KeyObject): void {
    if (this.cache.size >= CACHE_LIMIT) {
      // Maps iterate in insertion order: drop the oldest entry.
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
    this.cache.set(roomId, dataKey);
  }
}
