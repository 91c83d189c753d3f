import type { Eta } from 'eta';
import type { Logger } from 'pino';
import type { RoomKeys } from '../../crypto/room-keys.ts';
import type { DatabasePool } from '../../infra/db.ts';
import { fmt } from '../../web/format.ts';
import { loadTranscript, openMessageBody, type TranscriptEntry } from '../transcript.ts';
import type { LiveSocket, LocalRoom, MessageEvent } from './live-socket.ts';
import type { SocketRegistry } from './socket-registry.ts';

/** At most this many messages per catch-up read; a socket further behind gets the rest next time. */
const MAX_CATCH_UP = 1_000;
/** How long a hole in a socket's seqs may stay open before it is filled from the database. */
const GAP_FILL_DELAY_MS = 300;

export type DeliveryDeps = {
  db: DatabasePool;
  roomKeys: RoomKeys;
  views: Eta;
  logger: Logger;
  registry: SocketRegistry;
};

/**
 * Messages to the sockets of this process, each once and, as far as it can be, in order.
 *
 * Live events (`deliver`) are rendered once per perspective (mine / theirs) for all viewers of a
 * room. Each socket tracks the seq up to which it has everything; whatever it lacks comes from
 * PostgreSQL through one routine, `catchUp`, used when a socket connects (it missed what came
 * after its page's last seq), when a hole opens (two processes committed 7 and 8 and 8 arrived
 * first; a live event was lost) and when the bus comes back after an outage (other processes'
 * messages went unheard). It reads a room once for all the sockets it catches up.
 */
export class MessageDelivery {
  constructor(private readonly deps: DeliveryDeps) {}

  /**
   * Delivers a committed message to the room's sockets here. The sender's process passes the
   * text (nothing to open) and the sending page's id (that page shows it from its HTTP answer).
   */
  deliver(event: MessageEvent, text?: string, senderTab: string | null = null): void {
    const room = this.deps.registry.room(event.roomId);
    if (!room) return;
    const rendered = new Map<boolean, string>();
    for (const live of room.sockets) {
      if (live.held) {
        live.held.push(event);
        continue;
      }
      if (live.hasSent(event.seq)) continue;
      live.markSent(event.seq);
      // A slot is one participant of the room: the same slot and page id is the sending page.
      const sendingPage = senderTab !== null && live.tab === senderTab && live.slot === event.slot;
      if (!sendingPage) {
        const mine = live.slot === event.slot;
        let html = rendered.get(mine);
        if (html === undefined) {
          html = this.render(room.code, this.entryOf(event, text), mine);
          rendered.set(mine, html);
        }
        this.deps.registry.send(live, html);
      }
    }
    this.fillHolesSoon(room);
  }

  /** Messages up to `seq` exist (another process said so): sockets that lack some catch up. */
  heardOf(roomId: string, seq: number): void {
    const room = this.deps.registry.room(roomId);
    if (!room) return;
    for (const live of room.sockets) live.highest = Math.max(live.highest, seq);
    this.fillHolesSoon(room);
  }

  /**
   * Sends each of these sockets (all of one room) the messages it lacks, from one read of the
   * room: those after its `settled` seq, up to what the database has. Then it releases what a
   * connecting socket held meanwhile, in order. A read that fails leaves the sockets as they were
   * (a hole stays and is tried again; a connecting page has its history from the page itself).
   */
  async catchUp(room: LocalRoom, sockets: readonly LiveSocket[]): Promise<void> {
    if (sockets.length === 0) return;
    // Seqs commit in order (the writer holds the room's row while it reserves and commits them):
    // every seq up to the highest one heard of is in the database when the read starts.
    const known = Math.max(...sockets.map((live) => live.highest));
    const from = Math.min(...sockets.map((live) => live.settled));
    let missed: TranscriptEntry[] | undefined;
    try {
      missed = await loadTranscript(this.deps, room.id, { afterSeq: from, limit: MAX_CATCH_UP });
    } catch (error) {
      this.deps.logger.warn(
        { err: { message: (error as Error).message }, roomId: room.id },
        'catch-up failed',
      );
    }
    if (missed) {
      // What the read answered is complete up to its last row, or up to `known` if it got all.
      const complete =
        missed.length < MAX_CATCH_UP
          ? Math.max(known, missed.at(-1)?.seq ?? 0)
          : (missed.at(-1)?.seq ?? from);
      const rendered = new Map<string, string>();
      for (const live of sockets) {
        for (const entry of missed) {
          if (live.hasSent(entry.seq)) continue;
          live.markSent(entry.seq);
          const mine = entry.slot === live.slot;
          const key = `${entry.seq}:${mine}`;
          let html = rendered.get(key);
          if (html === undefined) {
            html = this.render(room.code, entry, mine);
            rendered.set(key, html);
          }
          this.deps.registry.send(live, html);
        }
        live.settleUpTo(complete);
      }
    }
    for (const live of sockets) {
      const held = live.held;
      live.held = null;
      for (const event of held?.sort((a, b) => a.seq - b.seq) ?? []) this.deliver(event);
    }
    this.fillHolesSoon(room);
  }

  /** Catches up the sockets of a room with a hole, after a moment (the missing event may yet come). */
  private fillHolesSoon(room: LocalRoom): void {
    if (room.fillTimer || !room.sockets.some((live) => live.hasHole)) return;
    room.fillTimer = setTimeout(() => {
      room.fillTimer = undefined;
      if (this.deps.registry.room(room.id) !== room) return;
      void this.catchUp(
        room,
        room.sockets.filter((live) => live.hasHole && live.isOpen && live.held === null),
      );
    }, GAP_FILL_DELAY_MS);
    room.fillTimer.unref();
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

  private render(code: string, message: TranscriptEntry, mine: boolean): string {
    return this.deps.views.render('partials/message', { message, mine, code, fmt, live: true });
  }
}
