import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { STAGED_CLOSE_GRACE_MS } from '../../src/web/staged-close.ts';

export type UnreadBodyOutcome = {
  /** Everything the server sent (status line, headers, page). */
  answer: string;
  /** Socket errors while the client went on writing after the answer (a reset shows here). */
  errorsWhileSending: string[];
  /** Whether the client's last writes were still waiting: the server was not reading them. */
  writesWaiting: boolean;
  /** From the first byte sent to the server closing the connection. */
  closedAfterMs: number;
};

/**
 * A client that sends a request head and far more body than the server will read, without
 * waiting for an answer: it reads what the server answers, writes once more, and waits for the
 * server to let the connection go. Plain TCP, so that nothing between hides a reset.
 */
export async function sendMoreThanIsRead(
  baseUrl: string,
  head: string,
  { bodyBytes, chunked }: { bodyBytes: number; chunked: boolean },
): Promise<UnreadBodyOutcome> {
  const { port } = new URL(baseUrl);
  const socket = connect({ host: '127.0.0.1', port: Number(port), allowHalfOpen: true });
  await new Promise((resolve) => socket.once('connect', resolve));
  const errors: string[] = [];
  socket.on('error', (error: NodeJS.ErrnoException) => errors.push(error.code ?? error.message));
  const received: Buffer[] = [];
  socket.on('data', (data: Buffer) => received.push(data));
  const answered = new Promise((resolve) => {
    socket.once('end', resolve);
    socket.once('close', resolve);
  });
  const closed = new Promise((resolve) => socket.once('close', resolve));
  const piece = Buffer.alloc(64 * 1024, 0x61);
  const framed = chunked
    ? Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')])
    : piece;
  // The server's grace starts after its answer, so after this.
  const sentAt = performance.now();
  socket.write(head);
  for (let sent = 0; sent < bodyBytes; sent += piece.length) socket.write(framed);
  await Promise.race([answered, sleep(10_000)]);
  const answer = Buffer.concat(received).toString('latin1');
  // A client still sending keeps sending for a moment; a reset would fail this write (EPIPE).
  socket.write(framed);
  await sleep(300);
  const errorsWhileSending = [...errors];
  const writesWaiting = socket.writableLength > 0;
  const gaveUp = await Promise.race([closed.then(() => false), sleep(STAGED_CLOSE_GRACE_MS + 5_000, true)]);
  socket.destroy();
  const closedAfterMs = gaveUp ? Number.POSITIVE_INFINITY : performance.now() - sentAt;
  return { answer, errorsWhileSending, writesWaiting, closedAfterMs };
}

/** The answer came, then FIN without a reset, nothing more was read, and the socket went after the grace. */
export function assertClosedInStages(outcome: UnreadBodyOutcome, status: number): void {
  assert.match(outcome.answer, new RegExp(`^HTTP/1\\.1 ${status} `));
  assert.match(outcome.answer, /^connection: close\r$/im);
  assert.deepEqual(outcome.errorsWhileSending, [], 'the connection was reset under a client still sending');
  assert.ok(outcome.writesWaiting, 'the server read the rest of the body after all');
  assert.ok(outcome.closedAfterMs >= STAGED_CLOSE_GRACE_MS, `closed after ${outcome.closedAfterMs} ms`);
  assert.ok(
    outcome.closedAfterMs < STAGED_CLOSE_GRACE_MS + 5_000,
    `closed after ${outcome.closedAfterMs} ms`,
  );
}
