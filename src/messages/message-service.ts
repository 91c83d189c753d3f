import type { Logger } from 'pino';
import type { Actor } from '../audit/audit-log.ts';
import type { RoomKeys } from '../crypto/room-keys.ts';
import { DomainError } from '../domain-error.ts';
import type { DatabasePool } from '../infra/db.ts';
import type { RoomAccess } from '../rooms/room-access.ts';
import { LastSeqReader } from './last-seq-reader.ts';
import type { MessageEvent } from './live/live-socket.ts';
import type { MessageWriter, PendingMessage, WrittenMessage } from './message-writer.ts';
import type { RealtimeHub } from './realtime-hub.ts';
import { loadTranscript, openMessageBody, type TranscriptEntry, type TranscriptQuery } from './transcript.ts';

// Control characters other than tab (\x09) and newline (\x0A), plus the line/paragraph separators.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const UNWANTED_CHARACTERS = /[\x00-\x08\x0B-\x1F\x7F-\x9F\u2028\u2029]/g;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The text people meant to send: CRLF as LF, control characters dropped, blank lines at the ends trimmed. */
export function cleanMessageText(input: string): string {
  return input
    .replace(/\r\n?/g, '\n')
    .replace(UNWANTED_CHARACTERS, '')
    .replace(/^\s*\n/, '')
    .replace(/\s+$/, '');
}

/**
 * Something a reader can see: not white space, not a format character (zero-width space and
 * joiner, bidi controls, soft hyphen) and not one of the "fillers" that render as nothing. A
 * message of only those would be an empty-looking bubble.
 */
const VISIBLE_CHARACTER = /[^\p{White_Space}\p{Cf}\u115F\u1160\u2800\u3164\uFFA0]/u;

export type SentMessage = TranscriptEntry & { duplicate: boolean };

/** Opened messages kept for room pages, across all rooms (oldest-used rooms go first). */
const RECENT_CACHE_ENTRIES = 20_000;

/** A room's newest messages; every message up to `checkedSeq` that belongs here is in `entries`. */
type Recent = { entries: TranscriptEntry[]; upToSeq: number; checkedSeq: number; limit: number };

/**
 * Sending and reading messages. A send is validated, written by the group-commit writer (and so
 * acknowledged only after commit), then delivered live by the hub.
 */
export class MessageService {
  /** Sends in flight by (participant, client_msg_id): a double submit waits for the first. */
  private readonly inFlight = new Map<string, Promise<SentMessage>>();
  /** Room id -> its newest messages, opened (see `recent`). */
  private readonly recentCache = new Map<string, Recent>();
  private recentCacheSize = 0;
  /** `last_seq` reads of room page loads, batched (see LastSeqReader). */
  private readonly lastSeqs: LastSeqReader;

  constructor(
    private readonly deps: {
      db: DatabasePool;
      roomKeys: RoomKeys;
      writer: MessageWriter;
      hub: RealtimeHub;
      logger: Logger;
    },
    private readonly settings: { maxMessageChars: number },
  ) {
    this.lastSeqs = new LastSeqReader(deps.db);
  }

  /**
   * Not `async`: an async function that returns a promise adds two microtask turns, on the path
   * every message takes. Invalid input throws at once, which inside an async caller is the same
   * as a rejection.
   */
  send(
    access: RoomAccess,
    input: { body: unknown; clientMsgId: unknown },
    actor: Actor,
    /** The sending page's id (see `SocketContext.tab`): its own socket is not sent this message. */
    senderTab: string | null = null,
  ): Promise<SentMessage> {
    if (access.room.status === 'pending') {
      // Not "ended" (the writer's answer for a room that is not active): it has not begun.
      throw new DomainError('conflict', 'Messages can be sent once the chat has started.');
    }
    const text = this.validate(input.body);
    const clientMsgId = parseClientMsgId(input.clientMsgId);
    const key = clientMsgId ? `${access.me.id}:${clientMsgId.toLowerCase()}` : undefined;
    const existing = key ? this.inFlight.get(key) : undefined;
    if (existing) return existing.then((message) => ({ ...message, duplicate: true }));

    const sending = this.write(
      access,
      {
        roomId: access.room.id,
        participantId: access.me.id,
        kind: 'text',
        clientMsgId,
        text,
        senderIp: actor.ip,
      },
      null,
      senderTab,
    );
    if (key) {
      this.inFlight.set(key, sending);
      const settled = () => {
        this.inFlight.delete(key);
      };
      sending.then(settled, settled);
    }
    return sending;
  }

  /**
   * Writes a message (text or image) and, once committed, delivers it live. Shared by text sends
   * and uploads, so both are sealed, ordered and delivered the same way.
   */
  async write(
    access: RoomAccess,
    pending: PendingMessage,
    image: MessageEvent['image'] = null,
    senderTab: string | null = null,
  ): Promise<SentMessage> {
    const written: WrittenMessage = await this.deps.writer.write(pending);
    const body = written.duplicate
      ? openMessageBody(
          this.deps.roomKeys.cachedDataKey(access.room.id),
          { roomId: access.room.id, seq: written.seq, bodySealed: written.bodySealed },
          this.deps.logger,
        )
      : { text: pending.text, readable: true };
    const message: SentMessage = {
      seq: written.seq,
      kind: pending.kind,
      participantId: access.me.id,
      slot: access.me.slot,
      senderName: access.me.displayName,
      text: body.text,
      readable: body.readable,
      senderIp: pending.senderIp,
      createdAt: written.createdAt,
      image,
      duplicate: written.duplicate,
    };
    if (!written.duplicate) {
      this.deps.hub.publishMessage(
        {
          roomId: access.room.id,
          seq: written.seq,
          kind: pending.kind,
          participantId: access.me.id,
          slot: access.me.slot,
          senderName: access.me.displayName,
          createdAt: written.createdAt,
          bodySealed: written.bodySealed,
          image,
        },
        pending.text,
        senderTab,
      );
    }
    return message;
  }

