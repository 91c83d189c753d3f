import type { Socket } from 'node:net';
import fp from 'fastify-plugin';

/** How long a client still sending a refused body has to read our answer before the socket goes. */
export const STAGED_CLOSE_GRACE_MS = 2_000;

/**
 * Closes the connection of a request answered before its body was read, in stages (RFC 9112
 * section 9.6). Node's own close destroys the socket right after the answer; with the client's
 * body still unread in our receive buffer the kernel sends RST, and a client that is still writing
 * (Node's http client, a browser on some systems) reports "broken pipe" or "connection reset"
 * instead of the 413 or 429 it was sent. Here the answer is followed by FIN only, reading stops
 * (so the rest of the body costs nothing; the client's writes just wait), and the socket is
 * destroyed once the client had a moment to read the answer.
 *
 * Call it before the answer is sent with `Connection: close`. Node then calls the socket's
 * `destroySoon()` when the answer has been handed over (and may resume reading the unread body
 * on the next tick, to discard it), which is why the close is replaced on this one socket.
 */
export function closeInStagesAfterAnswer(socket: Socket, graceMs = STAGED_CLOSE_GRACE_MS): void {
  socket.destroySoon = () => {
    socket.end();
    setImmediate(() => socket.pause());
    setTimeout(() => socket.destroy(), graceMs).unref();
  };
}

/**
 * Every answer sent before its request's body was read in full (a body over the limit, an
 * upload refused while it streams, a refusal before the body was looked at) closes the
 * connection, in stages, rather than reading and discarding the rest (which may be anything up to
 * the client's patience) to keep the connection alive.
 */
export const stagedClosePlugin = fp(
  async (app) => {
    app.addHook('onSend', (request, reply, payload, done) => {
      // (Injected requests have no `complete` and no socket: nothing to close.)
      if (request.raw.complete === false) {
        reply.header('connection', 'close');
        closeInStagesAfterAnswer(request.raw.socket);
      }
      done(null, payload);
    });
  },
  { name: 'staged-close' },
);
