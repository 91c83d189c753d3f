import type { FastifyPluginAsync } from 'fastify';
import type { Bus } from '../infra/bus.ts';
import { type DatabasePool, pingDb } from '../infra/db.ts';
import type { ObjectStore } from '../infra/object-store.ts';

export type HealthReport = {
  status: 'ok' | 'degraded';
  database: 'up' | 'down';
  bus: 'up' | 'down';
  objectStore: 'up' | 'down';
  busKind: Bus['kind'];
  objectStoreKind: ObjectStore['kind'];
};

export type HealthDeps = { db: DatabasePool; bus: Bus; store: ObjectStore };

const PROBE_TIMEOUT_MS = 1_500;
/** Health is probed at most this often; under load every caller shares the last probe. */
const CACHE_MS = 1_000;

function withTimeout(promise: Promise<unknown>): Promise<'up' | 'down'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'down'>((resolve) => {
    timer = setTimeout(() => resolve('down'), PROBE_TIMEOUT_MS);
  });
  return Promise.race([promise.then(() => 'up' as const).catch(() => 'down' as const), timeout]).finally(() =>
    clearTimeout(timer),
  );
}

/** Probes each part once and shares the answer for a second. */
export function createHealthProbe(deps: HealthDeps): () => Promise<HealthReport> {
  let cached: { at: number; report: Promise<HealthReport> } | undefined;
  const probe = async (): Promise<HealthReport> => {
    const [database, bus, objectStore] = await Promise.all([
      withTimeout(pingDb(deps.db)),
      withTimeout(deps.bus.ping()),
      withTimeout(deps.store.ping()),
    ]);
    const status = database === 'up' && bus === 'up' && objectStore === 'up' ? 'ok' : 'degraded';
    return { status, database, bus, objectStore, busKind: deps.bus.kind, objectStoreKind: deps.store.kind };
  };
  return () => {
    const now = Date.now();
    if (!cached || now - cached.at > CACHE_MS) cached = { at: now, report: probe() };
    return cached.report;
  };
}

/** GET /health: 200 when every part is up, else 503 naming the parts that are down. */
export const healthRoutes: FastifyPluginAsync<{ probe: () => Promise<HealthReport> }> = async (
  app,
  { probe },
) => {
  app.get('/health', { logLevel: 'warn' }, async (_request, reply) => {
    const report = await probe();
    return reply
      .code(report.status === 'ok' ? 200 : 503)
      .header('cache-control', 'no-store')
      .send(report);
  });
};
