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
/** How soon a hello (or its answer) that could not be published is tried again. */
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

/**
 * Events between the processes that serve one set of rooms (Redis), by room channel. A process
 * subscribes to the channel of every room it has sockets in and publishes every event of those
 * rooms there; what it publishes comes back to it too, and is told apart by the sender's id in
 * front of the JSON (`<process id> <json>`). With the in-process bus there is no other process:
 * nothing is published or subscribed.
 *
 * Every message of a room is published, even when no other process has sockets in it. Skipping
 * those took a protocol of its own (each process announcing itself in each room, and telling a
 * newcomer the highest seq it had not published); the benchmark measured what it saved at
 * <TODO> (docs/performance.md), so the simpler rule stays.
 */
export class CrossProcessFanout {
  readonly processId = randomBytes(8).toString('hex');
  private readonly prefix = `${this.processId} `;
  private readonly shared: boolean;
  /** The rooms this process has joined: their subscription, active once the promise resolves. */
  private readonly rooms = new Map<string, Promise<() => Promise<void>>>();
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
    let subscription = this.rooms.get(roomId);
    if (!subscription) {
      // A handler per room: leaving and joining again at once must not unsubscribe the new one.
      subscription = this.bus.subscribe(roomChannel(roomId), (raw) => this.receive(raw));
      this.rooms.set(roomId, subscription);
      void subscription.then(
        () => this.hello(roomId),
        () => undefined,
      );
    }
    return subscription.then(
      () => undefined,
      () => undefined,
    );
  }

  leaveRoom(roomId: string): void {
    const subscription = this.rooms.get(roomId);
    if (!subscription) return;
    this.rooms.delete(roomId);
    void subscription.then((unsubscribe) => unsubscribe()).catch(() => undefined);
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
    const subscription = this.rooms.get(roomId);
    const channel = roomChannel(roomId);
    Promise.all(
      events().map((event) => this.bus.publish(channel, this.prefix + JSON.stringify(event))),
    ).catch((error: unknown) => {
      this.logger.debug({ err: { message: (error as Error).message } }, 'bus publish failed; retrying');
      setTimeout(() => {
        if (!this.closing && subscription && this.rooms.get(roomId) === subscription) {
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
    this.events.onEvent(event, origin);
  }

  private dropSilentProcesses(): void {
    const now = Date.now();
    for (const [processId, heard] of this.lastHeard) {
      if (now - heard < PROCESS_TIMEOUT_MS) continue;
      this.lastHeard.delete(processId);
      this.events.onProcessGone(processId);
    }
  }
}
