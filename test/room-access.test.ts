import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DomainError } from '../src/domain-error.ts';
import { ManualClock } from '../src/infra/clock.ts';
import { type DatabasePool, sql } from '../src/infra/db.ts';
import { type Device, deviceFromToken } from '../src/rooms/devices.ts';
import { RoomAccessService } from '../src/rooms/room-access.ts';
import { buildTestApp, type TestApp } from './helpers/app.ts';
import { openRoom } from './helpers/client.ts';

/**
 * The real pool, recording what RoomAccessService asks of it: access reads (`any`) and liveness
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

describe('room access (getAccess)', () => {
  let clock: ManualClock;
  let app: TestApp;
  before(async () => {
    clock = new ManualClock();
    app = await buildTestApp({ clock });
  });
  after(() => app.close());

  /** A locked, active room, and a RoomAccessService of its own whose queries are recorded. */
  async function setUp() {
    const { code, host } = await openRoom(app.chat);
    const device = deviceFromToken(host.cookies.get('ccc_device')) as Device;
    const { pool, seen } = recordingPool(app.resources.db);
    const roomAccess = new RoomAccessService(pool, clock);
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
    return {
      seen,
      confirmed,
      endUnheard,
      roomAccess,
      roomId: (await roomAccess.getAccess(code, device)).room.id,
      access: () => roomAccess.getAccess(code, device),
    };
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

  it('past its time, however long, answers at once while one query confirms; a failed confirmation keeps it', async () => {
    const { seen, confirmed, access } = await setUp();
    clock.advance(3_600_000);
    assert.equal((await access()).me.slot, 1);
    assert.equal(seen.reads, 1, 'answered from what was kept');
    assert.equal(seen.confirmations.length, 1);
    await confirmed();

    seen.failNextConfirmation = true;
    clock.advance(5_001);
    await access();
    await confirmed();
    await access();
    assert.equal(seen.reads, 1, 'still usable');
    assert.equal(seen.confirmations.length, 3, 'and asked again');
  });

  it('forgets a room that ended (heard here or through the bus): the next use reads it and is refused', async () => {
    const { seen, endUnheard, roomAccess, roomId, access } = await setUp();
    await endUnheard();
    roomAccess.forget([roomId]);
    await assert.rejects(access(), (error: unknown) => error instanceof DomainError && error.kind === 'gone');
    assert.equal(seen.reads, 2);
  });

  it('keeps nothing for a room that can still change (pending, or waiting for its guest)', async () => {
    const { code, host } = await openRoom(app.chat, { guest: false });
    const device = deviceFromToken(host.cookies.get('ccc_device')) as Device;
    const { pool, seen } = recordingPool(app.resources.db);
    const roomAccess = new RoomAccessService(pool, clock);
    assert.equal((await roomAccess.getAccess(code, device)).partner, null);
    await roomAccess.getAccess(code, device);
    assert.equal(seen.reads, 2);
  });

  it('refuses a device of another room exactly as a code that does not exist', async () => {
    const { code } = await openRoom(app.chat);
    const { host: stranger } = await openRoom(app.chat);
    const device = deviceFromToken(stranger.cookies.get('ccc_device')) as Device;
    const roomAccess = new RoomAccessService(app.resources.db, clock);
    const refusal = (input: string) =>
      roomAccess.getAccess(input, device).then(
        () => assert.fail('access granted'),
        (error: unknown) => error as DomainError,
      );
    const [locked, unknown] = await Promise.all([refusal(code), refusal('ZZZZ')]);
    assert.equal(locked.kind, 'not_found');
    assert.deepEqual(
      { message: locked.message, kind: locked.kind },
      { message: unknown.message, kind: unknown.kind },
    );
    await assert.rejects(roomAccess.getAccess(code, undefined), { kind: 'not_found' });
  });
});
