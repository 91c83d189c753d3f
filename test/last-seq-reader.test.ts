import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DatabasePool } from '../src/infra/db.ts';
import { LastSeqReader } from '../src/messages/last-seq-reader.ts';

type Row = { id: string; last_seq: number };

/** A pool whose queries answer only when the test says so, recording the rooms each asked for. */
function fakePool() {
  const queries: { rooms: string[]; answer: (rows: Row[]) => void; fail: (error: Error) => void }[] = [];
  const pool = {
    any: (query: { values: readonly unknown[] }) =>
      new Promise<Row[]>((resolve, reject) => {
        queries.push({ rooms: [...(query.values[0] as string[])], answer: resolve, fail: reject });
      }),
  };
  return { pool: pool as unknown as DatabasePool, queries };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

const A = '00000000-0000-4000-8000-00000000000a';
const B = '00000000-0000-4000-8000-00000000000b';

describe('LastSeqReader', () => {
  it('sends a lone read at once, and reads asked for meanwhile in one next query, never the running one', async () => {
    const { pool, queries } = fakePool();
    const reader = new LastSeqReader(pool);
    const first = reader.read(A);
    assert.equal(queries.length, 1);
    assert.deepEqual(queries[0]?.rooms, [A]);
    // Asked for while the first query runs: it may have been sent before a commit these readers
    // already saw acknowledged, so they wait for the next one.
    const second = reader.read(A);
    const third = reader.read(B);
    const fourth = reader.read(A);
    await tick();
    assert.equal(queries.length, 1);
    queries[0]?.answer([{ id: A, last_seq: 3 }]);
    assert.equal(await first, 3);
    await tick();
    assert.equal(queries.length, 2);
    assert.deepEqual(queries[1]?.rooms, [A, B]);
    queries[1]?.answer([
      { id: A, last_seq: 4 },
      { id: B, last_seq: 7 },
    ]);
    assert.deepEqual(await Promise.all([second, third, fourth]), [4, 7, 4]);
    await tick();
    assert.equal(queries.length, 2);
    // Idle again: the next read goes at once.
    const fifth = reader.read(B);
    assert.equal(queries.length, 3);
    queries[2]?.answer([{ id: B, last_seq: 8 }]);
    assert.equal(await fifth, 8);
  });

  it('fails the reads of a failed query and of a room not found, and goes on', async () => {
    const { pool, queries } = fakePool();
    const reader = new LastSeqReader(pool);
    const first = reader.read(A);
    const second = reader.read(B);
    queries[0]?.fail(new Error('connection lost'));
    await assert.rejects(first, /connection lost/);
    await tick();
    queries[1]?.answer([]);
    await assert.rejects(second, /not found/);
    const third = reader.read(A);
    await tick();
    queries[2]?.answer([{ id: A, last_seq: 1 }]);
    assert.equal(await third, 1);
  });
});
