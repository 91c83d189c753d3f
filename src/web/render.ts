import fastifyView from '@fastify/view';
import { Eta } from 'eta';
import type { FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { TranscriptEntry } from '../messages/transcript.ts';
import { projectPath } from '../paths.ts';
import type { fmt } from './format.ts';

/** A page and, optionally, the fragment of it that an htmx request asks for. */
export type ViewSpec = { page: string; fragment?: string };

export type Theme = 'light' | 'dark' | 'system';

declare module 'fastify' {
  interface FastifyInstance {
    views: Views;
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

/** What the message partial (`views/partials/message.eta`) reads. */
export type MessageView = {
  message: TranscriptEntry;
  mine: boolean;
  code: string;
  fmt: typeof fmt;
  /** The day separator's label when it is shown (the first message of a day), else undefined. */
  dayLabel: string | undefined;
};

/**
 * The same text, stored as one flat string. V8 keeps a string built by concatenation (as a
 * template builds its output) as a tree of its pieces; a page that includes it as is would copy
 * it piece by piece again on every send. Searching it flattens it in place, once.
 */
function flat(text: string): string {
  text.indexOf('\0');
  return text;
}

/** Variants kept per message: perspective x day label, at most a handful at any time. */
const MESSAGE_VARIANTS = 8;

/**
 * The process's Eta, plus `message()`: the message partial for a message of a list
 * (`views/partials/messages.eta`), kept once rendered. A room page shows up to 500 messages, and
 * rendering them through `include` on every load was most of the page's CPU (an include copies
 * the page's whole data object and resolves the template; each message formats three dates).
 * A stored message never changes, so its HTML depends only on what is in the key: whose it is
 * (mine or theirs), the room code and the day label (which depends on the time of the load,
 * "Today"/"Yesterday", and on the message before it). The kept HTML hangs off the message object
 * itself (a WeakMap), so it lives exactly as long as that object: the room page's messages are
 * kept by `MessageService.recent` (bounded, dropped when the room ends); a list read for one
 * response is collected with it.
 */
export class Views extends Eta {
  private readonly messages = new WeakMap<TranscriptEntry, Map<string, string>>();

  message(view: MessageView): string {
    const key = `${view.mine ? 'm' : 't'}${view.code}\0${view.dayLabel ?? ''}`;
    let variants = this.messages.get(view.message);
    let html = variants?.get(key);
    if (html === undefined) {
      html = flat(this.render('partials/message', view));
      if (variants === undefined) {
        variants = new Map();
        this.messages.set(view.message, variants);
      } else if (variants.size >= MESSAGE_VARIANTS) {
        variants.clear();
      }
      variants.set(key, html);
    }
    return html;
  }
}

/**
 * Eta merges data for an include (and a layout) with object spread: `{...it, ...data}`. On
 * Node 20 (V8 11.3) a spread that adds properties to a clone is a slow path, microseconds per
 * merge (measured: `{...a, ...b}` of a page's 18 keys 4-10 us, `Object.assign({}, a, b)` under
 * 1 us); a room page merges about a dozen times. This rewrites the compiled templates to
 * `Object.assign`, which yields the same object here: template data are plain objects with no
 * `__proto__` key (the one case where assigning differs from spreading).
 */
const FAST_MERGE: Readonly<Record<string, string>> = {
  '{...it, ...(__eta_d ?? {})}': 'Object.assign({}, it, __eta_d)',
  '{...it, body: __eta.res, ...__eta.layoutData, __blocks: __eta.blocks}':
    'Object.assign({}, it, { body: __eta.res }, __eta.layoutData, { __blocks: __eta.blocks })',
};

export const fastMergePlugin = {
  processFnString(fnString: string): string {
    let result = fnString;
    for (const [spread, assign] of Object.entries(FAST_MERGE)) result = result.replaceAll(spread, assign);
    return result;
  },
};

/** One Eta instance per process: it renders pages, htmx fragments and WebSocket pushes alike. */
export function createViews(): Views {
  const eta = new Views({
    views: projectPath('views'),
    cache: true,
    autoEscape: true,
    plugins: [fastMergePlugin],
  });
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

export type RenderOptions = { views: Views; defaults?: (request: FastifyRequest) => Record<string, unknown> };

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
        // Object.assign, not spread: see FAST_MERGE.
        const html = views.render(
          template,
          Object.assign({}, options.defaults?.(request), this.locals, data),
        );
        // Pages vary by HX-Request: caches must not hand a fragment to a full-page load.
        return this.header('vary', 'HX-Request').type('text/html; charset=utf-8').send(html);
      },
    );
  },
  { name: 'render' },
);
