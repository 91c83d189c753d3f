import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AuditLog } from '../src/audit/audit-log.ts';
import type { RoomKeys } from '../src/crypto/room-keys.ts';
import { DomainError } from '../src/domain-error.ts';
import { ManualClock } from '../src/infra/clock.ts';
import type { DatabasePool } from '../src/infra/db.ts';
import { newDevice } from '../src/rooms/devices.ts';
import { RoomService } from '../src/rooms/room-service.ts';

const ROOM = '00000000-0000-4000-8000-0000000000aa';
const T0 = Date.UTC(2026, 10, 26, 9, 0, 0);
const DAY = 86_400_000;

/**
 * A pool that answers the access read at once (rows as the result parser leaves them) and holds
 * each liveness confirmation until the test answers it, counting both.
 */
function fakeDb(state: { status: string }) {
  const calls = {
    reads: 0,
    confirms: [] as { rooms: string[]; answer: (ids: string[]) => void; fail: (error: Error) => void }[],
  };
  const room = () => ({
    id: ROOM,
    code: 'ABCD',
    status: state.status,
    created_at: T0,
    pending_until: T0,
    activated_at: T0,
    expires_at: T0 + DAY,
    ended_at: null,
    end_reason: null,
    last_seq: 0,
  });
  const participant = (slot: 1 | 2) => ({
    id: `p${slot}`,
    room_id: ROOM,
    slot,
    display_name: `Name ${slot}`,
    joined_at: T0,
    last_seen_at: T0,
  });
  const db = {
    any: async () => {
      calls.reads += 1;
      return [
        { ...room(), participant: participant(1), mine: true },
        { ...room(), participant: participant(2), mine: false },
      ];
    },
    anyFirst: (query: { values: readonly unknown[] }) =>
      new Promise<string[]>((answer, fail) => {
        calls.confirms.push({ rooms: [...(query.values[0] as string[])], answer, fail });
      }),
  };
  return { db: db as unknown as DatabasePool, calls };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

function setUp() {
  const state = { status: 'active' };
  const { db, calls } = fakeDb(state);
  const clock = new ManualClock(T0);
  const rooms = new RoomService(db, {} as RoomKeys, {} as AuditLog, clock, {
    roomTtlHours: 24,
    pendingTtlMinutes: 60,
  });
  const device = newDevice();
  return { state, calls, clock, device, access: () => rooms.cachedAccess('ABCD', device) };
}

describe('cached room access', () => {
  it('is used as it is for up to 5 s, then used while one query confirms the room, which renews it', async () => {
    const { calls, clock, access } = setUp();
    assert.equal((await access()).me.slot, 1);
    assert.equal(calls.reads, 1);
    clock.advance(2_000);
    await access();
    assert.equal(calls.reads, 1, 'fresh: no query');
    assert.equal(calls.confirms.length, 0);

    clock.advance(3_001);
    assert.equal((await access()).partner?.slot, 2, 'past its fresh time it is still answered at once');
    await access();
    assert.equal(calls.reads, 1);
    assert.equal(calls.confirms.length, 1, 'one confirmation for both uses');
    assert.deepEqual(calls.confirms[0]?.rooms, [ROOM]);

    calls.confirms[0]?.answer([ROOM]);
    await tick();
    clock.advance(2_000);
    await access();
    assert.equal(calls.confirms.length, 1, 'renewed: fresh again');
    clock.advance(3_001);
    await access();
    assert.equal(calls.confirms.length, 2);
    assert.equal(calls.reads, 1);
  });

  it('is dropped when the confirmation finds the room over, so the next use reads it and sees the end', async () => {
    const { state, calls, clock, access } = setUp();
    await access();
    // The room ended somewhere this process did not hear of (another process, the bus down).
    state.status = 'expired';
    clock.advance(5_001);
    await access();
    calls.confirms[0]?.answer([]);
    await tick();
    await assert.rejects(access(), (error: unknown) => error instanceof DomainError && error.kind === 'gone');
    assert.equal(calls.reads, 2);
  });

  it('is read afresh when not used for 35 s, and stays usable when a confirmation fails', async () => {
    const { calls, clock, access } = setUp();
    await access();
    clock.advance(35_001);
    await access();
    assert.equal(calls.reads, 2, 'too old to be used');
    assert.equal(calls.confirms.length, 0);

    clock.advance(5_001);
    await access();
    calls.confirms[0]?.fail(new Error('connection lost'));
    await tick();
    await access();
    assert.equal(calls.reads, 2, 'still usable');
    assert.equal(calls.confirms.length, 2, 'and asked again');
  });
});
