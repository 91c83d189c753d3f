import { randomBytes } from 'node:crypto';
import type { Eta } from 'eta';
import type { Logger } from 'pino';
import type { RawData, WebSocket } from 'ws';
import type { RoomKeys } from '../crypto/room-keys.ts';
import type { Bus } from '../infra/bus.ts';
import type { Clock } from '../infra/clock.ts';
import type { DatabasePool } from '../infra/db.ts';
import { fmt } from '../web/format.ts';
import { loadTranscript, openMessageBody, type TranscriptEntry, type TranscriptImage } from './transcript.ts';

const TAB_ID = /^[0-9A-Za-z-]{8,64}$/;

/** A page id as a client sent it (query or header), or null when absent or malformed. */
export function parseTabId(value: unknown): string | null {
  return typeof value === 'string' && TAB_ID.test(value) ? value : null;
}

/** A committed message, as published: small, and sealed (no plaintext crosses the bus). */
export type MessageEvent = {
  roomId: string;
  seq: number;
  kind: TranscriptEntry['kind'];
  participantId: string;
  slot: 1 | 2;
  senderName: string | null;
  createdAt: number;
  bodySealed: Buffer;
  image: TranscriptImage | null;
};

type WireEvent =
  | {
      t: 'msg';
      o: string;
      r: string;
      s: number;
      k: MessageEvent['kind'];
      p: string;
      sl: 1 | 2;
      n: string | null;
      c: number;
      b: string;
      i: TranscriptImage | null;
    }
  | { t: 'presence'; o: string; r: string; sl: 1 | 2; on: boolean; n?: string | null }
  | { t: 'typing'; o: string; r: string; sl: 1 | 2; on: boolean }
  | { t: 'hello'; o: string; r: string }
  /** Messages up to seq `s` were delivered in the sender's process only (see `publishMessage`). */
  | { t: 'head'; o: string; r: string; s: number }
  | { t: 'ended'; o: string; r: string }
  /** A guest took the second seat (with or without a socket): the host's pages learn the name. */
  | { t: 'joined'; o: string; r: string; n: string }
  /** On the hub channel, heard by every process: forget what is cached about these rooms. */
  | { t: 'rooms-ended'; o: string; rs: string[] }
  | { t: 'alive'; o: string };

/** What the hub is told about a socket it takes over. */
export type SocketContext = {
  roomId: string;
  code: string;
  slot: 1 | 2;
  myName: string | null;
  partnerName: string | null;
  /** The page has every message up to this seq; the socket starts after it. */
  afterSeq: number;
  /**
   * The page's own id (app.js makes one per page load and sends it with its messages): a message
   * sent from this page comes back in the send's HTTP answer, so the socket need not carry it too.
   */
  tab: string | null;
};

/** A room with sockets in this process. */
type LocalRoom = {
  id: string;
  code: string;
  /** Usually one or two (a page per participant); an array costs less than a Set. */
  connections: Connection[];
  /** The participants' display names by slot (index slot - 1), as far as known here. */
  names: [string | null, string | null];
  unsubscribe: Promise<() => Promise<void>>;
  /** The room's channel subscription is active: from now on, every other process's hello is heard. */
  subscribed: boolean;
  /** Other processes with sockets in this room, as heard on its channel; null while there are none. */
  listeners: string[] | null;
  /** The highest seq delivered here and not published, because no other process was listening. */
  unpublishedSeq: number;
};

/** Where a socket finds its connection, for the listeners that all sockets share. */
const kConnection = Symbol('ccc.hub.connection');
type HubSocket = WebSocket & { [kConnection]?: Connection };

/** Past this many seqs sent ahead of a hole, the lowest are forgotten (at worst one is sent twice). */
const MAX_AHEAD = 4_096;

/**
 * What the hub keeps per open socket. One process holds tens of thousands of mostly idle sockets,
 * so this is one small object of fixed shape: the room's id, code and names live on the room, the
 * socket's listeners are shared by every socket, and the seqs sent are "everything up to
 * `settled`" plus the few sent ahead of a hole.
 */
class Connection {
  alive = true;
  /** Every message up to this seq has been sent, or does not exist (a retried send skips a seq). */
  settled: number;
  /** The highest seq sent. Above `settled` means a hole: a timer fills it from the database. */
  highest: number;
  /** Seqs above `settled` that were sent, ascending; null when there are none (nearly always). */
  ahead: number[] | null = null;
  fillTimer: NodeJS.Timeout | undefined = undefined;
  /** While the missed messages load, live events wait here (then go out in order, without repeats). */
  held: MessageEvent[] | null = [];
  /** The client's frames, as a token bucket; a bucket never used is full. */
  frameTokens: number;
  frameAt = 0;

