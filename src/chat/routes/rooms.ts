import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { DomainError } from '../../domain-error.ts';
import type { RoomAccess } from '../../rooms/room-access.ts';
import type { ChatAppOptions } from '../app.ts';

type CodeParams = { Params: { code: string } };

/** The room page shows this many of the latest messages; the transcript download has them all. */
const PAGE_HISTORY_LIMIT = 500;

/** Absolute share link for a room, as the visitor reached us. */
export function shareUrl(request: FastifyRequest, code: string): string {
  return `${request.protocol}://${request.host}/join?code=${code}`;
}

export const roomRoutes: FastifyPluginAsync<ChatAppOptions> = async (app, { services, resources }) => {
  const { rooms, roomAccess } = services;
  const { clock, config } = resources;
  const ttlText = `${config.roomTtlHours}-hour`;

  const pendingPage = (request: FastifyRequest, access: RoomAccess, extra: Record<string, unknown> = {}) => ({
    title: `Room ${access.room.code}`,
    room: access.room,
    shareUrl: shareUrl(request, access.room.code),
    names: rooms.hostNameOptions(access.room),
    ttlText,
    closesAt: null,
    ...extra,
  });

  app.get('/host', async (_request, reply) => reply.render({ page: 'chat/host' }, { title: 'Host a chat' }));

  app.post('/rooms', async (request, reply) => {
    await app.checkLimit('create', request);
    const device = reply.bindDevice();
    const { room } = await rooms.create(device, request.actor);
    return reply.redirect(`/rooms/${room.code}`, 303);
  });

  app.get<CodeParams>('/rooms/:code', async (request, reply) => {
    // A kept access: room.lastSeq may lag, so the page's last seq is also taken from its history.
    const access = await roomAccess.getAccess(request.params.code, request.device, request.actor);
    const { room, me, partner } = access;
    if (room.status === 'pending') {
      return reply.render({ page: 'chat/room-pending' }, pendingPage(request, access));
    }
    const history = await services.messages.recent(room.id, PAGE_HISTORY_LIMIT);
    return reply.render(
      { page: 'chat/room' },
      {
        title: `Room ${room.code}`,
        room,
        me,
        partner,
        // A snapshot for the first paint (and for pages without scripts); the socket keeps it live.
        partnerOnline: partner ? services.hub.isOnline(room.id, partner.slot) : false,
        shareUrl: shareUrl(request, room.code),
        messages: history,
        lastSeq: Math.max(room.lastSeq, ...history.map((message) => message.seq)),
        clientMsgId: randomUUID(),
        maxMessageChars: config.maxMessageChars,
        uploadMsgId: randomUUID(),
        maxUploadMb: config.maxUploadMb,
        closesAt: room.expiresAt,
        now: clock.now().getTime(),
      },
    );
  });

  app.post<CodeParams & { Body: { name?: unknown } }>('/rooms/:code/activate', async (request, reply) => {
    try {
      const room = await rooms.activate(
        request.params.code,
        request.device,
        request.body?.name,
        request.actor,
      );
      return reply.redirect(`/rooms/${room.code}`, 303);
    } catch (error) {
      if (!(error instanceof DomainError) || error.kind !== 'invalid') throw error;
      // The form again, with what went wrong.
      const access = await roomAccess.getAccess(request.params.code, request.device);
      return reply.code(400).render(
        { page: 'chat/room-pending', fragment: 'partials/activate-form' },
        pendingPage(request, access, {
          error: error.message,
          returnTo: `/rooms/${access.room.code}`,
        }),
      );
    }
  });

  app.get<CodeParams>('/rooms/:code/end', async (request, reply) => {
    const { room } = await roomAccess.getAccess(request.params.code, request.device);
    return reply.render({ page: 'chat/end' }, { title: 'End chat', room });
  });

  app.post<CodeParams & { Body: { confirm?: unknown } }>('/rooms/:code/end', async (request, reply) => {
    if (request.body?.confirm !== 'yes') {
      // Not confirmed: show the question instead of ending.
      const { room } = await roomAccess.getAccess(request.params.code, request.device);
      return reply.redirect(`/rooms/${room.code}/end`, 303);
    }
    const room = await rooms.end(request.params.code, request.device, request.actor);
    return reply.redirect(`/rooms/${room.code}`, 303);
  });
};
