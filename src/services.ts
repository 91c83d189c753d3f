import type { Eta } from 'eta';
import { ArchiveService } from './archive/archive-service.ts';
import { RetentionService } from './archive/retention.ts';
import { AuditLog } from './audit/audit-log.ts';
import { RoomKeys } from './crypto/room-keys.ts';
import { createMetrics, type Metrics } from './metrics.ts';
import type { Resources } from './resources.ts';
import { RoomService } from './rooms/room-service.ts';
import { type Sweeper, startSweeper } from './rooms/sweeper.ts';
import { createHealthProbe, type HealthReport } from './web/health.ts';
import { createViews } from './web/render.ts';

/**
 * The domain services of one process, built once on the shared resources and handed to both
 * listeners. Each takes its dependencies as arguments and knows nothing of HTTP.
 */
export type Services = {
  views: Eta;
  health: () => Promise<HealthReport>;
  audit: AuditLog;
  roomKeys: RoomKeys;
  rooms: RoomService;
  sweeper: Sweeper;
  metrics: Metrics;
  archive: ArchiveService;
  retention: RetentionService;
  /** Stops background work (sweepers, timers) before resources close. */
  stop(): Promise<void>;
};

export type ServiceOptions = {
  /** Run the sweeper on its timer (tests call `sweeper.runOnce()` instead). */
  sweepOnTimer?: boolean;
};

export function createServices(resources: Resources, options: ServiceOptions = {}): Services {
  const { db, clock, config, logger } = resources;
  const views = createViews();
  const health = createHealthProbe(resources);
  const audit = new AuditLog(db, clock);
  const roomKeys = new RoomKeys(db, resources.keyring, clock);
  const rooms = new RoomService(db, roomKeys, audit, clock, {
    roomTtlHours: config.roomTtlHours,
    pendingTtlMinutes: config.pendingTtlMinutes,
  });
  const metrics = createMetrics(db);
  const archiveDeps = {
    db,
    store: resources.store,
    roomKeys,
    audit,
    clock,
    logger,
    counters: metrics.archive,
  };
  const archive = new ArchiveService(archiveDeps);
  const retention = new RetentionService({ ...archiveDeps, retentionDays: config.archiveRetentionDays });
  const sweeper = startSweeper({
    db,
    logger,
    intervalMs: config.sweepIntervalSeconds * 1000,
    autoStart: options.sweepOnTimer ?? true,
    tasks: [
      { name: 'expire-rooms', run: () => rooms.expireDue() },
      { name: 'archive-rooms', run: () => archive.archiveDue() },
      { name: 'shred-rooms', run: () => retention.shredDue() },
    ],
  });
  return {
    views,
    health,
    audit,
    roomKeys,
    rooms,
    sweeper,
    metrics,
    archive,
    retention,
    async stop() {
      await sweeper.stop();
    },
  };
}
