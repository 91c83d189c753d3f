import { z } from 'zod';
import { BatchedLookup } from '../infra/batched-lookup.ts';
import { type DatabasePool, sql } from '../infra/db.ts';

const lastSeqRow = z.object({ id: z.string(), last_seq: z.number() });

/**
 * Reads rooms' `last_seq` for room page loads, a batch at a time (see BatchedLookup): every answer
 * comes from a query sent after it was asked for, so it sees every message committed before that
 * (a reload right after a send shows the message), exactly as a query of its own would. Loads of
 * busy rooms then share queries: each query cost the app as much CPU as rendering the page
 * (Slonik, the driver, and a round trip to PostgreSQL).
 */
export class LastSeqReader {
  private readonly lookup: BatchedLookup<number>;

  constructor(db: DatabasePool) {
    this.lookup = new BatchedLookup(async (roomIds) => {
      const rows = await db.any(sql.type(lastSeqRow)`
        SELECT id, last_seq FROM rooms WHERE id = ANY(${sql.array(roomIds, 'uuid')})`);
      return new Map(rows.map((row) => [row.id, row.last_seq]));
    });
  }

  async read(roomId: string): Promise<number> {
    const lastSeq = await this.lookup.get(roomId);
    if (lastSeq === undefined) throw new Error(`room ${roomId} not found`);
    return lastSeq;
  }
}
