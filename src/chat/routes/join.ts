import type { FastifyPluginAsync } from 'fastify';
import { DomainError } from '../../domain-error.ts';
import type { ChatAppOptions } from '../app.ts';

export const joinRoutes: FastifyPluginAsync<ChatAppOptions> = async (app, { services }) => {
  const { rooms } = services;
  const view = { page: 'chat/join', fragment: 'partials/join-form' };

  app.get<{ Querystring: { code?: unknown } }>('/join', async (request, reply) => {
    const codeInput = request.query.code;
    if (codeInput === undefined || codeInput === '') return reply.render(view, { title: 'Join a chat' });
    try {
      await app.checkLimit('join', request);
      const lookup = await rooms.findForJoin(codeInput, request.device, request.actor);
      if (lookup.kind === 'member') return reply.redirect(`/rooms/${lookup.room.code}`, 303);
      return reply.render(view, {
        title: 'Join a chat',
        code: lookup.room.code,
        names: lookup.names,
        hostName: lookup.hostName,
        closesAt: lookup.room.expiresAt,
      });
    } catch (error) {
      // A code that is malformed, or that names no open room (or one locked to others: the same
      // answer): the form again, with the code as typed, so a typo is fixed where it was made.
      if (!(error instanceof DomainError) || (error.kind !== 'invalid' && error.kind !== 'not_found')) {
        throw error;
      }
      return reply.code(error.kind === 'invalid' ? 400 : 404).render(view, {
        title: 'Join a chat',
        code: typeof codeInput === 'string' ? codeInput.slice(0, 9) : '',
        error: error.message,
      });
    }
  });

  app.post<{ Params: { code: string }; Body: { name?: unknown } }>(
    '/rooms/:code/join',
    async (request, reply) => {
      await app.checkLimit('join', request);
      const device = reply.bindDevice();
      try {
        const result = await rooms.join(request.params.code, device, request.body?.name, request.actor);
        return reply.redirect(`/rooms/${result.room.code}`, 303);
      } catch (error) {
        if (!(error instanceof DomainError) || error.kind !== 'invalid') throw error;
        // A name that was not offered (or a malformed code): the form again, with the offered names.
        const lookup = await rooms
          .findForJoin(request.params.code, device, request.actor)
          .catch(() => undefined);
        return reply.code(400).render(view, {
          title: 'Join a chat',
          code: lookup?.room.code,
          names: lookup?.kind === 'joinable' ? lookup.names : undefined,
          hostName: lookup?.kind === 'joinable' ? lookup.hostName : undefined,
          closesAt: lookup?.room.expiresAt,
          error: error.message,
          returnTo: lookup ? `/join?code=${lookup.room.code}` : '/join',
        });
      }
    },
  );
};
