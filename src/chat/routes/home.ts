import type { FastifyPluginAsync } from 'fastify';

export const homeRoutes: FastifyPluginAsync = async (app) => {
  app.get('/', async (_request, reply) => reply.render({ page: 'chat/home' }, { title: undefined }));
};
