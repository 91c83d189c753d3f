import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DomainError } from '../src/domain-error.ts';
import { ManualClock } from '../src/infra/clock.ts';
import { type DatabasePool, sql } from '../src/infra/db.ts';
import { type Device, deviceFromToken } from '../src/rooms/devices.ts';
import { RoomService } from '../src/rooms/room-service.ts';
import { buildTestApp, type TestApp } from './helpers/app.ts';
import { openRoom } from './helpers/client.ts';

/**
 * The real pool, recording what RoomService asks of it: access reads (`any`) and liveness
 * confirmations (`anyFirst`, whose promises the test can await); `failNextConfirmation` makes the
 * next confirmation fail as a lost connection would.
 */
function recordingPool(real: DatabasePool) {
  const seen = { reads: 0, confirmations: [] as Promise<unknown>[], failNextConfirmation: false };
  const pool = new Proxy(real, {
    get(target, property) {
      if (property === 'any')
        return (query: Parameters<DatabasePool['any']>[0]) => {
          seen.reads += 1;
          return target.any(query);
        };
      if (property === 'anyFirst')
        return (query: Parameters<DatabasePool['anyFirst']>[0]) => {
          const answer = seen.failNextConfirmation
            ? Promise.reject(new Error('connection lost'))
            : target.anyFirst(query);
          seen.failNextConfirmation = false;
          seen.confirmations.push(answer.catch(() => undefined));
          return answer;
        };
      const value = Reflect.get(target, property);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return { pool, seen };
}

describe('cached room access', () => {
  let clock: ManualClock;
  let app: TestApp;
  before(async () => {
    clock = new ManualClock();
    app = await buildTestApp({ clock });
  });
  after(() => app.close());

  /** A locked, active room, and a RoomService of its own whose queries are recorded. */
  async function setUp() {
    const { code, host } = await openRoom(app.chat);
    const device = deviceFromToken(host.cookies.get('ccc_device')) as Device;
    const { pool, seen } = recordingPool(app.resources.db);
    const rooms = new RoomService(pool, app.services.roomKeys, app.services.audit, clock, {
      roomTtlHours: app.config.roomTtlHours,
      pendingTtlMinutes: app.config.pendingTtlMinutes,
    });
    // The confirmations' answers, and everything they set off (a macrotask later: no microtask left).
    const confirmed = async () => {
      await Promise.all(seen.confirmations);
      await new Promise((resolve) => setImmediate(resolve));
    };
    // An end this process does not hear of (another process ended it while the bus was down).
    const endUnheard = () =>
      app.resources.db.query(sql.unsafe`
        UPDATE rooms SET status = 'expired', ended_at = now(), end_reason = 'ended'
        WHERE code = ${code} AND status = 'active'`);
    return { seen, confirmed, endUnheard, access: () => rooms.cachedAccess(code, device) };
  }

  it('is used as it is for up to 5 s, then used while one query confirms the room, which renews it', async () => {
    const { seen, confirmed, endUnheard, access } = await setUp();
    assert.equal((await access()).me.slot, 1);
    assert.equal(seen.reads, 1);
    clock.advance(2_000);
    await access();
    assert.equal(seen.reads, 1, 'fresh: no query');
    assert.equal(seen.confirmations.length, 0);

    clock.advance(3_001);
    assert.equal((await access()).partner?.slot, 2, 'past its fresh time it is still answered at once');
    await access();
    assert.equal(seen.reads, 1);
    assert.equal(seen.confirmations.length, 1, 'one confirmation for both uses');
    await confirmed();

    // Renewed by the confirmation: fresh again, so an end it did not see is not asked about yet.
    await endUnheard();
    clock.advance(2_000);
    await access();
    assert.equal(seen.confirmations.length, 1);
    assert.equal(seen.reads, 1);
    clock.advance(3_001);
    await access();
    assert.equal(seen.confirmations.length, 2);
  });

  it('is dropped when the confirmation finds the room over, so the next use reads it and sees the end', async () => {
    const { seen, confirmed, endUnheard, access } = await setUp();
    await access();
    await endUnheard();
    clock.advance(5_001);
    await access();
    await confirmed();
    await assert.rejects(access(), (error: unknown) => error instanceof DomainError && error.kind === 'gone');
    assert.equal(seen.reads, 2);
  });

  it('is read afresh when not used for 35 s, and stays usable when a confirmation fails', async () => {
    const { seen, confirmed, access } = await setUp();
    await access();
    clock.advance(35_001);
    await access();
    assert.equal(seen.reads, 2, 'too old to be used');
    assert.equal(seen.confirmations.length, 0);

    seen.failNextConfirmation = true;
    clock.advance(5_001);
    await access();
    await confirmed();
    await access();
    assert.equal(seen.reads, 2, 'still usable');
    assert.equal(seen.confirmations.length, 2, 'and asked again');
  });
});
