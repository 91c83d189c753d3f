import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { DomainError } from '../domain-error.ts';
import type { Theme } from './render.ts';

export const THEMES: readonly Theme[] = ['light', 'dark', 'system'];
export const THEME_COOKIE = 'theme';

export function isTheme(value: unknown): value is Theme {
  return typeof value === 'string' && (THEMES as readonly string[]).includes(value);
}

/** The theme the user chose, from its cookie; rendered on <html> so no page flashes the wrong one. */
export function themeOf(request: FastifyRequest): Theme {
  const value = request.cookies?.[THEME_COOKIE];
  return isTheme(value) ? value : 'system';
}

/** Only a local path may be the place to return to (no `//host`, no scheme). */
export function safeReturnPath(value: unknown): string {
  return typeof value === 'string' && /^\/(?![/\\])[\x21-\x7e]{0,300}$/.test(value) ? value : '/';
}

/**
 * Where the theme switch of this page sends the user back to: the page itself when it was a
 * GET; after a POST (a form shown again with an error) the start page, unless the route says.
 */
export function returnPathOf(request: FastifyRequest): string {
  return request.method === 'GET' || request.method === 'HEAD' ? safeReturnPath(request.url) : '/';
}

type ThemeFields = { theme?: unknown; return_to?: unknown };

/**
 * `/theme`: `theme` = light, dark or system → a year-long cookie → 303 back to `return_to`.
 * The chat takes a POST form; the read-only admin listener, which refuses every POST, a GET form
 * (it changes only the viewer's own preference). Scripted requests (HX-Request) get 204: the page
 * has already applied the theme without reloading.
 */
export const themeRoutes: FastifyPluginAsync<{ method: 'GET' | 'POST' }> = async (app, { method }) => {
  app.route<{ Body: ThemeFields; Querystring: ThemeFields }>({
    method,
    url: '/theme',
    handler: async (request, reply) => {
      const fields = (method === 'GET' ? request.query : request.body) ?? {};
      if (!isTheme(fields.theme)) throw new DomainError('invalid', 'Choose light, dark or system.');
      reply.setCookie(THEME_COOKIE, fields.theme, {
        path: '/',
        maxAge: 60 * 60 * 24 * 365,
        sameSite: 'lax',
        httpOnly: true,
        secure: request.protocol === 'https',
      });
      reply.header('cache-control', 'no-store');
      if (request.headers['hx-request'] === 'true') return reply.code(204).send();
      return reply.redirect(safeReturnPath(fields.return_to), 303);
    },
  });
};
