import type { FastifyPluginAsync } from 'fastify';
import { parseTabId } from '../../messages/realtime-hub.ts';
import type { RoomAccess } from '../../rooms/room-service.ts';
import { HttpError } from '../../web/errors.ts';
import type { ChatAppOptions } from '../app.ts';
import { isSameOrigin } from '../plugins/same-origin.ts';

declare module 'fastify' {
  interface FastifyRequest {
    roomAccess?: RoomAccess;
  }
}

/**
 * GET /rooms/{CODE}/ws: the live channel of the room page (htmx hx-ws). Checked before the
 * upgrade: same origin (or no Origin, as CLI clients send), and a device bound to a live room.
 */
export const liveRoutes: FastifyPluginAsync<ChatAppOptions> = async (app, { services }) => {
  const { rooms, hub } = services;
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
        request.roomAccess = await rooms.access(request.params.code, request.device, request.actor);
      },
    },
    async (socket, request) => {
      const access = request.roomAccess as RoomAccess;
      const after = request.query.after ?? '';
      await hub.attach(socket, {
        roomId: access.room.id,
        code: access.room.code,
        participantId: access.me.id,
        slot: access.me.slot,
        myName: access.me.displayName,
        partnerName: access.partner?.displayName ?? null,
        // The page says which messages it already shows; without that, only new ones are sent.
        afterSeq: /^\d{1,15}$/.test(after) ? Number(after) : access.room.lastSeq,
        tab: parseTabId(request.query.tab),
      });
    },
  );
};
