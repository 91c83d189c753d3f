import { z } from 'zod';
import { roomStatusSchema } from '../archive/room-record.ts';
import { DomainError } from '../domain-error.ts';
import { type DatabasePool, sql } from '../infra/db.ts';
import { CODE_ALPHABET, CODE_LENGTH } from '../rooms/codes.ts';
import type { RoomStatus } from '../rooms/room.ts';
import type { Paging } from './paging.ts';
import { queryText } from './query-text.ts';

export const ROOM_STATUSES: readonly RoomStatus[] = roomStatusSchema.options;

export type RoomFilter = { status: RoomStatus | undefined; code: string | undefined };

const CODE_PREFIX = new RegExp(`^[${CODE_ALPHABET}]{1,${CODE_LENGTH}}$`);

/** The dashboard's filters from the query string; a code is searched by its prefix, any case. */
export function parseRoomFilter(query: { status?: unknown; code?: unknown }): RoomFilter {
  const status = queryText(query.status, 'status');
  const code = queryText(query.code, 'code').toUpperCase();
  if (status !== '' && !(ROOM_STATUSES as readonly string[]).includes(status)) {
    throw new DomainError('invalid', `The status must be one of: ${ROOM_STATUSES.join(', ')}.`, {
      title: 'Invalid filter',
    });
  }
  if (code !== '' && !CODE_PREFIX.test(code)) {
    throw new DomainError(
      'invalid',
      `Search by up to ${CODE_LENGTH} code characters from A–Z and 2–9 (no 0, 1, I, L or O).`,
      { title: 'Invalid filter' },
    );
  }
  return { status: status === '' ? undefined : (status as RoomStatus), code: code === '' ? undefined : code };
}

const listRow = z.object({
  id: z.string(),
  code: z.string(),
  status: roomStatusSchema,
  created_at: z.number(),
  pending_until: z.number(),
  activated_at: z.number().nullable(),
  expires_at: z.number().nullable(),
  ended_at: z.number().nullable(),
  end_reason: z.string().nullable(),
  host_name: z.string().nullable(),
  guest_name: z.string().nullable(),
  message_count: z.number(),
  image_count: z.number(),
  last_activity_at: z.number(),
});

export type RoomListItem = z.infer<typeof listRow>;

export type RoomTotals = {
  byStatus: Record<RoomStatus, number>;
  rooms: number;
  messages: number;
  images: number;
};

function conditions(filter: RoomFilter) {
  const where = [sql.fragment`TRUE`];
  if (filter.status) where.push(sql.fragment`r.status = ${filter.status}`);
  // The prefix holds only code characters, so it cannot carry LIKE wildcards.
  if (filter.code) where.push(sql.fragment`r.code LIKE ${`${filter.code}%`}`);
  return sql.join(where, sql.fragment` AND `);
}

/** Rooms for the dashboard, newest first, one page of them, and how many match in all. */
export async function listRooms(
  db: DatabasePool,
  filter: RoomFilter,
  paging: Paging,
): Promise<{ items: readonly RoomListItem[]; total: number }> {
  const where = conditions(filter);
  const total = await db.oneFirst(sql.type(z.object({ total: z.number() }))`
    SELECT count(*)::int AS total FROM rooms r WHERE ${where}`);
  const items = await db.any(sql.type(listRow)`
    SELECT r.id, r.code, r.status, r.created_at, r.pending_until, r.activated_at, r.expires_at, r.ended_at,
           r.end_reason, h.display_name AS host_name, g.display_name AS guest_name,
           coalesce(m.message_count, 0)::int AS message_count, coalesce(a.image_count, 0)::int AS image_count,
           greatest(r.last_activity_at, m.last_message_at) AS last_activity_at
    FROM rooms r
    LEFT JOIN participants h ON h.room_id = r.id AND h.slot = 1
    LEFT JOIN participants g ON g.room_id = r.id AND g.slot = 2
    LEFT JOIN LATERAL (
      SELECT count(*) FILTER (WHERE kind <> 'system') AS message_count, max(created_at) AS last_message_at
      FROM messages WHERE room_id = r.id
    ) m ON TRUE
    LEFT JOIN LATERAL (SELECT count(*) AS image_count FROM attachments WHERE room_id = r.id) a ON TRUE
    WHERE ${where}
    ORDER BY r.created_at DESC, r.id DESC
    LIMIT ${paging.limit} OFFSET ${paging.offset}`);
  return { items, total };
}

/** The numbers at the top of the dashboard: all rooms by status, every message and image. */
export async function roomTotals(db: DatabasePool): Promise<RoomTotals> {
  const rows = await db.any(sql.type(z.object({ status: z.string(), count: z.number() }))`
    SELECT status, count(*)::int AS count FROM rooms GROUP BY status`);
  const byStatus = Object.fromEntries(ROOM_STATUSES.map((status) => [status, 0])) as Record<
    RoomStatus,
    number
  >;
  for (const row of rows) byStatus[row.status as RoomStatus] = row.count;
  const counts = await db.one(sql.type(z.object({ messages: z.number(), images: z.number() }))`
    SELECT (SELECT count(*) FROM messages WHERE kind <> 'system')::int AS messages,
           (SELECT count(*) FROM attachments)::int AS images`);
  return {
    byStatus,
    rooms: rows.reduce((sum, row) => sum + row.count, 0),
    messages: counts.messages,
    images: counts.images,
  };
}
