import type { FastifyPluginAsync } from 'fastify';
import { normalizeCode } from '../../rooms/codes.ts';

type CodeParams = { Params: { code: string } };

/**
 * The URLs that only take a form's POST, reached by GET: without JavaScript a refused post
 * leaves the browser on the form's URL, and a reload or Enter in the address bar asks for it.
 * Each leads back to where its form is, instead of a 404 "nothing at this address". The target
 * depends only on the URL, so a locked room's code still ends at the unknown-code 404.
 */
export const formUrlRoutes: FastifyPluginAsync = async (app) => {
  app.get('/rooms', async (_request, reply) => reply.redirect('/host', 303));
  app.get<CodeParams>('/rooms/:code/activate', async (request, reply) =>
    reply.redirect(`/rooms/${normalizeCode(request.params.code)}`, 303),
  );
  app.get<CodeParams>('/rooms/:code/join', async (request, reply) =>
    reply.redirect(`/join?code=${normalizeCode(request.params.code)}`, 303),
  );
  app.get<CodeParams>('/rooms/:code/attachments', async (request, reply) =>
    reply.redirect(`/rooms/${normalizeCode(request.params.code)}`, 303),
  );
};
