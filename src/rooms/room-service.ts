import { z } from 'zod';
import type { Actor, AuditLog } from '../audit/audit-log.ts';
import type { RoomKeys } from '../crypto/room-keys.ts';
import { DomainError } from '../domain-error.ts';
import type { Clock } from '../infra/clock.ts';
import { type DatabasePool, type DatabaseTransactionConnection, sql } from '../infra/db.ts';
import { generateCode, normalizeCode } from './codes.ts';
import type { Device } from './devices.ts';
import { nameOptions } from './names.ts';
import {
  type EndReason,
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
import type { RoomAccessService } from './room-access.ts';

export type JoinLookup =
  | { kind: 'member'; room: Room }
  | { kind: 'joinable'; room: Room; names: string[]; hostName: string | null };

export type RoomSettings = { roomTtlHours: number; pendingTtlMinutes: number };

export type EndedRoom = { id: string; code: string; reason: EndReason };

const CODE_ATTEMPTS = 20;
/**
 * The room lifecycle: create (pending, host bound), activate (timer starts), join (guest bound,
 * room locked), end, and the sweep that expires rooms past their time. Who may act on a room is
 * RoomAccessService's answer. No HTTP in here: callers pass the device and the actor (IP, user
 * agent) they saw.
 */
export class RoomService {
  private readonly endedListeners: ((rooms: EndedRoom[]) => void)[] = [];
  private readonly joinedListeners: ((room: Room, guest: Participant) => void)[] = [];

  constructor(
    private readonly db: DatabasePool,
    private readonly keys: RoomKeys,
    private readonly audit: AuditLog,
    private readonly roomAccess: RoomAccessService,
    private readonly clock: Clock,
    private readonly settings: RoomSettings,
  ) {}

  /** Called after rooms end in this process (by the sweep or by a participant). */
  onRoomsEnded(listener: (rooms: EndedRoom[]) => void): void {
    this.endedListeners.push(listener);
  }

  /** Called after a guest takes the second seat in this process. */
  onGuestJoined(listener: (room: Room, guest: Participant) => void): void {
    this.joinedListeners.push(listener);
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
    const { room, me } = await this.roomAccess.getAccess(codeInput, device);
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
      !isOver(found.room, this.clock.now().getTime()) &&
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

  /** A participant ends the chat for both, now. */
  async end(codeInput: unknown, device: Device | undefined, actor: Actor): Promise<Room> {
    const { room, me } = await this.roomAccess.getAccess(codeInput, device);
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
}
