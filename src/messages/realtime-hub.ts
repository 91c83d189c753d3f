import type { Eta } from 'eta';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import type { RoomKeys } from '../crypto/room-keys.ts';
import type { Bus } from '../infra/bus.ts';
import type { DatabasePool } from '../infra/db.ts';
import { MessageDelivery } from './live/delivery.ts';
import { CrossProcessFanout, messageFromWire, type WireEvent } from './live/fanout.ts';
import type { LiveSocket, MessageEvent, SocketContext } from './live/live-socket.ts';
import { Presence } from './live/presence.ts';
import { SocketRegistry } from './live/socket-registry.ts';

export type HubOptions = {
  /** A socket whose unsent data passes this is closed (it reconnects and catches up from the database). */
  maxBufferedBytes?: number;
  heartbeatMs?: number;
  /** A typing indicator clears after this long without another keystroke. */
  typingTimeoutMs?: number;
  /** Frames a client may send per second (burst: twice that). */
  framesPerSecond?: number;
  /** Open sockets one participant (one device) may have in a room in this process. */
  maxSocketsPerParticipant?: number;
};

export type HubDeps = {
  bus: Bus;
  db: DatabasePool;
  roomKeys: RoomKeys;
  views: Eta;
  logger: Logger;
};

/**
 * Live delivery, put together from its parts: the sockets of this process (SocketRegistry),
 * messages to them with one catch-up routine (MessageDelivery), who is online and typing
 * (Presence), and the events between processes (CrossProcessFanout). A committed message is
 * delivered at once to the room's sockets here and published (sealed) for the other processes,
 * each of which opens it once and renders it once per perspective for all its viewers.
 */
export class RealtimeHub {
  private readonly registry: SocketRegistry;
  private readonly delivery: MessageDelivery;
  private readonly presence: Presence;
  private readonly fanout: CrossProcessFanout;
  private readonly remoteEndedListeners: ((roomIds: string[]) => void)[] = [];
  private closing = false;

  constructor(
    private readonly deps: HubDeps,
    options: HubOptions = {},
  ) {
    const { views, logger } = deps;
    this.registry = new SocketRegistry(
      {
        maxBufferedBytes: options.maxBufferedBytes ?? 1024 * 1024,
        heartbeatMs: options.heartbeatMs ?? 30_000,
        framesPerSecond: options.framesPerSecond ?? 10,
        maxSocketsPerParticipant: options.maxSocketsPerParticipant ?? 10,
      },
      logger,
      {
        onTyping: (live) => this.presence.typing(live.room.id, live.slot, true),
        onRemoved: (live, change) => this.removed(live, change),
      },
    );
    this.fanout = new CrossProcessFanout(deps.bus, logger, {
      onEvent: (event, origin) => this.onRemote(event, origin),
      onProcessGone: (processId) => this.presence.processGone(processId),
      onReconnect: () => void this.afterBusOutage(),
    });
    this.delivery = new MessageDelivery({ ...deps, registry: this.registry });
    this.presence = new Presence(
      {
        registry: this.registry,
        views,
        publishPresence: (roomId, slot, on, name) =>
          this.fanout.publish(roomId, { t: 'presence', r: roomId, sl: slot, on, n: name }),
        publishTyping: (roomId, slot, on) =>
          this.fanout.publish(roomId, { t: 'typing', r: roomId, sl: slot, on }),
      },
      options.typingTimeoutMs ?? 5_000,
    );
  }

  /** This process's id on the bus. */
  get processId(): string {
    return this.fanout.processId;
  }

  /** Starts heartbeats and cross-process liveness. */
  async start(): Promise<void> {
    await this.fanout.start();
    this.registry.startHeartbeat();
  }

  socketCount(): number {
    return this.registry.socketCount();
  }

  /** Whether the participant in `slot` may open one more socket in this room here. */
  hasRoomFor(roomId: string, slot: 1 | 2): boolean {
    return this.registry.hasRoomFor(roomId, slot);
  }

  /** Whether the participant in `slot` has a live socket in this room, in any process. */
  isOnline(roomId: string, slot: 1 | 2): boolean {
    return this.presence.isOnline(roomId, slot);
  }

  /** Takes over an upgraded socket: catches it up, then keeps it live until it closes. */
  async attach(socket: WebSocket, context: SocketContext): Promise<void> {
    // First, so that no error goes unheard (the caller has taken the plugin's listener off).
    this.registry.watchErrors(socket);
    if (this.closing) {
      socket.close(1012, 'server restarting');
      return;
    }
    // Checked before the upgrade too (`hasRoomFor`); here again, for upgrades that raced past it.
    if (!this.registry.hasRoomFor(context.roomId, context.slot)) {
      socket.close(1008, 'too many live pages');
      return;
    }
    const { live, newSlot } = this.registry.add(socket, context);
    if (newSlot) this.presence.localChanged(context.roomId, context.slot, true);
    // Live events reach this socket from now on (they wait in `live.held` until the catch-up is
    // done); the catch-up then reads what was committed before.
    await this.fanout.joinRoom(context.roomId);
    this.registry.send(live, this.presence.partnerStatus(live));
    await this.delivery.catchUp(live.room, [live]);
  }

