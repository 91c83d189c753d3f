import { WebSocket } from 'ws';
import { cookieHeader } from './client.ts';

/** Anything that carries the device cookie. */
type CookieJar = { cookies: Map<string, string> };

export type LiveSocket = {
  socket: WebSocket;
  /** Every text frame received so far. */
  frames: string[];
  closed: Promise<{ code: number; reason: string }>;
  /** Resolves with the first frame (already received or future) that matches. */
  waitFor(match: RegExp | ((frame: string) => boolean), timeoutMs?: number): Promise<string>;
  close(): void;
};

export type Unexpected = { status: number };

/** Opens the room's WebSocket as the given client (its cookies), like a browser page would. */
export function openLive(
  baseUrl: string,
  code: string,
  client: CookieJar | undefined,
  options: {
    after?: number | string;
    /** The page id app.js sends (query `tab`, header `X-Tab-Id` on sends). */
    tab?: string;
    origin?: string;
    headers?: Record<string, string>;
    /** Sees every frame from the first one (frames can arrive together with the upgrade response). */
    onFrame?: (frame: string) => void;
  } = {},
): Promise<LiveSocket> {
  const url = new URL(`/rooms/${code}/ws`, baseUrl.replace(/^http/, 'ws'));
  if (options.after !== undefined) url.searchParams.set('after', String(options.after));
  if (options.tab !== undefined) url.searchParams.set('tab', options.tab);
  const cookie = client ? cookieHeader(client) : '';
  const socket = new WebSocket(url, {
    headers: { ...(cookie ? { cookie } : {}), ...options.headers },
    ...(options.origin ? { origin: options.origin } : {}),
  });
  const frames: string[] = [];
  const waiters: { match: (frame: string) => boolean; resolve: (frame: string) => void }[] = [];
  socket.on('message', (data) => {
    const frame = data.toString();
    frames.push(frame);
    options.onFrame?.(frame);
    for (const waiter of [...waiters]) {
      if (waiter.match(frame)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(frame);
      }
    }
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  return new Promise((resolve, reject) => {
    socket.once('unexpected-response', (_request, response) => {
      reject(
        Object.assign(new Error(`upgrade refused: ${response.statusCode}`), { status: response.statusCode }),
      );
      socket.terminate();
    });
    socket.once('error', reject);
    socket.once('open', () =>
      resolve({
        socket,
        frames,
        closed,
        waitFor(match, timeoutMs = 5_000) {
          const test = typeof match === 'function' ? match : (frame: string) => match.test(frame);
          const existing = frames.find(test);
          if (existing !== undefined) return Promise.resolve(existing);
          return new Promise((resolveFrame, rejectFrame) => {
            const timer = setTimeout(
              () =>
                rejectFrame(
                  new Error(
                    `no frame matching ${match} within ${timeoutMs} ms; got:\n${frames.join('\n---\n')}`,
                  ),
                ),
              timeoutMs,
            );
            waiters.push({
              match: test,
              resolve: (frame) => {
                clearTimeout(timer);
                resolveFrame(frame);
              },
            });
          });
        },
        close: () => socket.close(),
      }),
    );
  });
}

/** The seqs of the message fragments in the frames, in arrival order. */
export function seqsIn(frames: string[]): number[] {
  return frames.flatMap((frame) =>
    [...frame.matchAll(/<li id="msg-(\d+)"/g)].map((match) => Number(match[1])),
  );
}
