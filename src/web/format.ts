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

/** ISO 8601, for <time datetime>. */
export function iso(epochMs: number): string {
  return new Date(epochMs).toISOString();
}

/** "14:05 UTC" — the server does not know the reader's time zone; JS localizes it when it runs. */
export function clockTime(epochMs: number): string {
  return `${new Date(epochMs).toISOString().slice(11, 16)} UTC`;
}

/** "25 Nov 2026, 14:05 UTC". */
export function dateTime(epochMs: number): string {
  const date = new Date(epochMs);
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  return `${date.getUTCDate()} ${months[date.getUTCMonth()]} ${date.getUTCFullYear()}, ${clockTime(epochMs)}`;
}

export const fmt = { duration, iso, clockTime, dateTime };