  constructor(
    readonly room: LocalRoom,
    readonly socket: WebSocket,
    readonly slot: 1 | 2,
    /** The page's id (see SocketContext.tab). */
    readonly tab: string | null,
    afterSeq: number,
    frameBurst: number,
  ) {
    this.settled = afterSeq;
    this.highest = afterSeq;
    this.frameTokens = frameBurst;
  }

  get roomId(): string {
    return this.room.id;
  }

  get code(): string {
    return this.room.code;
  }

  get partnerName(): string | null {
    return this.room.names[2 - this.slot] ?? null;
  }

  /** Whether the message with this seq has gone to this socket (or is known not to exist). */
  hasSent(seq: number): boolean {
    return seq <= this.settled || (this.ahead?.includes(seq) ?? false);
  }

  /** Records a seq as sent, moving `settled` over what has become contiguous. */
  markSent(seq: number): void {
    if (this.hasSent(seq)) return;
    if (seq === this.settled + 1) {
      this.settled = seq;
    } else {
      this.ahead ??= [];
      const ahead = this.ahead;
      let index = ahead.length;
      while (index > 0 && (ahead[index - 1] as number) > seq) index -= 1;
      ahead.splice(index, 0, seq);
      if (ahead.length > MAX_AHEAD) ahead.splice(0, ahead.length - MAX_AHEAD / 4);
    }
    this.advance();
  }

  /** Moves `settled` over the seqs sent ahead that are now contiguous, and forgets those below it. */
  advance(): void {
    const ahead = this.ahead;
    if (ahead === null) return;
    let index = 0;
    while (index < ahead.length && (ahead[index] as number) <= this.settled + 1) {
      this.settled = Math.max(this.settled, ahead[index] as number);
      index += 1;
    }
    if (index === ahead.length) this.ahead = null;
    else if (index > 0) ahead.splice(0, index);
  }
}

export type HubOptions = {
  /** A socket whose unsent data passes this is closed (it reconnects and catches up from the database). */
  maxBufferedBytes?: number;
  heartbeatMs?: number;
  /** A typing indicator clears after this long without another keystroke. */
  typingTimeoutMs?: number;
  /** Frames a client may send per second (burst: twice that). */
  framesPerSecond?: number;
  /**
   * Open sockets one participant (one device) may have in a room in this process: tabs, not a
   * flood (each socket holds a file descriptor; one device opened 19,000 and starved both
   * listeners).
   */
  maxSocketsPerParticipant?: number;
};

export type HubDeps = {
  bus: Bus;
  db: DatabasePool;
  roomKeys: RoomKeys;
  views: Eta;
  clock: Clock;
  logger: Logger;
};

const HUB_CHANNEL = 'ccc:hub';
const roomChannel = (roomId: string) => `ccc:room:${roomId}`;
/** A process not heard from for this long is gone; the presence it announced is dropped. */
const PROCESS_TIMEOUT_MS = 35_000;
const ALIVE_INTERVAL_MS = 10_000;
const MAX_CATCH_UP = 1_000;
/** How long a hole in a socket's seqs may stay open before it is filled from the database. */
const GAP_FILL_DELAY_MS = 300;
/** How soon a hello or head that could not be published is tried again. */
const PUBLISH_RETRY_MS = 1_000;

/**
 * Live delivery. Each process keeps its own sockets by room and subscribes to the bus channel of
 * every room it has sockets in. A committed message is delivered at once to local sockets and,
 * when other processes have sockets in its room, published (sealed) on the bus; each process
 * opens it once and renders it once per perspective (mine / theirs) for all its viewers.
 * Presence and typing travel the same way. A connecting socket first receives what it missed,
 * read from PostgreSQL by seq.
 */
