import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type Bus, createMemoryBus, createRedisBus } from '../src/infra/bus.ts';
import { type RedisServer, startRedis } from './helpers/servers.ts';

function nextMessage(bus: Bus, channel: string, timeoutMs = 3_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no message on ${channel}`)), timeoutMs);
    void bus.subscribe(channel, (message) => {
      clearTimeout(timer);
      resolve(message);
    });
  });
}

async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('memory bus', () => {
  it('delivers to subscribers of the channel only, until they unsubscribe', async () => {
    const bus = createMemoryBus();
    const received: string[] = [];
    const other: string[] = [];
    const unsubscribe = await bus.subscribe('room:a', (message) => received.push(message));
    await bus.subscribe('room:b', (message) => other.push(message));
    await bus.publish('room:a', 'one');
    await new Promise((resolve) => setImmediate(resolve));
    await unsubscribe();
    await bus.publish('room:a', 'two');
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(received, ['one']);
    assert.deepEqual(other, []);
    await bus.close();
  });
});

describe('redis bus', () => {
  let redis: RedisServer;
  let first: Bus;
  let second: Bus;
  before(async () => {
    redis = await startRedis();
    first = await createRedisBus(redis.url);
    second = await createRedisBus(redis.url);
  });
  after(async () => {
    await first.close();
    await second.close();
    await redis.stop();
  });

  it('carries a message from one process-like bus instance to another', async () => {
    const received = nextMessage(second, 'room:x');
    await new Promise((resolve) => setTimeout(resolve, 50));
    await first.publish('room:x', 'hello across');
    assert.equal(await received, 'hello across');
  });

  it('stops delivering after unsubscribe', async () => {
    const received: string[] = [];
    const unsubscribe = await second.subscribe('room:y', (message) => received.push(message));
    await first.publish('room:y', '1');
    await eventually(() => received.length === 1);
    await unsubscribe();
    await first.publish('room:y', '2');
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.deepEqual(received, ['1']);
  });

  it('fails fast while Redis is down, then resubscribes and tells listeners when it returns', async () => {
    const received: string[] = [];
    let reconnects = 0;
    second.onReconnect(() => {
      reconnects += 1;
    });
    await second.subscribe('room:z', (message) => received.push(message));
    await redis.stop();

    const started = Date.now();
    await assert.rejects(first.publish('room:z', 'lost'));
    await assert.rejects(first.ping());
    assert.ok(Date.now() - started < 3_000, 'a publish while Redis is down must fail fast');

    await redis.start();
    await eventually(() => reconnects > 0, 10_000);
    await eventually(async () => {
      try {
        await first.publish('room:z', 'after');
      } catch {
        return false;
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
      return received.includes('after');
    }, 10_000);
    assert.ok(!received.includes('lost'));
  });
});
