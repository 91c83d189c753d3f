import helmet from '@fastify/helmet';
import fp from 'fastify-plugin';

/**
 * Security headers on every response of a listener. Scripts and styles come only from our own
 * origin (no inline script, no eval), nothing may frame us, and no referrer leaves the site, so a
 * room code in a URL is never sent to another origin.
 */
export const securityHeadersPlugin = fp(
  async (app) => {
    await app.register(helmet, {
      contentSecurityPolicy: {
        useDefaults: false,
        directives: {
          'default-src': ["'self'"],
          'script-src': ["'self'"],
          'style-src': ["'self'"],
          'img-src': ["'self'", 'blob:', 'data:'],
          'connect-src': ["'self'"],
          'font-src': ["'self'"],
          'object-src': ["'none'"],
          'base-uri': ["'none'"],
          'form-action': ["'self'"],
          'frame-ancestors': ["'none'"],
        },
      },
      referrerPolicy: { policy: 'no-referrer' },
      frameguard: { action: 'deny' },
      crossOriginEmbedderPolicy: false,
      // Set on the chat only when served over TLS; the admin panel is plain HTTP on a LAN.
      strictTransportSecurity: false,
    });
  },
  { name: 'security-headers' },
);
