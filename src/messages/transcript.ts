import type { KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import { z } from 'zod';
import { MasterKeyMissingError, open } from '../crypto/keyring.ts';
import { aad, RoomKeyDestroyedError, type RoomKeys } from '../crypto/room-keys.ts';
import { type DatabasePool, sql } from '../infra/db.ts';

export const UNREADABLE = '[unreadable message]';

export type MessageKind = 'text' | 'image' | 'system';

export type TranscriptImage = {
  id: string;
  contentType: string;
  bytes: number;
  width: number;
  height: number;
  thumbWidth: number;
  thumbHeight: number;
};

/** One message, opened: what the chat page, the admin transcript and the archive all show. */
export type TranscriptEntry = {
  seq: number;
  kind: MessageKind;
  participantId: string | null;
  slot: 1 | 2 | null;
  senderName: string | null;
  /** The text (for images: the caption), or UNREADABLE when the ciphertext does not open. */
  text: string;
  readable: boolean;
  senderIp: string | null;
  createdAt: number;
  image: TranscriptImage | null;
};

const row = z.object({
  seq: z.number(),
  kind: z.enum(['text', 'image', 'system']),
  participant_id: z.string().nullable(),
  slot: z.union([z.literal(1), z.literal(2)]).nullable(),
  display_name: z.string().nullable(),
  body_sealed: z.instanceof(Buffer).nullable(),
  sender_ip: z.string().nullable(),
  created_at: z.number(),
  attachment_id: z.string().nullable(),
  content_type: z.string().nullable(),
  bytes: z.number().nullable(),
  width: z.number().nullable(),
  height: z.number().nullable(),
  thumb_width: z.number().nullable(),
  thumb_height: z.number().nullable(),
});

export type SealedMessage = { roomId: string; seq: number; bodySealed: Buffer | null };

/**
 * Opens one message body. A ciphertext that is corrupt, moved from another row, or whose room
 * key is gone yields UNREADABLE (and a log line without any content); it never throws.
 */
export function openMessageBody(
  dataKey: KeyObject | undefined,
  message: SealedMessage,
  logger?: Logger,
): {
  text: string;
  readable: boolean;
} {
  if (!dataKey || !message.bodySealed) return { text: UNREADABLE, readable: false };
  try {
    return {
      text: open(dataKey, message.bodySealed, aad.message(message.roomId, message.seq)).toString('utf8'),
      readable: true,
    };
  } catch {
    logger?.warn({ roomId: message.roomId, seq: message.seq }, 'message ciphertext did not open');
    return { text: UNREADABLE, readable: false };
  }
}

export type TranscriptQuery = {
  afterSeq?: number;
  limit?: number;
  newestFirst?: boolean;
  /**
   * Show the messages as unreadable when the room's master key is not configured, instead of
   * failing: for the admin page, which still has metadata to show. Never for the archive, which
   * must not store a room it could not read.
   */
  unreadableWithoutMasterKey?: boolean;
};

/** Messages of a room after `afterSeq`, in order, opened with the room key. */
export async function loadTranscript(
  deps: { db: DatabasePool; roomKeys: RoomKeys; logger?: Logger },
  roomId: string,
  query: TranscriptQuery = {},
): Promise<TranscriptEntry[]> {
  const { db, roomKeys, logger } = deps;
  const afterSeq = query.afterSeq ?? 0;
  const limit = query.limit ?? 10_000;
  const rows = await db.any(sql.type(row)`
    SELECT m.seq, m.kind, m.participant_id, p.slot, p.display_name, m.body_sealed, host(m.sender_ip) AS sender_ip,
           m.created_at, a.id AS attachment_id, a.content_type, a.bytes, a.width, a.height,
           a.thumb_width, a.thumb_height
    FROM messages m
    LEFT JOIN participants p ON p.id = m.participant_id
    LEFT JOIN attachments a ON a.room_id = m.room_id AND a.message_seq = m.seq AND a.deleted_at IS NULL
    WHERE m.room_id = ${roomId} AND m.seq > ${afterSeq}
    ORDER BY m.seq ${query.newestFirst ? sql.fragment`DESC` : sql.fragment`ASC`}
    LIMIT ${limit}`);
  if (rows.length === 0) return [];
  let dataKey: KeyObject | undefined;
  try {
    dataKey = await roomKeys.dataKey(roomId);
  } catch (error) {
    const unreadable =
      error instanceof RoomKeyDestroyedError ||
      (error instanceof MasterKeyMissingError && query.unreadableWithoutMasterKey === true);
    if (!unreadable) throw error;
  }
  const entries = rows.map((item): TranscriptEntry => {
    const body = openMessageBody(dataKey, { roomId, seq: item.seq, bodySealed: item.body_sealed }, logger);
    return {
      seq: item.seq,
      kind: item.kind,
      participantId: item.participant_id,
      slot: item.slot,
      senderName: item.display_name,
      text: body.text,
      readable: body.readable,
      senderIp: item.sender_ip,
      createdAt: item.created_at,
      image:
        item.attachment_id && item.content_type
          ? {
              id: item.attachment_id,
              contentType: item.content_type,
              bytes: item.bytes ?? 0,
              width: item.width ?? 0,
              height: item.height ?? 0,
              thumbWidth: item.thumb_width ?? 0,
              thumbHeight: item.thumb_height ?? 0,
            }
          : null,
    };
  });
  return query.newestFirst ? entries.reverse() : entries;
}
