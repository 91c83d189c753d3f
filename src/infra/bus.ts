import { EventEmitter } from 'node:events';
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';

export type BusHandler = (message: string) => void;

/**
 * Publish/subscribe between the app processes. The in-process bus serves a single process
 * (the zero-setup default); the Redis bus lets several processes share rooms.
 */
export interface Bus {
  readonly kind: 'memory' | 'redis';
  publish(channel: string, message: string): Promise<void>;
  /** Resolves once the subscription is active; returns the function that ends it. */
  subscribe(channel: string, handler: BusHandler): Promise<() => Promise<void>>;
  /** Called after the bus lost its connection and came back (subscriptions are active again). */
  onReconnect(listener: () => void): void;
  ping(): Promise<void>;
  close(): Promise<void>;
}

export function createMemoryBus(): Bus {
  const emitter = new EventEmitter();
  emitter.setMaxListeners(0);
  return {
    kind: 'memory',
    async publish(channel, message) {
      // Delivered on a later tick, like a network bus, so publishers never re-enter subscribers.
      queueMicrotask(() => emitter.emit(channel, message));
    },
    async subscribe(channel, handler) {
      emitter.on(channel, handler);
      return async () => {
        emitter.off(channel, handler);
      };
    },
    onReconnect() {},
    async ping() {},
    async close() {
      emitter.removeAllListeners();
    },
  };
}

/** Options that keep a request from ever waiting on a Redis that is down. */
export const redisClientOptions: RedisOptions = {
  // Commands fail at once while disconnected instead of queueing without bound.
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  commandTimeout: 2_000,
  connectTimeout: 3_000,
  retryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
  lazyConnect: true,
};

export async function createRedisBus(url: string, logger?: Logger): Promise<Bus> {
  // Publishes made in the same tick (one per committed message) go out in one write.
  const publisher = new Redis(url, {
    ...redisClientOptions,
    enableAutoPipelining: true,
    connectionName: 'ccc-pub',
  });
  // The subscriber may queue its (re)subscribe commands while reconnecting: they are bounded by
  // the number of rooms with local sockets.
  const subscriber = new Redis(url, {
    ...redisClientOptions,
    enableOfflineQueue: true,
    maxRetriesPerRequest: null,
    commandTimeout: undefined,
    autoResubscribe: true,
    connectionName: 'ccc-sub',
  });
  for (const [name, client] of [
    ['publisher', publisher],
    ['subscriber', subscriber],
  ] as const) {
    client.on('error', (error: Error) =>
      logger?.warn({ err: { message: error.message }, client: name }, 'redis error'),
    );
  }
  await Promise.all([publisher.connect(), subscriber.connect()]);

  const handlers = new Map<string, Set<BusHandler>>();
  const reconnectListeners: (() => void)[] = [];
  subscriber.on('message', (channel: string, message: string) => {
    const set = handlers.get(channel);
    if (!set) return;
    for (const handler of set) handler(message);
  });
  let readyOnce = false;
  subscriber.on('ready', () => {
    if (!readyOnce) {
      readyOnce = true;
      return;
    }
    logger?.info('redis subscriber reconnected');
    // ioredis resubscribes before 'ready' fires when autoResubscribe is on.
    for (const listener of reconnectListeners) listener();
  });
  if (subscriber.status === 'ready') readyOnce = true;

  return {
    kind: 'redis',
    async publish(channel, message) {
      await publisher.publish(channel, message);
    },
    async subscribe(channel, handler) {
      let set = handlers.get(channel);
      if (!set) {
        set = new Set();
        handlers.set(channel, set);
        await subscriber.subscribe(channel);
      }
      set.add(handler);
      return async () => {
        const current = handlers.get(channel);
        if (!current) return;
        current.delete(handler);
        if (current.size === 0) {
          handlers.delete(channel);
          // While disconnected, an unsubscribe would wait in the offline queue for ever; a channel
          // left subscribed is harmless (its messages find no handler).
          if (subscriber.status === 'ready') await subscriber.unsubscribe(channel).catch(() => undefined);
        }
      };
    },
    onReconnect(listener) {
      reconnectListeners.push(listener);
    },
    async ping() {
      await publisher.ping();
    },
    async close() {
      handlers.clear();
      const graceful = Promise.allSettled(
        [publisher, subscriber].filter((client) => client.status === 'ready').map((client) => client.quit()),
      );
      await Promise.race([graceful, new Promise((resolve) => setTimeout(resolve, 1_000).unref())]);
      publisher.disconnect();
      subscriber.disconnect();
    },
  };
}
