import fastifyRateLimit, { normalizeIP } from '@fastify/rate-limit';
import type { FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Redis } from 'ioredis';
import type { AuditLog } from '../../audit/audit-log.ts';
import { DomainError } from '../../domain-error.ts';

export type LimitName = 'join' | 'send' | 'upload';

declare module 'fastify' {
  interface FastifyInstance {
    /** Counts one request against a limit; throws `rate_limited` (429) or, if the store is down, `unavailable` (503). */
    checkLimit(name: LimitName, request: FastifyRequest, context?: { roomCode?: string }): Promise<void>;
  }
}

export type RateLimitOptions = {
  redis: Redis | undefined;
  audit: AuditLog;
  perMinute: Record<LimitName, number>;
};

/**
 * Rate limits on @fastify/rate-limit, in Redis when configured (shared by every process) or in
 * memory. Code look-ups and joins count per IP (per /64 for IPv6); sends and uploads per device.
 * When the store cannot answer, the limiter fails closed.
 */
export const rateLimitsPlugin = fp<RateLimitOptions>(
  async (app, { redis, audit, perMinute }) => {
    await app.register(fastifyRateLimit, {
      global: false,
      ...(redis ? { redis, nameSpace: 'ccc-rate:' } : {}),
      skipOnError: false,
    });
    // Keys carry the limit's name: the limiters share one store and must not share counters.
    // An IPv6 address counts by its /64 (one subscriber's usual allocation); IPv4-mapped as IPv4.
    const byAddress = (name: LimitName) => (request: FastifyRequest) =>
      `${name}:${normalizeIP(request.ip, 64)}`;
    const byDevice = (name: LimitName) => (request: FastifyRequest) =>
      `${name}:${request.device?.hashHex ?? normalizeIP(request.ip, 64)}`;
    const limiter = (name: LimitName, keyGenerator: (request: FastifyRequest) => string) =>
      app.createRateLimit({ max: perMinute[name], timeWindow: 60_000, keyGenerator });
    const limiters = {
      join: limiter('join', byAddress('join')),
      send: limiter('send', byDevice('send')),
      upload: limiter('upload', byDevice('upload')),
    } satisfies Record<LimitName, unknown>;

    const keyOf = { join: byAddress('join'), send: byDevice('send'), upload: byDevice('upload') };
    const fallback = createLocalWindow();

    app.decorate('checkLimit', async (name: LimitName, request: FastifyRequest, context = {}) => {
      let exceeded: { ttlInSeconds: number } | undefined;
      try {
        const result = await limiters[name](request);
        if (!result.isAllowed && result.isExceeded) exceeded = result;
      } catch (error) {
        request.log.warn(
          { err: { message: (error as Error).message }, limit: name },
          'rate-limit store unavailable',
        );
        if (name === 'join') {
          // Code look-ups fail closed: without a shared count, the code space could be walked.
          throw new DomainError(
            'unavailable',
            'We cannot check request limits right now, so this was refused. Please try again in a moment.',
            { retryAfterSeconds: 5 },
          );
        }
        // Sends and uploads stay limited, by this process alone, so a Redis outage does not stop
        // the conversation (each process keeps serving its own sockets).
        exceeded = fallback.hit(keyOf[name](request), perMinute[name], 60_000);
      }
      if (!exceeded) return;
      const result = exceeded;
      await audit
        .record({
          source: 'chat',
          action: 'rate_limited',
          actor: request.actor,
          roomCode: context.roomCode ?? null,
          detail: { limit: name },
        })
        .catch(() => undefined);
      throw new DomainError(
        'rate_limited',
        `Too many attempts. Please wait ${result.ttlInSeconds} s and try again.`,
        {
          retryAfterSeconds: Math.max(1, result.ttlInSeconds),
        },
      );
    });
  },
  { name: 'rate-limits', dependencies: ['device'] },
);

/** A per-process fixed-window counter: the stand-in when the shared store cannot answer. */
function createLocalWindow() {
  const windows = new Map<string, { count: number; resetAt: number }>();
  return {
    hit(key: string, max: number, windowMs: number): { ttlInSeconds: number } | undefined {
      const now = Date.now();
      let window = windows.get(key);
      if (!window || window.resetAt <= now) {
        if (windows.size > 50_000) windows.clear();
        window = { count: 0, resetAt: now + windowMs };
        windows.set(key, window);
      }
      window.count += 1;
      return window.count > max ? { ttlInSeconds: Math.ceil((window.resetAt - now) / 1000) } : undefined;
    },
  };
}
