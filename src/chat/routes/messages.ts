import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsync } from 'fastify';
import { DomainError } from '../../domain-error.ts';
import { parseTabId } from '../../messages/live/live-socket.ts';
import { wantsFragment } from '../../web/render.ts';
import type { ChatAppOptions } from '../app.ts';

type CodeParams = { Params: { code: string } };

/** The no-JS conversation frame reloads itself this often. */
const FRAME_REFRESH_SECONDS = 5;
const PAGE_HISTORY_LIMIT = 500;

export const messageRoutes: FastifyPluginAsync<ChatAppOptions> = async (app, { services, resources }) => {
  const { roomAccess, messages } = services;
  const { clock } = resources;

  app.post<CodeParams & { Body: { body?: unknown; client_msg_id?: unknown } }>(
    '/rooms/:code/messages',
    async (request, reply) => {
      // The hot path: most sends are decided by a lease and a kept access, with no query.
      const limited = app.checkLimit('send', request);
      if (limited) await limited;
      const { code } = request.params;
      const access = await roomAccess.getAccess(code, request.device, request.actor);
      const message = await messages.send(
        access,
        { body: request.body?.body, clientMsgId: request.body?.client_msg_id },
        request.actor,
        // app.js names its page, whose socket then skips what this answer already carries.
        parseTabId(request.headers['x-tab-id']),
      );
      if (!wantsFragment(request))
        return reply.redirect(`/rooms/${access.room.code}#msg-${message.seq}`, 303);
      return reply.render(
        { page: 'partials/sent', fragment: 'partials/sent' },
        { message, mine: true, code: access.room.code, nextClientMsgId: randomUUID() },
      );
    },
  );

  /**
   * Messages after seq N. For htmx: the list items. Otherwise a small page that reloads itself:
   * the conversation frame of the no-JS room page (and readable with curl).
   */
  app.get<CodeParams & { Querystring: { after?: string; paused?: string } }>(
    '/rooms/:code/messages',
    async (request, reply) => {
      const fragment = wantsFragment(request);
      if (!fragment) {
        // This page is framed by the room page itself, and only by it; so are its errors (the
        // chat ended, the database is away), which then show inside the frame (see sendError).
        reply.header('content-security-policy', FRAME_CSP).header('x-frame-options', 'SAMEORIGIN');
        reply.locals = Object.assign({}, reply.locals, { framed: true });
      }
      const access = await roomAccess.getAccess(request.params.code, request.device, request.actor);
      const after = request.query.after ?? '0';
      // A seq is a bigint in the database; a longer number would fail there as a 500.
      if (!/^\d{1,15}$/.test(after))
        throw new DomainError('invalid', 'The "after" parameter must be a message number.');
      const afterSeq = Number(after);
      const list = await messages.history(access.room.id, {
        afterSeq,
        limit: PAGE_HISTORY_LIMIT,
        newestFirst: !fragment && afterSeq === 0,
      });
      const data = { messages: list, mySlot: access.me.slot, code: access.room.code };
      if (fragment) return reply.render({ page: 'partials/messages', fragment: 'partials/messages' }, data);
      const now = clock.now().getTime();
      // Each refresh jumps to the newest message; reading back needs the updates to stop.
      const paused = request.query.paused === '1';
      return reply.render(
        { page: 'chat/conversation-frame' },
        {
          ...data,
          title: `Room ${access.room.code}`,
          framed: true,
          paused,
          now,
          // The room page's header cannot update itself without scripts (no-script.css hides
          // what would go stale there); the frame, which refreshes, says it instead.
          partnerName: access.partner?.displayName ?? null,
          partnerOnline: access.partner ? services.hub.isOnline(access.room.id, access.partner.slot) : false,
          closesAt: access.room.expiresAt,
          refreshSeconds: paused ? undefined : FRAME_REFRESH_SECONDS,
          // A URL that differs from the current one before the '#': a refresh to the same URL
          // with a fragment is only a scroll to the fragment, and the frame would never reload.
          refreshUrl: `/rooms/${access.room.code}/messages?at=${now}#end`,
        },
      );
    },
  );

  app.get<CodeParams>('/rooms/:code/transcript.txt', async (request, reply) => {
    const access = await roomAccess.getAccess(request.params.code, request.device, request.actor);
    const list = await messages.history(access.room.id);
    const lines = list.map((message) => {
      const when = new Date(message.createdAt).toISOString().replace('T', ' ').slice(0, 19);
      const who =
        message.slot === access.me.slot
          ? `${message.senderName ?? 'You'} (you)`
          : (message.senderName ?? 'Partner');
      const what = message.image ? `[image] ${message.text}`.trimEnd() : message.text;
      return `[${when} UTC] ${who}: ${what.replace(/\n/g, '\n    ')}`;
    });
    const header = `ChittyChattyChat room ${access.room.code}, transcript as of ${new Date(clock.now()).toISOString()}\n\n`;
    return reply
      .header('content-type', 'text/plain; charset=utf-8')
      .header('content-disposition', `attachment; filename="chittychat-${access.room.code}.txt"`)
      .header('cache-control', 'private, no-store')
      .send(header + lines.join('\n') + (lines.length > 0 ? '\n' : ''));
  });
};

const FRAME_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' blob: data:",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'self'",
].join(';');
