import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { Actor } from '../audit/audit-log.ts';
import { seal } from '../crypto/keyring.ts';
import { aad, type RoomKeys } from '../crypto/room-keys.ts';
import { DomainError } from '../domain-error.ts';
import type { Clock } from '../infra/clock.ts';
import { type DatabasePool, type DatabaseTransactionConnection, sql } from '../infra/db.ts';
import type { ObjectStore } from '../infra/object-store.ts';
import {
  assertMaxChars,
  cleanMessageText,
  type MessageService,
  parseClientMsgId,
  type SentMessage,
} from '../messages/message-service.ts';
import type { TranscriptImage } from '../messages/transcript.ts';
import { notFound } from '../rooms/room.ts';
import type { RoomAccess } from '../rooms/room-access.ts';
import {
  type AttachmentVariant,
  type OpenedAttachment,
  readAttachment,
  storeUnavailable,
} from './attachment-reader.ts';
import {
  DEFAULT_IMAGE_LIMITS,
  type ImageLimits,
  type ProcessedImage,
  processImage,
} from './image-processing.ts';
import { Semaphore, SemaphoreFullError } from './semaphore.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Where an attachment's two sealed objects live; only server-made ids go into these keys. */
export function attachmentObjectKeys(
  roomId: string,
  attachmentId: string,
): Record<AttachmentVariant, string> {
  return {
    image: `attachments/${roomId}/${attachmentId}.image`,
    thumb: `attachments/${roomId}/${attachmentId}.thumb`,
  };
}

export type UploadInput = { data: Buffer; caption: unknown; clientMsgId: unknown };

export type AttachmentDeps = {
  db: DatabasePool;
  store: ObjectStore;
  roomKeys: RoomKeys;
  messages: MessageService;
  clock: Clock;
  logger: Logger;
};

export type AttachmentSettings = {
  maxCaptionChars: number;
  image?: ImageLimits;
  /**
   * Images processed at once. Each takes one thread of libuv's pool (4 by default), which file
   * I/O, DNS and crypto share, so the default leaves half of it to the rest of the chat.
   */
  concurrency?: number;
  /** Uploads that may wait for a turn; more are refused (503) instead of piling up in memory. */
  maxWaiting?: number;
};

/**
 * Image messages. An upload is checked and re-encoded (image-processing.ts), both variants are
 * sealed with the room key (AAD = room, attachment, variant) and stored, and only then is the
 * message committed, with its attachments row in the same transaction. So a committed image
 * message always has its objects; objects without a committed message are removed again.
 */
export class AttachmentService {
  private readonly semaphore: Semaphore;
  private readonly limits: ImageLimits;

  constructor(
    private readonly deps: AttachmentDeps,
    private readonly settings: AttachmentSettings,
  ) {
    this.semaphore = new Semaphore(settings.concurrency ?? 2, settings.maxWaiting ?? 16);
    this.limits = settings.image ?? DEFAULT_IMAGE_LIMITS;
  }

  /** Refuses an upload to a room that is not chatting yet; callers ask before reading the file. */
  assertAcceptsUploads(access: RoomAccess): void {
    if (access.room.status !== 'active') {
      throw new DomainError('conflict', 'Images can be sent once the chat has started.');
    }
  }

  async upload(access: RoomAccess, input: UploadInput, actor: Actor): Promise<SentMessage> {
    this.assertAcceptsUploads(access);
    const caption = this.caption(input.caption);
    const clientMsgId = parseClientMsgId(input.clientMsgId);
    const processed = await this.process(input.data);

    const roomId = access.room.id;
    const attachmentId = randomUUID();
    const keys = attachmentObjectKeys(roomId, attachmentId);
    await this.storeSealed(roomId, attachmentId, keys, processed);

    const image: TranscriptImage = {
      id: attachmentId,
      contentType: processed.image.contentType,
      bytes: processed.image.data.length,
      width: processed.image.width,
      height: processed.image.height,
      thumbWidth: processed.thumb.width,
      thumbHeight: processed.thumb.height,
    };
    let sent: SentMessage;
    try {
      sent = await this.deps.messages.write(
        access,
        {
          roomId,
          participantId: access.me.id,
          kind: 'image',
          clientMsgId,
          text: caption,
          senderIp: actor.ip,
          withinTransaction: ({ seq, tx }) =>
            this.insertRow(tx, { roomId, seq, participantId: access.me.id, keys, processed, image, actor }),
        },
        image,
      );
    } catch (error) {
      await this.remove(keys);
      throw error;
    }
    if (!sent.duplicate) return sent;
    // A retried upload: the first one is the message; this copy's objects are not needed.
    await this.remove(keys);
    const [stored] = await this.deps.messages.history(roomId, { afterSeq: sent.seq - 1, limit: 1 });
    return { ...sent, image: stored?.seq === sent.seq ? stored.image : null };
  }

