import type { KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import { z } from 'zod';
import { CryptoError, open } from '../crypto/keyring.ts';
import { aad, RoomKeyDestroyedError, type RoomKeys } from '../crypto/room-keys.ts';
import { DomainError } from '../domain-error.ts';
import { type DatabasePool, sql } from '../infra/db.ts';
import { ObjectNotFoundError, type ObjectStore } from '../infra/object-store.ts';

export type AttachmentVariant = 'image' | 'thumb';

export type OpenedAttachment = { contentType: string; data: Buffer };

const attachmentRow = z.object({
  object_key: z.string(),
  thumb_key: z.string(),
  content_type: z.string(),
  thumb_content_type: z.string(),
  deleted_at: z.number().nullable(),
});

const notFound = () => new DomainError('not_found', 'There is no such image in this room.');
/** The object store did not answer: a 503 that says what happened, never a generic 500. */
export const storeUnavailable = (consequence: string) =>
  new DomainError(
    'unavailable',
    `The image store is not reachable right now, so ${consequence}. Please try again in a moment.`,
    { retryAfterSeconds: 5 },
  );
const shredded = () =>
  new DomainError('gone', 'This image was deleted when the room was shredded.', { title: 'Image shredded' });

/**
 * Reads one stored image (or its thumbnail) of a room and opens it with the room key. The
 * ciphertext is bound to room id, attachment id and variant, so an object copied under another
 * attachment does not open. Callers decide who may ask (participants, or the admin panel).
 */
export async function readAttachment(
  deps: { db: DatabasePool; store: ObjectStore; roomKeys: RoomKeys; logger?: Logger },
  roomId: string,
  attachmentId: string,
  variant: AttachmentVariant,
): Promise<OpenedAttachment> {
  const { db, store, roomKeys, logger } = deps;
  const row = await db.maybeOne(sql.type(attachmentRow)`
    SELECT object_key, thumb_key, content_type, thumb_content_type, deleted_at
    FROM attachments WHERE id = ${attachmentId} AND room_id = ${roomId}`);
  if (!row) throw notFound();
  if (row.deleted_at !== null) throw shredded();
  let dataKey: KeyObject;
  try {
    dataKey = await roomKeys.dataKey(roomId);
  } catch (error) {
    if (error instanceof RoomKeyDestroyedError) throw shredded();
    throw error;
  }
  const key = variant === 'image' ? row.object_key : row.thumb_key;
  let sealed: Buffer;
  try {
    sealed = await store.get(key);
  } catch (error) {
    if (error instanceof ObjectNotFoundError) throw notFound();
    logger?.warn({ err: { message: (error as Error).message }, roomId, attachmentId }, 'object store failed');
    throw storeUnavailable('this image cannot be shown');
  }
  try {
    return {
      contentType: variant === 'image' ? row.content_type : row.thumb_content_type,
      data: open(dataKey, sealed, aad.attachment(roomId, attachmentId, variant)),
    };
  } catch (error) {
    if (!(error instanceof CryptoError)) throw error;
    logger?.error({ roomId, attachmentId, variant }, 'stored image did not open (tampered or misplaced)');
    throw new Error('a stored image did not open');
  }
}
