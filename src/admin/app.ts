import fastifyCookie from '@fastify/cookie';
import Fastify, { type FastifyInstance, type FastifyPluginAsync, type FastifyRequest } from 'fastify';
import { serverOptions } from '../chat/app.ts';
import { httpMetricsPlugin } from '../metrics.ts';
import type { Resources } from '../resources.ts';
import type { Services } from '../services.ts';
import { errorHandlerPlugin } from '../web/errors.ts';
import { healthRoutes } from '../web/health.ts';
import { renderPlugin } from '../web/render.ts';
import { securityHeadersPlugin } from '../web/security-headers.ts';
import { stagedClosePlugin } from '../web/staged-close.ts';
import { staticAssets } from '../web/static-assets.ts';
import { returnPathOf, themeOf, themeRoutes } from '../web/theme.ts';
import { basicAuthPlugin } from './basic-auth.ts';
import { cidrGuardPlugin, hostGuardPlugin, readOnlyPlugin } from './cidr-guard.ts';
import { adminFmt } from './format.ts';
import { auditRoutes } from './routes/audit.ts';
import { dashboardRoutes } from './routes/dashboard.ts';
import { metricsRoutes } from './routes/metrics.ts';
import { roomRoutes } from './routes/rooms.ts';
import { viewAuditPlugin } from './view-audit.ts';

export type AdminAppOptions = { resources: Resources; services: Services };

/**
 * The read-only admin listener. The CIDR guard runs first, on every route, /health included;
 * then the optional password, then the read-only check.
 */
export const adminApp: FastifyPluginAsync<AdminAppOptions> = async (app, { resources, services }) => {
  await app.register(securityHeadersPlugin);
  // Admin pages show decrypted transcripts and IP addresses: no browser or proxy keeps them.
  // (Static assets set their own caching.)
  app.addHook('onRequest', (_request, reply, done) => {
    reply.header('cache-control', 'no-store');
    done();
  });
  await app.register(stagedClosePlugin);
  await app.register(fastifyCookie);
  await app.register(renderPlugin, {
    views: services.views,
    defaults: (request: FastifyRequest) => ({
      theme: themeOf(request),
      returnTo: returnPathOf(request),
      area: 'admin',
      fmt: adminFmt,
    }),
  });
  await app.register(errorHandlerPlugin);
  await app.register(cidrGuardPlugin, { allowedCidrs: resources.config.allowedAdminCidrs });
  await app.register(hostGuardPlugin, { hostnames: resources.config.adminHostnames });
  await app.register(httpMetricsPlugin, { metrics: services.metrics, listener: 'admin' });
  const { adminPasswordHash } = resources.config;
  if (adminPasswordHash) await app.register(basicAuthPlugin, { passwordHash: adminPasswordHash });
  await app.register(readOnlyPlugin);
  await app.register(viewAuditPlugin, { audit: services.audit, db: resources.db });
  await app.register(staticAssets);
  await app.register(healthRoutes, { probe: services.health });
  await app.register(themeRoutes, { method: 'GET' });
  await app.register(metricsRoutes, { resources, services });
  await app.register(dashboardRoutes, { resources, services });
  await app.register(roomRoutes, { resources, services });
  await app.register(auditRoutes, { resources, services });
};

export async function createAdminServer(resources: Resources, services: Services): Promise<FastifyInstance> {
  const app = Fastify(serverOptions(resources, 'admin'));
  await app.register(adminApp, { resources, services });
  return app;
}
