import type { WebSocket } from 'ws';
import type { TranscriptEntry, TranscriptImage } from '../transcript.ts';

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
export type LocalRoom = {
  id: string;
  code: string;
  /** Usually one or two (a page per participant); an array costs less than a Set. */
  sockets: LiveSocket[];
  /** The participants' display names by slot (index slot - 1), as far as known here. */
  names: [string | null, string | null];
  /** Set while a catch-up of this room's holes is due (see MessageDelivery). */
  fillTimer: NodeJS.Timeout | undefined;
};

/** Past this many seqs sent ahead of a hole, the lowest are forgotten (at worst one is sent twice). */
const MAX_AHEAD = 4_096;

/**
 * One open socket of a room page. A process holds tens of thousands of mostly idle sockets, so
 * this is one small object of fixed shape: the room's id, code and names live on the room, the
 * socket's listeners are shared by every socket, and the seqs sent are "everything up to
 * `settled`" plus the few sent ahead of a hole.
 */
export class LiveSocket {
  /** Answered the last ping (see SocketRegistry's heartbeat). */
  alive = true;
  /** Every message up to this seq has been sent, or does not exist (a retried send skips a seq). */
  settled: number;
  /** The highest seq sent or heard of. Above `settled` means a hole, which a catch-up fills. */
  highest: number;
  /** Seqs above `settled` that were sent, ascending; null when there are none (nearly always). */
  ahead: number[] | null = null;
  /** While the first catch-up runs, live events wait here (then go out in order, without repeats). */
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

  get partnerName(): string | null {
    return this.room.names[2 - this.slot] ?? null;
  }

  get isOpen(): boolean {
    return this.socket.readyState === this.socket.OPEN;
  }

  /** Whether the message with this seq has gone to this socket (or is known not to exist). */
  hasSent(seq: number): boolean {
    return seq <= this.settled || (this.ahead?.includes(seq) ?? false);
  }

  /** Records a seq as sent, moving `settled` over what has become contiguous. */
  markSent(seq: number): void {
    if (this.hasSent(seq)) return;
    this.highest = Math.max(this.highest, seq);
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

  /** Every seq up to `seq` has been sent or does not exist (the database said so). */
  settleUpTo(seq: number): void {
    this.settled = Math.max(this.settled, seq);
    this.highest = Math.max(this.highest, seq);
    this.advance();
  }

  /** Whether some seq below `highest` has not been sent yet. */
  get hasHole(): boolean {
    return this.highest > this.settled;
  }

  /** Moves `settled` over the seqs sent ahead that are now contiguous, and forgets those below it. */
  private advance(): void {
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
