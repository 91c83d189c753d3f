import fastifyView from '@fastify/view';
import { Eta } from 'eta';
import type { FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { projectPath } from '../paths.ts';

/** A page and, optionally, the fragment of it that an htmx request asks for. */
export type ViewSpec = { page: string; fragment?: string };

export type Theme = 'light' | 'dark' | 'system';

declare module 'fastify' {
  interface FastifyInstance {
    views: Eta;
  }
  interface FastifyReply {
    /**
     * Renders `view.fragment` for htmx requests that target part of the page, else `view.page`
     * (which includes the fragment). The one place that decides page vs fragment.
     */
    render(view: ViewSpec, data?: Record<string, unknown>): FastifyReply;
    locals?: Record<string, unknown>;
  }
}

/** One Eta instance per process: it renders pages, htmx fragments and WebSocket pushes alike. */
export function createViews(): Eta {
  const eta = new Eta({ views: projectPath('views'), cache: true, autoEscape: true });
  // Eta resolves an include's path on every call (JSON key, path joins); a page of 50 messages
  // includes the message partial 50 times. Paths never change while the process runs.
  const resolvePath = eta.resolvePath.bind(eta);
  const resolved = new Map<string, string>();
  eta.resolvePath = (template, options) => {
    const key = `${options?.filepath ?? ''}\0${template}`;
    let path = resolved.get(key);
    if (path === undefined) {
      path = resolvePath(template, options);
      resolved.set(key, path);
    }
    return path;
  };
  return eta;
}

/** True when htmx asks for a fragment: HX-Request set and the request is not a full-page one. */
export function wantsFragment(request: FastifyRequest): boolean {
  return request.headers['hx-request'] === 'true' && request.headers['hx-request-type'] !== 'full';
}

export type RenderOptions = { views: Eta; defaults?: (request: FastifyRequest) => Record<string, unknown> };

export const renderPlugin = fp<RenderOptions>(
  async (app, options) => {
    const { views } = options;
    await app.register(fastifyView, {
      engine: { eta: views },
      root: projectPath('views'),
      production: true,
    });
    app.decorate('views', views);
    app.decorateReply(
      'render',
      function render(this: FastifyReply, view: ViewSpec, data: Record<string, unknown> = {}) {
        const request = this.request;
        const template = wantsFragment(request) && view.fragment ? view.fragment : view.page;
        const html = views.render(template, {
          ...options.defaults?.(request),
          ...this.locals,
          ...data,
        });
        // Pages vary by HX-Request: caches must not hand a fragment to a full-page load.
        return this.header('vary', 'HX-Request').type('text/html; charset=utf-8').send(html);
      },
    );
  },
  { name: 'render' },
);
