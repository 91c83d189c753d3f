import { ArchiveService } from './archive/archive-service.ts';
import { RetentionService } from './archive/retention.ts';
import { AttachmentService } from './attachments/attachment-service.ts';
import { AuditLog } from './audit/audit-log.ts';
import { RoomKeys } from './crypto/room-keys.ts';
import { MessageService } from './messages/message-service.ts';
import { MessageWriter } from './messages/message-writer.ts';
import { type HubOptions, RealtimeHub } from './messages/realtime-hub.ts';
import { createMetrics, type Metrics } from './metrics.ts';
import type { Resources } from './resources.ts';
import { RoomAccessService } from './rooms/room-access.ts';
import { RoomService } from './rooms/room-service.ts';
import { type Sweeper, startSweeper } from './rooms/sweeper.ts';
import { createHealthProbe, type HealthReport } from './web/health.ts';
import { createViews, type Views } from './web/render.ts';

/**
 * The domain services of one process, built once on the shared resources and handed to both
 * listeners. Each takes its dependencies as arguments and knows nothing of HTTP.
 */
export type Services = {
  views: Views;
  health: () => Promise<HealthReport>;
  audit: AuditLog;
  roomKeys: RoomKeys;
  rooms: RoomService;
  roomAccess: RoomAccessService;
  messages: MessageService;
  attachments: AttachmentService;
  writer: MessageWriter;
  hub: RealtimeHub;
  sweeper: Sweeper;
  metrics: Metrics;
  archive: ArchiveService;
  retention: RetentionService;
  /** Stops background work and lets queued writes finish, before resources close. */
  stop(): Promise<void>;
};

export type ServiceOptions = {
  /** Run the sweeper on its timer (tests call `sweeper.runOnce()` instead). */
  sweepOnTimer?: boolean;
  hub?: HubOptions;
};

export async function createServices(resources: Resources, options: ServiceOptions = {}): Promise<Services> {
  const { db, clock, config, logger, bus } = resources;
  const views = createViews();
  const health = createHealthProbe(resources);
  const audit = new AuditLog(db, clock);
  const roomKeys = new RoomKeys(db, resources.keyring, clock);
  const roomAccess = new RoomAccessService(db, clock);
  const rooms = new RoomService(db, roomKeys, audit, roomAccess, clock, {
    roomTtlHours: config.roomTtlHours,
    pendingTtlMinutes: config.pendingTtlMinutes,
  });
  const hub = new RealtimeHub({ bus, db, roomKeys, views, logger }, options.hub);
  await hub.start();
  const writer = new MessageWriter(db, roomKeys, clock, logger);
  const messages = new MessageService(
    { db, roomKeys, writer, hub, logger },
    { maxMessageChars: config.maxMessageChars },
  );
  const attachments = new AttachmentService(
    { db, store: resources.store, roomKeys, messages, clock, logger },
    { maxCaptionChars: config.maxMessageChars },
  );
  // Sockets of a room that ended (here or, through the bus, anywhere) hear it and close.
  rooms.onRoomsEnded((ended) => {
    const roomIds = ended.map((room) => room.id);
    roomAccess.forget(roomIds);
    messages.forgetRecent(roomIds);
    hub.publishEnded(roomIds);
  });
  rooms.onGuestJoined((room, guest) => {
    if (guest.displayName) hub.publishJoined(room.id, guest.displayName);
  });
  hub.onRemoteEnded((roomIds) => {
    roomAccess.forget(roomIds);
    messages.forgetRecent(roomIds);
  });
  const metrics = createMetrics(db, hub);
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
    roomAccess,
    messages,
    attachments,
    writer,
    hub,
    sweeper,
    metrics,
    archive,
    retention,
    async stop() {
      await sweeper.stop();
      await hub.close();
      await writer.drain();
    },
  };
}
