import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clockTime, dateTime, dayKey, dayLabel, duration, iso } from '../src/web/format.ts';

describe('formatting for templates', () => {
  it('formats each instant as itself, however calls alternate (the last one is kept)', () => {
    const morning = Date.UTC(2026, 10, 25, 9, 5, 7, 123);
    const evening = Date.UTC(2026, 10, 26, 23, 59, 0, 1);
    for (let round = 0; round < 2; round++) {
      assert.equal(iso(morning), '2026-11-25T09:05:07.123Z');
      assert.equal(clockTime(morning), '09:05 UTC');
      assert.equal(clockTime(evening), '23:59 UTC');
      assert.equal(iso(evening), '2026-11-26T23:59:00.001Z');
      assert.equal(iso(morning + 1), '2026-11-25T09:05:07.124Z');
    }
    assert.equal(dateTime(evening), '26 Nov 2026, 23:59 UTC');
    assert.equal(dayKey(evening), '2026-11-26');
    assert.equal(dayLabel(morning, evening), 'Yesterday');
    assert.equal(dayLabel(evening, evening), 'Today');
    assert.equal(dayLabel(morning), '25 Nov 2026');
    assert.equal(duration(90 * 60_000), '1 h 30 min');
  });

  it('still refuses an instant that is not one', () => {
    assert.throws(() => iso(Number.NaN), RangeError);
    assert.throws(() => clockTime(Number.NaN), RangeError);
  });
});
