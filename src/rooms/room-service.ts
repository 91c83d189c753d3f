import { z } from 'zod';
import type { Actor, AuditLog } from '../audit/audit-log.ts';
import type { RoomKeys } from '../crypto/room-keys.ts';
import { DomainError } from '../domain-error.ts';
import { BatchedLookup } from '../infra/batched-lookup.ts';
import type { Clock } from '../infra/clock.ts';
import { type DatabasePool, type DatabaseTransactionConnection, sql } from '../infra/db.ts';
import { generateCode, normalizeCode } from './codes.ts';
import type { Device } from './devices.ts';
import { nameOptions } from './names.ts';

export type RoomStatus = 'pending' | 'active' | 'expired' | 'archived' | 'shredded';
export type EndReason = 'expired' | 'ended' | 'lapsed';

const roomRow = z.object({
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

const participantRow = z.object({
  id: z.string(),
  room_id: z.string(),
  slot: z.union([z.literal(1), z.literal(2)]),
  display_name: z.string().nullable(),
  joined_at: z.number(),
  last_seen_at: z.number(),
});

/** A row of `access`: the room, one of its participants, and whether that one is the caller. */
const accessRow = roomRow.extend({ participant: participantRow.nullable(), mine: z.boolean() });

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

/** A bound device's view of its room. */
export type RoomAccess = { room: Room; me: Participant; partner: Participant | null };

export type JoinLookup =
  | { kind: 'member'; room: Room }
  | { kind: 'joinable'; room: Room; names: string[]; hostName: string | null };

export type RoomSettings = { roomTtlHours: number; pendingTtlMinutes: number };

export type EndedRoom = { id: string; code: string; reason: EndReason };

const ROOM_COLUMNS = sql.fragment`
  r.id, r.code, r.status, r.created_at, r.pending_until, r.activated_at, r.expires_at, r.ended_at,
  r.end_reason, r.last_seq`;

const toRoom = (row: z.infer<typeof roomRow>): Room => ({
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

const toParticipant = (row: z.infer<typeof participantRow>): Participant => ({
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

const CODE_ATTEMPTS = 20;
/** Last-seen is written at most this often per participant. */
const TOUCH_INTERVAL_MS = 60_000;
/** How long a locked room's access is reused by `cachedAccess` without asking the database. */
const ACCESS_CACHE_MS = 5_000;
/**
 * After that, for this long, it is still used while one batched query confirms that the room is
 * live (see `freshAccess`); an entry not used by then is read afresh.
 */
const ACCESS_CONFIRM_WINDOW_MS = 30_000;
const ACCESS_CACHE_LIMIT = 50_000;

const liveRoomRow = z.object({ id: z.string() });

type CachedAccess = {
  access: RoomAccess;
  /** Used as it is until then. */
  freshUntil: number;
  /** Used while its room is confirmed live until then; read afresh after. */
  usableUntil: number;
  confirming: boolean;
};

/**
 * The room lifecycle: create (pending, host bound), activate (timer starts), join (guest bound,
 * room locked), end, and the sweep that expires rooms past their time. No HTTP in here: callers
 * pass the device and the actor (IP, user agent) they saw.
 */
export class RoomService {
  private readonly endedListeners: ((rooms: EndedRoom[]) => void)[] = [];
  private readonly joinedListeners: ((room: Room, guest: Participant) => void)[] = [];
  private readonly lastTouch = new Map<string, number>();
  /** Access of devices to locked, active rooms, by code + device hash (see `cachedAccess`). */
  private readonly accessCache = new Map<string, CachedAccess>();
  /** Which of the rooms asked about are still active, a batch at a time. */
  private readonly liveRooms: BatchedLookup<true>;

  constructor(
    private readonly db: DatabasePool,
    private readonly keys: RoomKeys,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    private readonly settings: RoomSettings,
  ) {
    this.liveRooms = new BatchedLookup(async (roomIds) => {
      const live = await db.anyFirst(sql.type(liveRoomRow)`
        SELECT id FROM rooms WHERE id = ANY(${sql.array(roomIds, 'uuid')}) AND status = 'active'`);
      return new Map(live.map((id) => [id, true as const]));
    });
  }

  /** Called after rooms end in this process (by the sweep or by a participant). */
  onRoomsEnded(listener: (rooms: EndedRoom[]) => void): void {
    this.endedListeners.push(listener);
  }

  /** Called after a guest takes the second seat in this process. */
  onGuestJoined(listener: (room: Room, guest: Participant) => void): void {
    this.joinedListeners.push(listener);
  }

  /** Whether the room is over at this moment, even if the sweep has not marked it yet. */
  isOver(room: Room, now = this.clock.now().getTime()): boolean {
    if (room.status === 'pending') return room.pendingUntil <= now;
    if (room.status === 'active') return room.expiresAt !== null && room.expiresAt <= now;
    return true;
  }

  async create(device: Device, actor: Actor): Promise<{ room: Room; host: Participant }> {
    const now = this.clock.now();
    const pendingUntil = new Date(now.getTime() + this.settings.pendingTtlMinutes * 60_000);
    return this.db.transaction(async (tx) => {
      let row: z.infer<typeof roomRow> | null = null;
      for (let attempt = 0; attempt < CODE_ATTEMPTS && row === null; attempt++) {
        // The partial unique index decides; a taken code inserts nothing and we draw again.
        row = await tx.maybeOne(sql.type(roomRow)`
          INSERT INTO rooms AS r (code, created_at, created_ip, pending_until, last_activity_at)
          VALUES (${generateCode()}, ${sql.timestamp(now)}, ${actor.ip}, ${sql.timestamp(pendingUntil)},
                  ${sql.timestamp(now)})
          ON CONFLICT (code) WHERE status IN ('pending', 'active') DO NOTHING
          RETURNING ${ROOM_COLUMNS}`);
      }
      if (row === null) {
        throw new DomainError('unavailable', 'No free room code could be found right now; please try again.');
      }
      const room = toRoom(row);
      const host = await this.insertParticipant(tx, room.id, 1, device, null, actor);
      if (!host) throw new Error('a new room already had a host');
      await this.keys.create(tx, room.id);
      await this.audit.record(
        {
          source: 'chat',
          action: 'room.create',
          actor,
          roomId: room.id,
          roomCode: room.code,
          participantId: host.id,
        },
        tx,
      );
      return { room, host };
    });
  }

  hostNameOptions(room: Room): string[] {
    return nameOptions(room.id, 1);
  }

  async activate(codeInput: unknown, device: Device | undefined, name: unknown, actor: Actor): Promise<Room> {
    const { room, me } = await this.access(codeInput, device);
    if (me.slot !== 1) throw notFound();
    if (room.status !== 'pending') {
      throw new DomainError('conflict', 'This room is already active.', { title: 'Already active' });
    }
    const options = this.hostNameOptions(room);
    if (typeof name !== 'string' || !options.includes(name)) {
      throw new DomainError('invalid', 'Choose one of the offered display names.', { title: 'Pick a name' });
    }
    const now = this.clock.now();
    const expiresAt = new Date(now.getTime() + this.settings.roomTtlHours * 3_600_000);
    return this.db.transaction(async (tx) => {
      const row = await tx.maybeOne(sql.type(roomRow)`
        UPDATE rooms AS r
        SET status = 'active', activated_at = ${sql.timestamp(now)}, expires_at = ${sql.timestamp(expiresAt)},
            last_activity_at = ${sql.timestamp(now)}
        WHERE r.id = ${room.id} AND r.status = 'pending' AND r.pending_until > ${sql.timestamp(now)}
        RETURNING ${ROOM_COLUMNS}`);
      if (!row) throw new DomainError('conflict', 'This room can no longer be activated.');
      await tx.query(sql.unsafe`UPDATE participants SET display_name = ${name} WHERE id = ${me.id}`);
      await this.audit.record(
        {
          source: 'chat',
          action: 'room.activate',
          actor,
          roomId: room.id,
          roomCode: room.code,
          participantId: me.id,
          detail: { expiresAt: expiresAt.toISOString() },
        },
        tx,
      );
      return toRoom(row);
    });
  }

  /**
   * What `GET /join?code=` shows: the device's own room, or an active room with a free slot.
   * Everything else (unknown, pending, locked, ended) is the same not-found.
   */
  async findForJoin(codeInput: unknown, device: Device | undefined, actor: Actor): Promise<JoinLookup> {
    const code = normalizeCode(codeInput);
    const found = await this.loadLive(code);
    if (found && device) {
      const member = found.participants.find((p) => p.deviceHash.equals(device.hash));
      if (member) return { kind: 'member', room: found.room };
    }
    const joinable =
      found !== null &&
      found.room.status === 'active' &&
      !this.isOver(found.room) &&
      found.participants.length < 2;
    if (!found || !joinable) {
      await this.audit.record({
        source: 'chat',
        action: 'room.join_refused',
        actor,
        roomId: found?.room.id ?? null,
        roomCode: code,
        detail: { reason: found ? 'not_joinable' : 'unknown_code', stage: 'lookup' },
      });
      throw notFound();
    }
    const host = found.participants.find((p) => p.slot === 1);
    return {
      kind: 'joinable',
      room: found.room,
      names: nameOptions(found.room.id, 2, host?.displayName),
      hostName: host?.displayName ?? null,
    };
  }

  async join(
    codeInput: unknown,
    device: Device,
    name: unknown,
    actor: Actor,
  ): Promise<{ room: Room; guest: Participant } | { room: Room; alreadyMember: true }> {
    const lookup = await this.findForJoin(codeInput, device, actor);
    if (lookup.kind === 'member') return { room: lookup.room, alreadyMember: true };
    const { room, names } = lookup;
    if (typeof name !== 'string' || !names.includes(name)) {
      throw new DomainError('invalid', 'Choose one of the offered display names.', { title: 'Pick a name' });
    }
    const guest = await this.db.transaction(async (tx) => {
      // UNIQUE (room_id, slot) decides a race for the second seat: the loser inserts nothing.
      const inserted = await this.insertParticipant(tx, room.id, 2, device, name, actor);
      if (inserted) {
        const now = this.clock.now();
        await tx.query(sql.unsafe`
          UPDATE rooms SET last_activity_at = ${sql.timestamp(now)} WHERE id = ${room.id}`);
        await this.audit.record(
          {
            source: 'chat',
            action: 'room.join',
            actor,
            roomId: room.id,
            roomCode: room.code,
            participantId: inserted.id,
          },
          tx,
        );
      }
      return inserted;
    });
    if (!guest) {
      await this.audit.record({
        source: 'chat',
        action: 'room.join_refused',
        actor,
        roomId: room.id,
        roomCode: room.code,
        detail: { reason: 'slot_taken', stage: 'join' },
      });
      throw notFound();
    }
    for (const listener of this.joinedListeners) listener(room, guest);
    return { room, guest };
  }

  /**
   * The room as seen by a device bound to it. Strangers get the same not-found as for an unknown
   * code; participants of a room that is over get `gone`.
   */
  async access(codeInput: unknown, device: Device | undefined, actor?: Actor): Promise<RoomAccess> {
    const code = normalizeCode(codeInput);
    if (!device) throw notFound();
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
    if (this.isOver(room)) throw ended(room);
    const partner = own.find((row) => row.participant && !row.mine)?.participant ?? null;
    if (actor) this.touch(me.id, actor);
    return { room, me: toParticipant(me), partner: partner ? toParticipant(partner) : null };
  }

  /**
   * The cached part of `cachedAccess`, without a promise: the access when the cache has it fresh,
   * undefined when the database must be asked (throws when the cached room is over). The send
   * route tries it first, since most sends find their access here.
   */
  freshAccess(codeInput: unknown, device: Device | undefined, actor?: Actor): RoomAccess | undefined {
    if (!device) return undefined;
    const key = `${normalizeCode(codeInput)}:${device.hashHex}`;
    const now = this.clock.now().getTime();
    const hit = this.accessCache.get(key);
    if (!hit || hit.usableUntil <= now) return undefined;
    if (this.isOver(hit.access.room, now)) {
      this.accessCache.delete(key);
      throw ended(hit.access.room);
    }
    if (hit.freshUntil <= now) this.confirmLive(key, hit);
    if (actor) this.touch(hit.access.me.id, actor);
    return hit.access;
  }

  /**
   * Renews a cached access whose fresh time is over if its room is still active, or drops it. The
   * access is used meanwhile: a locked room's access cannot change but for the room's end, which
   * this process hears at once (`forgetAccess`), which the writer checks again in the transaction
   * that stores a message, and which this query finds within a round trip should it go unheard.
   * Re-reading instead, every device that had paused at once (a quiet moment in many rooms, a
   * restart) waited for its own read of the room, and those reads queued in the pool and in
   * PostgreSQL in front of the message writer: 60-100 ms of delivery latency for the first 200 ms
   * of sends (npm run bench, a 4,000/s step after a 2,000/s one). Confirmations share queries.
   */
  private confirmLive(key: string, entry: CachedAccess): void {
    if (entry.confirming) return;
    entry.confirming = true;
    this.liveRooms.get(entry.access.room.id).then(
      (live) => {
        entry.confirming = false;
        if (this.accessCache.get(key) !== entry) return;
        if (!live) {
          this.accessCache.delete(key);
          return;
        }
        Object.assign(entry, this.cacheTimes(this.clock.now().getTime()));
      },
      // The entry stays usable until its time runs out; the next use asks again.
      () => {
        entry.confirming = false;
      },
    );
  }

  /**
   * An entry's times from `now`: fresh for between half and all of the 5 s, at random, then usable
   * for the confirmation window. The random part because entries cached together (a page of devices, a
   * restart) would otherwise all expire together, and their re-reads would queue in the pool in
   * front of the message writer (measured: a 50-100 ms stall every 5 s under load).
   */
  private cacheTimes(now: number): Pick<CachedAccess, 'freshUntil' | 'usableUntil'> {
    const freshUntil = now + ACCESS_CACHE_MS * (0.5 + Math.random() / 2);
    return { freshUntil, usableUntil: freshUntil + ACCESS_CONFIRM_WINDOW_MS };
  }

  /**
   * `access` for the hot paths (sending, the room page, history), reusing the answer for a few
   * seconds once the room is active and locked to its two devices: from then on nothing in it
   * changes but its end (and its last seq, which the cached copy does not follow: callers must not
   * rely on `room.lastSeq`). The cache is dropped when the room ends in this process or, through
   * the bus, in another (`forgetAccess`); its expiry time is checked on every use. After a few
   * seconds a use also has the room's status confirmed, in the background (`confirmLive`). Should
   * an end still go unheard, the message writer checks the room's status in the same transaction
   * that stores a message, so nothing is ever written to a room that is over.
   */
  async cachedAccess(codeInput: unknown, device: Device | undefined, actor?: Actor): Promise<RoomAccess> {
    return this.freshAccess(codeInput, device, actor) ?? this.readAccess(codeInput, device, actor);
  }

  /** The database read of `cachedAccess`, kept for the next calls when the room allows it. */
  async readAccess(codeInput: unknown, device: Device | undefined, actor?: Actor): Promise<RoomAccess> {
    const access = await this.access(codeInput, device, actor);
    if (!device) return access;
    const key = `${normalizeCode(codeInput)}:${device.hashHex}`;
    const now = this.clock.now().getTime();
    if (access.room.status === 'active' && access.partner) {
      if (this.accessCache.size >= ACCESS_CACHE_LIMIT) {
        // Maps iterate in insertion order: drop the oldest entry.
        const oldest = this.accessCache.keys().next().value;
        if (oldest !== undefined) this.accessCache.delete(oldest);
      }
      this.accessCache.set(key, { access, ...this.cacheTimes(now), confirming: false });
    }
    return access;
  }

  /** Drops cached access to these rooms (they ended, here or in another process). */
  forgetAccess(roomIds: string[]): void {
    const ids = new Set(roomIds);
    for (const [key, entry] of this.accessCache) {
      if (ids.has(entry.access.room.id)) this.accessCache.delete(key);
    }
  }

  /** A participant ends the chat for both, now. */
  async end(codeInput: unknown, device: Device | undefined, actor: Actor): Promise<Room> {
    const { room, me } = await this.access(codeInput, device);
    const now = this.clock.now();
    const row = await this.db.transaction(async (tx) => {
      const updated = await tx.maybeOne(sql.type(roomRow)`
        UPDATE rooms AS r
        SET status = 'expired', ended_at = ${sql.timestamp(now)}, end_reason = 'ended', ended_by_slot = ${me.slot}
        WHERE r.id = ${room.id} AND r.status IN ('pending', 'active')
        RETURNING ${ROOM_COLUMNS}`);
      if (!updated) throw ended();
      await this.audit.record(
        {
          source: 'chat',
          action: 'room.end',
          actor,
          roomId: room.id,
          roomCode: room.code,
          participantId: me.id,
        },
        tx,
      );
      return updated;
    });
    this.notifyEnded([{ id: row.id, code: row.code, reason: 'ended' }]);
    return toRoom(row);
  }

  /**
   * Marks rooms past their time as expired (active rooms) or lapsed (never activated). Safe to run
   * from several processes at once: each row changes once, and only its changer reports it.
   */
  async expireDue(): Promise<EndedRoom[]> {
    const now = sql.timestamp(this.clock.now());
    const endedRooms = await this.db.transaction(async (tx) => {
      const rows = await tx.any(sql.type(
        z.object({ id: z.string(), code: z.string(), end_reason: z.enum(['expired', 'lapsed']) }),
      )`
        UPDATE rooms
        SET status = 'expired',
            ended_at = CASE WHEN status = 'active' THEN expires_at ELSE pending_until END,
            end_reason = CASE WHEN status = 'active' THEN 'expired' ELSE 'lapsed' END
        WHERE (status = 'active' AND expires_at <= ${now}) OR (status = 'pending' AND pending_until <= ${now})
        RETURNING id, code, end_reason`);
      for (const row of rows) {
        await this.audit.record(
          {
            source: 'system',
            action: row.end_reason === 'expired' ? 'room.expire' : 'room.lapse',
            roomId: row.id,
            roomCode: row.code,
          },
          tx,
        );
      }
      return rows.map((row) => ({ id: row.id, code: row.code, reason: row.end_reason }));
    });
    if (endedRooms.length > 0) this.notifyEnded(endedRooms);
    return endedRooms;
  }

  private notifyEnded(rooms: EndedRoom[]): void {
    this.forgetAccess(rooms.map((room) => room.id));
    for (const listener of this.endedListeners) listener(rooms);
  }

  /** The live (pending or active) room with this code and its participants' device hashes. */
  private async loadLive(code: string): Promise<{
    room: Room;
    participants: { slot: 1 | 2; displayName: string | null; deviceHash: Buffer }[];
  } | null> {
    const rows = await this.db.any(sql.type(
      roomRow.extend({
        slot: z.union([z.literal(1), z.literal(2)]).nullable(),
        display_name: z.string().nullable(),
        device_hash: z.instanceof(Buffer).nullable(),
      }),
    )`
      SELECT ${ROOM_COLUMNS}, p.slot, p.display_name, p.device_hash
      FROM rooms r LEFT JOIN participants p ON p.room_id = r.id
      WHERE r.code = ${code} AND r.status IN ('pending', 'active')
      ORDER BY p.slot`);
    const first = rows[0];
    if (!first) return null;
    return {
      room: toRoom(first),
      participants: rows
        .filter((row) => row.slot !== null && row.device_hash !== null)
        .map((row) => ({
          slot: row.slot as 1 | 2,
          displayName: row.display_name,
          deviceHash: row.device_hash as Buffer,
        })),
    };
  }

  private async insertParticipant(
    tx: DatabaseTransactionConnection,
    roomId: string,
    slot: 1 | 2,
    device: Device,
    displayName: string | null,
    actor: Actor,
  ): Promise<Participant | null> {
    const now = sql.timestamp(this.clock.now());
    const row = await tx.maybeOne(sql.type(participantRow)`
      INSERT INTO participants (room_id, slot, device_hash, display_name, user_agent, first_ip, last_ip,
                                joined_at, last_seen_at)
      VALUES (${roomId}, ${slot}, ${sql.binary(device.hash)}, ${displayName},
              ${actor.userAgent?.slice(0, 512) ?? null}, ${actor.ip}, ${actor.ip}, ${now}, ${now})
      ON CONFLICT DO NOTHING
      RETURNING id, room_id, slot, display_name, joined_at, last_seen_at`);
    return row ? toParticipant(row) : null;
  }

  /** Records that a participant was seen, at most once a minute (a page load must not always write). */
  private touch(participantId: string, actor: Actor): void {
    const now = this.clock.now().getTime();
    const last = this.lastTouch.get(participantId) ?? 0;
    if (now - last < TOUCH_INTERVAL_MS) return;
    this.lastTouch.set(participantId, now);
    if (this.lastTouch.size > 100_000) this.lastTouch.clear();
    void this.db
      .query(sql.unsafe`
        UPDATE participants SET last_seen_at = ${sql.timestamp(new Date(now))}, last_ip = ${actor.ip}
        WHERE id = ${participantId}`)
      .catch(() => undefined);
  }
}
