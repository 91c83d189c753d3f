import type { FastifyPluginAsync } from 'fastify';
import type { AdminAppOptions } from '../app.ts';

export const dashboardRoutes: FastifyPluginAsync<AdminAppOptions> = async (app) => {
  app.get('/', async (_request, reply) => reply.render({ page: 'admin/dashboard' }, { title: 'Admin' }));
};
