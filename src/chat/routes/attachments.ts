import { randomUUID } from 'node:crypto';
import fastifyMultipart from '@fastify/multipart';
import type { FastifyPluginAsync } from 'fastify';
import { DomainError, type DomainErrorKind } from '../../domain-error.ts';
import { wantsFragment } from '../../web/render.ts';
import { sendStoredImage } from '../../web/stored-image.ts';
import type { ChatAppOptions } from '../app.ts';
import { readUploadForm, type UploadLimits } from '../upload-form.ts';

type CodeParams = { Params: { code: string } };
type AttachmentParams = { Params: { code: string; id: string } };

/** Upload errors that mean "this file was refused" (not: the chat is over, or a part is down). */
const REFUSALS = new Set<DomainErrorKind>(['invalid', 'too_large', 'unsupported']);

/** Uploads whose files are being read at once, in all and from one address (see the route). */
const MAX_UPLOADS_READING = 16;
const MAX_UPLOADS_READING_PER_ADDRESS = 4;

/** A browser may keep an image this long, and never past the end of its chat. */
const MAX_CACHE_SECONDS = 24 * 60 * 60;

export const attachmentRoutes: FastifyPluginAsync<ChatAppOptions> = async (app, { services, resources }) => {
  const { roomAccess, attachments, audit } = services;
  const { config, clock } = resources;
  const limits: UploadLimits = {
    maxFileBytes: Math.floor(config.maxUploadMb * 1024 * 1024),
    // UTF-8 needs at most 4 bytes a character; a caption cut at this size is always too long.
    maxFieldBytes: config.maxMessageChars * 4 + 4,
  };
  // Multipart bodies are accepted by these routes only (the plugin is scoped to this one).
  await app.register(fastifyMultipart);

  // An upload refused before its body was read (too large, rate limited, not a participant)
  // closes its connection in stages (web/staged-close.ts) instead of reading the rest.

  // Files are read into memory (up to MAX_UPLOAD_MB each) before they are checked and processed:
  // how many are being read at once is bounded, in all and per address, so that slow uploads
  // cannot pile up gigabytes (100 trickled 10 MB uploads held 1 GB before this).
  const reading = { total: 0, byAddress: new Map<string, number>() };
  const busy = () =>
    new DomainError(
      'unavailable',
      'Too many images are on their way right now. Please try again in a moment.',
      {
        retryAfterSeconds: 5,
      },
    );

  app.post<CodeParams>('/rooms/:code/attachments', async (request, reply) => {
    await app.checkLimit('upload', request);
    const access = await roomAccess.getAccess(request.params.code, request.device, request.actor);
    // Before reading a byte: a room that is not chatting yet takes no file.
    attachments.assertAcceptsUploads(access);
    const address = request.actor.ip;
    const fromAddress = reading.byAddress.get(address) ?? 0;
    if (reading.total >= MAX_UPLOADS_READING || fromAddress >= MAX_UPLOADS_READING_PER_ADDRESS) throw busy();
    reading.total += 1;
    reading.byAddress.set(address, fromAddress + 1);
    let message: Awaited<ReturnType<typeof attachments.upload>>;
    try {
      const form = await readUploadForm(request, limits).finally(() => {
        reading.total -= 1;
        const left = (reading.byAddress.get(address) ?? 1) - 1;
        if (left > 0) reading.byAddress.set(address, left);
        else reading.byAddress.delete(address);
      });
      message = await attachments.upload(
        access,
        {
          data: form.file ?? Buffer.alloc(0),
          caption: form.fields.caption,
          clientMsgId: form.fields.client_msg_id,
        },
        request.actor,
      );
    } catch (error) {
      // A refused file (too large, not an image, a bomb, corrupt) is on the record with who sent it.
      if (error instanceof DomainError && REFUSALS.has(error.kind)) {
        await audit
          .record({
            source: 'chat',
            action: 'attachment.refused',
            actor: request.actor,
            roomId: access.room.id,
            roomCode: access.room.code,
            participantId: access.me.id,
            detail: { reason: error.kind },
          })
          .catch(() => undefined);
      }
      throw error;
    }
    if (!wantsFragment(request)) return reply.redirect(`/rooms/${access.room.code}#msg-${message.seq}`, 303);
    return reply.render(
      { page: 'partials/uploaded', fragment: 'partials/uploaded' },
      { message, mine: true, code: access.room.code, nextUploadMsgId: randomUUID() },
    );
  });

  for (const [suffix, variant] of [
    ['', 'image'],
    ['/thumb', 'thumb'],
  ] as const) {
    app.get<AttachmentParams>(`/rooms/:code/attachments/:id${suffix}`, async (request, reply) => {
      const access = await roomAccess.getAccess(request.params.code, request.device, request.actor);
      const image = await attachments.open(access, request.params.id, variant);
      const untilEnd = Math.floor(((access.room.expiresAt ?? 0) - clock.now().getTime()) / 1000);
      const maxAge = Math.max(0, Math.min(MAX_CACHE_SECONDS, untilEnd));
      return sendStoredImage(reply, image, `private, max-age=${maxAge}`);
    });
  }
};
