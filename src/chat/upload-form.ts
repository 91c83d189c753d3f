import type { Readable } from 'node:stream';
import type { FastifyRequest } from 'fastify';
import { DomainError } from '../domain-error.ts';

export type UploadLimits = { maxFileBytes: number; maxFieldBytes: number };

/** What the upload form sent: the file's bytes and its text fields. */
export type UploadForm = { file: Buffer | undefined; fields: Record<string, string> };

const FIELDS = ['caption', 'client_msg_id'] as const;
/** Part headers and boundaries, generously: a request longer than file + fields + this is refused unread. */
const FRAMING_BYTES = 16 * 1024;

const megabytes = (bytes: number) => `${Math.round((bytes / (1024 * 1024)) * 10) / 10} MB`;

export const fileTooLarge = (limits: UploadLimits) =>
  new DomainError('too_large', `An image can be at most ${megabytes(limits.maxFileBytes)}.`, {
    title: 'Image too large',
  });

const invalid = (message: string) => new DomainError('invalid', message, { title: 'Upload not understood' });

/**
 * Reads the one file (`file`) and the text fields of a multipart upload, in whatever order the
 * parts come. The file is counted while it streams: at the size limit reading stops at once and
 * the upload is refused, so an oversized body is never read to its end (the route then closes
 * the connection). A declared Content-Length over the limit is refused before reading anything.
 */
export async function readUploadForm(request: FastifyRequest, limits: UploadLimits): Promise<UploadForm> {
  if (!request.isMultipart()) {
    throw new DomainError(
      'unsupported',
      'Images are sent as a multipart/form-data upload (the upload form on the room page does this).',
      { title: 'Not a file upload' },
    );
  }
  const declared = Number(request.headers['content-length']);
  if (declared > limits.maxFileBytes + FIELDS.length * limits.maxFieldBytes + FRAMING_BYTES) {
    throw fileTooLarge(limits);
  }

  let file: Buffer | undefined;
  const fields: Record<string, string> = {};
  try {
    const parts = request.parts({
      limits: {
        fileSize: limits.maxFileBytes,
        files: 1,
        fields: FIELDS.length,
        fieldSize: limits.maxFieldBytes,
        parts: FIELDS.length + 1,
        headerPairs: 20,
      },
    });
    for await (const part of parts) {
      if (part.type === 'file') {
        if (part.fieldname !== 'file') throw invalid('The image must be sent in the field named “file”.');
        file = await readLimited(part.file, limits);
      } else if ((FIELDS as readonly string[]).includes(part.fieldname) && typeof part.value === 'string') {
        // busboy decodes fields leniently, turning bytes that are not UTF-8 into U+FFFD; refused
        // as the form parser refuses them (a person does not type U+FFFD).
        if (part.value.includes('\uFFFD')) {
          throw new DomainError('invalid', 'The form could not be read: it is not valid UTF-8 text.', {
            title: 'Unreadable form',
          });
        }
        // Two captions: which one did the person mean? (Keeping the last lost the first unsaid.)
        if (part.fieldname in fields) throw invalid(`The upload held more than one “${part.fieldname}”.`);
        fields[part.fieldname] = part.value;
      }
    }
  } catch (error) {
    if (error instanceof DomainError) throw error;
    const code = (error as { code?: string }).code;
    if (code === 'FST_REQ_FILE_TOO_LARGE') throw fileTooLarge(limits);
    if (code === 'FST_FILES_LIMIT') throw invalid('Send one image at a time.');
    if (code === 'FST_FIELDS_LIMIT' || code === 'FST_PARTS_LIMIT') {
      throw invalid('The upload had more fields than the upload form sends.');
    }
    throw invalid('The upload was malformed or cut short; please try again.');
  }
  return { file, fields };
}

/** The file's bytes, up to the limit; past it, the stream is destroyed and the upload refused. */
async function readLimited(
  stream: Readable & { truncated?: boolean },
  limits: UploadLimits,
): Promise<Buffer> {
  // busboy stops at fileSize and emits 'limit'; ending our read there leaves the rest unread.
  stream.once('limit', () => stream.destroy(fileTooLarge(limits)));
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  if (stream.truncated) throw fileTooLarge(limits);
  return Buffer.concat(chunks);
}