  /** One stored image or thumbnail of the participant's room, opened. */
  open(access: RoomAccess, attachmentId: string, variant: AttachmentVariant): Promise<OpenedAttachment> {
    // A malformed id answers like a room that does not exist: nothing to learn from the address.
    if (!UUID.test(attachmentId)) throw notFound();
    return readAttachment(this.deps, access.room.id, attachmentId.toLowerCase(), variant);
  }

  private caption(value: unknown): string {
    if (value === undefined) return '';
    if (typeof value !== 'string') throw new DomainError('invalid', 'The caption could not be read.');
    const text = cleanMessageText(value);
    assertMaxChars(text, this.settings.maxCaptionChars, 'caption');
    return text.trim() === '' ? '' : text;
  }

  private async process(data: Buffer): Promise<ProcessedImage> {
    if (data.length === 0)
      throw new DomainError('invalid', 'Choose an image to send.', { title: 'No image' });
    try {
      return await this.semaphore.run(() => processImage(data, this.limits));
    } catch (error) {
      if (!(error instanceof SemaphoreFullError)) throw error;
      throw new DomainError(
        'unavailable',
        'Many images are being processed right now, so this one was not sent. Please try again in a moment.',
        { retryAfterSeconds: 5 },
      );
    }
  }

  private async storeSealed(
    roomId: string,
    attachmentId: string,
    keys: Record<AttachmentVariant, string>,
    processed: ProcessedImage,
  ): Promise<void> {
    const dataKey = await this.deps.roomKeys.dataKey(roomId);
    const puts = await Promise.allSettled(
      (['image', 'thumb'] as const).map((variant) =>
        this.deps.store.put(
          keys[variant],
          seal(dataKey, processed[variant].data, aad.attachment(roomId, attachmentId, variant)),
        ),
      ),
    );
    const failed = puts.find((put): put is PromiseRejectedResult => put.status === 'rejected');
    if (!failed) return;
    this.deps.logger.warn(
      { err: { message: (failed.reason as Error)?.message }, roomId, attachmentId },
      'image not stored: object store failed',
    );
    await this.remove(keys);
    throw storeUnavailable('the image was not sent');
  }

  private async insertRow(
    tx: DatabaseTransactionConnection,
    row: {
      roomId: string;
      seq: number;
      participantId: string;
      keys: Record<AttachmentVariant, string>;
      processed: ProcessedImage;
      image: TranscriptImage;
      actor: Actor;
    },
  ): Promise<void> {
    const { image, thumb } = row.processed;
    await tx.one(sql.type(z.object({ id: z.string() }))`
      INSERT INTO attachments (id, room_id, message_seq, participant_id, object_key, thumb_key, content_type,
                               thumb_content_type, bytes, width, height, thumb_bytes, thumb_width, thumb_height,
                               sender_ip, created_at)
      VALUES (${row.image.id}, ${row.roomId}, ${row.seq}, ${row.participantId}, ${row.keys.image}, ${row.keys.thumb},
              ${image.contentType}, ${thumb.contentType}, ${image.data.length}, ${image.width}, ${image.height},
              ${thumb.data.length}, ${thumb.width}, ${thumb.height}, ${row.actor.ip},
              ${sql.timestamp(this.deps.clock.now())})
      RETURNING id`);
  }

  /** Best effort: an object left behind is sealed with the room key, so shredding the key covers it. */
  private async remove(keys: Record<AttachmentVariant, string>): Promise<void> {
    const results = await Promise.allSettled(Object.values(keys).map((key) => this.deps.store.delete(key)));
    for (const [index, result] of results.entries()) {
      if (result.status === 'rejected') {
        this.deps.logger.warn(
          { err: { message: (result.reason as Error)?.message }, key: Object.values(keys)[index] },
          'orphaned image object could not be removed',
        );
      }
    }
  }
}
