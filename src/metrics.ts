import fp from 'fastify-plugin';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { z } from 'zod';
import { type DatabasePool, sql } from './infra/db.ts';

/** Counters the archive and retention sweeps bump; plain `inc()` so domain code needs no prom-client. */
export type ArchiveCounters = {
  runs: { inc(): void };
  written: { inc(): void };
  failures: { inc(): void };
  shredded: { inc(): void };
  shredFailures: { inc(): void };
};

export type Metrics = {
  registry: Registry;
  /** Open chat WebSockets in this process; the chat hub sets it. */
  openSockets: Gauge;
  httpDuration: Histogram<'listener' | 'method' | 'route' | 'status'>;
  archive: ArchiveCounters;
};

const STATUSES = ['pending', 'active', 'expired', 'archived', 'shredded'] as const;

const storedRow = z.object({
  pending: z.number(),
  active: z.number(),
  expired: z.number(),
  archived: z.number(),
  shredded: z.number(),
  messages: z.number(),
  images: z.number(),
});

/**
 * One registry per process (never prom-client's global one, so two app instances in one test
 * process do not collide). Room, message and image numbers are read from PostgreSQL at scrape
 * time, so every process reports the same truth however many there are.
 */
export function createMetrics(
  db: DatabasePool,
  live: { socketCount(): number } = { socketCount: () => 0 },
): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'ccc_' });

  // The three database gauges are collected together in one scrape (prom-client starts every
  // collect in the same tick): they share one query while it is in flight, and no later scrape
  // ever sees an old answer.
  let inFlight: Promise<z.infer<typeof storedRow>> | undefined;
  const stored = () => {
    inFlight ??= db
      .one(sql.type(storedRow)`
        SELECT
          (SELECT count(*) FROM rooms WHERE status = 'pending')::int AS pending,
          (SELECT count(*) FROM rooms WHERE status = 'active')::int AS active,
          (SELECT count(*) FROM rooms WHERE status = 'expired')::int AS expired,
          (SELECT count(*) FROM rooms WHERE status = 'archived')::int AS archived,
          (SELECT count(*) FROM rooms WHERE status = 'shredded')::int AS shredded,
          (SELECT count(*) FROM messages WHERE body_sealed IS NOT NULL)::int AS messages,
          (SELECT count(*) FROM attachments WHERE deleted_at IS NULL)::int AS images`)
      .finally(() => {
        inFlight = undefined;
      });
    return inFlight;
  };

  new Gauge({
    name: 'ccc_rooms',
    help: 'Rooms by status (read from the database at scrape time)',
    labelNames: ['status'],
    registers: [registry],
    async collect() {
      const counts = await stored();
      for (const status of STATUSES) this.set({ status }, counts[status]);
    },
  });
  new Gauge({
    name: 'ccc_messages_stored',
    help: 'Messages whose sealed body is stored (not shredded)',
    registers: [registry],
    async collect() {
      this.set((await stored()).messages);
    },
  });
  new Gauge({
    name: 'ccc_images_stored',
    help: 'Images stored (attachments not deleted)',
    registers: [registry],
    async collect() {
      this.set((await stored()).images);
    },
  });
  const openSockets = new Gauge({
    name: 'ccc_open_sockets',
    help: 'Open chat WebSockets in this process',
    registers: [registry],
    collect() {
      this.set(live.socketCount());
    },
  });
  const httpDuration = new Histogram({
    name: 'ccc_http_request_duration_seconds',
    help: 'HTTP request duration by listener, route pattern and status',
    labelNames: ['listener', 'method', 'route', 'status'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const counter = (name: string, help: string) => new Counter({ name, help, registers: [registry] });
  return {
    registry,
    openSockets,
    httpDuration,
    archive: {
      runs: counter('ccc_archive_runs_total', 'Archive sweeps run'),
      written: counter('ccc_archives_written_total', 'Archive bundles written'),
      failures: counter('ccc_archive_failures_total', 'Rooms whose archive could not be written (retried)'),
      shredded: counter('ccc_rooms_shredded_total', 'Rooms shredded after ARCHIVE_RETENTION_DAYS'),
      shredFailures: counter('ccc_shred_failures_total', 'Rooms whose shredding failed (retried)'),
    },
  };
}

/**
 * Times every request of a listener. The route label is the route pattern (`/rooms/:code`), never
 * the raw URL, so room codes and ids do not turn into unbounded label values.
 */
export const httpMetricsPlugin = fp<{ metrics: Metrics; listener: 'chat' | 'admin' }>(
  async (app, { metrics, listener }) => {
    app.addHook('onResponse', (request, reply, done) => {
      metrics.httpDuration.observe(
        {
          listener,
          method: request.method,
          route: request.routeOptions.url ?? 'unmatched',
          status: String(reply.statusCode),
        },
        reply.elapsedTime / 1000,
      );
      done();
    });
  },
  { name: 'http-metrics' },
);
