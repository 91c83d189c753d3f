import { isIP } from 'node:net';
import { z } from 'zod';
import { recordedIp } from '../audit/audit-log.ts';
import { parseCidrList } from '../config.ts';
import { DomainError } from '../domain-error.ts';
import { type DatabasePool, sql } from '../infra/db.ts';
import { isCode } from '../rooms/codes.ts';
import type { Paging } from './paging.ts';
import { queryText } from './query-text.ts';

export type AuditFilter = {
  code: string | undefined;
  action: string | undefined;
  ip: string | undefined;
  /**
   * The newest event id the listing shows (a snapshot): every view adds an event, so without it
   * each next page would start with the last row of the one before.
   */
  upto: string | undefined;
};

const ACTION = /^[a-z][a-z0-9_.]{0,63}$/;

const invalid = (message: string) => new DomainError('invalid', message, { title: 'Invalid filter' });

/** The audit page's filters: an exact room code, an exact action, an address or a CIDR. */
export function parseAuditFilter(query: {
  code?: unknown;
  action?: unknown;
  ip?: unknown;
  upto?: unknown;
}): AuditFilter {
  const code = queryText(query.code, 'code').toUpperCase();
  const action = queryText(query.action, 'action');
  const ip = queryText(query.ip, 'ip');
  const upto = queryText(query.upto, 'upto');
  if (upto !== '' && !/^\d{1,15}$/.test(upto)) throw invalid('"upto" must be an event number.');
  if (code !== '' && !isCode(code)) throw invalid('A room code is 4 characters from A–Z and 2–9.');
  if (action !== '' && !ACTION.test(action)) {
    throw invalid('An action looks like room.create: lower-case letters, digits, dots and underscores.');
  }
  if (ip !== '') {
    try {
      parseCidrList(ip);
    } catch {
      throw invalid('The IP filter must be an IPv4 or IPv6 address, or a network such as 10.0.0.0/8.');
    }
  }
  return {
    code: code || undefined,
    action: action || undefined,
    ip: ip || undefined,
    upto: upto || undefined,
  };
}

/**
 * The networks an IP filter matches. Events recorded before addresses were made canonical (see
 * `recordedIp`) may hold ::ffff:a.b.c.d, so an IPv4 filter also matches that spelling, and a
 * filter written that way also matches a.b.c.d.
 */
function ipNetworks(filter: string): string[] {
  const [cidr = ''] = parseCidrList(filter);
  const [address = '', prefixText = ''] = cidr.split('/');
  const prefix = Number(prefixText);
  if (isIP(address) === 4) return [cidr, `::ffff:${address}/${96 + prefix}`];
  const mapped = recordedIp(address);
  return mapped !== address && prefix >= 96 ? [cidr, `${mapped}/${prefix - 96}`] : [cidr];
}

const eventRow = z.object({
  id: z.number(),
  at: z.number(),
  source: z.string(),
  action: z.string(),
  room_id: z.string().nullable(),
  room_code: z.string().nullable(),
  participant_id: z.string().nullable(),
  ip: z.string().nullable(),
  user_agent: z.string().nullable(),
  device_prefix: z.string().nullable(),
  detail: z.string(),
});

export type AuditListItem = z.infer<typeof eventRow>;

/** Audit events, newest first, one page of them, and how many match in all. */
export async function listAuditEvents(
  db: DatabasePool,
  filter: AuditFilter,
  paging: Paging,
): Promise<{ items: readonly AuditListItem[]; total: number }> {
  const where = [sql.fragment`TRUE`];
  if (filter.code) where.push(sql.fragment`room_code = ${filter.code}`);
  if (filter.action) where.push(sql.fragment`action = ${filter.action}`);
  if (filter.upto) where.push(sql.fragment`id <= ${Number(filter.upto)}`);
  if (filter.ip) {
    const networks = ipNetworks(filter.ip).map((network) => sql.fragment`ip <<= ${network}::inet`);
    where.push(sql.fragment`(${sql.join(networks, sql.fragment` OR `)})`);
  }
  const condition = sql.join(where, sql.fragment` AND `);
  const total = await db.oneFirst(sql.type(z.object({ total: z.number() }))`
    SELECT count(*)::int AS total FROM audit_events WHERE ${condition}`);
  const items = await db.any(sql.type(eventRow)`
    SELECT id, at, source, action, room_id, room_code, participant_id, host(ip) AS ip, user_agent,
           device_prefix, detail::text AS detail
    FROM audit_events WHERE ${condition}
    ORDER BY at DESC, id DESC
    LIMIT ${paging.limit} OFFSET ${paging.offset}`);
  return { items, total };
}

/** The newest event's id (0 for none): where a listing's snapshot ends. */
export function newestAuditEventId(db: DatabasePool): Promise<number> {
  return db.oneFirst(sql.type(z.object({ id: z.number() }))`
    SELECT coalesce(max(id), 0)::int8 AS id FROM audit_events`);
}

/**
 * The actions seen so far, for the filter's suggestions. The trail grows with every admin view,
 * so this skips through the action index one value at a time instead of scanning every event.
 */
export async function auditActions(db: DatabasePool): Promise<readonly string[]> {
  return db.anyFirst(sql.type(z.object({ action: z.string() }))`
    WITH RECURSIVE found AS (
      (SELECT action FROM audit_events ORDER BY action LIMIT 1)
      UNION ALL
      SELECT (SELECT e.action FROM audit_events e WHERE e.action > found.action ORDER BY e.action LIMIT 1)
      FROM found WHERE found.action IS NOT NULL
    )
    SELECT action FROM found WHERE action IS NOT NULL`);
}
