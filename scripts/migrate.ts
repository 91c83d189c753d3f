/**
 * Applies pending migrations and exits: `npm run migrate`. Uses the same configuration as the app
 * (DATABASE_URL, or the embedded database under DATA_DIR when it is unset).
 */
import { ConfigError, loadConfig } from '../src/config.ts';
import { createDbPool, migrate } from '../src/infra/db.ts';
import { startEmbeddedPostgres } from '../src/infra/embedded-postgres.ts';
import { createLogger } from '../src/infra/logger.ts';
import { projectPath } from '../src/paths.ts';

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig(process.env);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`migrate: ${error.message}\n`);
  process.exit(1);
}
const logger = createLogger(config.logLevel);
const embedded = config.databaseUrl
  ? undefined
  : await startEmbeddedPostgres({ dataDir: `${config.dataDir}/pg`, database: 'chittychat', logger });
const pool = await createDbPool(config.databaseUrl ?? (embedded?.url as string));
try {
  const result = await migrate(pool, projectPath('migrations'));
  logger.info(result, result.applied.length > 0 ? 'migrations applied' : 'database is up to date');
} finally {
  await pool.end();
  await embedded?.stop();
}
