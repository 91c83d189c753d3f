import { z } from 'zod';
import { type DatabasePool, sql } from '../infra/db.ts';

const lastSeqRow = z.object({ id: z.string(), last_seq: z.number() });

type Waiter = { resolve: (lastSeq: number) => void; reject: (error: unknown) => void };

/**
 * Reads rooms' `last_seq` for room page loads, a batch at a time: one query in flight; the reads
 * asked for while it runs wait for the next one, which asks for all their rooms at once. A lone
 * read is sent at once. Every answer comes from a query sent after it was asked for, so it sees
 * every message committed before that (a reload right after a send shows the message), exactly as
 * a query of its own would. Loads of busy rooms then share queries: each query cost the app as much
 * CPU as rendering the page (Slonik, the driver, and a round trip to PostgreSQL).
 */
export class LastSeqReader {
  private waiting = new Map<string, Waiter[]>();
  private running = false;

  constructor(private readonly db: DatabasePool) {}

  read(roomId: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const waiters = this.waiting.get(roomId);
      if (waiters) waiters.push({ resolve, reject });
      else this.waiting.set(roomId, [{ resolve, reject }]);
      if (!this.running) void this.run();
    });
  }

  private async run(): Promise<void> {
    this.running = true;
    try {
      while (this.waiting.size > 0) {
        const batch = this.waiting;
        this.waiting = new Map();
        try {
          const rows = await this.db.any(sql.type(lastSeqRow)`
            SELECT id, last_seq FROM rooms WHERE id = ANY(${sql.array([...batch.keys()], 'uuid')})`);
          const lastSeqs = new Map(rows.map((row) => [row.id, row.last_seq]));
          for (const [roomId, waiters] of batch) {
            const lastSeq = lastSeqs.get(roomId);
            for (const waiter of waiters) {
              if (lastSeq === undefined) waiter.reject(new Error(`room ${roomId} not found`));
              else waiter.resolve(lastSeq);
            }
          }
        } catch (error) {
          for (const waiters of batch.values()) for (const waiter of waiters) waiter.reject(error);
        }
      }
    } finally {
      this.running = false;
    }
  }
}
