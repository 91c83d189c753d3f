import { normalizeIP } from '@fastify/rate-limit';
import type { FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Redis } from 'ioredis';
import type { AuditLog } from '../../audit/audit-log.ts';
import { DomainError } from '../../domain-error.ts';
import {
  LeasedRateLimiter,
  type LimitVerdict,
  leaseSize,
  memoryWindowCounter,
  redisWindowCounter,
} from '../../infra/rate-limiter.ts';

export type LimitName = 'create' | 'join' | 'send' | 'upload';

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Counts one request against a limit; rejects with `rate_limited` (429) or, if the store is
     * down, `unavailable` (503). Returns nothing when this process's lease allowed it at once, so
     * a hot route can skip the wait: `const limited = app.checkLimit(…); if (limited) await limited;`.
     */
    checkLimit(
      name: LimitName,
      request: FastifyRequest,
      context?: { roomCode?: string },
    ): Promise<void> | undefined;
  }
}

/** Keys whose refusal is remembered at once (see `firstRefusal`). */
const MAX_REFUSED_KEYS = 10_000;

export type RateLimitOptions = {
  redis: Redis | undefined;
  audit: AuditLog;
  perMinute: Record<LimitName, number>;
};

/**
 * Rate limits, in Redis when configured (shared by every process) or in memory. Room creation,
 * code look-ups and joins count per IP (per /64 for IPv6), each one in the store (a room holds
 * one of the 923,521 codes until it lapses, so one client must not be able to take them all).
 * Sends and uploads count per device, in leases (see LeasedRateLimiter) from Redis or from this
 * process's own counter, so a send usually makes no store call at all. When the store cannot answer, joins are refused and
 * everything else is counted by this process alone.
 */
export const rateLimitsPlugin = fp<RateLimitOptions>(
  async (app, { redis, audit, perMinute }) => {
    const shared = redis ? redisWindowCounter(redis, 'ccc-rate:') : memoryWindowCounter();
    const local = memoryWindowCounter();
    const windowMs = 60_000;
    // Keys carry the limit's name: the limiters share one store and must not share counters.
    // An IPv6 address counts by its /64 (one subscriber's usual allocation); IPv4-mapped as IPv4.
    const byAddress = (name: LimitName) => (request: FastifyRequest) =>
      `${name}:${normalizeIP(request.ip, 64)}`;
    const byDevice = (name: LimitName) => (request: FastifyRequest) =>
      `${name}:${request.device?.hashHex ?? normalizeIP(request.ip, 64)}`;
    const keyOf = {
      create: byAddress('create'),
      join: byAddress('join'),
      send: byDevice('send'),
      upload: byDevice('upload'),
    };
    const limiter = (name: LimitName, store: typeof shared, leased: boolean) =>
      new LeasedRateLimiter(store, {
        max: perMinute[name],
        windowMs,
        lease: leased ? leaseSize(perMinute[name]) : 1,
      });
    const limiters = {
      create: limiter('create', shared, false),
      join: limiter('join', shared, false),
      send: limiter('send', shared, true),
      upload: limiter('upload', shared, true),
    } satisfies Record<LimitName, LeasedRateLimiter>;
    const fallbacks = {
      create: limiter('create', local, false),
      send: limiter('send', local, true),
      upload: limiter('upload', local, true),
    };

    /**
     * Whether this refusal is the first for its key until the window lets it through again. Only
     * that one is audited: a client hammering a limit would otherwise write a row per refused
     * request (thousands a second) and bury the operators' log. Keys are few at a time; past
     * MAX_REFUSED_KEYS (a flood from many addresses) refusals go unrecorded until entries expire.
     */
    const refusedUntil = new Map<string, number>();
    /** When the window of this first refusal ends; undefined when it is not the first. */
    const firstRefusal = (key: string, retryAfterSeconds: number): number | undefined => {
      const now = Date.now();
      if ((refusedUntil.get(key) ?? 0) > now) return undefined;
      if (refusedUntil.size >= MAX_REFUSED_KEYS) {
        for (const [known, until] of refusedUntil) if (until <= now) refusedUntil.delete(known);
        if (refusedUntil.size >= MAX_REFUSED_KEYS) return undefined;
      }
      const until = now + retryAfterSeconds * 1000;
      refusedUntil.set(key, until);
      return until;
    };

    const check = async (
      name: LimitName,
      request: FastifyRequest,
      key: string,
      context: { roomCode?: string },
    ): Promise<void> => {
      let verdict: LimitVerdict;
      try {
        verdict = await limiters[name].hit(key);
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
        // Sends, uploads and new rooms stay limited, by this process alone, so a Redis outage
        // does not stop the conversation (each process keeps serving its own sockets).
        verdict = await fallbacks[name].hit(key);
      }
      if (verdict.allowed) return;
      const until = firstRefusal(key, verdict.retryAfterSeconds);
      if (until !== undefined) {
        await audit
          .record({
            source: 'chat',
            action: 'rate_limited',
            actor: request.actor,
            roomCode: context.roomCode ?? null,
            detail: {
              limit: name,
              until: new Date(until).toISOString(),
            },
          })
          .catch(() => undefined);
      }
      throw new DomainError(
        'rate_limited',
        `Too many attempts. Please wait ${verdict.retryAfterSeconds} s and try again.`,
        { retryAfterSeconds: verdict.retryAfterSeconds },
      );
    };
    app.decorate('checkLimit', (name: LimitName, request: FastifyRequest, context = {}) => {
      const key = keyOf[name](request);
      if (limiters[name].tryHit(key)?.allowed) return undefined;
      return check(name, request, key, context);
    });
  },
  { name: 'rate-limits', dependencies: ['device'] },
);
