import type { FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { HttpError } from '../../web/errors.ts';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * True unless the browser says the request comes from another site. Browsers send Origin and
 * Sec-Fetch-Site on form posts and WebSocket upgrades; curl and other CLI clients send neither,
 * and are allowed (they carry no ambient cookies from another site).
 */
export function isSameOrigin(request: FastifyRequest): boolean {
  const fetchSite = request.headers['sec-fetch-site'];
  if (typeof fetchSite === 'string' && fetchSite !== 'same-origin' && fetchSite !== 'none') return false;
  const origin = request.headers.origin;
  if (origin === undefined) return true;
  // Under Referrer-Policy: no-referrer, browsers send `Origin: null` even on a same-origin form
  // post; then Sec-Fetch-Site, which the browser sets and no page can, says where it came from.
  if (origin === 'null') return fetchSite === 'same-origin';
  try {
    return new URL(origin).host === request.headers.host;
  } catch {
    // "null" (sandboxed frames, privacy-sensitive redirects) and garbage are not our origin.
    return false;
  }
}

/** Refuses cross-site state-changing requests (the CSRF guard; SameSite=Lax cookies are the second line). */
export const sameOriginPlugin = fp(
  async (app) => {
    app.addHook('onRequest', (request, _reply, done) => {
      if (SAFE_METHODS.has(request.method) || isSameOrigin(request)) {
        done();
        return;
      }
      request.log.warn({ ip: request.ip, origin: request.headers.origin }, 'cross-site request refused');
      done(new HttpError(403, 'This form was sent from another site, so it was refused.'));
    });
  },
  { name: 'same-origin' },
);
