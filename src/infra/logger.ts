import pino, { type DestinationStream, type Logger } from 'pino';
import type { Config } from '../config.ts';

/**
 * One pino logger for the process. Cookies, auth headers and set-cookie are redacted; request
 * bodies are never logged, so message text cannot reach the logs through the HTTP layer.
 */
export function createLogger(level: Config['logLevel'], destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      redact: {
        paths: [
          'req.headers.cookie',
          'req.headers.authorization',
          'res.headers["set-cookie"]',
          'headers.cookie',
          'headers.authorization',
        ],
        censor: '[redacted]',
      },
    },
    destination,
  );
}

export type { Logger };
