import { isIP } from 'node:net';
import fp from 'fastify-plugin';
import { recordedIp } from '../audit/audit-log.ts';
import { toBlockList } from '../config.ts';
import { HttpError } from '../web/errors.ts';

/** `::ffff:10.1.2.3` is the IPv4 peer 10.1.2.3 seen through a dual-stack socket. */
export function normalizeAddress(address: string): { address: string; family: 'ipv4' | 'ipv6' } | undefined {
  const plain = recordedIp(address).replace(/%.*$/, '');
  const family = isIP(plain);
  if (family === 0) return undefined;
  return { address: plain, family: family === 4 ? 'ipv4' : 'ipv6' };
}

export function createAddressCheck(cidrs: string[]): (address: string | undefined) => boolean {
  const allowed = toBlockList(cidrs);
  return (address) => {
    if (!address) return false;
    const normalized = normalizeAddress(address);
    return normalized !== undefined && allowed.check(normalized.address, normalized.family);
  };
}

/**
 * Admits only requests whose client address is in ALLOWED_ADMIN_CIDRS. The address is the TCP
 * peer, unless TRUST_PROXY names that peer as a proxy (then Fastify takes it from
 * X-Forwarded-For): a spoofed header from anywhere else changes nothing.
 */
export const cidrGuardPlugin = fp<{ allowedCidrs: string[] }>(
  async (app, { allowedCidrs }) => {
    const isAllowed = createAddressCheck(allowedCidrs);
    app.addHook('onRequest', async (request) => {
      if (isAllowed(request.ip)) return;
      request.log.warn(
        { ip: request.ip, peer: request.socket.remoteAddress, url: request.url },
        'admin access denied',
      );
      throw new HttpError(403, 'The admin panel is only reachable from the allowed networks.');
    });
  },
  { name: 'cidr-guard' },
);

/**
 * Admits only requests addressed to the panel by an IP address, `localhost` or a name in
 * ADMIN_HOSTNAMES. A page on the internet can point its own name at the panel's LAN address (DNS
 * rebinding): the operator's browser then sends from an allowed address, and the page's script
 * reads decrypted transcripts. Such a request carries the page's host name, and stops here.
 */
export const hostGuardPlugin = fp<{ hostnames: string[] }>(
  async (app, { hostnames }) => {
    const allowed = new Set(['localhost', ...hostnames]);
    app.addHook('onRequest', async (request) => {
      const host = hostnameOf(request.headers.host);
      if (host !== undefined && (isIP(host) !== 0 || allowed.has(host))) return;
      request.log.warn({ ip: request.ip, host: request.headers.host?.slice(0, 100) }, 'admin host refused');
      throw new HttpError(
        403,
        'Open the admin panel by its IP address, or add the name you use to ADMIN_HOSTNAMES.',
      );
    });
  },
  { name: 'host-guard' },
);

/** The host name of a Host header: lower case, without the port or IPv6 brackets. */
function hostnameOf(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const bracketed = /^\[([0-9a-f:.]+)\](?::\d+)?$/i.exec(header);
  if (bracketed) return bracketed[1]?.toLowerCase();
  return header.replace(/:\d+$/, '').toLowerCase();
}

/** The panel is read-only: anything but GET and HEAD is refused before any route runs. */
export const readOnlyPlugin = fp(
  async (app) => {
    app.addHook('onRequest', async (request) => {
      if (request.method === 'GET' || request.method === 'HEAD') return;
      throw new HttpError(405, 'The admin panel is read-only.', { allow: 'GET, HEAD' });
    });
  },
  { name: 'read-only' },
);
