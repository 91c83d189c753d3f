import fastifyCookie from '@fastify/cookie';
import fastifyWebsocket from '@fastify/websocket';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyPluginAsync,
  type FastifyRequest,
} from 'fastify';
import { httpMetricsPlugin } from '../metrics.ts';
import type { Resources } from '../resources.ts';
import type { Services } from '../services.ts';
import { errorHandlerPlugin } from '../web/errors.ts';
import { formBodyPlugin } from '../web/form-body.ts';
import { fmt } from '../web/format.ts';
import { healthRoutes } from '../web/health.ts';
import { renderPlugin } from '../web/render.ts';
import { securityHeadersPlugin } from '../web/security-headers.ts';
import { stagedClosePlugin } from '../web/staged-close.ts';
import { staticAssets } from '../web/static-assets.ts';
import { returnPathOf, themeOf, themeRoutes } from '../web/theme.ts';
import { devicePlugin } from './plugins/device.ts';
import { rateLimitsPlugin } from './plugins/rate-limits.ts';
import { sameOriginPlugin } from './plugins/same-origin.ts';
import { attachmentRoutes } from './routes/attachments.ts';
import { formUrlRoutes } from './routes/form-urls.ts';
import { homeRoutes } from './routes/home.ts';
import { joinRoutes } from './routes/join.ts';
import { liveRoutes } from './routes/live.ts';
import { messageRoutes } from './routes/messages.ts';
import { roomRoutes } from './routes/rooms.ts';

export type ChatAppOptions = { resources: Resources; services: Services };

/** The public chat listener, as a plugin (so tests and main build it the same way). */
export const chatApp: FastifyPluginAsync<ChatAppOptions> = async (app, { resources, services }) => {
  await app.register(securityHeadersPlugin);
  await app.register(stagedClosePlugin);
  await app.register(httpMetricsPlugin, { metrics: services.metrics, listener: 'chat' });
  await app.register(fastifyCookie);
  await app.register(formBodyPlugin, { bodyLimit: 64 * 1024 });
  await app.register(renderPlugin, {
    views: services.views,
    defaults: (request: FastifyRequest) => ({
      theme: themeOf(request),
      returnTo: returnPathOf(request),
      roomTtlHours: resources.config.roomTtlHours,
      fmt,
    }),
  });
  await app.register(errorHandlerPlugin);
  await app.register(staticAssets);
  await app.register(devicePlugin, { cookieSecure: resources.config.cookieSecure });
  await app.register(sameOriginPlugin);
  await app.register(rateLimitsPlugin, {
    redis: resources.redis,
    audit: services.audit,
    perMinute: {
      create: resources.config.createRatePerMinute,
      join: resources.config.joinRatePerMinute,
      send: resources.config.sendRatePerMinute,
      upload: resources.config.uploadRatePerMinute,
    },
  });
  await app.register(healthRoutes, { probe: services.health });
  await app.register(homeRoutes);
  await app.register(themeRoutes, { method: 'POST' });
  await app.register(fastifyWebsocket, {
    // No client tracking: the hub knows every socket (and closes them all on shutdown); ws's
    // tracking would add a Set entry and a 'close' closure to every socket. permessage-deflate
    // stays off (ws's server default): it would cost ~300 KB of zlib state per socket.
    options: { maxPayload: 16 * 1024, clientTracking: false, perMessageDeflate: false },
    // On shutdown every socket hears 1012 (service restart), on which htmx reconnects.
    preClose: (done) => {
      void services.hub.close().finally(done);
    },
  });
  await app.register(roomRoutes, { resources, services });
  await app.register(joinRoutes, { resources, services });
  await app.register(messageRoutes, { resources, services });
  await app.register(attachmentRoutes, { resources, services });
  await app.register(liveRoutes, { resources, services });
  await app.register(formUrlRoutes);
};

/** Fastify server options shared by both listeners. */
export function serverOptions(resources: Resources, listener: 'chat' | 'admin') {
  const { config } = resources;
  return {
    // Typed as Fastify's base logger so both listeners share one FastifyInstance type.
    loggerInstance: resources.logger.child({ listener }) as FastifyBaseLogger,
    trustProxy: config.trustProxy.length > 0 ? config.trustProxy : false,
    bodyLimit: 64 * 1024,
    // Slow or idle clients cannot hold connections open for ever.
    requestTimeout: 120_000,
    connectionTimeout: 60_000,
    keepAliveTimeout: 10_000,
    // `/rooms/ABCD/` is `/rooms/ABCD`, as people type it.
    routerOptions: { maxParamLength: 200, ignoreTrailingSlash: true },
    return503OnClosing: true,
    forceCloseConnections: 'idle' as const,
  };
}

export async function createChatServer(resources: Resources, services: Services): Promise<FastifyInstance> {
  const app = Fastify(serverOptions(resources, 'chat'));
  await app.register(chatApp, { resources, services });
  return app;
}
