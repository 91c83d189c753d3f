import type { FastifyPluginAsync } from 'fastify';
import { DomainError } from '../../domain-error.ts';
import { isTheme, THEME_COOKIE } from '../../web/theme.ts';

/** Only a local path may be the place to return to (no `//host`, no scheme). */
export function safeReturnPath(value: unknown): string {
  return typeof value === 'string' && /^\/(?![/\\])[\x21-\x7e]{0,300}$/.test(value) ? value : '/';
}

export const themeRoutes: FastifyPluginAsync = async (app) => {
  app.post<{ Body: { theme?: unknown; return_to?: unknown } }>('/theme', async (request, reply) => {
    const theme = request.body?.theme;
    if (!isTheme(theme)) throw new DomainError('invalid', 'Choose light, dark or system.');
    reply.setCookie(THEME_COOKIE, theme, {
      path: '/',
      maxAge: 60 * 60 * 24 * 365,
      sameSite: 'lax',
      httpOnly: true,
      secure: request.protocol === 'https',
    });
    return reply.redirect(safeReturnPath(request.body?.return_to), 303);
  });
};
