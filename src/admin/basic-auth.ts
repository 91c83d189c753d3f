import { createHash } from 'node:crypto';
import fp from 'fastify-plugin';
import { HttpError } from '../web/errors.ts';
import { parsePasswordHash, verifyPassword } from './password.ts';

/** A verified Authorization header is trusted this long, so pages and their assets skip scrypt. */
const VERIFIED_TTL_MS = 5 * 60_000;
const VERIFIED_LIMIT = 64;
/** Load balancers and docker health checks probe this without credentials; it shows no data. */
const OPEN_PATHS = new Set(['/health']);

const challenge = () =>
  new HttpError(401, 'The admin panel needs its password (any user name).', {
    'www-authenticate': 'Basic realm="ChittyChattyChat admin", charset="UTF-8"',
  });

/** The password from `Authorization: Basic base64(user:password)`; the user name is not checked. */
export function basicPassword(header: string | undefined): string | undefined {
  const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? '');
  if (!match) return undefined;
  const decoded = Buffer.from(match[1] as string, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon === -1 ? undefined : decoded.slice(colon + 1);
}

/**
 * The optional second factor: with ADMIN_PASSWORD_HASH set, every admin request (after the CIDR
 * guard) must carry HTTP Basic credentials whose password matches the scrypt hash.
 */
export const basicAuthPlugin = fp<{ passwordHash: string }>(
  async (app, { passwordHash }) => {
    const stored = parsePasswordHash(passwordHash);
    const verified = new Map<string, number>();
    app.addHook('onRequest', async (request) => {
      if (OPEN_PATHS.has(request.url.split('?')[0] as string)) return;
      const header = request.headers.authorization;
      const password = basicPassword(header);
      if (password === undefined) throw challenge();
      const fingerprint = createHash('sha256')
        .update(header as string)
        .digest('hex');
      const now = Date.now();
      if ((verified.get(fingerprint) ?? 0) > now) return;
      if (!(await verifyPassword(password, stored))) {
        request.log.warn({ ip: request.ip, url: request.url }, 'admin password rejected');
        throw challenge();
      }
      if (verified.size >= VERIFIED_LIMIT) verified.clear();
      verified.set(fingerprint, now + VERIFIED_TTL_MS);
    });
  },
  { name: 'basic-auth' },
);
