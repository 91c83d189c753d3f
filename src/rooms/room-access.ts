import { LRUCache } from 'lru-cache';
import { z } from 'zod';
import type { Actor } from '../audit/audit-log.ts';
import { BatchedLookup } from '../infra/batched-lookup.ts';
import type { Clock } from '../infra/clock.ts';
import { type DatabasePool, sql } from '../infra/db.ts';
import { normalizeCode } from './codes.ts';
import type { Device } from './devices.ts';
import {
  ended,
  isOver,
  notFound,
  type Participant,
  participantRow,
  ROOM_COLUMNS,
  type Room,
  roomRow,
  toParticipant,
  toRoom,
} from './room.ts';

/** A bound device's view of its room. */
export type RoomAccess = { room: Room; me: Participant; partner: Participant | null };

/** A row of the access query: the room, one of its participants, and whether that one is the caller. */
const accessRow = roomRow.extend({ participant: participantRow.nullable(), mine: z.boolean() });
const liveRoomRow = z.object({ id: z.string() });

/** How long a locked room's access is used as it is; after that, while a query confirms the room. */
const ACCESS_TTL_MS = 5_000;
const ACCESS_CACHE_ENTRIES = 50_000;
/** Last-seen is written at most this often per participant. */
const TOUCH_INTERVAL_MS = 60_000;

type Cached = { access: RoomAccess; confirming: boolean };

/**
 * Who may enter a room: `getAccess` answers for a device and a code with the room, the device's
 * participant and its partner, or refuses exactly as for a code that does not exist (strangers)
 * or with `gone` (participants of a room that is over). It also records that the participant
 * was seen (at most once a minute).
 *
 * Once a room is active and locked to its two devices nothing in it changes but its end, so the
 * answer is kept (lru-cache) and used for ACCESS_TTL_MS. Past that, a use still answers from it
 * at once while one query, shared with other such uses (BatchedLookup), confirms that the room is
 * still active: renewed if so, dropped if not. Re-reading instead, every device that had paused at
 * once (a quiet moment in many rooms, a restart) waited for its own read, and those reads queued
 * in the pool in front of the message writer: 60-100 ms of delivery latency for the first 200 ms
 * of sends (npm run bench, a 4,000/s step after a 2,000/s one).
 *
 * An end is heard at once (`forget`, called for ends in this process and, through the bus, in
 * others); the room's expiry time is checked on every use; should an end go unheard (the bus was
 * down), the confirmation finds it, and the message writer checks the room in the transaction
 * that stores a message, so nothing is ever written to a room that is over. The cached room's
 * `lastSeq` is not kept up to date: callers must not rely on it.
 */
export class RoomAccessService {
  private readonly cache: LRUCache<string, Cached>;
  private readonly liveRooms: BatchedLookup<true>;
  private readonly seen: LRUCache<string, true>;

  constructor(
    private readonly db: DatabasePool,
    private readonly clock: Clock,
  ) {
    const perf = { now: () => clock.now().getTime() };
    this.cache = new LRUCache({
      max: ACCESS_CACHE_ENTRIES,
      ttl: ACCESS_TTL_MS,
      allowStale: true,
      noDeleteOnStaleGet: true,
      ttlResolution: 0,
      perf,
    });
    this.seen = new LRUCache({ max: 100_000, ttl: TOUCH_INTERVAL_MS, ttlResolution: 0, perf });
    this.liveRooms = new BatchedLookup(async (roomIds) => {
      const live = await db.anyFirst(sql.type(liveRoomRow)`
        SELECT id FROM rooms WHERE id = ANY(${sql.array(roomIds, 'uuid')}) AND status = 'active'`);
      return new Map(live.map((id) => [id, true as const]));
    });
  }

  /** The room as seen by the device bound to it (see the class comment). */
  async getAccess(codeInput: unknown, device: Device | undefined, actor?: Actor): Promise<RoomAccess> {
    const code = normalizeCode(codeInput);
    if (!device) throw notFound();
    const key = `${code}:${device.hashHex}`;
    const status: LRUCache.Status<string, Cached> = {};
    const cached = this.cache.get(key, { status });
    let access: RoomAccess;
    if (cached) {
      access = cached.access;
      if (isOver(access.room, this.clock.now().getTime())) {
        this.cache.delete(key);
        throw ended(access.room);
      }
      if (status.get === 'stale') this.confirm(key, cached);
    } else {
      access = await this.read(code, device);
      // Locked and active: from now on only its end changes it.
      if (access.room.status === 'active' && access.partner) {
        this.cache.set(key, { access, confirming: false });
      }
    }
    if (actor) this.touch(access.me.id, actor);
    return access;
  }

  /** Drops what is kept about these rooms (they ended, here or in another process). */
  forget(roomIds: string[]): void {
    const ids = new Set(roomIds);
    for (const [key, entry] of this.cache.entries()) {
      if (ids.has(entry.access.room.id)) this.cache.delete(key);
    }
  }

  private async read(code: string, device: Device): Promise<RoomAccess> {
    const rows = await this.db.any(sql.type(accessRow)`
      SELECT ${ROOM_COLUMNS},
             CASE WHEN p.id IS NULL THEN NULL ELSE json_build_object(
               'id', p.id, 'room_id', p.room_id, 'slot', p.slot, 'display_name', p.display_name,
               'joined_at', (extract(epoch FROM p.joined_at) * 1000)::float8,
               'last_seen_at', (extract(epoch FROM p.last_seen_at) * 1000)::float8) END AS participant,
             coalesce(p.device_hash = ${sql.binary(device.hash)}, false) AS mine
      FROM rooms r
      LEFT JOIN participants p ON p.room_id = r.id
      WHERE r.code = ${code}
        AND r.id IN (SELECT room_id FROM participants WHERE device_hash = ${sql.binary(device.hash)})
      ORDER BY r.created_at DESC, p.slot`);
    if (rows.length === 0) throw notFound();
    // A device may have been in several rooms that reused this code over time: take the newest.
    const newestId = (rows[0] as (typeof rows)[number]).id;
    const own = rows.filter((row) => row.id === newestId);
    const room = toRoom(own[0] as (typeof rows)[number]);
    const me = own.find((row) => row.mine)?.participant;
    if (!me) throw notFound();
    if (isOver(room, this.clock.now().getTime())) throw ended(room);
    const partner = own.find((row) => row.participant && !row.mine)?.participant ?? null;
    return { room, me: toParticipant(me), partner: partner ? toParticipant(partner) : null };
  }

  /** Renews a kept access whose time is over if its room is still active, or drops it. */
  private confirm(key: string, entry: Cached): void {
    if (entry.confirming) return;
    entry.confirming = true;
    this.liveRooms.get(entry.access.room.id).then(
      (live) => {
        entry.confirming = false;
        if (this.cache.get(key) !== entry) return;
        if (live) this.cache.set(key, entry);
        else this.cache.delete(key);
      },
      // Kept as it is; the next use asks again.
      () => {
        entry.confirming = false;
      },
    );
  }

  /** Records that a participant was seen, at most once a minute (a page load must not always write). */
  private touch(participantId: string, actor: Actor): void {
    if (this.seen.has(participantId)) return;
    this.seen.set(participantId, true);
    const now = this.clock.now();
    void this.db
      .query(sql.unsafe`
        UPDATE participants SET last_seen_at = ${sql.timestamp(now)}, last_ip = ${actor.ip}
        WHERE id = ${participantId}`)
      .catch(() => undefined);
  }
}