export class RealtimeHub {
  readonly processId = randomBytes(8).toString('hex');
  /**
   * How our own events start on the wire (every event is `{"t":…,"o":…}`): Redis hands each of
   * our publishes back to our subscriber, and this skips them without parsing their JSON.
   */
  private readonly ownEventMarker = `","o":"${this.processId}"`;
  private readonly rooms = new Map<string, LocalRoom>();
  /** Presence announced by other processes: room -> slot -> process ids. */
  private readonly remotePresence = new Map<string, Map<1 | 2, Set<string>>>();
  private readonly lastHeard = new Map<string, number>();
  private readonly typingTimers = new Map<string, NodeJS.Timeout>();
  private readonly typingSentAt = new Map<string, number>();
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly options: Required<HubOptions>;
  private closing = false;
  private readonly remoteEndedListeners: ((roomIds: string[]) => void)[] = [];
  private hubUnsubscribe: Promise<() => Promise<void>> | undefined;
  /** One handler for every channel (not a closure per room). */
  private readonly wireHandler = (raw: string) => this.onWire(raw);
  /**
   * The listeners every socket shares (`this` is the socket, which points at its connection), so
   * that an open socket costs no closures.
   */
  private readonly socketListeners = ((hub: RealtimeHub) => ({
    pong(this: HubSocket) {
      const connection = this[kConnection];
      if (connection) connection.alive = true;
    },
    message(this: HubSocket, data: RawData, isBinary: boolean) {
      const connection = this[kConnection];
      if (connection) hub.onFrame(connection, data, isBinary);
    },
    close(this: HubSocket) {
      const connection = this[kConnection];
      if (connection) hub.detach(connection);
    },
    error(this: HubSocket, error: Error) {
      hub.deps.logger.warn(
        { err: { message: error.message }, roomId: this[kConnection]?.roomId },
        'websocket error',
      );
      this.terminate();
    },
  }))(this);

  constructor(
    private readonly deps: HubDeps,
    options: HubOptions = {},
  ) {
    this.options = {
      maxBufferedBytes: options.maxBufferedBytes ?? 1024 * 1024,
      heartbeatMs: options.heartbeatMs ?? 30_000,
      typingTimeoutMs: options.typingTimeoutMs ?? 5_000,
      framesPerSecond: options.framesPerSecond ?? 10,
      maxSocketsPerParticipant: options.maxSocketsPerParticipant ?? 10,
    };
  }

  /** Starts heartbeats and cross-process liveness. */
  async start(): Promise<void> {
    this.hubUnsubscribe = this.deps.bus.subscribe(HUB_CHANNEL, (raw) => this.onWire(raw));
    await this.hubUnsubscribe;
    this.deps.bus.onReconnect(() => void this.afterBusReconnect());
    this.timers.push(setInterval(() => this.heartbeat(), this.options.heartbeatMs).unref());
    this.timers.push(
      setInterval(() => {
        this.publish(HUB_CHANNEL, { t: 'alive', o: this.processId });
        this.dropSilentProcesses();
      }, ALIVE_INTERVAL_MS).unref(),
    );
  }

  socketCount(): number {
    let count = 0;
    for (const room of this.rooms.values()) count += room.connections.length;
    return count;
  }

  /** Takes over an upgraded socket: catches it up, then keeps it live until it closes. */
  async attach(socket: WebSocket, context: SocketContext): Promise<void> {
    const listeners = this.socketListeners;
    // First, so that no error goes unheard (the caller has taken the plugin's listener off).
    socket.on('error', listeners.error);
    if (this.closing) {
      socket.close(1012, 'server restarting');
      return;
    }
    // Checked before the upgrade too (`hasRoomFor`); here again, for upgrades that raced past it.
    if (!this.hasRoomFor(context.roomId, context.slot)) {
      socket.close(1008, 'too many live pages');
      return;
    }
    const room = this.joinRoom(context);
    const connection = new Connection(
      room,
      socket,
      context.slot,
      context.tab,
      context.afterSeq,
      this.options.framesPerSecond * 2,
    );
    (socket as HubSocket)[kConnection] = connection;
    socket.on('pong', listeners.pong);
    socket.on('message', listeners.message);
    socket.on('close', listeners.close);
    this.addConnection(connection, context);

    await room.unsubscribe.catch(() => undefined);
    const partner = (3 - connection.slot) as 1 | 2;
    this.send(connection, this.renderPresence(connection, this.isOnline(connection.roomId, partner)));

    try {
      const missed = await loadTranscript(this.deps, connection.roomId, {
        afterSeq: context.afterSeq,
        limit: MAX_CATCH_UP,
      });
      for (const entry of missed) {
        // A hole filled meanwhile (see `settle`) may have sent it already.
        if (connection.hasSent(entry.seq)) continue;
        connection.markSent(entry.seq);
        this.send(connection, this.renderMessage(connection.code, entry, entry.slot === connection.slot));
      }
      // What the database had is complete up to its last row, holes included.
      const last = missed.at(-1)?.seq ?? context.afterSeq;
      connection.settled = Math.max(connection.settled, last);
      connection.highest = Math.max(connection.highest, last);
      connection.advance();
    } catch (error) {
      this.deps.logger.warn(
        { err: { message: (error as Error).message }, roomId: connection.roomId },
        'catch-up failed',
      );
      // The page can still load history itself; keep the socket for live messages.
    }
    const held = connection.held ?? [];
    connection.held = null;
    for (const event of held.sort((a, b) => a.seq - b.seq)) this.deliverTo(connection, event, new Map());
  }

