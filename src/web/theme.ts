import type { FastifyRequest } from 'fastify';
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
