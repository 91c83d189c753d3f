import type { FastifyPluginAsync } from 'fastify';
import { readAttachment } from '../../attachments/attachment-reader.ts';
import { MasterKeyMissingError } from '../../crypto/keyring.ts';
import { DomainError } from '../../domain-error.ts';
import { sendStoredImage } from '../../web/stored-image.ts';
import type { AdminAppOptions } from '../app.ts';
import { parseUuid, unknownRoom } from '../ids.ts';
import { loadRoomDetail, roomCodeOf } from '../room-detail.ts';

type RoomParams = { Params: { id: string } };
type AttachmentParams = { Params: { id: string; attachmentId: string } };

const shreddedContent = () =>
  new DomainError('gone', 'The content of this room was shredded after the retention period.', {
    title: 'Content shredded',
  });

export const roomRoutes: FastifyPluginAsync<AdminAppOptions> = async (app, { resources, services }) => {
  const { db, store, logger } = resources;
  const { roomKeys, archive } = services;
  const deps = { db, roomKeys, logger };

  const detailOf = async (id: string) => {
    const detail = await loadRoomDetail(deps, parseUuid(id));
    if (!detail) throw unknownRoom();
    return detail;
  };

  app.get<RoomParams>('/rooms/:id', async (request, reply) => {
    const detail = await detailOf(request.params.id);
    return reply.render(
      { page: 'admin/room' },
      { title: `Room ${detail.record.room.code}`, nav: 'rooms', ...detail },
    );
  });

  app.get<RoomParams>('/rooms/:id/transcript.json', async (request, reply) => {
    const { record, shredded, missingMasterKeyId } = await detailOf(request.params.id);
    if (shredded) throw shreddedContent();
    // Not a transcript of "[unreadable message]"s: the content is there, the key is not configured.
    if (missingMasterKeyId) throw new MasterKeyMissingError(missingMasterKeyId);
    return reply
      .type('application/json; charset=utf-8')
      .header('cache-control', 'private, no-store')
      .header('content-disposition', `attachment; filename="room-${record.room.code}-${record.room.id}.json"`)
      .send(`${JSON.stringify(record, null, 2)}\n`);
  });

  app.get<RoomParams>('/rooms/:id/archive', async (request, reply) => {
    const roomId = parseUuid(request.params.id);
    const code = await roomCodeOf(db, roomId);
    if (code === null) throw unknownRoom();
    const reading = await archive.read(roomId);
    return reply.render(
      { page: 'admin/archive' },
      {
        title: `Archive of room ${code}`,
        nav: 'rooms',
        roomId,
        code,
        reading,
        attachmentsById:
          'record' in reading && reading.record
            ? new Map(reading.record.attachments.map((attachment) => [attachment.id, attachment]))
            : new Map(),
      },
    );
  });

  // The verified bundle's own bytes, so an operator can check them against the recorded SHA-256
  // (sha256sum) and keep them outside the panel. Only a verified bundle: nothing else may pass
  // for the archive.
  app.get<RoomParams>('/rooms/:id/archive.json', async (request, reply) => {
    const roomId = parseUuid(request.params.id);
    const code = await roomCodeOf(db, roomId);
    if (code === null) throw unknownRoom();
    const reading = await archive.read(roomId);
    if (reading.state === 'shredded') throw shreddedContent();
    if (reading.state !== 'verified') {
      throw new DomainError(
        'conflict',
        reading.state === 'not_archived'
          ? 'This room has no archive yet.'
          : 'The archive could not be verified; see its page for what was found.',
        { title: 'No verified archive' },
      );
    }
    return reply
      .type('application/json; charset=utf-8')
      .header('x-archive-sha256', reading.sha256)
      .header('content-disposition', `attachment; filename="archive-${code}-${roomId}.json"`)
      .send(reading.document);
  });

  for (const [suffix, variant] of [
    ['', 'image'],
    ['/thumb', 'thumb'],
  ] as const) {
    app.get<AttachmentParams>(`/rooms/:id/attachments/:attachmentId${suffix}`, async (request, reply) => {
      const roomId = parseUuid(request.params.id);
      const attachmentId = parseUuid(request.params.attachmentId, 'image id');
      const image = await readAttachment({ db, store, roomKeys, logger }, roomId, attachmentId, variant);
      return sendStoredImage(reply, image, 'private, no-store');
    });
  }
};
