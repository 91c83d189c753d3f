import type { Logger } from 'pino';
import { z } from 'zod';
import { DEVICE_PREFIX_LENGTH } from '../audit/audit-log.ts';
import type { RoomKeys } from '../crypto/room-keys.ts';
import { type DatabasePool, sql } from '../infra/db.ts';
import { loadTranscript, type TranscriptEntry, type TranscriptQuery } from '../messages/transcript.ts';
import type { JsonValue } from './canonical-json.ts';

/**
 * A room as one self-contained document: metadata, participants (with IPs, user agents and
 * device prefixes), every message opened, and references to its images. The archive bundle is
 * this document in canonical JSON; the admin room page and transcript.json show the same thing
 * built live, so what an operator reads before and after archiving has one shape.
 */
export const ROOM_RECORD_FORMAT = 'chittychattychat.room-record';
export const ROOM_RECORD_VERSION = 1;

const isoTime = z.iso.datetime();
const slot = z.union([z.literal(1), z.literal(2)]);
export const roomStatusSchema = z.enum(['pending', 'active', 'expired', 'archived', 'shredded']);
const endReason = z.enum(['expired', 'ended', 'lapsed']);

export const roomRecordSchema = z.object({
  format: z.literal(ROOM_RECORD_FORMAT),
  version: z.literal(ROOM_RECORD_VERSION),
  room: z.object({
    id: z.uuid(),
    code: z.string(),
    status: roomStatusSchema,
    createdAt: isoTime,
    createdIp: z.string(),
    pendingUntil: isoTime,
    activatedAt: isoTime.nullable(),
    expiresAt: isoTime.nullable(),
    endedAt: isoTime.nullable(),
    endReason: endReason.nullable(),
    endedBySlot: slot.nullable(),
    lastActivityAt: isoTime,
    lastSeq: z.number().int(),
  }),
  participants: z.array(
    z.object({
      id: z.string(),
      slot,
      displayName: z.string().nullable(),
      userAgent: z.string().nullable(),
      firstIp: z.string(),
      lastIp: z.string(),
      devicePrefix: z.string(),
      joinedAt: isoTime,
      lastSeenAt: isoTime,
    }),
  ),
  messages: z.array(
    z.object({
      seq: z.number().int(),
      kind: z.enum(['text', 'image', 'system']),
      participantId: z.string().nullable(),
      slot: slot.nullable(),
      senderName: z.string().nullable(),
      senderIp: z.string().nullable(),
      createdAt: isoTime,
      text: z.string(),
      readable: z.boolean(),
      attachmentId: z.string().nullable(),
    }),
  ),
  attachments: z.array(
    z.object({
      id: z.string(),
      messageSeq: z.number().int(),
      objectKey: z.string(),
      thumbKey: z.string(),
      contentType: z.string(),
      thumbContentType: z.string(),
      bytes: z.number().int(),
      width: z.number().int(),
      height: z.number().int(),
      thumbBytes: z.number().int(),
      thumbWidth: z.number().int(),
      thumbHeight: z.number().int(),
      senderIp: z.string(),
      createdAt: isoTime,
    }),
  ),
});

export type RoomRecord = z.infer<typeof roomRecordSchema>;
export type RecordAttachment = RoomRecord['attachments'][number];

const roomRow = z.object({
  id: z.string(),
  code: z.string(),
  status: roomStatusSchema,
  created_at: z.number(),
  created_ip: z.string(),
  pending_until: z.number(),
  activated_at: z.number().nullable(),
  expires_at: z.number().nullable(),
  ended_at: z.number().nullable(),
  end_reason: endReason.nullable(),
  ended_by_slot: slot.nullable(),
  last_activity_at: z.number(),
  last_seq: z.number(),
});

const participantRow = z.object({
  id: z.string(),
  slot,
  display_name: z.string().nullable(),
  user_agent: z.string().nullable(),
  first_ip: z.string(),
  last_ip: z.string(),
  device_prefix: z.string(),
  joined_at: z.number(),
  last_seen_at: z.number(),
});

/** An attachments row as the room record reads it. */
export const attachmentRow = z.object({
  id: z.string(),
  message_seq: z.number(),
  object_key: z.string(),
  thumb_key: z.string(),
  content_type: z.string(),
  thumb_content_type: z.string(),
  bytes: z.number(),
  width: z.number(),
  height: z.number(),
  thumb_bytes: z.number(),
  thumb_width: z.number(),
  thumb_height: z.number(),
  sender_ip: z.string(),
  created_at: z.number(),
});

const iso = (epochMs: number) => new Date(epochMs).toISOString();
const isoOrNull = (epochMs: number | null) => (epochMs === null ? null : iso(epochMs));