  /** Called when rooms ended in another process (every process hears it, sockets or not). */
  onRemoteEnded(listener: (roomIds: string[]) => void): void {
    this.remoteEndedListeners.push(listener);
  }

  /**
   * Delivers a committed message here and publishes it (sealed) to the other processes. The
   * sender's process knows the text already and passes it, so local delivery opens nothing.
   *
   * A room whose sockets are all in this process (every room, with one process) publishes
   * nothing: the publish, and Redis handing it back to us, cost a tenth of a send's CPU. That
   * takes knowing who else listens. A process whose first socket joins a room subscribes to its
   * channel and then says hello; every process with sockets there answers with its presence, and
   * each side counts the other as a listener from then on. A message committed after the
   * newcomer's catch-up read and before its hello is heard here was not published, so on hearing a
   * new listener this process tells it the room's highest unpublished seq (`head`): the newcomer
   * sees a hole up to it and fills it from the database (see `settle`).
   */
  publishMessage(event: MessageEvent, text?: string, senderTab?: string | null): void {
    this.clearTyping(event.roomId, event.slot);
    this.deliver(event, text, senderTab ?? null);
    const room = this.rooms.get(event.roomId);
    if (room?.subscribed && room.listeners === null) {
      room.unpublishedSeq = Math.max(room.unpublishedSeq, event.seq);
      return;
    }
    this.publish(roomChannel(event.roomId), {
      t: 'msg',
      o: this.processId,
      r: event.roomId,
      s: event.seq,
      k: event.kind,
      p: event.participantId,
      sl: event.slot,
      n: event.senderName,
      c: event.createdAt,
      b: event.bodySealed.toString('base64'),
      i: event.image,
    });
  }

  /**
   * A guest joined: the host's open pages stop waiting and show the guest's name, even when the
   * guest has no socket (no JavaScript, curl), which would otherwise announce it.
   */
  publishJoined(roomId: string, guestName: string): void {
    this.guestJoined(roomId, guestName);
    this.publish(roomChannel(roomId), { t: 'joined', o: this.processId, r: roomId, n: guestName });
  }

  private guestJoined(roomId: string, guestName: string): void {
    if (this.localName(roomId, 2) !== null) return;
    this.learnName(roomId, 2, guestName);
    this.pushPresence(roomId, 2);
  }

  /** Tells every socket of these rooms, in every process, that the chat is over, and closes them. */
  publishEnded(roomIds: string[]): void {
    for (const roomId of roomIds) {
      this.endLocally(roomId);
      this.publish(roomChannel(roomId), { t: 'ended', o: this.processId, r: roomId });
    }
    if (roomIds.length > 0) this.publish(HUB_CHANNEL, { t: 'rooms-ended', o: this.processId, rs: roomIds });
  }

  /** Closes every socket (code 1012: htmx reconnects, to this or another process). */
  async close(): Promise<void> {
    this.closing = true;
    for (const timer of this.timers) clearInterval(timer);
    for (const timer of this.typingTimers.values()) clearTimeout(timer);
    for (const room of [...this.rooms.values()]) {
      for (const connection of [...room.connections]) connection.socket.close(1012, 'server restarting');
    }
    const unsubscribe = await this.hubUnsubscribe?.catch(() => undefined);
    await unsubscribe?.().catch(() => undefined);
  }

  private joinRoom(context: SocketContext): LocalRoom {
    const roomId = context.roomId;
    let room = this.rooms.get(roomId);
    if (!room) {
      const unsubscribe = this.deps.bus.subscribe(roomChannel(roomId), this.wireHandler);
      const joined: LocalRoom = {
        id: roomId,
        code: context.code,
        connections: [],
        names: [null, null],
        unsubscribe,
        subscribed: false,
        listeners: null,
        unpublishedSeq: 0,
      };
      room = joined;
      this.rooms.set(roomId, room);
      // Ask the other processes who is online in this room.
      void unsubscribe.then(() => {
        joined.subscribed = true;
        this.publishToRoom(joined, () => [{ t: 'hello', o: this.processId, r: roomId }]);
      });
    }
    return room;
  }

