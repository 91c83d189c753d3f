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
};

const existingRow = z.object({
  seq: z.number(),
  created_at: z.number(),
  body_sealed: z.instanceof(Buffer).nullable(),
});

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
 * next one together, so under load many messages share a commit (and its WAL flush) while a lone
 * message is written at once, with no added wait.
 *
 * Each transaction locks its rooms in id order (no deadlocks between batches), reserves a range
 * of seqs per room, seals every body with AAD = room id + seq, and inserts all rows in one
 * statement. A client_msg_id seen before stores nothing and returns the stored message.
 */
export class MessageWriter {
  private readonly queue: Job[] = [];
  private inFlight = 0;
  private readonly maxBatch: number;
  private readonly maxConcurrent: number;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly db: DatabasePool,
    private readonly roomKeys: RoomKeys,
    private readonly clock: Clock,
    private readonly logger: Logger,
    options: WriterOptions = {},
  ) {
    this.maxBatch = options.maxBatch ?? 256;
    this.maxConcurrent = options.maxConcurrent ?? 1;
  }

  write(message: PendingMessage): Promise<WrittenMessage> {
    return new Promise((resolve, reject) => {
      this.queue.push({ message, resolve, reject });
      this.pump();
    });
  }

  /** Resolves when nothing is queued or in flight (for shutdown). */
  drain(): Promise<void> {
    if (this.queue.length === 0 && this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private pump(): void {
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
    let keys: Map<string, Buffer>;
    try {
      keys = await this.keysFor(batch);
    } catch (error) {
      for (const job of batch) job.reject(error);
      return;
    }
    for (let attempt = 1; ; attempt++) {
      try {
        const results = await this.transaction(batch, keys);
        batch.forEach((job, index) => {
          const result = results[index];
          if (result instanceof Error) job.reject(result);
          else job.resolve(result as WrittenMessage);
        });
        return;
      } catch (error) {
        if (attempt < MAX_ATTEMPTS && RETRYABLE.has(sqlState(error) ?? '')) continue;
        if (!(error instanceof DomainError)) {
          this.logger.error(
            { err: { message: (error as Error).message, code: sqlState(error) }, size: batch.length },
            'message batch failed',
          );
        }
        for (const job of batch) job.reject(error);
        return;
      }
    }
  }

  private async keysFor(batch: Job[]): Promise<Map<string, Buffer>> {
    const keys = new Map<string, Buffer>();
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
  private async transaction(batch: Job[], keys: Map<string, Buffer>): Promise<(WrittenMessage | Error)[]> {
    const now = this.clock.now();
    const perRoom = new Map<string, number>();
    for (const { message } of batch) perRoom.set(message.roomId, (perRoom.get(message.roomId) ?? 0) + 1);
    const roomIds = [...perRoom.keys()].sort();

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
      const nextSeq = new Map<string, number>();
      for (const row of reserved) nextSeq.set(row.id, row.last_seq - (perRoom.get(row.id) as number) + 1);

      const results: (WrittenMessage | Error)[] = [];
      const tuples: (string | number | Buffer | null)[][] = [];
      const createdAt = now.getTime();
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
        const bodySealed = seal(
          keys.get(message.roomId) as Buffer,
          Buffer.from(message.text, 'utf8'),
          aad.message(message.roomId, seq),
        );
        results.push({ roomId: message.roomId, seq, createdAt, bodySealed, duplicate: false });
        tuples.push([
          message.roomId,
          seq,
          message.participantId,
          message.kind,
          message.clientMsgId,
          bodySealed,
          message.senderIp,
          now.toISOString(),
        ]);
      }
      if (tuples.length === 0) return results;

      // Only the rows that were not stored come back (a client_msg_id seen before): usually none,
      // so a batch costs no per-row result parsing.
      const skipped = await tx.any(sql.type(z.object({ room_id: z.string(), seq: z.number() }))`
        WITH input AS (
          SELECT * FROM ${sql.unnest(tuples, ['uuid', 'int8', 'uuid', 'text', 'uuid', 'bytea', 'inet', 'timestamptz'])}
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
    return outcome;
  }

  /** The stored message for a repeated client_msg_id (the earlier send won). */
  private async existing(
    tx: DatabaseTransactionConnection,
    message: PendingMessage,
  ): Promise<WrittenMessage | null> {
    if (!message.clientMsgId) return null;
    const row = await tx.maybeOne(sql.type(existingRow)`
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
