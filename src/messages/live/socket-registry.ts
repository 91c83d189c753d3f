import type { Logger } from 'pino';
import type { RawData, WebSocket } from 'ws';
import { LiveSocket, type LocalRoom, type SocketContext } from './live-socket.ts';

export type RegistryOptions = {
  /** A socket whose unsent data passes this is closed (it reconnects and catches up from the database). */
  maxBufferedBytes: number;
  heartbeatMs: number;
  /** Frames a client may send per second (burst: twice that). */
  framesPerSecond: number;
  /**
   * Open sockets one participant (one device) may have in a room in this process: tabs, not a
   * flood (each socket holds a file descriptor; one device opened 19,000 and starved both
   * listeners).
   */
  maxSocketsPerParticipant: number;
};

export type RegistryEvents = {
  /** The client says its participant is typing. */
  onTyping(socket: LiveSocket): void;
  /** A socket closed and left its room (which may now be gone from the registry). */
  onRemoved(socket: LiveSocket, change: { slotEmpty: boolean; roomEmpty: boolean }): void;
};

/** Where a WebSocket finds its LiveSocket, for the listeners that all sockets share. */
const kLive = Symbol('ccc.live-socket');
type TaggedSocket = WebSocket & { [kLive]?: LiveSocket };

/**
 * The open sockets of this process, by room: adding and removing them, their limits (sockets per
 * participant, frames per second, unsent bytes), heartbeats for idle ones, and closing them all.
 * Knows nothing of messages or of other processes.
 */
export class SocketRegistry {
  private readonly rooms = new Map<string, LocalRoom>();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  /**
   * The listeners every socket shares (`this` is the WebSocket, which points at its LiveSocket),
   * so that an open socket costs no closures.
   */
  private readonly listeners = ((registry: SocketRegistry) => ({
    pong(this: TaggedSocket) {
      const live = this[kLive];
      if (live) live.alive = true;
    },
    message(this: TaggedSocket, data: RawData, isBinary: boolean) {
      const live = this[kLive];
      if (live) registry.onFrame(live, data, isBinary);
    },
    close(this: TaggedSocket) {
      const live = this[kLive];
      if (live) registry.remove(live);
    },
    error(this: TaggedSocket, error: Error) {
      registry.logger.warn(
        { err: { message: error.message }, roomId: this[kLive]?.room.id },
        'websocket error',
      );
      this.terminate();
    },
  }))(this);

  constructor(
    private readonly options: RegistryOptions,
    private readonly logger: Logger,
    private readonly events: RegistryEvents,
  ) {}

  /** Pings every socket each heartbeat; one that did not answer the last ping is gone. */
  startHeartbeat(): void {
    this.heartbeatTimer = setInterval(() => this.heartbeat(), this.options.heartbeatMs).unref();
  }

  /** Listens for errors on a socket before anything else can happen to it. */
  watchErrors(socket: WebSocket): void {
    socket.on('error', this.listeners.error);
  }

  /** Registers a socket in its room; says whether it is the room's first here and its slot's first. */
  add(socket: WebSocket, context: SocketContext): { live: LiveSocket; newRoom: boolean; newSlot: boolean } {
    let room = this.rooms.get(context.roomId);
    const newRoom = room === undefined;
    if (!room) {
      room = {
        id: context.roomId,
        code: context.code,
        sockets: [],
        names: [null, null],
        fillTimer: undefined,
      };
      this.rooms.set(room.id, room);
    }
    const newSlot = this.count(room.id, context.slot) === 0;
    const live = new LiveSocket(
      room,
      socket,
      context.slot,
      context.tab,
      context.afterSeq,
      this.options.framesPerSecond * 2,
    );
    (socket as TaggedSocket)[kLive] = live;
    socket.on('pong', this.listeners.pong);
    socket.on('message', this.listeners.message);
    socket.on('close', this.listeners.close);
    room.sockets.push(live);
    this.learnName(room.id, context.slot, context.myName);
    this.learnName(room.id, (3 - context.slot) as 1 | 2, context.partnerName);
    return { live, newRoom, newSlot };
  }

