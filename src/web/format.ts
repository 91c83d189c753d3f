/** Small formatting helpers handed to every template as `it.fmt`. */

/** "23 h 59 min", "12 min", "less than a minute". */
export function duration(milliseconds: number): string {
  if (milliseconds <= 0) return 'no time';
  const totalMinutes = Math.floor(milliseconds / 60_000);
  if (totalMinutes < 1) return 'less than a minute';
  const hours = Math.floor(totalMinutes / 60);
  const minutes = totalMinutes % 60;
  if (hours === 0) return `${minutes} min`;
  return minutes === 0 ? `${hours} h` : `${hours} h ${minutes} min`;
}

// The instant formatted last. A sent message's time is formatted four times in a row (its
// datetime and its clock time, in the sender's answer and in the partner's push).
let lastIsoMs = Number.NaN;
let lastIso = '';

/** ISO 8601, for <time datetime>. */
export function iso(epochMs: number): string {
  if (epochMs !== lastIsoMs) {
    lastIso = new Date(epochMs).toISOString();
    lastIsoMs = epochMs;
  }
  return lastIso;
}

/** "14:05 UTC" — the server does not know the reader's time zone; JS localizes it when it runs. */
export function clockTime(epochMs: number): string {
  return `${iso(epochMs).slice(11, 16)} UTC`;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

const DAY_MS = 86_400_000;
/** Day number -> its date; every message's day separator names its day. */
const dayDates = new Map<number, string>();

/** "25 Nov 2026" (UTC). */
function date(epochMs: number): string {
  const dayNumber = Math.floor(epochMs / DAY_MS);
  let text = dayDates.get(dayNumber);
  if (text === undefined) {
    const day = new Date(epochMs);
    text = `${day.getUTCDate()} ${MONTHS[day.getUTCMonth()]} ${day.getUTCFullYear()}`;
    if (dayDates.size >= 1_000) dayDates.clear();
    dayDates.set(dayNumber, text);
  }
  return text;
}

/** "25 Nov 2026, 14:05 UTC". */
export function dateTime(epochMs: number): string {
  return `${date(epochMs)}, ${clockTime(epochMs)}`;
}

/** "25 Nov 2026, 14:05:09 UTC": for the audit trail, where events of one minute must be told apart. */
export function dateTimeToTheSecond(epochMs: number): string {
  return `${date(epochMs)}, ${iso(epochMs).slice(11, 19)} UTC`;
}

/** Day number -> its key; a page asks for the day of each of its messages. */
const dayKeys = new Map<number, string>();

/** "2026-11-25": the UTC day, which groups messages under one day separator. */
export function dayKey(epochMs: number): string {
  const day = Math.floor(epochMs / DAY_MS);
  let key = dayKeys.get(day);
  if (key === undefined) {
    key = new Date(epochMs).toISOString().slice(0, 10);
    if (dayKeys.size >= 1_000) dayKeys.clear();
    dayKeys.set(day, key);
  }
  return key;
}

/**
 * The label of a day separator: "Today", "Yesterday" (when `now` is known) or "25 Nov 2026",
 * in UTC; app.js relabels the separators in the reader's own time zone.
 */
export function dayLabel(epochMs: number, now?: number): string {
  if (now !== undefined) {
    const today = dayKey(now);
    if (dayKey(epochMs) === today) return 'Today';
    if (dayKey(epochMs) === dayKey(Date.parse(`${today}T00:00:00Z`) - 1)) return 'Yesterday';
  }
  return date(epochMs);
}

/** "24 hours", "1 hour", "1.5 hours". */
export function hours(count: number): string {
  return `${count} ${count === 1 ? 'hour' : 'hours'}`;
}

export const fmt = { duration, iso, clockTime, dateTime, dayKey, dayLabel, hours };
