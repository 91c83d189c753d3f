import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { ConnectionError, SlonikError } from 'slonik';
import { MasterKeyMissingError } from '../crypto/keyring.ts';
import { DomainError, type DomainErrorKind } from '../domain-error.ts';
import { wantsFragment } from './render.ts';

/** An error that already knows its HTTP status; for web-layer checks (CIDR guard, methods). */
export class HttpError extends Error {
  override name = 'HttpError';

  constructor(
    readonly statusCode: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const STATUS_OF_KIND: Record<DomainErrorKind, number> = {
  invalid: 400,
  not_found: 404,
  gone: 410,
  conflict: 409,
  too_large: 413,
  unsupported: 415,
  rate_limited: 429,
  unavailable: 503,
};

export const TITLES: Record<number, string> = {
  400: 'That did not look right',
  401: 'Password required',
  403: 'Not allowed',
  404: 'Not found',
  405: 'Method not allowed',
  409: 'Not possible right now',
  410: 'This chat has ended',
  413: 'Too large',
  415: 'Unsupported type',
  429: 'Too many requests',
  500: 'Something went wrong',
  503: 'Temporarily unavailable',
};

export type PublicError = {
  statusCode: number;
  title: string;
  message: string;
  headers: Record<string, string>;
};

function isDatabaseDown(error: unknown): boolean {
  if (error instanceof ConnectionError) return true;
  const code = (error as { code?: string })?.code;
  if (code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === '57P01' || code === '57P03') return true;
  const cause = (error as { cause?: unknown })?.cause;
  return error instanceof SlonikError && cause !== undefined && cause !== error && isDatabaseDown(cause);
}

/**
 * Turns any error into what the client may see. Only messages we wrote ourselves are shown;
 * anything unexpected becomes a generic 500 (details go to the log, never to the response).
 */
export function toPublicError(error: unknown): PublicError {
  if (error instanceof DomainError) {
    const statusCode = STATUS_OF_KIND[error.kind];
    const headers: Record<string, string> = {};
    if (error.detail.retryAfterSeconds !== undefined)
      headers['retry-after'] = String(error.detail.retryAfterSeconds);
    return {
      statusCode,
      title: error.detail.title ?? TITLES[statusCode] ?? 'Error',
      message: error.message,
      headers,
    };
  }
  if (error instanceof HttpError) {
    return {
      statusCode: error.statusCode,
      title: TITLES[error.statusCode] ?? 'Error',
      message: error.message,
      headers: error.headers,
    };
  }
  if (error instanceof MasterKeyMissingError) {
    return {
      statusCode: 503,
      title: TITLES[503] as string,
      message:
        'The key that opens this room is not configured on the server, so it cannot be read right now. Nothing is lost.',
      headers: {},
    };
  }
  if (isDatabaseDown(error)) {
    return {
      statusCode: 503,
      title: TITLES[503] as string,
      message: 'The database is not reachable right now. Nothing was saved; please try again in a moment.',
      headers: { 'retry-after': '5' },
    };
  }
  const fastifyError = error as FastifyError;
  const status = fastifyError?.statusCode;
  if (status === 403) {
    // Only the static files plugin says 403 (a path that climbs out of its folder, a NUL, a
    // folder): to the client there is simply nothing at that address.
    return {
      statusCode: 404,
      title: TITLES[404] as string,
      message: 'There is nothing at this address.',
      headers: {},
    };
  }
  if (typeof status === 'number' && status >= 400 && status < 500) {
    const message =
      status === 413
        ? 'The request is larger than this server accepts.'
        : status === 415
          ? 'This kind of request body is not accepted here.'
          : status === 429
            ? 'Too many requests; please wait a moment and try again.'
            : 'The request could not be understood.';
    return { statusCode: status, title: TITLES[status] ?? 'Error', message, headers: {} };
  }
  return {
    statusCode: 500,
    title: TITLES[500] as string,
    message: 'An unexpected error happened on our side. Nothing you sent was lost; please try again.',
    headers: {},
  };
}

/** Seconds before a framed error page (the no-JS conversation frame) tries again. */
const FRAMED_RETRY_SECONDS = 5;

/**
 * The room a failed chat request was about, for a "Back to the chat" link: the person who got a
 * 400, 409, 413, 415 or 429 there is usually in it, and without JavaScript the error is a page of
 * its own. Never on a 404 (the 404 of a locked room must be byte for byte that of an unknown code)
 * nor on a 410 (the chat is over: its page is the 410 itself).
 */
function roomOf(request: FastifyRequest, statusCode: number): string | undefined {
  const code = (request.params as { code?: unknown } | undefined)?.code;
  if (statusCode === 404 || statusCode === 410 || typeof code !== 'string' || !/^[A-Za-z0-9]{4}$/.test(code))
    return undefined;
  return `/rooms/${code.toUpperCase()}`;
}

/**
 * Sends an error page, or for htmx a fragment swapped into the page's notice area. A route that
 * answers inside the room page's frame marks its reply `framed`: its error then fits the frame,
 * and one that may pass (the database away, a limit) retries on its own, as the frame would.
 */
export function sendError(request: FastifyRequest, reply: FastifyReply, error: PublicError): FastifyReply {
  reply.code(error.statusCode).headers(error.headers);
  if (wantsFragment(request)) {
    reply.header('hx-retarget', '#notice').header('hx-reswap', 'innerHTML');
  }
  const framed = reply.locals?.framed === true;
  const retry = framed && (error.statusCode >= 500 || error.statusCode === 429);
  return reply.render(
    { page: 'error', fragment: 'partials/notice' },
    {
      title: error.title,
      status: error.statusCode,
      message: error.message,
      // A chat that is over is news, not a fault of the reader's.
      tone: error.statusCode === 410 ? 'info' : 'error',
      // Not the failed URL: the 404 of a locked room must be byte for byte that of an unknown code.
      returnTo: '/',
      roomUrl: roomOf(request, error.statusCode),
      framed,
      refreshSeconds: retry ? FRAMED_RETRY_SECONDS : undefined,
      refreshUrl: retry ? request.url : undefined,
    },
  );
}

/** One error handler and one not-found handler for a listener. */
export const errorHandlerPlugin = fp(
  async (app) => {
    app.setErrorHandler((error, request, reply) => {
      const publicError = toPublicError(error);
      if (publicError.statusCode === 500) {
        request.log.error({ err: error }, 'request failed');
      } else if (publicError.statusCode >= 500) {
        // A part we depend on is down: expected during outages, and reported by /health.
        request.log.warn(
          { status: publicError.statusCode, reason: (error as Error).message },
          'request refused: unavailable',
        );
      } else {
        request.log.info(
          { status: publicError.statusCode, reason: (error as Error).message },
          'request refused',
        );
      }
      return sendError(request, reply, publicError);
    });
    // A path that exists for other methods answers 405 with them in Allow, not "nothing here".
    const routes: { path: RegExp; methods: string[] }[] = [];
    app.addHook('onRoute', (route) => {
      const methods = [route.method].flat();
      routes.push({ path: routePattern(route.url ?? route.path), methods });
    });
    app.setNotFoundHandler((request, reply) => {
      const path = request.url.split('?')[0] ?? '';
      const allowed = new Set(
        routes.filter((route) => route.path.test(path)).flatMap((route) => route.methods),
      );
      if (allowed.size > 0 && !allowed.has(request.method)) {
        if (allowed.has('GET')) allowed.add('HEAD');
        return sendError(request, reply, {
          statusCode: 405,
          title: TITLES[405] as string,
          message: `This address takes ${[...allowed].sort().join(', ')} only.`,
          headers: { allow: [...allowed].sort().join(', ') },
        });
      }
      return sendError(request, reply, {
        statusCode: 404,
        title: TITLES[404] as string,
        message: 'There is nothing at this address.',
        headers: {},
      });
    });
  },
  { name: 'error-handler', dependencies: ['render'] },
);

/** A route's URL (`/rooms/:code/messages`, `/static/*`) as a pattern for a request's path. */
function routePattern(url: string): RegExp {
  const source = url
    .replace(/\/+$/, '')
    .split('/')
    .map((segment) =>
      segment === '*'
        ? '.*'
        : segment.startsWith(':')
          ? '[^/]+'
          : segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'),
    )
    .join('/');
  // Trailing slashes are ignored by the chat router (and harmless to allow here).
  return new RegExp(`^${source}/?$`);
}