  private remove(live: LiveSocket): void {
    const { room } = live;
    const index = room.sockets.indexOf(live);
    if (index === -1) return;
    room.sockets.splice(index, 1);
    const roomEmpty = room.sockets.length === 0 && this.rooms.get(room.id) === room;
    if (roomEmpty) {
      this.rooms.delete(room.id);
      if (room.fillTimer) clearTimeout(room.fillTimer);
    }
    this.events.onRemoved(live, { slotEmpty: this.count(room.id, live.slot) === 0, roomEmpty });
  }

  room(roomId: string): LocalRoom | undefined {
    return this.rooms.get(roomId);
  }

  allRooms(): IterableIterator<LocalRoom> {
    return this.rooms.values();
  }

  /** The sockets of this room here (none when the room has none). */
  socketsOf(roomId: string): readonly LiveSocket[] {
    return this.rooms.get(roomId)?.sockets ?? [];
  }

  socketCount(): number {
    let count = 0;
    for (const room of this.rooms.values()) count += room.sockets.length;
    return count;
  }

  /** Sockets of the participant in `slot` in this room here. */
  count(roomId: string, slot: 1 | 2): number {
    let count = 0;
    for (const live of this.socketsOf(roomId)) if (live.slot === slot) count += 1;
    return count;
  }

  /** Whether the participant in `slot` may open one more socket in this room here. */
  hasRoomFor(roomId: string, slot: 1 | 2): boolean {
    return this.count(roomId, slot) < this.options.maxSocketsPerParticipant;
  }

  /**
   * A host's page may have opened before anyone joined: when the guest shows up (here or in
   * another process), the room learns the guest's name, for presence and typing.
   */
  learnName(roomId: string, slot: 1 | 2, name: string | null | undefined): void {
    const room = this.rooms.get(roomId);
    if (name && room && room.names[slot - 1] === null) room.names[slot - 1] = name;
  }

  nameOf(roomId: string, slot: 1 | 2): string | null {
    return this.rooms.get(roomId)?.names[slot - 1] ?? null;
  }

  /** Sends a frame; a socket too slow to take it is cut off instead of buffered without bound. */
  send(live: LiveSocket, html: string): void {
    const { socket } = live;
    if (socket.readyState !== socket.OPEN) return;
    if (socket.bufferedAmount > this.options.maxBufferedBytes) {
      // It reconnects and catches up from the database.
      this.logger.info({ roomId: live.room.id, buffered: socket.bufferedAmount }, 'slow socket closed');
      socket.terminate();
      return;
    }
    socket.send(html);
  }

  /** Closes every socket of the room (or of every room) with this code and reason. */
  close(code: number, reason: string, roomId?: string): void {
    const rooms = roomId === undefined ? [...this.rooms.values()] : [this.rooms.get(roomId)];
    for (const room of rooms) {
      for (const live of [...(room?.sockets ?? [])]) live.socket.close(code, reason);
    }
  }

  stop(): void {
    clearInterval(this.heartbeatTimer);
  }

  private heartbeat(): void {
    for (const room of this.rooms.values()) {
      for (const live of room.sockets) {
        if (!live.alive) {
          // No pong since the last ping: the peer is gone without a close.
          live.socket.terminate();
          continue;
        }
        live.alive = false;
        if (live.isOpen) live.socket.ping();
      }
    }
  }

  private onFrame(live: LiveSocket, data: RawData, isBinary: boolean): void {
    const { framesPerSecond } = this.options;
    const now = Date.now();
    live.frameTokens = Math.min(
      framesPerSecond * 2,
      live.frameTokens + ((now - live.frameAt) / 1000) * framesPerSecond,
    );
    live.frameAt = now;
    if (live.frameTokens < 1) {
      live.socket.close(1008, 'too many frames');
      return;
    }
    live.frameTokens -= 1;
    if (isBinary) {
      live.socket.close(1003, 'text frames only');
      return;
    }
    let frame: unknown;
    try {
      frame = JSON.parse(data.toString());
    } catch {
      return; // not JSON: ignored, like any frame we do not understand
    }
    if (typeof frame === 'object' && frame !== null && 'typing' in frame) this.events.onTyping(live);
  }
}
