import type { FastifyPluginAsync } from 'fastify';
import type { AdminAppOptions } from '../app.ts';

export const metricsRoutes: FastifyPluginAsync<AdminAppOptions> = async (app, { services }) => {
  const { registry } = services.metrics;
  app.get('/metrics', { logLevel: 'warn' }, async (_request, reply) =>
    reply
      .type(registry.contentType)
      .header('cache-control', 'no-store')
      .send(await registry.metrics()),
  );
};
