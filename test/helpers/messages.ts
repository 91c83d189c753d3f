import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { attachmentObjectKeys } from '../../src/attachments/attachment-service.ts';
import { seal } from '../../src/crypto/keyring.ts';
import { aad } from '../../src/crypto/room-keys.ts';
import { sql } from '../../src/infra/db.ts';
import type { TestApp } from './app.ts';

/** The newest room with this code (codes are reused once a room ends). */
export async function roomIdOf(app: TestApp, code: string): Promise<string> {
  return app.resources.db.oneFirst(sql.type(z.object({ id: z.string() }))`
    SELECT id FROM rooms WHERE code = ${code} ORDER BY created_at DESC LIMIT 1`);
}

export async function participantIdOf(app: TestApp, roomId: string, slot: 1 | 2): Promise<string> {
  return app.resources.db.oneFirst(sql.type(z.object({ id: z.string() }))`
    SELECT id FROM participants WHERE room_id = ${roomId} AND slot = ${slot}`);
}

export type TestMessage = { slot: 1 | 2; text: string; senderIp?: string; kind?: 'text' | 'image' };

/**
 * Stores a message the way the messages feature does: the next seq from rooms.last_seq, the body
 * sealed with the room key and bound to (room, seq). Returns the seq.
 */
export async function insertMessage(app: TestApp, roomId: string, message: TestMessage): Promise<number> {
  const { db, clock } = app.resources;
  const participantId = await participantIdOf(app, roomId, message.slot);
  const dataKey = await app.services.roomKeys.dataKey(roomId);
  return db.transaction(async (tx) => {
    const seq = await tx.oneFirst(sql.type(z.object({ last_seq: z.number() }))`
      UPDATE rooms SET last_seq = last_seq + 1 WHERE id = ${roomId} RETURNING last_seq`);
    const body = seal(dataKey, Buffer.from(message.text, 'utf8'), aad.message(roomId, seq));
    await tx.query(sql.unsafe`
      INSERT INTO messages (room_id, seq, participant_id, kind, client_msg_id, body_sealed, sender_ip, created_at)
      VALUES (${roomId}, ${seq}, ${participantId}, ${message.kind ?? 'text'}, ${randomUUID()},
              ${sql.binary(body)}, ${message.senderIp ?? (message.slot === 1 ? '192.0.2.10' : '198.51.100.20')},
              ${sql.timestamp(clock.now())})`);
    return seq;
  });
}

/** A 1×1 PNG: enough for serving tests (the admin side never re-encodes). */
export const TINY_PNG = Buffer.from(
  '89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2a1ee3b0000000049454e44ae426082',
  'hex',
);

/**
 * Stores an image message as the images feature will: a message of kind 'image' (the caption as
 * its body), an attachments row, and the image and thumbnail sealed in the object store, bound to
 * (room, attachment, variant). Returns the attachment id and its object keys.
 */
export async function insertImage(
  app: TestApp,
  roomId: string,
  options: { slot: 1 | 2; caption?: string; image?: Buffer; thumb?: Buffer },
): Promise<{ id: string; seq: number; objectKey: string; thumbKey: string }> {
  const image = options.image ?? TINY_PNG;
  const thumb = options.thumb ?? Buffer.concat([TINY_PNG, Buffer.from('thumb')]);
  const seq = await insertMessage(app, roomId, {
    slot: options.slot,
    text: options.caption ?? '',
    kind: 'image',
  });
  const id = randomUUID();
  const { image: objectKey, thumb: thumbKey } = attachmentObjectKeys(roomId, id);
  const dataKey = await app.services.roomKeys.dataKey(roomId);
  const { store, db, clock } = app.resources;
  await store.put(objectKey, seal(dataKey, image, aad.attachment(roomId, id, 'image')));
  await store.put(thumbKey, seal(dataKey, thumb, aad.attachment(roomId, id, 'thumb')));
  const participantId = await participantIdOf(app, roomId, options.slot);
  await db.query(sql.unsafe`
    INSERT INTO attachments (id, room_id, message_seq, participant_id, object_key, thumb_key, content_type,
                             thumb_content_type, bytes, width, height, thumb_bytes, thumb_width, thumb_height,
                             sender_ip, created_at)
    VALUES (${id}, ${roomId}, ${seq}, ${participantId}, ${objectKey}, ${thumbKey}, 'image/png', 'image/webp',
            ${image.length}, 640, 480, ${thumb.length}, 160, 120, '192.0.2.10', ${sql.timestamp(clock.now())})`);
  return { id, seq, objectKey, thumbKey };
}
