import path from 'node:path';
import type { Config } from '../config.ts';
import { createDbPool, type DatabasePool } from './db.ts';
import { startEmbeddedPostgres } from './embedded-postgres.ts';
import type { Logger } from './logger.ts';

export type OpenDatabase = { db: DatabasePool; embedded: boolean; close(): Promise<void> };

/** DATABASE_URL when set, else the embedded cluster under DATA_DIR/pg (started here). */
export async function openDatabase(config: Config, logger: Logger): Promise<OpenDatabase> {
  if (config.databaseUrl !== undefined) {
    const db = await createDbPool(config.databaseUrl);
    return { db, embedded: false, close: () => db.end() };
  }
  const cluster = await startEmbeddedPostgres({
    dataDir: path.join(config.dataDir, 'pg'),
    database: 'chittychat',
    logger,
  });
  logger.info({ port: cluster.port }, 'embedded PostgreSQL started');
  try {
    const db = await createDbPool(cluster.url);
    return {
      db,
      embedded: true,
      async close() {
        await db.end();
        await cluster.stop();
      },
    };
  } catch (error) {
    await cluster.stop();
    throw error;
  }
}
