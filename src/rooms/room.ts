/*
 * A room and its participants as the database has them, and the two refusals every room
 * lookup shares. Used by the lifecycle (RoomService) and by access checks (RoomAccessService).
 */
import { z } from 'zod';
import { DomainError } from '../domain-error.ts';
import { sql } from '../infra/db.ts';

export type RoomStatus = 'pending' | 'active' | 'expired' | 'archived' | 'shredded';
export type EndReason = 'expired' | 'ended' | 'lapsed';

export const roomRow = z.object({
  id: z.string(),
  code: z.string(),
  status: z.enum(['pending', 'active', 'expired', 'archived', 'shredded']),
  created_at: z.number(),
  pending_until: z.number(),
  activated_at: z.number().nullable(),
  expires_at: z.number().nullable(),
  ended_at: z.number().nullable(),
  end_reason: z.enum(['expired', 'ended', 'lapsed']).nullable(),
  last_seq: z.number(),
});

export const participantRow = z.object({
  id: z.string(),
  room_id: z.string(),
  slot: z.union([z.literal(1), z.literal(2)]),
  display_name: z.string().nullable(),
  joined_at: z.number(),
  last_seen_at: z.number(),
});

export type Room = {
  id: string;
  code: string;
  status: RoomStatus;
  createdAt: number;
  pendingUntil: number;
  activatedAt: number | null;
  expiresAt: number | null;
  endedAt: number | null;
  endReason: EndReason | null;
  lastSeq: number;
};

export type Participant = {
  id: string;
  roomId: string;
  slot: 1 | 2;
  displayName: string | null;
  joinedAt: number;
  lastSeenAt: number;
};

export const ROOM_COLUMNS = sql.fragment`
  r.id, r.code, r.status, r.created_at, r.pending_until, r.activated_at, r.expires_at, r.ended_at,
  r.end_reason, r.last_seq`;

export const toRoom = (row: z.infer<typeof roomRow>): Room => ({
  id: row.id,
  code: row.code,
  status: row.status,
  createdAt: row.created_at,
  pendingUntil: row.pending_until,
  activatedAt: row.activated_at,
  expiresAt: row.expires_at,
  endedAt: row.ended_at,
  endReason: row.end_reason,
  lastSeq: row.last_seq,
});

export const toParticipant = (row: z.infer<typeof participantRow>): Participant => ({
  id: row.id,
  roomId: row.room_id,
  slot: row.slot,
  displayName: row.display_name,
  joinedAt: row.joined_at,
  lastSeenAt: row.last_seen_at,
});

/** Exactly the same words for a code that does not exist and a room that is not yours. */
export const NO_OPEN_ROOM =
  'There is no open room with that code. Check the code with the person who gave it to you.';

export const notFound = () =>
  new DomainError('not_found', NO_OPEN_ROOM, { title: 'No open room with that code' });
/** A room that is over: it ended, or (never activated) it lapsed before the chat began. */
export const ended = (room?: Room) =>
  room && room.activatedAt === null
    ? new DomainError('gone', 'This room was never started, and its code has lapsed. Ask for a new one.', {
        title: 'This room has lapsed',
      })
    : new DomainError('gone', 'This chat has ended. Its messages are no longer available here.', {
        title: 'This chat has ended',
      });

/** Whether the room is over at this moment, even if the sweep has not marked it yet. */
export function isOver(room: Room, now: number): boolean {
  if (room.status === 'pending') return room.pendingUntil <= now;
  if (room.status === 'active') return room.expiresAt !== null && room.expiresAt <= now;
  return true;
}