  private addConnection(connection: Connection, context: SocketContext): void {
    const { room, slot } = connection;
    const wasOnline = this.localCount(room.id, slot) > 0;
    room.connections.push(connection);
    this.learnName(room.id, slot, context.myName);
    this.learnName(room.id, (3 - slot) as 1 | 2, context.partnerName);
    if (!wasOnline) this.presenceChanged(room.id, slot, true);
  }

  private detach(connection: Connection): void {
    if (connection.fillTimer) clearTimeout(connection.fillTimer);
    const { room } = connection;
    const index = room.connections.indexOf(connection);
    if (index === -1) return;
    room.connections.splice(index, 1);
    if (this.localCount(room.id, connection.slot) === 0) {
      this.clearTyping(room.id, connection.slot);
      this.presenceChanged(room.id, connection.slot, false);
    }
    if (room.connections.length === 0 && this.rooms.get(room.id) === room) {
      this.rooms.delete(room.id);
      void room.unsubscribe.then((unsubscribe) => unsubscribe()).catch(() => undefined);
    }
  }

  private localCount(roomId: string, slot: 1 | 2): number {
    let count = 0;
    for (const connection of this.rooms.get(roomId)?.connections ?? [])
      if (connection.slot === slot) count += 1;
    return count;
  }

  /** Whether the participant in `slot` may open one more socket in this room here. */
  hasRoomFor(roomId: string, slot: 1 | 2): boolean {
    return this.localCount(roomId, slot) < this.options.maxSocketsPerParticipant;
  }

  /** Whether the participant in `slot` has a live socket in this room, in any process. */
  isOnline(roomId: string, slot: 1 | 2): boolean {
    return this.localCount(roomId, slot) > 0 || (this.remotePresence.get(roomId)?.get(slot)?.size ?? 0) > 0;
  }

  private presenceChanged(roomId: string, slot: 1 | 2, online: boolean): void {
    this.pushPresence(roomId, slot);
    this.publish(roomChannel(roomId), this.presenceEvent(roomId, slot, online));
  }

  /** This process's presence of `slot` in a room, as other processes hear it. */
  private presenceEvent(roomId: string, slot: 1 | 2, online: boolean): WireEvent {
    return {
      t: 'presence',
      o: this.processId,
      r: roomId,
      sl: slot,
      on: online,
      n: this.localName(roomId, slot),
    };
  }

  /**
   * A host's page may have opened before anyone joined: when the guest's socket shows up (here or
   * in another process), the host's sockets learn the guest's name, for presence and typing.
   */
  private learnName(roomId: string, slot: 1 | 2, name: string | null | undefined): void {
    const room = this.rooms.get(roomId);
    if (name && room && room.names[slot - 1] === null) room.names[slot - 1] = name;
  }

  private localName(roomId: string, slot: 1 | 2): string | null {
    return this.rooms.get(roomId)?.names[slot - 1] ?? null;
  }

  /** Shows the (new) presence of `slot` to the sockets of its partner in this process. */
  private pushPresence(roomId: string, slot: 1 | 2): void {
    const online = this.isOnline(roomId, slot);
    for (const connection of this.rooms.get(roomId)?.connections ?? []) {
      if (connection.slot !== slot) this.send(connection, this.renderPresence(connection, online));
    }
  }

  private deliver(event: MessageEvent, text?: string, senderTab: string | null = null): void {
    const room = this.rooms.get(event.roomId);
    if (!room) return;
    const rendered = new Map<boolean, string>();
    for (const connection of room.connections) {
      this.deliverTo(connection, event, rendered, text, senderTab);
    }
  }

  /** Renders at most once per perspective per event, whatever the number of viewers. */
  private deliverTo(
    connection: Connection,
    event: MessageEvent,
    rendered: Map<boolean, string>,
    text?: string,
    senderTab: string | null = null,
  ): void {
    if (connection.held) {
      connection.held.push(event);
      return;
    }
    if (connection.hasSent(event.seq)) return;
    connection.markSent(event.seq);
    // A slot is one participant of the room: the same slot and page id is the sending page.
    if (senderTab !== null && connection.tab === senderTab && connection.slot === event.slot) {
      // The sending page shows it from its HTTP answer: one frame fewer per message.
      this.settle(connection, event.seq);
      return;
    }
    const mine = connection.slot === event.slot;
    let html = rendered.get(mine);
    if (html === undefined) {
      html = this.renderMessage(connection.code, this.entryOf(event, text), mine);
      rendered.set(mine, html);
    }
    this.send(connection, html);
    this.settle(connection, event.seq);
  }

