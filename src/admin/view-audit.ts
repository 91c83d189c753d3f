import fp from 'fastify-plugin';
import { type AuditLog, recordedIp } from '../audit/audit-log.ts';
import type { DatabasePool } from '../infra/db.ts';
import { isUuid } from './ids.ts';
import { roomCodeOf } from './room-detail.ts';

const MAX_TEXT = 512;

/** Probes, assets and the viewer's theme preference are not views of anything. */
export function isAuditedPath(path: string): boolean {
  return path !== '/health' && path !== '/metrics' && path !== '/theme' && !path.startsWith('/static/');
}

/**
 * Every successful admin GET is an audit event (`admin.view`: who, from where, which page, and
 * the room when the page is about one). It is written in onSend, before the content leaves, and
 * if it cannot be written the page is not shown: the trail must not miss a view that happened.
 */
export const viewAuditPlugin = fp<{ audit: AuditLog; db: DatabasePool }>(
  async (app, { audit, db }) => {
    app.addHook('onSend', async (request, reply, payload) => {
      if (request.method !== 'GET' || reply.statusCode < 200 || reply.statusCode >= 300) return payload;
      const [path = '', query] = request.url.split(/\?(.*)/s);
      if (!isAuditedPath(path)) return payload;
      const id = (request.params as { id?: unknown } | undefined)?.id;
      const roomId = isUuid(id) ? id.toLowerCase() : null;
      const roomCode = roomId ? await roomCodeOf(db, roomId) : null;
      const userAgent = request.headers['user-agent'];
      await audit.record({
        source: 'admin',
        action: 'admin.view',
        actor: {
          ip: recordedIp(request.ip),
          userAgent: typeof userAgent === 'string' ? userAgent : undefined,
        },
        roomId: roomCode ? roomId : null,
        roomCode,
        detail: { path: path.slice(0, MAX_TEXT), ...(query ? { query: query.slice(0, MAX_TEXT) } : {}) },
      });
      return payload;
    });
  },
  { name: 'view-audit' },
);
