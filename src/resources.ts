import path from 'node:path';
import { Redis } from 'ioredis';
import type { Config } from './config.ts';
import { Keyring } from './crypto/keyring.ts';
import { type Bus, createMemoryBus, createRedisBus, redisClientOptions } from './infra/bus.ts';
import { type Clock, systemClock } from './infra/clock.ts';
import { type DatabasePool, migrate } from './infra/db.ts';
import type { Logger } from './infra/logger.ts';
import { loadOrCreateMasterKeyFile } from './infra/master-key.ts';
import { createFsObjectStore, createMinioObjectStore, type ObjectStore } from './infra/object-store.ts';
import { openDatabase } from './infra/open-database.ts';
import { projectPath } from './paths.ts';

/** The shared parts both listeners run on, opened once per process. */
export type Resources = {
  config: Config;
  logger: Logger;
  db: DatabasePool;
  bus: Bus;
  /** A Redis command connection (rate limits), when REDIS_URL is set. */
  redis: Redis | undefined;
  store: ObjectStore;
  keyring: Keyring;
  clock: Clock;
  /** Closes what `openResources` opened, in reverse order. */
  close(): Promise<void>;
};

export type ResourceOverrides = Partial<Pick<Resources, 'clock'>>;

export async function openResources(
  config: Config,
  logger: Logger,
  overrides: ResourceOverrides = {},
): Promise<Resources> {
  const closers: (() => Promise<void>)[] = [];
  const closeAll = async () => {
    for (const close of closers.reverse()) {
      try {
        await close();
      } catch (error) {
        logger.warn({ err: error }, 'error while closing a resource');
      }
    }
    closers.length = 0;
  };

  try {
    const { db, close: closeDatabase } = await openDatabase(config, logger);
    closers.push(closeDatabase);
    const migrations = await migrate(db, projectPath('migrations'));
    if (migrations.applied.length > 0)
      logger.info({ applied: migrations.applied }, 'database migrations applied');

    const bus = config.redisUrl ? await createRedisBus(config.redisUrl, logger) : createMemoryBus();
    closers.push(() => bus.close());
    let redis: Redis | undefined;
    if (config.redisUrl) {
      // Rate-limit checks of requests arriving together go out in one write (auto-pipelining).
      const client = new Redis(config.redisUrl, {
        ...redisClientOptions,
        enableAutoPipelining: true,
        connectionName: 'ccc-cmd',
      });
      client.on('error', (error: Error) => logger.warn({ err: { message: error.message } }, 'redis error'));
      await client.connect();
      closers.push(async () => {
        if (client.status === 'ready') await client.quit().catch(() => undefined);
        client.disconnect();
      });
      redis = client;
    }

    const store = config.minio
      ? await createMinioObjectStore(config.minio)
      : createFsObjectStore(path.join(config.dataDir, 'objects'));

    const masterKey = config.masterKey ?? (await loadOrCreateMasterKeyFile(config.dataDir, logger));
    const keyring = new Keyring(masterKey, config.masterKeyPrevious);

    logger.info(
      { database: config.databaseUrl ? 'url' : 'embedded', bus: bus.kind, objectStore: store.kind },
      'resources ready',
    );
    return {
      config,
      logger,
      db,
      bus,
      redis,
      store,
      keyring,
      clock: overrides.clock ?? systemClock,
      close: closeAll,
    };
  } catch (error) {
    await closeAll();
    throw error;
  }
}
