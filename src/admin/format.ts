import { dateTimeToTheSecond, fmt } from '../web/format.ts';

/** A time from the database (epoch ms) or from a record (ISO text), or a dash when there is none. */
function when(value: number | string | null | undefined): string {
  if (value === null || value === undefined) return '—';
  const epochMs = typeof value === 'number' ? value : Date.parse(value);
  return Number.isNaN(epochMs) ? '—' : fmt.dateTime(epochMs);
}

function isoOf(value: number | string): string {
  return typeof value === 'number' ? fmt.iso(value) : value;
}

/** "1.2 MB", "350 kB", "12 B". */
function bytes(count: number): string {
  if (count < 1000) return `${count} B`;
  if (count < 1_000_000) return `${(count / 1000).toFixed(count < 10_000 ? 1 : 0)} kB`;
  return `${(count / 1_000_000).toFixed(1)} MB`;
}

/** What the admin templates get as `it.fmt`: the chat helpers plus a few for tables. */
export const adminFmt = { ...fmt, when, exact: dateTimeToTheSecond, isoOf, bytes };
