import type { FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { type Actor, recordedIp } from '../../audit/audit-log.ts';
import { type Device, deviceFromToken, newDevice } from '../../rooms/devices.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** The device named by this request's cookie, if it carries a well-formed one. */
    device: Device | undefined;
    /** Who is asking, for the audit trail: IP, user agent, device hash. */
    actor: Actor;
  }
  interface FastifyReply {
    /** The request's device, or a new one whose cookie this reply sets. */
    bindDevice(): Device;
  }
}

const PLAIN_NAME = 'ccc_device';
/** Over HTTPS the cookie gets the __Host- prefix: Secure, host-only, path=/, so no subdomain can set it. */
const SECURE_NAME = '__Host-ccc_device';
const MAX_AGE_SECONDS = 60 * 60 * 24 * 30;

export const devicePlugin = fp<{ cookieSecure: boolean | undefined }>(
  async (app, { cookieSecure }) => {
    const isSecure = (request: FastifyRequest) => cookieSecure === true || request.protocol === 'https';

    app.decorateRequest('device', undefined);
    app.decorateRequest('actor', undefined as unknown as Actor);
    // Hooks on every request take the callback form: an async hook costs a promise and a
    // microtask turn per request (see docs/performance.md).
    app.addHook('onRequest', (request, _reply, done) => {
      const cookies = request.cookies ?? {};
      // Over HTTPS only the __Host- cookie counts: a plain one can be planted by a sibling
      // subdomain or on the network (device fixation), a __Host- one cannot.
      request.device = deviceFromToken(isSecure(request) ? cookies[SECURE_NAME] : cookies[PLAIN_NAME]);
      const userAgent = request.headers['user-agent'];
      request.actor = {
        ip: recordedIp(request.ip),
        userAgent: typeof userAgent === 'string' ? userAgent : undefined,
        deviceHash: request.device?.hashHex,
      };
      done();
    });

    app.decorateReply('bindDevice', function bindDevice(this: FastifyReply): Device {
      const request = this.request;
      if (request.device) return request.device;
      const device = newDevice();
      const secure = isSecure(request);
      this.setCookie(secure ? SECURE_NAME : PLAIN_NAME, device.token, {
        path: '/',
        httpOnly: true,
        sameSite: 'lax',
        secure,
        maxAge: MAX_AGE_SECONDS,
      });
      request.device = device;
      request.actor = { ...request.actor, deviceHash: device.hashHex };
      return device;
    });
  },
  { name: 'device', dependencies: ['@fastify/cookie'] },
);
