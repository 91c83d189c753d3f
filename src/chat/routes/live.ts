import type { Socket } from 'node:net';
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import { parseTabId, type SocketContext } from '../../messages/live/live-socket.ts';
import { HttpError } from '../../web/errors.ts';
import type { ChatAppOptions } from '../app.ts';
import { isSameOrigin } from '../plugins/same-origin.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** What the hub is told about the socket, found before the upgrade. */
    liveContext?: SocketContext;
  }
}

/**
 * GET /rooms/{CODE}/ws: the live channel of the room page (htmx hx-ws). Checked before the
 * upgrade: same origin (or no Origin, as CLI clients send), and a device bound to a live room.
 */
export const liveRoutes: FastifyPluginAsync<ChatAppOptions> = async (app, { services }) => {
  const { roomAccess, hub, messages } = services;
  app.get<{ Params: { code: string }; Querystring: { after?: string; tab?: string } }>(
    '/rooms/:code/ws',
    {
      websocket: true,
      preValidation: async (request) => {
        if (!isSameOrigin(request)) {
          request.log.warn(
            { ip: request.ip, origin: request.headers.origin },
            'cross-origin websocket refused',
          );
          throw new HttpError(403, 'Live updates are only for pages of this site.');
        }
        const access = await roomAccess.getAccess(request.params.code, request.device, request.actor);
        if (!hub.hasRoomFor(access.room.id, access.me.slot)) {
          request.log.warn({ ip: request.ip, roomId: access.room.id }, 'too many live pages refused');
          throw new HttpError(
            429,
            'This device has too many pages of this chat open; close some and reload.',
          );
        }
        const after = request.query.after ?? '';
        request.liveContext = {
          roomId: access.room.id,
          code: access.room.code,
          slot: access.me.slot,
          myName: access.me.displayName,
          partnerName: access.partner?.displayName ?? null,
          // The page says which messages it already shows; without that, only new ones are sent.
          afterSeq: /^\d{1,15}$/.test(after) ? Number(after) : await messages.lastSeq(access.room.id),
          tab: parseTabId(request.query.tab),
        };
      },
    },
    (socket, request) => {
      const context = request.liveContext as SocketContext;
      releaseUpgradeRequest(socket, request);
      // The hub puts its own 'error' listener on the socket before anything can emit. Not
      // awaited: the request is garbage as soon as the socket is open, instead of living on
      // through the catch-up read (under a burst of connections, long enough to be promoted to
      // the old generation, where it stays until a full collection).
      hub.attach(socket, context).catch((error: unknown) => {
        app.log.error({ err: error, roomId: context.roomId }, 'live socket failed');
        socket.terminate();
      });
    },
  );
};

/**
 * Lets the upgrade request go once the socket is open, so that an idle socket costs the
 * WebSocket and its TCP socket only (a process holds ~20,000 of them). Without this, every open
 * socket keeps its whole upgrade request alive for its lifetime (~4.5 KB of heap each):
 * - @fastify/websocket's 'error' listener closes over the Fastify request and reply (and
 *   through them the IncomingMessage, its headers, the raw head buffer, the ServerResponse, a
 *   pino child logger, the room access read before the upgrade). The hub's own listener
 *   replaces it (it logs and terminates, as the plugin's did);
 * - the TCP socket still points at the ServerResponse the plugin built for routing
 *   (`socket._httpMessage`), whose 'finish' listener closes over the reply. A hijacked reply is
 *   never finished, so Node never detaches it: we do, as Node does after a response ends.
 */
export function releaseUpgradeRequest(socket: WebSocket, request: FastifyRequest): void {
  socket.removeAllListeners('error');
  const tcp = request.raw.socket as Socket & { _httpMessage?: { detachSocket(socket: Socket): void } | null };
  if (tcp._httpMessage) tcp._httpMessage.detachSocket(tcp);
}
