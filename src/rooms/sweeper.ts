import type { Logger } from 'pino';
import { z } from 'zod';
import { type DatabasePool, sql } from '../infra/db.ts';

export type SweepTask = { name: string; run(): Promise<unknown> };

export type Sweeper = {
  /** One sweep now; false if another process holds the sweep lock. */
  runOnce(): Promise<boolean>;
  stop(): Promise<void>;
};

/** Every process runs the sweeper; this advisory lock lets one act at a time. */
const SWEEP_LOCK_KEY = 0x43434302;

/**
 * Runs the background tasks (expire rooms, write archives, shred) every `intervalMs`, in every
 * process, with a PostgreSQL advisory lock so that only one process works at a time.
 */
export function startSweeper(options: {
  db: DatabasePool;
  intervalMs: number;
  tasks: SweepTask[];
  logger: Logger;
  /** Start the timer (tests drive `runOnce` by hand instead). */
  autoStart?: boolean;
}): Sweeper {
  const { db, tasks, logger } = options;
  let running: Promise<boolean> | undefined;
  let stopped = false;

  const sweep = async (): Promise<boolean> =>
    db.connect(async (connection) => {
      const locked = await connection.oneFirst(
        sql.type(z.object({ locked: z.boolean() }))`SELECT pg_try_advisory_lock(${SWEEP_LOCK_KEY}) AS locked`,
      );
      if (!locked) return false;
      try {
        for (const task of tasks) {
          if (stopped) break;
          try {
            await task.run();
          } catch (error) {
            logger.error({ err: error, task: task.name }, 'sweep task failed; it will run again next sweep');
          }
        }
        return true;
      } finally {
        await connection.query(sql.unsafe`SELECT pg_advisory_unlock(${SWEEP_LOCK_KEY})`);
      }
    });

  const runOnce = async () => {
    if (running) return running;
    running = sweep().finally(() => {
      running = undefined;
    });
    return running;
  };

  let timer: NodeJS.Timeout | undefined;
  if (options.autoStart !== false) {
    timer = setInterval(() => {
      runOnce().catch((error: unknown) => logger.warn({ err: error }, 'sweep could not run'));
    }, options.intervalMs);
    timer.unref();
  }

  return {
    runOnce,
    async stop() {
      stopped = true;
      if (timer) clearInterval(timer);
      await running?.catch(() => undefined);
    },
  };
}
