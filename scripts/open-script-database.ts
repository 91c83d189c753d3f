import type { Logger } from 'pino';
import type { Config } from '../src/config.ts';
import { openDatabase } from '../src/infra/open-database.ts';

/**
 * Opens the app's database for an operator script, or exits 1 with one line that says why (not
 * a stack trace): most often the embedded database, which one process at a time may run.
 */
export async function openScriptDatabase(
  config: Config,
  logger: Logger,
  script: string,
): Promise<Awaited<ReturnType<typeof openDatabase>>> {
  try {
    return await openDatabase(config, logger);
  } catch (error) {
    const hint = config.databaseUrl
      ? ''
      : ' (the embedded database runs in one process at a time: stop the app first)';
    process.stderr.write(`${script}: could not open the database${hint}: ${(error as Error).message}\n`);
    process.exit(1);
  }
}
