import type { KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import { z } from 'zod';
import { seal } from '../crypto/keyring.ts';
import { aad, type RoomKeys } from '../crypto/room-keys.ts';
import { DomainError } from '../domain-error.ts';
import type { Clock } from '../infra/clock.ts';
import { type DatabasePool, type DatabaseTransactionConnection, sql } from '../infra/db.ts';
import type { MessageKind } from './transcript.ts';

/** One message to store. The writer assigns its seq, seals its body and commits it. */
export type PendingMessage = {
  roomId: string;
  participantId: string;
  kind: MessageKind;
  clientMsgId: string | null;
  text: string;
  senderIp: string;
  /** Runs inside the message's transaction after its row exists (e.g. the attachments row). */
  withinTransaction?: (context: { seq: number; tx: DatabaseTransactionConnection }) => Promise<void>;
};

export type WrittenMessage = {
  roomId: string;
  seq: number;
  createdAt: number;
  bodySealed: Buffer;
  /** True when this client_msg_id was already stored: nothing new was written. */
  duplicate: boolean;
};

type Job = {
  message: PendingMessage;
  resolve: (written: WrittenMessage) => void;
  reject: (error: unknown) => void;
};

export type WriterOptions = {
  /** Most messages committed in one transaction. */
  maxBatch?: number;
  /** Transactions in flight at once; new messages queue (and batch) behind them. */
  maxConcurrent?: number;
  /** How long a message arriving at an idle writer waits for others to share its commit. */
  gatherMs?: number;
};

const existingRow = z.object({
  seq: z.number(),
  created_at: z.number(),
  body_sealed: z.instanceof(Buffer).nullable(),
});

const oneStatementRow = z.object({ reserved: z.array(z.string()), skipped: z.array(z.string()) });

const MESSAGE_COLUMN_TYPES: string[] = [
  'uuid',
  'int8',
  'uuid',
  'text',
  'uuid',
  'bytea',
  'inet',
  'timestamptz',
];

/** Rooms whose last_seq the writer remembers (a number each); the least recently written go first. */
const KNOWN_SEQ_LIMIT = 100_000;

/** The time of a batch, once as a number and once as text for its rows. */
type BatchTime = { ms: number; iso: string };

const batchTime = (now: Date): BatchTime => ({ ms: now.getTime(), iso: now.toISOString() });

/** Seals a message's body with its room's key, bound to its seq, and builds its row. */
function sealMessage(
  message: PendingMessage,
  seq: number,
  keys: Map<string, KeyObject>,
  now: BatchTime,
): { written: WrittenMessage; tuple: (string | number | Buffer | null)[] } {
  const bodySealed = seal(
    keys.get(message.roomId) as KeyObject,
    Buffer.from(message.text, 'utf8'),
    aad.message(message.roomId, seq),
  );
  return {
    written: { roomId: message.roomId, seq, createdAt: now.ms, bodySealed, duplicate: false },
    tuple: [
      message.roomId,
      seq,
      message.participantId,
      message.kind,
      message.clientMsgId,
      bodySealed,
      message.senderIp,
      now.iso,
    ],
  };
}

/** PostgreSQL asks us to retry these (deadlock, serialization failure); the transaction changed nothing. */
const RETRYABLE = new Set(['40P01', '40001']);
const MAX_ATTEMPTS = 3;

function sqlState(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * Group commit for messages. A message is acknowledged only after the transaction holding it
 * commits; while one transaction is in flight, newly arriving messages queue up and go into the
 * next one together, so under load many messages share a commit (and its WAL flush). A message
 * that finds the writer idle waits `gatherMs` (2 ms) for others to join it: at 1,000 messages/s
 * that halves the commits, and with them about a fifth of the machine's CPU (PostgreSQL's
 * per-commit work, the app's per-query work), which is what the latency tail on a busy machine
 * comes from; p99 went from 20-31 ms to 17-22 ms in the benchmark (docs/performance.md).
 *
 * Each transaction locks its rooms in id order (no deadlocks between batches), reserves a range
 * of seqs per room, seals every body with AAD = room id + seq, and inserts all rows in one
 * statement. A client_msg_id seen before stores nothing and returns the stored message.
 *
 * One round trip per batch: the seqs have to be known before the bodies can be sealed, which
 * takes four round trips (BEGIN, reserve, insert, COMMIT). But the writer remembers each room's
 * last_seq from its own commits, so for a room it has written before it seals with the seqs that
 * follow and sends one statement that reserves them only if last_seq is still what it expects
 * (compare-and-set, under the same row lock, in id order) and inserts the rows of the rooms it
 * reserved. Rooms it does not know, or whose last_seq moved (another process wrote), or that have
 * ended, take the four-step transaction. Either way a room's row lock is held from reserving its
 * seqs until the commit, so a room's messages commit in seq order.
 */
export class MessageWriter {
  private readonly queue: Job[] = [];
  private inFlight = 0;
  private readonly maxBatch: number;
  private readonly maxConcurrent: number;
  private idleWaiters: (() => void)[] = [];
  private readonly gatherMs: number;
  private gatherTimer: NodeJS.Timeout | undefined;
  /** Room id -> its last_seq as of this writer's latest commit in it (see the class comment). */
  private readonly knownSeq = new Map<string, number>();

  constructor(
    private readonly db: DatabasePool,
    private readonly roomKeys: RoomKeys,
    private readonly clock: Clock,
    private readonly logger: Logger,
    options: WriterOptions = {},
  ) {
    this.maxBatch = options.maxBatch ?? 256;
    this.maxConcurrent = options.maxConcurrent ?? 1;
    this.gatherMs = options.gatherMs ?? 2;
  }

  write(message: PendingMessage): Promise<WrittenMessage> {
    return new Promise((resolve, reject) => {
      this.queue.push({ message, resolve, reject });
      if (this.gatherMs <= 0 || this.queue.length >= this.maxBatch) this.pump();
      else if (this.inFlight < this.maxConcurrent) {
        this.gatherTimer ??= setTimeout(() => {
          this.gatherTimer = undefined;
          this.pump();
        }, this.gatherMs);
      }
    });
  }

  /** Resolves when nothing is queued or in flight (for shutdown). */
  drain(): Promise<void> {
    if (this.queue.length === 0 && this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private pump(): void {
    clearTimeout(this.gatherTimer);
    this.gatherTimer = undefined;
    while (this.queue.length > 0 && this.inFlight < this.maxConcurrent) {
      // Messages with their own transactional work (uploads) commit alone.
      const first = this.queue[0] as Job;
      const batch = first.message.withinTransaction ? this.queue.splice(0, 1) : this.takeBatch();
      this.inFlight += 1;
      void this.commit(batch).finally(() => {
        this.inFlight -= 1;
        if (this.queue.length > 0) this.pump();
        else if (this.inFlight === 0) {
          for (const waiter of this.idleWaiters.splice(0)) waiter();
        }
      });
    }
  }

  private takeBatch(): Job[] {
    const batch: Job[] = [];
    let index = 0;
    while (index < this.queue.length && batch.length < this.maxBatch) {
      const job = this.queue[index] as Job;
      if (job.message.withinTransaction) {
        index += 1;
        continue;
      }
      batch.push(job);
      this.queue.splice(index, 1);
    }
    return batch;
  }

  private async commit(batch: Job[]): Promise<void> {
    let keys: Map<string, KeyObject>;
    try {
      keys = await this.keysFor(batch);
    } catch (error) {
      for (const job of batch) job.reject(error);
      return;
    }
    let rest = batch;
    if (!batch.some((job) => job.message.withinTransaction)) {
      try {
        rest = await this.oneStatement(batch, keys);
      } catch (error) {
        // Nothing of a failed statement was committed: retry what may be retried the long way.
        if (!RETRYABLE.has(sqlState(error) ?? '')) {
          this.fail(batch, error);
          return;
        }
      }
    }
    if (rest.length === 0) return;
    for (let attempt = 1; ; attempt++) {
      try {
        const results = await this.transaction(rest, keys);
        rest.forEach((job, index) => {
          const result = results[index];
          if (result instanceof Error) job.reject(result);
          else job.resolve(result as WrittenMessage);
        });
        return;
      } catch (error) {
        if (attempt < MAX_ATTEMPTS && RETRYABLE.has(sqlState(error) ?? '')) continue;
        this.fail(rest, error);
        return;
      }
    }
  }

  private fail(batch: Job[], error: unknown): void {
    if (!(error instanceof DomainError)) {
      this.logger.error(
        { err: { message: (error as Error).message, code: sqlState(error) }, size: batch.length },
        'message batch failed',
      );
    }
    for (const job of batch) job.reject(error);
  }

  private remember(roomId: string, lastSeq: number): void {
    this.knownSeq.delete(roomId);
    if (this.knownSeq.size >= KNOWN_SEQ_LIMIT) {
      const oldest = this.knownSeq.keys().next().value;
      if (oldest !== undefined) this.knownSeq.delete(oldest);
    }
    this.knownSeq.set(roomId, lastSeq);
  }

  /**
   * Commits, in one autocommit statement, the jobs of the rooms whose last_seq this writer knows
   * (resolving them) and returns the jobs that must take the four-step transaction.
   */
  private async oneStatement(batch: Job[], keys: Map<string, KeyObject>): Promise<Job[]> {
    const mine = batch.filter((job) => this.knownSeq.has(job.message.roomId));
    if (mine.length === 0) return batch;
    const now = batchTime(this.clock.now());
    const perRoom = new Map<string, number>();
    for (const { message } of mine) perRoom.set(message.roomId, (perRoom.get(message.roomId) ?? 0) + 1);
    const roomIds = [...perRoom.keys()].sort();
    const expected = roomIds.map((id) => this.knownSeq.get(id) as number);
    const nextSeq = new Map(roomIds.map((id, index) => [id, (expected[index] as number) + 1]));
    const written: WrittenMessage[] = [];
    const tuples: (string | number | Buffer | null)[][] = [];
    for (const { message } of mine) {
      const seq = nextSeq.get(message.roomId) as number;
      nextSeq.set(message.roomId, seq + 1);
      const sealed = sealMessage(message, seq, keys, now);
      written.push(sealed.written);
      tuples.push(sealed.tuple);
    }

    // One statement, planned once per connection (migrations/002, 004). The bodies go as one
    // bytea (sent in binary) with each one's start and length: an array of them would travel as
    // hex text, encoded here and parsed there.
    const column = (index: number) => tuples.map((tuple) => tuple[index] as string | number | null);
    const bodies = written.map((message) => message.bodySealed);
    const starts: number[] = [];
    let start = 1;
    for (const body of bodies) {
      starts.push(start);
      start += body.length;
    }
    const outcome = await this.db.one(sql.type(oneStatementRow)`
      SELECT reserved_rooms AS reserved, skipped_rows AS skipped FROM write_packed_messages_if_expected(
        ${sql.array(roomIds, 'uuid')}, ${sql.array(expected, 'int8')},
        ${sql.array(
          roomIds.map((id) => perRoom.get(id) as number),
          'int4',
        )}, ${now.iso}::timestamptz,
        ${sql.array(column(0), 'uuid')}, ${sql.array(column(1), 'int8')}, ${sql.array(column(2), 'uuid')},
        ${sql.array(column(3), 'text')}, ${sql.array(column(4), 'uuid')},
        ${sql.binary(Buffer.concat(bodies))}, ${sql.array(starts, 'int4')},
        ${sql.array(
          bodies.map((body) => body.length),
          'int4',
        )},
        ${sql.array(column(6), 'inet')})`);

    // Committed. Rooms not reserved (unknown last_seq, or over) go the long way, which re-reads.
    const reserved = new Set(outcome.reserved);
    const skipped = new Set(outcome.skipped);
    for (const [index, id] of roomIds.entries()) {
      if (reserved.has(id)) this.remember(id, (expected[index] as number) + (perRoom.get(id) as number));
      else this.knownSeq.delete(id);
    }
    for (const [index, job] of mine.entries()) {
      const result = written[index] as WrittenMessage;
      if (!reserved.has(result.roomId)) continue;
      if (!skipped.has(`${result.roomId}:${result.seq}`)) job.resolve(result);
      else {
        // The client_msg_id was stored before (a retried send): answer with that message.
        const existing = await this.existing(this.db, job.message).catch((error: unknown) => error as Error);
        if (existing && !(existing instanceof Error)) job.resolve(existing);
        else job.reject(existing ?? new Error('message neither stored nor found'));
      }
    }
    return batch.filter((job) => !reserved.has(job.message.roomId));
  }

  private async keysFor(batch: Job[]): Promise<Map<string, KeyObject>> {
    const keys = new Map<string, KeyObject>();
    for (const { message } of batch) {
      if (keys.has(message.roomId)) continue;
      keys.set(
        message.roomId,
        this.roomKeys.cachedDataKey(message.roomId) ?? (await this.roomKeys.dataKey(message.roomId)),
      );
    }
    return keys;
  }

  /** Returns, per job, its written message or the error that job alone gets. */
  private async transaction(batch: Job[], keys: Map<string, KeyObject>): Promise<(WrittenMessage | Error)[]> {
    const now = this.clock.now();
    const time = batchTime(now);
    const perRoom = new Map<string, number>();
    for (const { message } of batch) perRoom.set(message.roomId, (perRoom.get(message.roomId) ?? 0) + 1);
    const roomIds = [...perRoom.keys()].sort();
    let lastSeqs: { id: string; last_seq: number }[] = [];

    const outcome = await this.db.transaction(async (tx) => {
      // Lock the rooms in id order, then reserve a block of seqs in each live one.
      const reserved = await tx.any(sql.type(z.object({ id: z.string(), last_seq: z.number() }))`
        UPDATE rooms AS r
        SET last_seq = r.last_seq + c.n, last_activity_at = ${sql.timestamp(now)}
        FROM (SELECT unnest(${sql.array(roomIds, 'uuid')}) AS id, unnest(${sql.array(
          roomIds.map((id) => perRoom.get(id) as number),
          'int4',
        )}) AS n) AS c
        WHERE r.id = c.id
          AND r.id IN (SELECT id FROM rooms WHERE id = ANY(${sql.array(roomIds, 'uuid')}) ORDER BY id FOR UPDATE)
          AND r.status = 'active' AND r.expires_at > ${sql.timestamp(now)}
        RETURNING r.id, r.last_seq`);
      lastSeqs = [...reserved];
      const nextSeq = new Map<string, number>();
      for (const row of reserved) nextSeq.set(row.id, row.last_seq - (perRoom.get(row.id) as number) + 1);

      const results: (WrittenMessage | Error)[] = [];
      const tuples: (string | number | Buffer | null)[][] = [];
      for (const { message } of batch) {
        const seq = nextSeq.get(message.roomId);
        if (seq === undefined) {
          results.push(
            new DomainError('gone', 'This chat has ended; the message was not sent.', {
              title: 'This chat has ended',
            }),
          );
          continue;
        }
        nextSeq.set(message.roomId, seq + 1);
        const sealed = sealMessage(message, seq, keys, time);
        results.push(sealed.written);
        tuples.push(sealed.tuple);
      }
      if (tuples.length === 0) return results;

      // Only the rows that were not stored come back (a client_msg_id seen before): usually none,
      // so a batch costs no per-row result parsing.
      const skipped = await tx.any(sql.type(z.object({ room_id: z.string(), seq: z.number() }))`
        WITH input AS (
          SELECT * FROM ${sql.unnest(tuples, MESSAGE_COLUMN_TYPES)}
            AS t(room_id, seq, participant_id, kind, client_msg_id, body_sealed, sender_ip, created_at)
        ), inserted AS (
          INSERT INTO messages (room_id, seq, participant_id, kind, client_msg_id, body_sealed, sender_ip, created_at)
          SELECT * FROM input
          ON CONFLICT (participant_id, client_msg_id) DO NOTHING
          RETURNING room_id, seq
        )
        SELECT input.room_id, input.seq FROM input
        WHERE NOT EXISTS (SELECT 1 FROM inserted WHERE inserted.room_id = input.room_id AND inserted.seq = input.seq)`);
      const notStored = new Set(skipped.map((row) => `${row.room_id}:${row.seq}`));
      for (const [index, job] of batch.entries()) {
        const result = results[index];
        if (result === undefined || result instanceof Error) continue;
        if (!notStored.has(`${result.roomId}:${result.seq}`)) {
          await job.message.withinTransaction?.({ seq: result.seq, tx });
        } else {
          // The client_msg_id was stored before (a retried send): answer with that message.
          // Its reserved seq stays unused; seqs only ever need to increase, not to be gapless.
          results[index] =
            (await this.existing(tx, job.message)) ?? new Error('message neither stored nor found');
        }
      }
      return results;
    });
    // Committed: from now on these rooms can take the one-statement path.
    for (const row of lastSeqs) this.remember(row.id, row.last_seq);
    return outcome;
  }

  /** The stored message for a repeated client_msg_id (the earlier send won). */
  private async existing(
    connection: DatabasePool | DatabaseTransactionConnection,
    message: PendingMessage,
  ): Promise<WrittenMessage | null> {
    if (!message.clientMsgId) return null;
    const row = await connection.maybeOne(sql.type(existingRow)`
      SELECT seq, created_at, body_sealed FROM messages
      WHERE participant_id = ${message.participantId} AND client_msg_id = ${message.clientMsgId}`);
    if (!row?.body_sealed) return null;
    return {
      roomId: message.roomId,
      seq: row.seq,
      createdAt: row.created_at,
      bodySealed: row.body_sealed,
      duplicate: true,
    };
  }
}
