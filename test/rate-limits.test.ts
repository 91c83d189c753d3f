import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import {
  LeasedRateLimiter,
  leaseSize,
  memoryWindowCounter,
  redisWindowCounter,
  type WindowCounter,
} from '../src/infra/rate-limiter.ts';
import { buildTestApp } from './helpers/app.ts';
import { Client, openRoom } from './helpers/client.ts';
import { type RedisServer, startRedis } from './helpers/servers.ts';

/** Counts the calls a limiter makes to its store; `settled()` waits for those in flight. */
function counting(store: WindowCounter): WindowCounter & { calls: number; settled(): Promise<void> } {
  const inFlight = new Set<Promise<unknown>>();
  const counted = {
    calls: 0,
    add(key: string, amount: number, windowMs: number) {
      counted.calls += 1;
      const call = store.add(key, amount, windowMs);
      inFlight.add(call);
      void call.finally(() => inFlight.delete(call)).catch(() => undefined);
      return call;
    },
    async settled() {
      await Promise.allSettled([...inFlight]);
      // The limiter takes the answer in a continuation of its own; let it run.
      await new Promise((resolve) => setImmediate(resolve));
    },
  };
  return counted;
}

async function hits(limiter: LeasedRateLimiter, key: string, times: number): Promise<boolean[]> {
  const verdicts: boolean[] = [];
  for (let index = 0; index < times; index++) verdicts.push((await limiter.hit(key)).allowed);
  return verdicts;
}

