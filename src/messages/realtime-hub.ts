import { randomBytes } from 'node:crypto';
import type { Eta } from 'eta';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
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
  | { t: 'ended'; o: string; r: string }
  /** On the hub channel, heard by every process: forget what is cached about these rooms. */
  | { t: 'rooms-ended'; o: string; rs: string[] }
  | { t: 'alive'; o: string };

/** What the hub knows about one open socket. */
export type SocketContext = {
  roomId: string;
  code: string;
  participantId: string;
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

type Connection = SocketContext & {
  socket: WebSocket;
  alive: boolean;
  sent: Set<number>;
  /** Every message up to this seq has been sent, or does not exist (a retried send skips a seq). */
  settled: number;
  /** The highest seq sent. Above `settled` means a hole: a timer fills it from the database. */
  highest: number;
  fillTimer: NodeJS.Timeout | undefined;
  /** While the missed messages load, live events wait here (then go out in order, without repeats). */
  held: MessageEvent[] | null;
  frames: { tokens: number; at: number };
};

type LocalRoom = {
  code: string;
  connections: Set<Connection>;
  unsubscribe: Promise<() => Promise<void>>;
};

export type HubOptions = {
  /** A socket whose unsent data passes this is closed (it reconnects and catches up from the database). */
  maxBufferedBytes?: number;
  heartbeatMs?: number;
  /** A typing indicator clears after this long without another keystroke. */
  typingTimeoutMs?: number;
  /** Frames a client may send per second (burst: twice that). */
  framesPerSecond?: number;
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

/**
 * Live delivery. Each process keeps its own sockets by room and subscribes to the bus channel of
 * every room it has sockets in. A committed message is delivered at once to local sockets and
 * published (sealed) on the bus for the other processes; each process opens it once and renders
 * it once per perspective (mine / theirs) for all its viewers. Presence and typing travel the
 * same way. A connecting socket first receives what it missed, read from PostgreSQL by seq.
 */
export class RealtimeHub {
  readonly processId = randomBytes(8).toString('hex');
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

  constructor(
    private readonly deps: HubDeps,
    options: HubOptions = {},
  ) {
    this.options = {
      maxBufferedBytes: options.maxBufferedBytes ?? 1024 * 1024,
      heartbeatMs: options.heartbeatMs ?? 30_000,
      typingTimeoutMs: options.typingTimeoutMs ?? 5_000,
      framesPerSecond: options.framesPerSecond ?? 10,
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
    for (const room of this.rooms.values()) count += room.connections.size;
    return count;
  }

  /** Takes over an upgraded socket: catches it up, then keeps it live until it closes. */
  async attach(socket: WebSocket, context: SocketContext): Promise<void> {
    // First, so that no error goes unheard (the caller has taken the plugin's listener off).
    socket.on('error', (error) => {
      this.deps.logger.warn({ err: { message: error.message }, roomId: context.roomId }, 'websocket error');
      socket.terminate();
    });
    if (this.closing) {
      socket.close(1012, 'server restarting');
      return;
    }
    const connection: Connection = {
      ...context,
      socket,
      alive: true,
      sent: new Set(),
      settled: context.afterSeq,
      highest: context.afterSeq,
      fillTimer: undefined,
      held: [],
      frames: { tokens: this.options.framesPerSecond * 2, at: Date.now() },
    };
    socket.on('pong', () => {
      connection.alive = true;
    });
    socket.on('message', (data, isBinary) => this.onFrame(connection, data, isBinary));
    socket.on('close', () => this.detach(connection));

    const room = this.joinRoom(connection);
    await room.unsubscribe.catch(() => undefined);
    const partner = (3 - connection.slot) as 1 | 2;
    this.send(connection, this.renderPresence(connection, this.isOnline(connection.roomId, partner)));

    try {
      const missed = await loadTranscript(this.deps, connection.roomId, {
        afterSeq: connection.afterSeq,
        limit: MAX_CATCH_UP,
      });
      for (const entry of missed) {
        connection.sent.add(entry.seq);
        this.send(connection, this.renderMessage(connection.code, entry, entry.slot === connection.slot));
      }
      // What the database had is complete up to its last row, holes included.
      const last = missed.at(-1)?.seq ?? connection.afterSeq;
      connection.settled = Math.max(connection.settled, last);
      connection.highest = Math.max(connection.highest, last);
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
   */
  publishMessage(event: MessageEvent, text?: string, senderTab?: string | null): void {
    this.clearTyping(event.roomId, event.slot);
    this.deliver(event, text, senderTab ?? null);
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

  private joinRoom(connection: Connection): LocalRoom {
    let room = this.rooms.get(connection.roomId);
    if (!room) {
      const roomId = connection.roomId;
      const unsubscribe = this.deps.bus.subscribe(roomChannel(roomId), (raw) => this.onWire(raw));
      room = { code: connection.code, connections: new Set(), unsubscribe };
      this.rooms.set(roomId, room);
      // Ask the other processes who is online in this room.
      void unsubscribe.then(() =>
        this.publish(roomChannel(roomId), { t: 'hello', o: this.processId, r: roomId }),
      );
    }
    const wasOnline = this.localCount(connection.roomId, connection.slot) > 0;
    room.connections.add(connection);
    this.learnName(connection.roomId, connection.slot, connection.myName);
    if (!wasOnline) this.presenceChanged(connection.roomId, connection.slot, true);
    return room;
  }

  private detach(connection: Connection): void {
    if (connection.fillTimer) clearTimeout(connection.fillTimer);
    const room = this.rooms.get(connection.roomId);
    if (!room?.connections.delete(connection)) return;
    if (this.localCount(connection.roomId, connection.slot) === 0) {
      this.clearTyping(connection.roomId, connection.slot);
      this.presenceChanged(connection.roomId, connection.slot, false);
    }
    if (room.connections.size === 0) {
      this.rooms.delete(connection.roomId);
      void room.unsubscribe.then((unsubscribe) => unsubscribe()).catch(() => undefined);
    }
  }

  private localCount(roomId: string, slot: 1 | 2): number {
    let count = 0;
    for (const connection of this.rooms.get(roomId)?.connections ?? [])
      if (connection.slot === slot) count += 1;
    return count;
  }

  /** Whether the participant in `slot` has a live socket in this room, in any process. */
  isOnline(roomId: string, slot: 1 | 2): boolean {
    return this.localCount(roomId, slot) > 0 || (this.remotePresence.get(roomId)?.get(slot)?.size ?? 0) > 0;
  }

  private presenceChanged(roomId: string, slot: 1 | 2, online: boolean): void {
    this.pushPresence(roomId, slot);
    this.publish(roomChannel(roomId), {
      t: 'presence',
      o: this.processId,
      r: roomId,
      sl: slot,
      on: online,
      n: this.localName(roomId, slot),
    });
  }

  /**
   * A host's page may have opened before anyone joined: when the guest's socket shows up (here or
   * in another process), the host's sockets learn the guest's name, for presence and typing.
   */
  private learnName(roomId: string, slot: 1 | 2, name: string | null | undefined): void {
    if (!name) return;
    for (const connection of this.rooms.get(roomId)?.connections ?? []) {
      if (connection.slot !== slot && connection.partnerName === null) connection.partnerName = name;
    }
  }

  private localName(roomId: string, slot: 1 | 2): string | null {
    for (const connection of this.rooms.get(roomId)?.connections ?? []) {
      if (connection.slot === slot && connection.myName) return connection.myName;
    }
    return null;
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
    if (connection.sent.has(event.seq) || event.seq <= connection.settled) return;
    connection.sent.add(event.seq);
    if (connection.sent.size > 4_096) connection.sent = new Set([...connection.sent].slice(-1_024));
    if (
      senderTab !== null &&
      connection.tab === senderTab &&
      connection.participantId === event.participantId
    ) {
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
    while (connection.sent.has(connection.settled + 1)) connection.settled += 1;
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
      if (entry.seq > upTo || connection.sent.has(entry.seq)) continue;
      connection.sent.add(entry.seq);
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
    return this.deps.views.render('partials/partner-status', {
      online,
      partnerName: connection.partnerName,
      oob: true,
    });
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

  private onFrame(connection: Connection, data: import('ws').RawData, isBinary: boolean): void {
    const now = Date.now();
    const { frames } = connection;
    frames.tokens = Math.min(
      this.options.framesPerSecond * 2,
      frames.tokens + ((now - frames.at) / 1000) * this.options.framesPerSecond,
    );
    frames.at = now;
    if (frames.tokens < 1) {
      connection.socket.close(1008, 'too many frames');
      return;
    }
    frames.tokens -= 1;
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
        if (event.on) processes.add(event.o);
        else processes.delete(event.o);
        if (this.isOnline(event.r, event.sl) !== before) this.pushPresence(event.r, event.sl);
        break;
      }
      case 'typing':
        this.pushTyping(event.r, event.sl, event.on);
        break;
      case 'hello':
        for (const slot of [1, 2] as const) {
          if (this.localCount(event.r, slot) > 0) {
            this.publish(roomChannel(event.r), {
              t: 'presence',
              o: this.processId,
              r: event.r,
              sl: slot,
              on: true,
              n: this.localName(event.r, slot),
            });
          }
        }
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
      this.publish(roomChannel(roomId), { t: 'hello', o: this.processId, r: roomId });
      for (const connection of room.connections) {
        const missed = await loadTranscript(this.deps, roomId, {
          afterSeq: connection.settled,
          limit: MAX_CATCH_UP,
        }).catch(() => []);
        for (const entry of missed) {
          if (connection.sent.has(entry.seq)) continue;
          connection.sent.add(entry.seq);
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

  private publish(channel: string, event: WireEvent): void {
    this.deps.bus.publish(channel, JSON.stringify(event)).catch((error: unknown) => {
      // Local sockets were served already; other processes catch up when the bus is back.
      this.deps.logger.debug({ err: { message: (error as Error).message } }, 'bus publish failed');
    });
  }
}