  /** The room's newest seq, as committed when this is asked (batched with other page loads). */
  lastSeq(roomId: string): Promise<number> {
    return this.lastSeqs.read(roomId);
  }

  history(roomId: string, query: TranscriptQuery = {}): Promise<TranscriptEntry[]> {
    return loadTranscript(this.deps, roomId, query);
  }

  /**
   * The newest `limit` messages of a live room, oldest first: what the room page shows. Reading
   * and opening them on every page load cost most of a page's CPU (row validation, one AES-GCM
   * open per message, and PostgreSQL planning a three-table join), so the opened entries are kept
   * per room, and a load first reads only the room's `last_seq`: unchanged, nothing was committed
   * since; otherwise it reads just what came after the newest message it has. That is exact: a
   * live room's messages never change once committed, and they commit in seq order together with
   * `last_seq` (the writer holds the room's row lock from reserving seqs until commit), so no
   * message can appear at or below a seq already seen. The cache is bounded, and a room's entries
   * are dropped when it ends (`forgetRecent`).
   */
  async recent(roomId: string, limit: number): Promise<TranscriptEntry[]> {
    const lastSeq = await this.lastSeqs.read(roomId);
    const cached = this.recentCache.get(roomId);
    let recent: Recent;
    if (cached && cached.limit === limit && cached.checkedSeq === lastSeq) {
      recent = cached;
    } else {
      const newer =
        cached && cached.limit === limit
          ? await loadTranscript(this.deps, roomId, { afterSeq: cached.upToSeq, limit })
          : undefined;
      if (!cached || !newer || newer.length >= limit) {
        // Nothing kept, or so much new that the kept part would not be shown at all: read it all.
        const entries = await loadTranscript(this.deps, roomId, { limit, newestFirst: true });
        const upToSeq = entries.at(-1)?.seq ?? 0;
        recent = { entries, upToSeq, checkedSeq: Math.max(lastSeq, upToSeq), limit };
      } else {
        // Every message after `upToSeq` is in `newer`, so this is the whole newest part, in order.
        const entries = newer.length === 0 ? cached.entries : [...cached.entries, ...newer].slice(-limit);
        const upToSeq = newer.at(-1)?.seq ?? cached.upToSeq;
        recent = { entries, upToSeq, checkedSeq: Math.max(lastSeq, upToSeq), limit };
      }
    }
    // Concurrent loads of a room each answer from their own reading; the newest one is kept.
    const kept = this.recentCache.get(roomId);
    if (!kept || kept.checkedSeq <= recent.checkedSeq) this.remember(roomId, recent);
    return recent.entries;
  }

  /** Drops the kept messages of rooms that ended. */
  forgetRecent(roomIds: string[]): void {
    for (const roomId of roomIds) {
      const cached = this.recentCache.get(roomId);
      if (!cached) continue;
      this.recentCache.delete(roomId);
      this.recentCacheSize -= cached.entries.length;
    }
  }

  private remember(roomId: string, recent: Recent): void {
    this.forgetRecent([roomId]);
    // Re-inserted last: the Map's order is the order of use.
    this.recentCache.set(roomId, recent);
    this.recentCacheSize += recent.entries.length;
    for (const [oldest, entry] of this.recentCache) {
      if (this.recentCacheSize <= RECENT_CACHE_ENTRIES || oldest === roomId) break;
      this.recentCache.delete(oldest);
      this.recentCacheSize -= entry.entries.length;
    }
  }

  private validate(body: unknown): string {
    if (Array.isArray(body))
      throw new DomainError('invalid', 'The form held more than one message; send one at a time.');
    if (typeof body !== 'string')
      throw new DomainError('invalid', 'Type a message first.', { title: 'Empty message' });
    const text = cleanMessageText(body);
    if (!VISIBLE_CHARACTER.test(text))
      throw new DomainError('invalid', 'Type a message first.', { title: 'Empty message' });
    assertMaxChars(text, this.settings.maxMessageChars, 'message');
    return text;
  }
}

/** Refuses a text longer than `max` characters, counted as people count them (code points). */
export function assertMaxChars(text: string, max: number, what: 'message' | 'caption'): void {
  // A string has at most as many code points as UTF-16 units: most texts need no counting.
  if (text.length <= max) return;
  const length = [...text].length;
  if (length <= max) return;
  throw new DomainError(
    'too_large',
    `A ${what} can be at most ${max} characters long; this one has ${length}.`,
    {
      title: what === 'message' ? 'Message too long' : 'Caption too long',
    },
  );
}

/** The sender's idempotency key from a form: absent, or a uuid. */
export function parseClientMsgId(value: unknown): string | null {
  if (value === undefined || value === '') return null;
  if (typeof value !== 'string' || !UUID.test(value)) {
    throw new DomainError('invalid', 'The form was damaged (message id); reload the page and send again.');
  }
  return value.toLowerCase();
}
