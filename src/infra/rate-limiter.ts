import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';

/** A fixed-window counter store: adds `amount` to a key's count and says where the window stands. */
export type WindowCounter = {
  add(key: string, amount: number, windowMs: number): Promise<{ count: number; ttlMs: number }>;
};

/**
 * INCRBY and, on a window's first hit, PEXPIRE, in one atomic script: the window of a key starts
 * at its first hit and lasts `windowMs`, the same in every process.
 */
const ADD_SCRIPT = `
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {count, ttl}`;

const ADD_SCRIPT_SHA = createHash('sha1').update(ADD_SCRIPT).digest('hex');

/** The shared counter in Redis (every process sees the same count). */
export function redisWindowCounter(redis: Redis, prefix: string): WindowCounter {
  return {
    async add(key, amount, windowMs) {
      const args = [1, `${prefix}${key}`, amount, windowMs] as const;
      // EVALSHA; a Redis that does not know the script yet (first use, a restart) gets it by EVAL,
      // which also caches it there.
      const reply = await redis.evalsha(ADD_SCRIPT_SHA, ...args).catch((error: unknown) => {
        if (!String((error as Error).message).startsWith('NOSCRIPT')) throw error;
        return redis.eval(ADD_SCRIPT, ...args);
      });
      const [count, ttlMs] = reply as [number, number];
      return { count, ttlMs };
    },
  };
}

/** A per-process counter: the store without Redis, and the stand-in when Redis cannot answer. */
export function memoryWindowCounter(maxKeys = 50_000): WindowCounter {
  const windows = new Map<string, { count: number; resetAt: number }>();
  return {
    async add(key, amount, windowMs) {
      const now = Date.now();
      let window = windows.get(key);
      if (!window || window.resetAt <= now) {
        if (windows.size >= maxKeys) {
          for (const [stale, entry] of windows) if (entry.resetAt <= now) windows.delete(stale);
          if (windows.size >= maxKeys) windows.clear();
        }
        window = { count: 0, resetAt: now + windowMs };
        windows.set(key, window);
      }
      window.count += amount;
      return { count: window.count, ttlMs: window.resetAt - now };
    },
  };
}

export type LimitVerdict = { allowed: true } | { allowed: false; retryAfterSeconds: number };

const ALLOWED: LimitVerdict = Object.freeze({ allowed: true });

type Lease = {
  /** Units taken from the shared count and not yet spent by this process. */
  remaining: number;
  /** The shared window is full: refuse without asking until it ends. */
  full: boolean;
  /** When the shared window ends, by this process's clock. */
  endsAt: number;
};

/**
 * At most `max` hits per key in a window of `windowMs`, counted in a shared store. A process takes
 * its units in leases: one store call adds `lease` units to the shared count and keeps those it
 * was granted (up to `max`) to spend locally, so with a lease of n only one hit in n needs the
 * store; a full window is remembered until it ends, so refusals cost no call either. When a
 * quarter of a lease is left, the next one is asked for in the background, so a key in steady use
 * never waits for the store (see docs/performance.md: every sender waiting for its lease at once
 * was a latency spike). The shared count never passes `max` in granted units, so no key ever gets
 * more than `max` hits per window across all processes; a key served by several processes at once
 * may be refused a few units early (units another process leased and has not spent yet: at most a
 * lease and a quarter per process). With a lease of 1 every hit is counted in the store, exactly.
 */
export class LeasedRateLimiter {
  private readonly leases = new Map<string, Lease>();
  /** Store calls in flight per key: concurrent hits of one key share a call. */
  private readonly asking = new Map<string, Promise<void>>();
  /** Units left at which the next lease is asked for ahead of need (0: never ahead, as with a lease of 1). */
  private readonly refillAt: number;

  constructor(
    private readonly store: WindowCounter,
    readonly settings: { max: number; windowMs: number; lease: number; maxKeys?: number },
  ) {
    this.refillAt = Math.floor(settings.lease / 4);
  }

  /**
   * Counts one hit if this process's lease decides it (units left, or the window known full), with
   * no wait; undefined when only the store can answer (see `hit`).
   */
  tryHit(key: string): LimitVerdict | undefined {
    const now = Date.now();
    const lease = this.leases.get(key);
    if (!lease || lease.endsAt <= now) return undefined;
    if (lease.remaining > 0) {
      lease.remaining -= 1;
      const low = lease.remaining > 0 && lease.remaining <= this.refillAt;
      if (low && !lease.full && !this.asking.has(key)) {
        // Nobody waits for this call; a failure shows when a hit next needs the store.
        this.ask(key).catch(() => undefined);
      }
      return ALLOWED;
    }
    if (lease.full)
      return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((lease.endsAt - now) / 1000)) };
    return undefined;
  }

  /** Counts one hit; rejects when the store cannot answer (the caller decides what that means). */
  async hit(key: string): Promise<LimitVerdict> {
    for (;;) {
      const verdict = this.tryHit(key);
      if (verdict) return verdict;
      await (this.asking.get(key) ?? this.ask(key));
    }
  }

  /** One store call for a key at a time; hits that need it meanwhile wait for the same one. */
  private ask(key: string): Promise<void> {
    const asking = this.takeLease(key).finally(() => this.asking.delete(key));
    this.asking.set(key, asking);
    return asking;
  }

  private async takeLease(key: string): Promise<void> {
    const { max, windowMs, lease: size } = this.settings;
    const { count, ttlMs } = await this.store.add(key, size, windowMs);
    // The units this call added are count - size + 1 .. count; those up to max are ours.
    const granted = Math.max(0, Math.min(size, max - (count - size)));
    const now = Date.now();
    const endsAt = now + ttlMs;
    const current = this.leases.get(key);
    // Asked for ahead of need, the units join those left of the same window. A window that ended
    // meanwhile was replaced by one ending about `windowMs` later: its leftovers are not carried.
    if (current && current.endsAt > now && endsAt < current.endsAt + windowMs / 2) {
      current.remaining += granted;
      current.full = granted < size;
      return;
    }
    this.remember(key, { remaining: granted, full: granted < size, endsAt });
  }

  private remember(key: string, lease: Lease): void {
    const maxKeys = this.settings.maxKeys ?? 50_000;
    if (this.leases.size >= maxKeys && !this.leases.has(key)) {
      const now = Date.now();
      for (const [stale, entry] of this.leases) if (entry.endsAt <= now) this.leases.delete(stale);
      // Forgetting a lease only forgoes its unspent units: the shared count stays right.
      if (this.leases.size >= maxKeys) this.leases.clear();
    }
    this.leases.set(key, lease);
  }
}

/** The lease for a limit of `max` per window: about a twentieth of it, at most 50 (see docs/security.md, Limits). */
export function leaseSize(max: number): number {
  return Math.max(1, Math.min(50, Math.floor(max / 20)));
}
