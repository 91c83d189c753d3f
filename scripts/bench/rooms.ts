import { randomBytes } from 'node:crypto';
import { openRoomOverHttp as openRoomFlow } from '../../test/helpers/client.ts';

/** A room both of whose devices the benchmark holds: the cookie header of each. */
export type BenchRoom = { code: string; host: string; guest: string };

/** The app under test, the baseline build it is compared with (--baseline), the bare relay. */
export type Target = 'app' | 'base' | 'relay';

const cookieHeader = (device: { cookies: Map<string, string> }) =>
  [...device.cookies].map(([name, value]) => `${name}=${value}`).join('; ');

/**
 * The real flow a host and a guest go through, over HTTP (test/helpers/client.ts): create, read
 * the offered names, activate, look the code up, join. Two cookie jars.
 */
async function openRoomOverHttp(baseUrl: string): Promise<BenchRoom> {
  const { code, host, guest } = await openRoomFlow(baseUrl);
  return { code, host: cookieHeader(host), guest: cookieHeader(guest) };
}

/** Rooms of the relay need no flow: a code and one cookie per slot. */
export function relayRoom(): BenchRoom {
  const code = `R${randomBytes(6).toString('hex').toUpperCase()}`;
  return { code, host: 'ccc_device=relay.1', guest: 'ccc_device=relay.2' };
}

/** Runs `task` `count` times with at most `concurrency` at once; stops starting new ones at `deadline`. */
export async function pool<T>(
  count: number,
  concurrency: number,
  deadline: number,
  task: (index: number) => Promise<T>,
): Promise<{ results: T[]; errors: string[]; failed: number }> {
  const results: T[] = [];
  const errors: string[] = [];
  let failed = 0;
  let next = 0;
  const lane = async () => {
    while (next < count && Date.now() < deadline) {
      const index = next++;
      try {
        results.push(await task(index));
      } catch (error) {
        failed += 1;
        if (errors.length < 10) errors.push((error as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, count)) }, lane));
  return { results, errors, failed };
}

export async function openRooms(
  target: Target,
  baseUrl: string,
  count: number,
  concurrency: number,
  deadline: number,
): Promise<{ rooms: BenchRoom[]; errors: string[]; failed: number }> {
  if (target === 'relay') return { rooms: Array.from({ length: count }, relayRoom), errors: [], failed: 0 };
  const { results, errors, failed } = await pool(count, concurrency, deadline, () =>
    openRoomOverHttp(baseUrl),
  );
  return { rooms: results, errors, failed };
}
