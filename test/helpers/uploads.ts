import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { z } from 'zod';
import { sql } from '../../src/infra/db.ts';
import type { TestApp } from './app.ts';
import type { Client } from './client.ts';

export type Part =
  | { name: string; value: string | Buffer }
  | { name: string; filename: string; contentType?: string; data: Buffer };

/** A multipart/form-data body, as a browser builds it from a form. */
export function multipart(parts: Part[]): { payload: Buffer; contentType: string } {
  const boundary = `----test${randomBytes(8).toString('hex')}`;
  const chunks: Buffer[] = [];
  for (const part of parts) {
    const head =
      'data' in part
        ? `Content-Disposition: form-data; name="${part.name}"; filename="${part.filename}"\r\nContent-Type: ${
            part.contentType ?? 'application/octet-stream'
          }`
        : `Content-Disposition: form-data; name="${part.name}"`;
    chunks.push(Buffer.from(`--${boundary}\r\n${head}\r\n\r\n`));
    chunks.push(
      'data' in part ? part.data : Buffer.isBuffer(part.value) ? part.value : Buffer.from(part.value),
    );
    chunks.push(Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { payload: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` };
}

export type UploadOptions = {
  caption?: string;
  clientMsgId?: string;
  filename?: string;
  contentType?: string;
  htmx?: boolean;
  /** Replace the parts altogether (malformed forms). */
  parts?: Part[];
};

/** Posts the upload form the way a browser does (or, with `htmx`, the way htmx does). */
export function upload(client: Client, code: string, file: Buffer, options: UploadOptions = {}) {
  const parts: Part[] = options.parts ?? [
    ...(options.clientMsgId ? [{ name: 'client_msg_id', value: options.clientMsgId }] : []),
    {
      name: 'file',
      filename: options.filename ?? 'photo.jpg',
      contentType: options.contentType ?? 'image/jpeg',
      data: file,
    },
    ...(options.caption !== undefined ? [{ name: 'caption', value: options.caption }] : []),
  ];
  const body = multipart(parts);
  return client.request({
    method: 'POST',
    url: `/rooms/${code}/attachments`,
    payload: body.payload,
    headers: { 'content-type': body.contentType, ...(options.htmx ? { 'hx-request': 'true' } : {}) },
  });
}

/** Noise compresses badly, so these images have realistic sizes and every pixel matters. */
function noise(width: number, height: number) {
  return sharp(randomBytes(width * height * 3), { raw: { width, height, channels: 3 } });
}

export const images = {
  jpeg: (width = 640, height = 480) => noise(width, height).jpeg().toBuffer(),
  png: (width = 320, height = 240) => noise(width, height).png().toBuffer(),
  webp: (width = 320, height = 240) => noise(width, height).webp().toBuffer(),
  gif: (width = 160, height = 120) => noise(width, height).gif().toBuffer(),

  /** A camera photo: the maker, a secret model name and where it was taken. */
  jpegWithGps: () =>
    noise(800, 600)
      .jpeg()
      .withExif({
        IFD0: { Make: 'SecretCam', Model: 'Spyglass 3000', Copyright: 'Private Person' },
        IFD3: {
          GPSLatitudeRef: 'N',
          GPSLatitude: '51/1 30/1 2640/100',
          GPSLongitudeRef: 'W',
          GPSLongitude: '0/1 7/1 3960/100',
        },
      })
      .toBuffer(),

  /**
   * Stored 1200×800 on its side (EXIF Orientation 6: show it turned 90° clockwise): the left half
   * red, the right half blue. Upright it is 800×1200 with red on top.
   */
  sideways: async () => {
    const half = (colour: string) =>
      sharp({ create: { width: 600, height: 800, channels: 3, background: colour } })
        .png()
        .toBuffer();
    return sharp({ create: { width: 1200, height: 800, channels: 3, background: '#000' } })
      .composite([
        { input: await half('#ff0000'), left: 0, top: 0 },
        { input: await half('#0000ff'), left: 600, top: 0 },
      ])
      .jpeg()
      .withMetadata({ orientation: 6 })
      .toBuffer();
  },

  /** Three 120×90 frames. */
  animatedGif: async () => {
    const frames = await Promise.all(
      ['#ff0000', '#00ff00', '#0000ff'].map((colour) =>
        sharp({ create: { width: 120, height: 90, channels: 4, background: colour } })
          .png()
          .toBuffer(),
      ),
    );
    return sharp(frames, { join: { animated: true } })
      .gif({ delay: [100, 100, 100], loop: 0 })
      .toBuffer();
  },
};

/** Attachments rows and image messages: what an upload would add. */
export async function storedCounts(app: TestApp): Promise<{ attachments: number; imageMessages: number }> {
  return app.resources.db.one(sql.type(z.object({ attachments: z.number(), imageMessages: z.number() }))`
    SELECT (SELECT count(*) FROM attachments)::int AS attachments,
           (SELECT count(*) FROM messages WHERE kind = 'image')::int AS "imageMessages"`);
}

export function objectKeys(app: TestApp): Promise<string[]> {
  return app.resources.store.list('attachments/');
}

/** Every file below a directory, read from disk (not through the app). */
export async function filesUnder(directory: string): Promise<{ file: string; data: Buffer }[]> {
  const found: { file: string; data: Buffer }[] = [];
  for (const entry of await readdir(directory, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath, entry.name);
    found.push({ file, data: await readFile(file) });
  }
  return found;
}

/**
 * Image signatures. Short ones are looked for at the start only (three bytes turn up by chance in
 * ciphertext); longer ones anywhere, which also finds an image wrapped in some other container.
 */
const SIGNATURES_ANYWHERE = [
  Buffer.from('89504e470d0a1a0a', 'hex'),
  Buffer.from('GIF87a'),
  Buffer.from('GIF89a'),
  Buffer.from('WEBPVP8'),
  Buffer.from('JFIF\0'),
  Buffer.from('Exif\0\0'),
  ...['ffd8ffe0', 'ffd8ffe1', 'ffd8ffdb', 'ffd8ffee', 'ffd8ffc0'].map((hex) => Buffer.from(hex, 'hex')),
];

export function looksLikeAnImage(data: Buffer): boolean {
  if (data.subarray(0, 3).equals(Buffer.from('ffd8ff', 'hex'))) return true;
  if (data.subarray(0, 4).toString('latin1') === 'RIFF' && data.subarray(8, 12).toString('latin1') === 'WEBP')
    return true;
  return SIGNATURES_ANYWHERE.some((signature) => data.includes(signature));
}
