import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { createAdminServer } from '../../src/admin/app.ts';
import { createChatServer } from '../../src/chat/app.ts';
import { type Config, loadConfig } from '../../src/config.ts';
import type { Clock } from '../../src/infra/clock.ts';
import { createLogger } from '../../src/infra/logger.ts';
import type { HubOptions } from '../../src/messages/realtime-hub.ts';
import { openResources, type Resources } from '../../src/resources.ts';
import { createServices, type Services } from '../../src/services.ts';
import { createTestDatabase, type TestDatabase } from './database.ts';
import { type RedisServer, type S3Server, startRedis, startS3 } from './servers.ts';

export type TestAppOptions = {
  /** Extra environment, as an operator would set it. */
  env?: Record<string, string>;
  clock?: Clock;
  /** Use Redis: start a private server, or share one already started. */
  redis?: boolean | RedisServer;
  /** Use the MinIO code path against a private s3rver. */
  s3?: boolean | S3Server;
  /** Listen on free loopback ports (for WebSocket and browser tests). */
  listen?: boolean;
  /** Hub settings (heartbeat, buffer bound) for the WebSocket tests. */
  hub?: HubOptions;
  /** Let the sweeper run on its timer (default: tests call `services.sweeper.runOnce()`). */
  sweepOnTimer?: boolean;
  /** Reuse this database (e.g. a second app process on the same data). */
  database?: TestDatabase;
};

export type TestApp = {
  config: Config;
  resources: Resources;
  services: Services;
  chat: FastifyInstance;
  admin: FastifyInstance;
  database: TestDatabase;
  redis: RedisServer | undefined;
  s3: S3Server | undefined;
  /** Every log line the app wrote, as text. */
  logs: string[];
  chatUrl: string;
  adminUrl: string;
  close(): Promise<void>;
};

const logLevel = (process.env.TEST_LOG_LEVEL as Config['logLevel'] | undefined) ?? 'info';

export async function buildTestApp(options: TestAppOptions = {}): Promise<TestApp> {
  const ownsDatabase = options.database === undefined;
  const database = options.database ?? (await createTestDatabase());
  const ownsRedis = options.redis === true;
  const redis = options.redis === true ? await startRedis() : options.redis || undefined;
  const ownsS3 = options.s3 === true;
  const s3 = options.s3 === true ? await startS3() : options.s3 || undefined;
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'ccc-app-'));

  const env: Record<string, string> = {
    DATABASE_URL: database.url,
    MASTER_KEY: randomBytes(32).toString('base64'),
    DATA_DIR: dataDir,
    CHAT_PORT: '0',
    ADMIN_PORT: '0',
    BIND_HOST: '127.0.0.1',
    LOG_LEVEL: logLevel,
    // Tests open many rooms from few addresses; the rate-limit tests set their own low limits.
    CREATE_RATE_PER_MINUTE: '10000',
    JOIN_RATE_PER_MINUTE: '10000',
    SEND_RATE_PER_MINUTE: '100000',
    UPLOAD_RATE_PER_MINUTE: '10000',
    ...(redis ? { REDIS_URL: redis.url } : {}),
    ...(s3
      ? {
          MINIO_ENDPOINT: s3.config.endPoint,
          MINIO_PORT: String(s3.config.port),
          MINIO_ACCESS_KEY: s3.config.accessKey,
          MINIO_SECRET_KEY: s3.config.secretKey,
          MINIO_BUCKET: s3.config.bucket,
        }
      : {}),
    ...options.env,
  };
  const config = loadConfig(env);
  const logs: string[] = [];
  const logger = createLogger(config.logLevel, {
    write(line: string) {
      logs.push(line);
      if (process.env.TEST_LOG_ECHO) process.stderr.write(line);
    },
  });
  const resources = await openResources(config, logger, options.clock ? { clock: options.clock } : {});
  const services = await createServices(resources, {
    sweepOnTimer: options.sweepOnTimer ?? false,
    ...(options.hub ? { hub: options.hub } : {}),
  });
  const chat = await createChatServer(resources, services);
  const admin = await createAdminServer(resources, services);
  let chatUrl = '';
  let adminUrl = '';
  if (options.listen) {
    await chat.listen({ port: 0, host: '127.0.0.1' });
    await admin.listen({ port: 0, host: '127.0.0.1' });
    chatUrl = `http://127.0.0.1:${(chat.server.address() as AddressInfo).port}`;
    adminUrl = `http://127.0.0.1:${(admin.server.address() as AddressInfo).port}`;
  } else {
    await chat.ready();
    await admin.ready();
  }

  let closed = false;
  return {
    config,
    resources,
    services,
    chat,
    admin,
    database,
    redis,
    s3,
    logs,
    chatUrl,
    adminUrl,
    async close() {
      if (closed) return;
      closed = true;
      await Promise.allSettled([chat.close(), admin.close()]);
      await services.stop();
      await resources.close();
      if (ownsRedis) await redis?.stop();
      if (ownsS3) await s3?.stop();
      if (ownsDatabase) await database.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