  /**
   * Live messages can arrive out of order (two processes commit seq 7 and 8 and publish at
   * nearly the same time), and one can be missed (a subscription that was not active yet). Each
   * socket tracks the seq up to which it has everything; a hole that is still open after a moment
   * is filled from the database, so no socket keeps a gap until its next reconnect.
   */
  private settle(connection: Connection, seq: number): void {
    connection.highest = Math.max(connection.highest, seq);
    connection.advance();
    if (connection.highest <= connection.settled || connection.fillTimer) return;
    connection.fillTimer = setTimeout(() => {
      connection.fillTimer = undefined;
      void this.fillHoles(connection);
    }, GAP_FILL_DELAY_MS);
    connection.fillTimer.unref();
  }

  private async fillHoles(connection: Connection): Promise<void> {
    const upTo = connection.highest;
    if (upTo <= connection.settled || connection.socket.readyState !== connection.socket.OPEN) return;
    const missing = await loadTranscript(this.deps, connection.roomId, {
      afterSeq: connection.settled,
      limit: MAX_CATCH_UP,
    }).catch(() => undefined);
    if (!missing) {
      this.settle(connection, upTo); // the database is unreachable: try again later
      return;
    }
    for (const entry of missing) {
      if (entry.seq > upTo || connection.hasSent(entry.seq)) continue;
      connection.markSent(entry.seq);
      this.send(connection, this.renderMessage(connection.code, entry, entry.slot === connection.slot));
    }
    // Up to `upTo` the database has answered: what it does not have does not exist.
    connection.settled = Math.max(connection.settled, upTo);
    this.settle(connection, upTo);
  }

  private entryOf(event: MessageEvent, text?: string): TranscriptEntry {
    const body =
      text !== undefined
        ? { text, readable: true }
        : openMessageBody(
            this.deps.roomKeys.cachedDataKey(event.roomId),
            { roomId: event.roomId, seq: event.seq, bodySealed: event.bodySealed },
            this.deps.logger,
          );
    return {
      seq: event.seq,
      kind: event.kind,
      participantId: event.participantId,
      slot: event.slot,
      senderName: event.senderName,
      text: body.text,
      readable: body.readable,
      senderIp: null,
      createdAt: event.createdAt,
      image: event.image,
    };
  }

  private renderMessage(code: string, message: TranscriptEntry, mine: boolean): string {
    return this.deps.views.render('partials/message', { message, mine, code, fmt, live: true });
  }

  private renderPresence(connection: Connection, online: boolean): string {
    const partnerName = connection.partnerName;
    const status = this.deps.views.render('partials/partner-status', { online, partnerName, oob: true });
    // A partner with a name has joined: the page stops asking to share the code.
    return partnerName === null
      ? status
      : status + this.deps.views.render('partials/room-empty', { partnerJoined: true, oob: true });
  }

  private renderTyping(name: string | null, typing: boolean): string {
    return this.deps.views.render('partials/typing', { name, typing, oob: true });
  }

  private send(connection: Connection, html: string): void {
    const { socket } = connection;
    if (socket.readyState !== socket.OPEN) return;
    if (socket.bufferedAmount > this.options.maxBufferedBytes) {
      // A reader this slow would make us buffer without bound: cut it off; it reconnects and catches up.
      this.deps.logger.info(
        { roomId: connection.roomId, buffered: socket.bufferedAmount },
        'slow socket closed',
      );
      socket.terminate();
      return;
    }
    socket.send(html);
  }

  private onFrame(connection: Connection, data: RawData, isBinary: boolean): void {
    const now = Date.now();
    connection.frameTokens = Math.min(
      this.options.framesPerSecond * 2,
      connection.frameTokens + ((now - connection.frameAt) / 1000) * this.options.framesPerSecond,
    );
    connection.frameAt = now;
    if (connection.frameTokens < 1) {
      connection.socket.close(1008, 'too many frames');
      return;
    }
    connection.frameTokens -= 1;
    if (isBinary) {
      connection.socket.close(1003, 'text frames only');
      return;
    }
    let frame: unknown;
    try {
      frame = JSON.parse(data.toString());
    } catch {
      return; // not JSON: ignored, like any frame we do not understand
    }
    if (typeof frame === 'object' && frame !== null && 'typing' in frame) {
      this.typing(connection.roomId, connection.slot, true);
    }
  }

