import './infra/gc-tuning.ts';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { createAdminServer } from './admin/app.ts';
import { createChatServer } from './chat/app.ts';
import { ConfigError, loadConfig } from './config.ts';
import { EmbeddedPostgresError } from './infra/embedded-postgres.ts';
import { createLogger } from './infra/logger.ts';
import { openResources } from './resources.ts';
import { createServices } from './services.ts';

/** The whole shutdown (drain, close sockets, close pools) must finish within this. */
const SHUTDOWN_DEADLINE_MS = 10_000;

function urlOf(app: FastifyInstance): string {
  const address = app.server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${host === '0.0.0.0' || host === '[::]' ? 'localhost' : host}:${address.port}`;
}

async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    // The one place that reads the environment.
    config = loadConfig(process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`chittychattychat: ${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }
  const logger = createLogger(config.logLevel);

  const resources = await openResources(config, logger);
  const services = await createServices(resources);
  // Not fatal (every other room works), but nothing else would say why those rooms answer 503.
  for (const { keyId, rooms } of await services.roomKeys.unconfiguredKeyIds()) {
    logger.error(
      { keyId, rooms },
      'room keys are wrapped under a master key that is not configured: those rooms cannot be opened until MASTER_KEY or MASTER_KEY_PREVIOUS holds it',
    );
  }
  const chat = await createChatServer(resources, services);
  const admin = await createAdminServer(resources, services);

  let shuttingDown = false;
  const shutdown = async (reason: string, exitCode: number) => {
    if (shuttingDown) return;
    shuttingDown = true;
    logger.info({ reason }, 'shutting down');
    setTimeout(() => {
      logger.error('shutdown did not finish in time; exiting');
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS).unref();
    // Listeners first (stop accepting, tell sockets 1012, finish in-flight requests), then the
    // background work, then the pools and the embedded database.
    await Promise.allSettled([chat.close(), admin.close()]);
    await services.stop();
    await resources.close();
    logger.info('stopped');
    process.exit(exitCode);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM', 0));
  process.on('SIGINT', () => void shutdown('SIGINT', 0));

  try {
    await chat.listen({ port: config.chatPort, host: config.bindHost });
    await admin.listen({ port: config.adminPort, host: config.bindHost });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    logger.fatal(
      { err: error },
      code === 'EADDRINUSE'
        ? 'a port is already in use: set CHAT_PORT / ADMIN_PORT to free ports'
        : 'could not listen on the configured ports',
    );
    await shutdown('listen failed', 1);
    return;
  }
  logger.info({ chatUrl: urlOf(chat), adminUrl: urlOf(admin) }, 'listening');
}

main().catch((error: unknown) => {
  // The embedded database says in one line what went wrong and where; a stack adds nothing.
  const detail =
    error instanceof EmbeddedPostgresError ? error.message : ((error as Error)?.stack ?? String(error));
  process.stderr.write(`chittychattychat: failed to start: ${detail}\n`);
  process.exit(1);
});