describe('leased rate limiter on Redis', () => {
  let server: RedisServer;
  let redis: Redis;
  before(async () => {
    server = await startRedis();
    redis = new Redis(server.url);
  });
  after(async () => {
    redis.disconnect();
    await server.stop();
  });

  it('takes units in leases, asking for the next one when a quarter of a lease is left', async () => {
    const store = counting(redisWindowCounter(redis, 'test-a:'));
    const limiter = new LeasedRateLimiter(store, { max: 100, windowMs: 60_000, lease: 8 });
    assert.deepEqual(await hits(limiter, 'k', 5), [true, true, true, true, true]);
    assert.equal(store.calls, 1);
    assert.equal(await redis.get('test-a:k'), '8');
    // The 6th hit leaves 2 units (a quarter of 8): the next lease is asked for, and nobody waits.
    assert.equal(limiter.tryHit('k')?.allowed, true);
    assert.equal(store.calls, 2);
    await store.settled();
    assert.equal(await redis.get('test-a:k'), '16');
    assert.deepEqual(await hits(limiter, 'k', 7), [true, true, true, true, true, true, true]);
    assert.equal(store.calls, 2, 'the units asked for ahead joined those left');
    const ttl = await redis.pttl('test-a:k');
    assert.ok(ttl > 55_000 && ttl <= 60_000, `the window is set on the first hit (${ttl} ms)`);
  });

  it('never makes a key in steady use wait for the store', async () => {
    const store = counting(redisWindowCounter(redis, 'test-g:'));
    const limiter = new LeasedRateLimiter(store, { max: 1_000, windowMs: 60_000, lease: 8 });
    assert.equal((await limiter.hit('k')).allowed, true);
    for (let index = 0; index < 40; index++) {
      // Synchronous: undefined would mean this hit had to wait for Redis.
      assert.equal(limiter.tryHit('k')?.allowed, true, `hit ${index + 2} was decided without waiting`);
      await store.settled();
    }
    const counted = Number(await redis.get('test-g:k'));
    assert.equal(counted, store.calls * 8);
    assert.ok(counted - 41 <= 8 + 2, `at most a lease and a quarter unspent (${counted - 41})`);
  });

  it('grants no more than the limit when the next lease comes from a nearly full window', async () => {
    const store = counting(redisWindowCounter(redis, 'test-h:'));
    const limiter = new LeasedRateLimiter(store, { max: 6, windowMs: 60_000, lease: 4 });
    const verdicts: boolean[] = [];
    for (let index = 0; index < 8; index++) {
      verdicts.push((await limiter.hit('k')).allowed);
      await store.settled();
    }
    assert.deepEqual(verdicts, [true, true, true, true, true, true, false, false]);
    assert.equal(store.calls, 2, 'a full window is remembered');
  });

  it('never lets two processes together pass the limit, and refuses without asking once full', async () => {
    const shared = redisWindowCounter(redis, 'test-b:');
    const first = counting(shared);
    const second = counting(shared);
    const settings = { max: 10, windowMs: 60_000, lease: 3 };
    const a = new LeasedRateLimiter(first, settings);
    const b = new LeasedRateLimiter(second, settings);
    const verdicts = [...(await hits(a, 'k', 4)), ...(await hits(b, 'k', 8)), ...(await hits(a, 'k', 8))];
    const allowed = verdicts.filter(Boolean).length;
    assert.ok(allowed <= 10, `at most the limit passes (${allowed})`);
    // a leased the units 1-6, b 7-9 and the 10th; a's 5th and 6th were not spent when b ran.
    assert.ok(allowed >= 10 - (settings.lease - 1), `at most a lease less (${allowed})`);
    const callsWhenFull = first.calls + second.calls;
    const refused = await a.hit('k');
    assert.equal(refused.allowed, false);
    assert.ok(!refused.allowed && refused.retryAfterSeconds > 0 && refused.retryAfterSeconds <= 60);
    assert.equal(first.calls + second.calls, callsWhenFull, 'a full window is remembered');
  });

  it('shares one store call among concurrent hits of a key', async () => {
    const store = counting(redisWindowCounter(redis, 'test-c:'));
    const limiter = new LeasedRateLimiter(store, { max: 100, windowMs: 60_000, lease: 8 });
    const verdicts = await Promise.all([1, 2, 3, 4].map(() => limiter.hit('k')));
    assert.ok(verdicts.every((verdict) => verdict.allowed));
    assert.equal(store.calls, 1);
  });

  it('allows again once the window is over', async () => {
    const limiter = new LeasedRateLimiter(redisWindowCounter(redis, 'test-d:'), {
      max: 2,
      windowMs: 300,
      lease: 1,
    });
    assert.deepEqual(await hits(limiter, 'k', 3), [true, true, false]);
    await new Promise((resolve) => setTimeout(resolve, 400));
    assert.deepEqual(await hits(limiter, 'k', 3), [true, true, false]);
  });

  it('rejects when Redis cannot answer, and works again when it returns', async () => {
    const local = await startRedis();
    const client = new Redis(local.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    client.on('error', () => undefined);
    await new Promise((resolve) => client.once('ready', resolve));
    try {
      const limiter = new LeasedRateLimiter(redisWindowCounter(client, 'test-e:'), {
        max: 5,
        windowMs: 60_000,
        lease: 1,
      });
      assert.equal((await limiter.hit('k')).allowed, true);
      await local.stop();
      await assert.rejects(limiter.hit('k'));
      await local.start();
      const deadline = Date.now() + 5_000;
      for (;;) {
        const verdict = await limiter.hit('k').catch(() => undefined);
        if (verdict) {
          // a restarted Redis has lost its scripts and counts: the script is loaded again
          assert.equal(verdict.allowed, true);
          break;
        }
        assert.ok(Date.now() < deadline, 'Redis did not come back');
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    } finally {
      client.disconnect();
      await local.stop();
    }
  });

  it('past its key bound forgets only unspent units: the shared count still holds', async () => {
    const limiter = new LeasedRateLimiter(redisWindowCounter(redis, 'test-f:'), {
      max: 3,
      windowMs: 60_000,
      lease: 2,
      maxKeys: 10,
    });
    assert.deepEqual(await hits(limiter, 'a', 1), [true]); // leased units 1-2, one left here
    for (let index = 0; index < 20; index++) await limiter.hit(`key-${index}`);
    // The lease of 'a' was dropped with its unspent unit; Redis still counts 2 of 3 as taken.
    assert.deepEqual(await hits(limiter, 'a', 3), [true, false, false]);
  });

  it('sizes leases at a twentieth of the limit, between 1 and 50', () => {
    assert.equal(leaseSize(10), 1);
    assert.equal(leaseSize(120), 6);
    assert.equal(leaseSize(1_000_000), 50);
  });
});

describe('leased rate limiter in memory', () => {
  it('counts exactly with a lease of 1, per key', async () => {
    const limiter = new LeasedRateLimiter(memoryWindowCounter(), { max: 3, windowMs: 60_000, lease: 1 });
    assert.deepEqual(await hits(limiter, 'a', 4), [true, true, true, false]);
    assert.deepEqual(await hits(limiter, 'b', 1), [true]);
  });

  it('forgets the windows of other keys past its bound', async () => {
    const store = memoryWindowCounter(10);
    const limiter = new LeasedRateLimiter(store, { max: 3, windowMs: 60_000, lease: 1, maxKeys: 10 });
    assert.deepEqual(await hits(limiter, 'a', 4), [true, true, true, false]);
    for (let index = 0; index < 20; index++) await limiter.hit(`key-${index}`);
    // Both the limiter and the per-process store dropped 'a': it starts a new window.
    assert.deepEqual(await hits(limiter, 'a', 4), [true, true, true, false]);
  });
});

describe('send limits', () => {
  const send = (client: Client, code: string, text: string) =>
    client.post(`/rooms/${code}/messages`, { body: text });

  it('answer 429 with Retry-After past SEND_RATE_PER_MINUTE, per device, shared by processes through Redis', async () => {
    const env = { SEND_RATE_PER_MINUTE: '40', MASTER_KEY: randomBytes(32).toString('base64') };
    const app = await buildTestApp({ redis: true, env });
    const second = await buildTestApp({ redis: app.redis, database: app.database, env });
    try {
      const { code, host, guest } = await openRoom(app.chat);
      // The same device, its requests spread over two processes (leases of 2 units).
      const onSecond = new Client(second.chat, { remoteAddress: '192.0.2.10' });
      for (const [name, value] of host.cookies) onSecond.cookies.set(name, value);
      const statuses: number[] = [];
      for (let index = 0; index < 30; index++) {
        statuses.push((await send(index % 2 === 0 ? host : onSecond, code, `m${index}`)).statusCode);
      }
      for (let index = 0; index < 20; index++)
        statuses.push((await send(host, code, `n${index}`)).statusCode);
      const sent = statuses.filter((status) => status === 303).length;
      assert.ok(sent <= 40 && sent >= 39, `40 per minute, a lease less at most (${sent})`);
      assert.ok(
        statuses.slice(sent).every((status) => status === 429),
        'refused once over, and only then',
      );
      const limited = await host.post(
        `/rooms/${code}/messages`,
        { body: 'one more' },
        { headers: { 'hx-request': 'true' } },
      );
      assert.equal(limited.statusCode, 429);
      assert.ok(Number(limited.headers['retry-after']) > 0);
      assert.match(limited.body, /Too many attempts/);
      // the partner's device has its own budget
      assert.equal((await send(guest, code, 'my turn')).statusCode, 303);
    } finally {
      await second.close();
      await app.close();
    }
  });

  it('count exactly without Redis too, in leases from the process’s own counter', async () => {
    const app = await buildTestApp({ env: { SEND_RATE_PER_MINUTE: '45' } });
    try {
      const { code, host } = await openRoom(app.chat);
      const statuses: number[] = [];
      // Leases of 2 units: the 45th send takes the last unit of a lease cut short by the limit.
      for (let index = 0; index < 47; index++)
        statuses.push((await send(host, code, `m${index}`)).statusCode);
      assert.deepEqual(statuses, [...Array(45).fill(303), 429, 429]);
    } finally {
      await app.close();
    }
  });

  it('still limit sends, per process, while Redis is down', async () => {
    const app = await buildTestApp({ redis: true, env: { SEND_RATE_PER_MINUTE: '3' } });
    try {
      const { code, host } = await openRoom(app.chat);
      await app.redis?.stop();
      const statuses: number[] = [];
      for (let index = 0; index < 4; index++) statuses.push((await send(host, code, `m${index}`)).statusCode);
      assert.deepEqual(statuses, [303, 303, 303, 429]);
    } finally {
      await app.close();
    }
  });
});