  /** Called when rooms ended in another process (every process hears it, sockets or not). */
  onRemoteEnded(listener: (roomIds: string[]) => void): void {
    this.remoteEndedListeners.push(listener);
  }

  /**
   * Delivers a committed message here and publishes it (sealed) to the other processes. The
   * sender's process knows the text already and passes it, so local delivery opens nothing.
   */
  publishMessage(event: MessageEvent, text?: string, senderTab?: string | null): void {
    this.presence.clearTyping(event.roomId, event.slot);
    this.delivery.deliver(event, text, senderTab ?? null);
    this.fanout.publishMessage(event);
  }

  /**
   * A guest joined: the host's open pages stop waiting and show the guest's name, even when the
   * guest has no socket (no JavaScript, curl), which would otherwise announce it.
   */
  publishJoined(roomId: string, guestName: string): void {
    this.presence.guestJoined(roomId, guestName);
    this.fanout.publish(roomId, { t: 'joined', r: roomId, n: guestName });
  }

  /** Tells every socket of these rooms, in every process, that the chat is over, and closes them. */
  publishEnded(roomIds: string[]): void {
    for (const roomId of roomIds) {
      this.endLocally(roomId);
      this.fanout.publish(roomId, { t: 'ended', r: roomId });
    }
    if (roomIds.length > 0) this.fanout.publish(null, { t: 'rooms-ended', rs: roomIds });
  }

  /** Closes every socket (code 1012: htmx reconnects, to this or another process). */
  async close(): Promise<void> {
    this.closing = true;
    this.registry.stop();
    this.presence.stop();
    this.registry.close(1012, 'server restarting');
    await this.fanout.close();
  }

  private removed(live: LiveSocket, change: { slotEmpty: boolean; roomEmpty: boolean }): void {
    const roomId = live.room.id;
    if (change.slotEmpty) this.presence.localChanged(roomId, live.slot, false);
    if (change.roomEmpty) {
      this.fanout.leaveRoom(roomId);
      this.presence.forgetRoom(roomId);
    }
  }

  private endLocally(roomId: string): void {
    const html = this.deps.views.render('partials/chat-ended', { oob: true });
    for (const live of this.registry.socketsOf(roomId)) this.registry.send(live, html);
    // 1000: a normal close, which htmx does not try to reconnect.
    this.registry.close(1000, 'chat ended', roomId);
  }

  private onRemote(event: WireEvent, origin: string): void {
    switch (event.t) {
      case 'msg':
        void this.deliverRemote(messageFromWire(event));
        break;
      case 'presence':
        this.presence.remoteChanged(origin, event.r, event.sl, event.on, event.n);
        break;
      case 'typing':
        this.presence.showTyping(event.r, event.sl, event.on);
        break;
      case 'head':
        // Messages up to `s` were committed in a process that did not know we listen.
        this.delivery.heardOf(event.r, event.s);
        break;
      case 'hello': {
        // The answer is how the newcomer learns who is online here.
        const roomId = event.r;
        this.fanout.publishWhileJoined(roomId, () =>
          this.presence.localSlots(roomId).map((slot) => ({
            t: 'presence',
            r: roomId,
            sl: slot,
            on: true,
            n: this.registry.nameOf(roomId, slot),
          })),
        );
        break;
      }
      case 'joined':
        this.presence.guestJoined(event.r, event.n);
        break;
      case 'ended':
        this.endLocally(event.r);
        break;
      case 'rooms-ended':
        for (const listener of this.remoteEndedListeners) listener(event.rs);
        break;
      case 'alive':
        break;
    }
  }

  /** A message from another process may be the first this process sees of the room's key. */
  private async deliverRemote(event: MessageEvent): Promise<void> {
    if (!this.registry.room(event.roomId)) return;
    if (!this.deps.roomKeys.cachedDataKey(event.roomId)) {
      await this.deps.roomKeys.dataKey(event.roomId).catch(() => undefined);
    }
    this.delivery.deliver(event);
  }

  /**
   * After the bus was down, other processes may have committed messages we never heard of, and
   * presence may have changed: each room asks again who is online, and its sockets catch up, one
   * read per room.
   */
  private async afterBusOutage(): Promise<void> {
    for (const room of [...this.registry.allRooms()]) {
      this.fanout.hello(room.id);
      await this.delivery.catchUp(
        room,
        room.sockets.filter((live) => live.isOpen && live.held === null),
      );
    }
  }
}