/** loadTranscript reads at most this many per call; a room's whole history is read in pages. */
const TRANSCRIPT_PAGE = 5_000;

export type RoomRecordDeps = { db: DatabasePool; roomKeys: RoomKeys; logger?: Logger };

/** Every message of a room, in order, opened through loadTranscript (the one decrypt path). */
export async function loadWholeTranscript(
  deps: RoomRecordDeps,
  roomId: string,
  options: Pick<TranscriptQuery, 'unreadableWithoutMasterKey'> = {},
): Promise<TranscriptEntry[]> {
  const entries: TranscriptEntry[] = [];
  let afterSeq = 0;
  for (;;) {
    const page = await loadTranscript(deps, roomId, { ...options, afterSeq, limit: TRANSCRIPT_PAGE });
    entries.push(...page);
    const last = page.at(-1);
    if (page.length < TRANSCRIPT_PAGE || last === undefined) return entries;
    afterSeq = last.seq;
  }
}

/** The room as a record, or null when there is no room with this id. */
export async function buildRoomRecord(
  deps: RoomRecordDeps,
  roomId: string,
  options: Pick<TranscriptQuery, 'unreadableWithoutMasterKey'> = {},
): Promise<RoomRecord | null> {
  const { db } = deps;
  const room = await db.maybeOne(sql.type(roomRow)`
    SELECT id, code, status, created_at, host(created_ip) AS created_ip, pending_until, activated_at,
           expires_at, ended_at, end_reason, ended_by_slot, last_activity_at, last_seq
    FROM rooms WHERE id = ${roomId}`);
  if (!room) return null;
  const participants = await db.any(sql.type(participantRow)`
    SELECT id, slot, display_name, user_agent, host(first_ip) AS first_ip, host(last_ip) AS last_ip,
           left(encode(device_hash, 'hex'), ${DEVICE_PREFIX_LENGTH}) AS device_prefix, joined_at, last_seen_at
    FROM participants WHERE room_id = ${roomId} ORDER BY slot`);
  const attachments = await db.any(sql.type(attachmentRow)`
    SELECT id, message_seq, object_key, thumb_key, content_type, thumb_content_type, bytes, width, height,
           thumb_bytes, thumb_width, thumb_height, host(sender_ip) AS sender_ip, created_at
    FROM attachments WHERE room_id = ${roomId} ORDER BY message_seq`);
  const attachmentBySeq = new Map(attachments.map((row) => [row.message_seq, row.id]));
  const transcript = await loadWholeTranscript(deps, roomId, options);

  return {
    format: ROOM_RECORD_FORMAT,
    version: ROOM_RECORD_VERSION,
    room: {
      id: room.id,
      code: room.code,
      status: room.status,
      createdAt: iso(room.created_at),
      createdIp: room.created_ip,
      pendingUntil: iso(room.pending_until),
      activatedAt: isoOrNull(room.activated_at),
      expiresAt: isoOrNull(room.expires_at),
      endedAt: isoOrNull(room.ended_at),
      endReason: room.end_reason,
      endedBySlot: room.ended_by_slot,
      lastActivityAt: iso(room.last_activity_at),
      lastSeq: room.last_seq,
    },
    participants: participants.map((row) => ({
      id: row.id,
      slot: row.slot,
      displayName: row.display_name,
      userAgent: row.user_agent,
      firstIp: row.first_ip,
      lastIp: row.last_ip,
      devicePrefix: row.device_prefix,
      joinedAt: iso(row.joined_at),
      lastSeenAt: iso(row.last_seen_at),
    })),
    messages: transcript.map((entry) => ({
      seq: entry.seq,
      kind: entry.kind,
      participantId: entry.participantId,
      slot: entry.slot,
      senderName: entry.senderName,
      senderIp: entry.senderIp,
      createdAt: iso(entry.createdAt),
      text: entry.text,
      readable: entry.readable,
      attachmentId: attachmentBySeq.get(entry.seq) ?? entry.image?.id ?? null,
    })),
    attachments: attachments.map((row) => ({
      id: row.id,
      messageSeq: row.message_seq,
      objectKey: row.object_key,
      thumbKey: row.thumb_key,
      contentType: row.content_type,
      thumbContentType: row.thumb_content_type,
      bytes: row.bytes,
      width: row.width,
      height: row.height,
      thumbBytes: row.thumb_bytes,
      thumbWidth: row.thumb_width,
      thumbHeight: row.thumb_height,
      senderIp: row.sender_ip,
      createdAt: iso(row.created_at),
    })),
  };
}

/** The record as a JSON value (zod's output types are structurally JSON already). */
export const recordAsJson = (record: RoomRecord): JsonValue => record;