  private typing(roomId: string, slot: 1 | 2, on: boolean): void {
    const key = `${roomId}:${slot}`;
    const existing = this.typingTimers.get(key);
    if (existing) clearTimeout(existing);
    if (on) {
      this.typingTimers.set(
        key,
        setTimeout(() => this.typing(roomId, slot, false), this.options.typingTimeoutMs).unref(),
      );
      // Keystrokes come often; the partner needs to hear "typing" only once in a while.
      const last = this.typingSentAt.get(key) ?? 0;
      if (Date.now() - last < this.options.typingTimeoutMs / 2) return;
      this.typingSentAt.set(key, Date.now());
    } else {
      this.typingTimers.delete(key);
      this.typingSentAt.delete(key);
    }
    this.pushTyping(roomId, slot, on);
    this.publish(roomChannel(roomId), { t: 'typing', o: this.processId, r: roomId, sl: slot, on });
  }

  private clearTyping(roomId: string, slot: 1 | 2): void {
    if (this.typingTimers.has(`${roomId}:${slot}`)) this.typing(roomId, slot, false);
  }

  private pushTyping(roomId: string, slot: 1 | 2, typing: boolean): void {
    for (const connection of this.rooms.get(roomId)?.connections ?? []) {
      if (connection.slot !== slot) this.send(connection, this.renderTyping(connection.partnerName, typing));
    }
  }

  private endLocally(roomId: string): void {
    const room = this.rooms.get(roomId);
    if (!room) return;
    const html = this.deps.views.render('partials/chat-ended', { oob: true });
    for (const connection of [...room.connections]) {
      this.send(connection, html);
      // 1000: a normal close, which htmx does not try to reconnect.
      connection.socket.close(1000, 'chat ended');
    }
  }

