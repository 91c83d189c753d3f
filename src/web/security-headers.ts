import helmet from '@fastify/helmet';
import Fastify from 'fastify';
import fp from 'fastify-plugin';

/**
 * Security headers on every response of a listener. Scripts and styles come only from our own
 * origin (no inline script, no eval), nothing may frame us, and no referrer leaves the site, so a
 * room code in a URL is never sent to another origin.
 */
const HELMET_OPTIONS = {
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
  referrerPolicy: { policy: 'no-referrer' as const },
  frameguard: { action: 'deny' as const },
  crossOriginEmbedderPolicy: false,
  // Set on the chat only when served over TLS; the admin panel is plain HTTP on a LAN.
  strictTransportSecurity: false,
};

/** Headers of a bare response, which are not helmet's. */
const NOT_HELMET = new Set(['content-type', 'content-length', 'date', 'connection', 'keep-alive']);

/**
 * The headers helmet sets with these options. They are the same on every response, but
 * @fastify/helmet builds helmet's whole middleware (parsing the CSP directives) on every request,
 * which cost a sixth of the CPU of a /health request (measured with the benchmark). So helmet
 * runs once, here, on a throwaway instance, and its headers are replayed.
 */
async function helmetHeaders(): Promise<Record<string, string>> {
  const probe = Fastify({ logger: false });
  await probe.register(helmet, HELMET_OPTIONS);
  probe.get('/', async () => '');
  try {
    const response = await probe.inject({ url: '/' });
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(response.headers)) {
      if (!NOT_HELMET.has(name) && typeof value === 'string') headers[name] = value;
    }
    if (!headers['content-security-policy']) throw new Error('helmet set no Content-Security-Policy');
    return headers;
  } finally {
    await probe.close();
  }
}

export const securityHeadersPlugin = fp(
  async (app) => {
    const headers = await helmetHeaders();
    // Routes may still override one (e.g. the conversation frame's own CSP).
    app.addHook('onRequest', (_request, reply, done) => {
      reply.headers(headers);
      done();
    });
  },
  { name: 'security-headers' },
);
