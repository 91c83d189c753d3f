import type { Clock } from '../infra/clock.ts';
import { type DatabasePool, type DatabaseTransactionConnection, sql } from '../infra/db.ts';

const IPV4_MAPPED = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i;

/**
 * An address as it is recorded: an IPv4 peer seen on a dual-stack socket, or named that way in
 * X-Forwarded-For, arrives as ::ffff:a.b.c.d; recorded as a.b.c.d, one client has one spelling in
 * the audit trail and an IP filter finds all of it.
 */
export function recordedIp(ip: string): string {
  return IPV4_MAPPED.exec(ip)?.[1] ?? ip;
}

/** Who did something, as the web layer saw it. Domain code receives this; it never reads requests. */
export type Actor = {
  ip: string;
  userAgent?: string | undefined;
  /** SHA-256 of the device token (hex); only a prefix is written to the audit trail. */
  deviceHash?: string | undefined;
};

export type AuditEvent = {
  source: 'chat' | 'admin' | 'system';
  action: string;
  actor?: Actor;
  roomId?: string | null;
  roomCode?: string | null;
  participantId?: string | null;
  detail?: Record<string, string | number | boolean | null>;
};

export const DEVICE_PREFIX_LENGTH = 12;

const MAX_USER_AGENT = 512;

/** Writes audit events; with a transaction, the event commits or rolls back with the action. */
export class AuditLog {
  constructor(
    private readonly db: DatabasePool,
    private readonly clock: Clock,
  ) {}

  async record(event: AuditEvent, tx?: DatabaseTransactionConnection): Promise<void> {
    const connection = tx ?? this.db;
    const { actor } = event;
    await connection.query(sql.unsafe`
      INSERT INTO audit_events (at, source, action, room_id, room_code, participant_id, ip, user_agent,
                                device_prefix, detail)
      VALUES (
        ${sql.timestamp(this.clock.now())}, ${event.source}, ${event.action},
        ${event.roomId ?? null}, ${event.roomCode ?? null}, ${event.participantId ?? null},
        ${actor?.ip ?? null}, ${actor?.userAgent?.slice(0, MAX_USER_AGENT) ?? null},
        ${actor?.deviceHash?.slice(0, DEVICE_PREFIX_LENGTH) ?? null},
        ${sql.jsonb(event.detail ?? {})}
      )`);
  }
}