  private onWire(raw: string): void {
    const ownAt = raw.indexOf(this.ownEventMarker);
    // Right after the leading {"t":"…" (the longest type has 11 characters).
    if (ownAt > 0 && ownAt <= 17) return;
    let event: WireEvent;
    try {
      event = JSON.parse(raw) as WireEvent;
    } catch {
      return;
    }
    if (event.o === this.processId) return;
    this.lastHeard.set(event.o, Date.now());
    switch (event.t) {
      case 'msg':
        void this.deliverRemote({
          roomId: event.r,
          seq: event.s,
          kind: event.k,
          participantId: event.p,
          slot: event.sl,
          senderName: event.n,
          createdAt: event.c,
          bodySealed: Buffer.from(event.b, 'base64'),
          image: event.i,
        });
        break;
      case 'presence': {
        let slots = this.remotePresence.get(event.r);
        if (!slots) {
          slots = new Map();
          this.remotePresence.set(event.r, slots);
        }
        let processes = slots.get(event.sl);
        if (!processes) {
          processes = new Set();
          slots.set(event.sl, processes);
        }
        const before = this.isOnline(event.r, event.sl);
        if (event.on) this.learnName(event.r, event.sl, event.n);
        if (event.on) {
          processes.add(event.o);
          this.heardListener(event.r, event.o);
        } else {
          processes.delete(event.o);
          if (!slots.get((3 - event.sl) as 1 | 2)?.has(event.o)) this.forgetListener(event.r, event.o);
        }
        if (this.isOnline(event.r, event.sl) !== before) this.pushPresence(event.r, event.sl);
        break;
      }
      case 'typing':
        this.heardListener(event.r, event.o);
        this.pushTyping(event.r, event.sl, event.on);
        break;
      case 'head': {
        // Messages up to `s` were committed in a process that did not know we listen.
        const room = this.rooms.get(event.r);
        for (const connection of room?.connections ?? []) this.settle(connection, event.s);
        break;
      }
      case 'hello': {
        this.heardListener(event.r, event.o);
        // The answer is how the newcomer hears of us (and so publishes its messages to us).
        const room = this.rooms.get(event.r);
        if (room) {
          this.publishToRoom(room, () =>
            ([1, 2] as const)
              .filter((slot) => this.localCount(room.id, slot) > 0)
              .map((slot) => this.presenceEvent(room.id, slot, true)),
          );
        }
        break;
      }
      case 'joined':
        this.guestJoined(event.r, event.n);
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

  /** Another process has sockets in this room: publish its messages, starting with where it stands. */
  private heardListener(roomId: string, processId: string): void {
    const room = this.rooms.get(roomId);
    if (!room || room.listeners?.includes(processId)) return;
    room.listeners ??= [];
    room.listeners.push(processId);
    if (room.unpublishedSeq > 0) {
      const head = room.unpublishedSeq;
      this.publishToRoom(room, () => [{ t: 'head', o: this.processId, r: roomId, s: head }]);
    }
  }

  private forgetListener(roomId: string, processId: string): void {
    const room = this.rooms.get(roomId);
    const listeners = room?.listeners?.filter((listener) => listener !== processId);
    if (room && listeners) room.listeners = listeners.length > 0 ? listeners : null;
  }

  /** A message from another process may be the first this process sees of the room's key. */
  private async deliverRemote(event: MessageEvent): Promise<void> {
    if (!this.rooms.has(event.roomId)) return;
    if (!this.deps.roomKeys.cachedDataKey(event.roomId)) {
      await this.deps.roomKeys.dataKey(event.roomId).catch(() => undefined);
    }
    this.deliver(event);
  }

  private dropSilentProcesses(): void {
    const now = Date.now();
    for (const [processId, heard] of this.lastHeard) {
      if (now - heard < PROCESS_TIMEOUT_MS) continue;
      this.lastHeard.delete(processId);
      for (const roomId of this.rooms.keys()) this.forgetListener(roomId, processId);
      for (const [roomId, slots] of this.remotePresence) {
        for (const [slot, processes] of slots) {
          if (processes.delete(processId)) this.pushPresence(roomId, slot);
        }
      }
    }
  }

  /**
   * After the bus was down, other processes may have committed messages we never heard of:
   * each socket catches up from the database after the last seq it was sent.
   */
  private async afterBusReconnect(): Promise<void> {
    for (const [roomId, room] of this.rooms) {
      this.publishToRoom(room, () => [{ t: 'hello', o: this.processId, r: roomId }]);
      for (const connection of room.connections) {
        const missed = await loadTranscript(this.deps, roomId, {
          afterSeq: connection.settled,
          limit: MAX_CATCH_UP,
        }).catch(() => []);
        for (const entry of missed) {
          if (connection.hasSent(entry.seq)) continue;
          connection.markSent(entry.seq);
          this.send(connection, this.renderMessage(connection.code, entry, entry.slot === connection.slot));
          connection.highest = Math.max(connection.highest, entry.seq);
        }
        connection.settled = Math.max(connection.settled, missed.at(-1)?.seq ?? 0);
        this.settle(connection, connection.highest);
      }
    }
  }

  private heartbeat(): void {
    for (const room of this.rooms.values()) {
      for (const connection of room.connections) {
        if (!connection.alive) {
          // No pong since the last ping: the peer is gone without a close.
          connection.socket.terminate();
          continue;
        }
        connection.alive = false;
        if (connection.socket.readyState === connection.socket.OPEN) connection.socket.ping();
      }
    }
  }

  /**
   * Publishes events that other processes must hear for messages to reach them (hello, the
   * answer to a hello, head), trying again every second while the room has sockets here: a
   * process publishes a room's messages only to processes it has heard, so a hello lost to a
   * dropped connection would leave sockets without them. The events are made afresh for each
   * try, so a retried answer tells who is online then.
   */
  private publishToRoom(room: LocalRoom, events: () => WireEvent[]): void {
    const channel = roomChannel(room.id);
    Promise.all(events().map((event) => this.deps.bus.publish(channel, JSON.stringify(event)))).catch(
      (error: unknown) => {
        this.deps.logger.debug(
          { err: { message: (error as Error).message } },
          'bus publish failed; retrying',
        );
        const retry = setTimeout(() => {
          if (!this.closing && this.rooms.get(room.id) === room) this.publishToRoom(room, events);
        }, PUBLISH_RETRY_MS);
        retry.unref();
      },
    );
  }

  private publish(channel: string, event: WireEvent): void {
    this.deps.bus.publish(channel, JSON.stringify(event)).catch((error: unknown) => {
      // Local sockets were served already; other processes catch up when the bus is back.
      this.deps.logger.debug({ err: { message: (error as Error).message } }, 'bus publish failed');
    });
  }
}
