/**
 * Applies pending migrations and exits: `npm run migrate`. Uses the same configuration as the app
 * (DATABASE_URL, or the embedded database under DATA_DIR when it is unset).
 */
import { ConfigError, loadConfig } from '../src/config.ts';
import { migrate } from '../src/infra/db.ts';
import { createLogger } from '../src/infra/logger.ts';
import { projectPath } from '../src/paths.ts';
import { openScriptDatabase } from './open-script-database.ts';

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig(process.env);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`migrate: ${error.message}\n`);
  process.exit(1);
}
const logger = createLogger(config.logLevel);
const { db, close } = await openScriptDatabase(config, logger, 'migrate');
try {
  const result = await migrate(db, projectPath('migrations'));
  logger.info(result, result.applied.length > 0 ? 'migrations applied' : 'database is up to date');
} catch (error) {
  process.stderr.write(`migrate: ${(error as Error).message}\n`);
  process.exitCode = 1;
} finally {
  await close();
}
