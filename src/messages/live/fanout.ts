import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Bus } from '../../infra/bus.ts';
import type { TranscriptImage } from '../transcript.ts';
import type { MessageEvent } from './live-socket.ts';

/** What one process tells the others. Short keys: a `msg` crosses the bus for every message. */
export type WireEvent =
  | {
      t: 'msg';
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
  | { t: 'presence'; r: string; sl: 1 | 2; on: boolean; n?: string | null }
  | { t: 'typing'; r: string; sl: 1 | 2; on: boolean }
  /** A process joined the room: the others answer with their presence there. */
  | { t: 'hello'; r: string }
  /** Messages up to seq `s` were delivered in the sender's process only (see `publishMessage`). */
  | { t: 'head'; r: string; s: number }
  | { t: 'ended'; r: string }
  /** A guest took the second seat (with or without a socket): the host's pages learn the name. */
  | { t: 'joined'; r: string; n: string }
  /** On the hub channel, heard by every process: forget what is cached about these rooms. */
  | { t: 'rooms-ended'; rs: string[] }
  | { t: 'alive' };

export type FanoutEvents = {
  /** An event another process published. */
  onEvent(event: WireEvent, origin: string): void;
  /** A process not heard from for a while is gone. */
  onProcessGone(processId: string): void;
  /** The bus lost its connection and is back: whatever crossed it meanwhile was lost. */
  onReconnect(): void;
};

const HUB_CHANNEL = 'ccc:hub';
const roomChannel = (roomId: string) => `ccc:room:${roomId}`;
/** A process not heard from for this long is gone; the presence it announced is dropped. */
const PROCESS_TIMEOUT_MS = 35_000;
const ALIVE_INTERVAL_MS = 10_000;
/** How soon a hello, its answer or a head that could not be published is tried again. */
const PUBLISH_RETRY_MS = 1_000;

/** A message event as it crosses the bus (the body stays sealed). */
export function messageToWire(event: MessageEvent): WireEvent {
  return {
    t: 'msg',
    r: event.roomId,
    s: event.seq,
    k: event.kind,
    p: event.participantId,
    sl: event.slot,
    n: event.senderName,
    c: event.createdAt,
    b: event.bodySealed.toString('base64'),
    i: event.image,
  };
}

export function messageFromWire(event: Extract<WireEvent, { t: 'msg' }>): MessageEvent {
  return {
    roomId: event.r,
    seq: event.s,
    kind: event.k,
    participantId: event.p,
    slot: event.sl,
    senderName: event.n,
    createdAt: event.c,
    bodySealed: Buffer.from(event.b, 'base64'),
    image: event.i,
  };
}

/** A room this process has sockets in, as the fan-out sees it. */
type JoinedRoom = {
  /** The room's channel subscription, active once the promise resolves. */
  subscription: Promise<() => Promise<void>>;
  active: boolean;
  /**
   * Other processes with sockets in the room, as heard, with the slots they said are online; null
   * while there are none (nearly every room, with one process: a process holds ~20,000 sockets).
   */
  listeners: Map<string, Set<1 | 2>> | null;
  /** The highest seq delivered here and not published, because no other process listened. */
  unpublishedSeq: number;
};

/**
 * Events between the processes that serve one set of rooms (Redis), by room channel. A process
 * subscribes to the channel of every room it has sockets in and publishes the room's events
 * there; what it publishes comes back to it too, and is told apart by the sender's id in front of
 * the JSON (`<process id> <json>`). With the in-process bus there is no other process: nothing is
 * published or subscribed.
 *
 * A room whose sockets are all in this process (every room, with one process) publishes no
 * messages: publishing them all, and Redis handing each back, cost the app 8 % more CPU per
 * message (npm run bench, A/B at 300/s; before, 0.65-0.70 against 0.77-0.81 core at 4,000/s;
 * docs/performance.md). That takes knowing who else listens. A process whose first socket joins
 * a room subscribes to its channel and then says hello; every process with sockets there answers
 * with its presence, and each side counts the other as a listener from then on (until its
 * presence there goes). A message committed here after the newcomer's catch-up read and before
 * its hello was heard was not published, so on hearing a new listener this process tells it the
 * room's highest unpublished seq (`head`): the newcomer sees a hole up to it and catches up.
 */
export class CrossProcessFanout {
  readonly processId = randomBytes(8).toString('hex');
  private readonly prefix = `${this.processId} `;
  private readonly shared: boolean;
  private readonly rooms = new Map<string, JoinedRoom>();
  private readonly lastHeard = new Map<string, number>();
  private readonly timers: NodeJS.Timeout[] = [];
  private hubSubscription: Promise<() => Promise<void>> | undefined;
  private closing = false;

  constructor(
    private readonly bus: Bus,
    private readonly logger: Logger,
    private readonly events: FanoutEvents,
  ) {
    this.shared = bus.kind !== 'memory';
  }

  async start(): Promise<void> {
    if (!this.shared) return;
    this.hubSubscription = this.bus.subscribe(HUB_CHANNEL, (raw) => this.receive(raw));
    await this.hubSubscription;
    this.bus.onReconnect(() => this.events.onReconnect());
    this.timers.push(
      setInterval(() => {
        this.publish(null, { t: 'alive' });
        this.dropSilentProcesses();
      }, ALIVE_INTERVAL_MS).unref(),
    );
  }

  /**
   * Subscribes to the room's channel (once per room) and, once that is active, asks the other
   * processes who is online there. Resolves when the subscription is active: from then on, every
   * event of the room published anywhere reaches this process.
   */
  joinRoom(roomId: string): Promise<void> {
    if (!this.shared) return Promise.resolve();
    let room = this.rooms.get(roomId);
    if (!room) {
      // A handler per room: leaving and joining again at once must not unsubscribe the new one.
      const subscription = this.bus.subscribe(roomChannel(roomId), (raw) => this.receive(raw));
      const joined: JoinedRoom = { subscription, active: false, listeners: null, unpublishedSeq: 0 };
      room = joined;
      this.rooms.set(roomId, joined);
      void subscription.then(
        () => {
          joined.active = true;
          this.hello(roomId);
        },
        () => undefined,
      );
    }
    return room.subscription.then(
      () => undefined,
      () => undefined,
    );
  }

  leaveRoom(roomId: string): void {
    const room = this.rooms.get(roomId);
    if (!room) return;
    this.rooms.delete(roomId);
    void room.subscription.then((unsubscribe) => unsubscribe()).catch(() => undefined);
  }

  /**
   * Publishes a committed message for the other processes, unless this process has the room's
   * sockets and knows no other process with sockets there: then it notes the seq for `head`.
   */
  publishMessage(event: MessageEvent): void {
    const room = this.rooms.get(event.roomId);
    if (room?.active && room.listeners === null) {
      room.unpublishedSeq = Math.max(room.unpublishedSeq, event.seq);
      return;
    }
    this.publish(event.roomId, messageToWire(event));
  }

  /** Asks the other processes who is online in the room (again after a bus outage). */
  hello(roomId: string): void {
    this.publishWhileJoined(roomId, () => [{ t: 'hello', r: roomId }]);
  }

  /**
   * Publishes an event of a room (`null`: of every process, on the hub channel). A failure is
   * logged, not retried: local sockets were served already, and the other processes catch up
   * from the database when a hole shows or when the bus is back.
   */
  publish(roomId: string | null, event: WireEvent): void {
    if (!this.shared) return;
    const channel = roomId === null ? HUB_CHANNEL : roomChannel(roomId);
    this.bus.publish(channel, this.prefix + JSON.stringify(event)).catch((error: unknown) => {
      this.logger.debug({ err: { message: (error as Error).message } }, 'bus publish failed');
    });
  }

  /**
   * Publishes what other processes must hear for presence to be right (a hello and its answer),
   * trying again every second while this process is in the room. The events are made afresh for
   * each try, so a retried answer tells who is online then.
   */
  publishWhileJoined(roomId: string, events: () => WireEvent[]): void {
    if (!this.shared) return;
    const joined = this.rooms.get(roomId);
    const channel = roomChannel(roomId);
    Promise.all(
      events().map((event) => this.bus.publish(channel, this.prefix + JSON.stringify(event))),
    ).catch((error: unknown) => {
      this.logger.debug({ err: { message: (error as Error).message } }, 'bus publish failed; retrying');
      setTimeout(() => {
        if (!this.closing && joined && this.rooms.get(roomId) === joined) {
          this.publishWhileJoined(roomId, events);
        }
      }, PUBLISH_RETRY_MS).unref();
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const timer of this.timers) clearInterval(timer);
    const unsubscribe = await this.hubSubscription?.catch(() => undefined);
    await unsubscribe?.().catch(() => undefined);
  }

  private receive(raw: string): void {
    if (raw.startsWith(this.prefix)) return; // our own, handed back by Redis
    const space = raw.indexOf(' ');
    if (space <= 0) return;
    const origin = raw.slice(0, space);
    let event: WireEvent;
    try {
      event = JSON.parse(raw.slice(space + 1)) as WireEvent;
    } catch {
      return;
    }
    this.lastHeard.set(origin, Date.now());
    if (event.t === 'hello' || event.t === 'typing') this.heardListener(event.r, origin);
    if (event.t === 'presence') this.heardPresence(event.r, origin, event.sl, event.on);
    this.events.onEvent(event, origin);
  }

  /** Another process has sockets in this room: publish to it, starting with where the room stands. */
  private heardListener(roomId: string, origin: string): void {
    const room = this.rooms.get(roomId);
    if (!room || room.listeners?.has(origin)) return;
    room.listeners ??= new Map();
    room.listeners.set(origin, new Set());
    if (room.unpublishedSeq > 0) {
      const head = room.unpublishedSeq;
      this.publishWhileJoined(roomId, () => [{ t: 'head', r: roomId, s: head }]);
    }
  }

  private forgetListener(room: JoinedRoom, processId: string): void {
    room.listeners?.delete(processId);
    if (room.listeners?.size === 0) room.listeners = null;
  }

  private heardPresence(roomId: string, origin: string, slot: 1 | 2, online: boolean): void {
    if (online) this.heardListener(roomId, origin);
    const room = this.rooms.get(roomId);
    const slots = room?.listeners?.get(origin);
    if (!room || !slots) return;
    if (online) slots.add(slot);
    else {
      slots.delete(slot);
      if (slots.size === 0) this.forgetListener(room, origin);
    }
  }

  private dropSilentProcesses(): void {
    const now = Date.now();
    for (const [processId, heard] of this.lastHeard) {
      if (now - heard < PROCESS_TIMEOUT_MS) continue;
      this.lastHeard.delete(processId);
      for (const room of this.rooms.values()) this.forgetListener(room, processId);
      this.events.onProcessGone(processId);
    }
  }
}
