import sharp, { type Metadata, type Sharp } from 'sharp';
import { DomainError } from '../domain-error.ts';

export type ImageFormat = 'jpeg' | 'png' | 'webp' | 'gif';

export const ACCEPTED_TYPES: Record<ImageFormat, string> = {
  jpeg: 'image/jpeg',
  png: 'image/png',
  webp: 'image/webp',
  gif: 'image/gif',
};

/** One encoded variant, exactly as sharp wrote it. */
export type ImageVariant = { data: Buffer; contentType: string; width: number; height: number };

export type ProcessedImage = { image: ImageVariant; thumb: ImageVariant; animated: boolean };

export type ImageLimits = {
  /** Decoded pixels over all frames; bounds the memory and CPU an upload can claim (decompression bombs). */
  maxPixels: number;
  maxFrames: number;
  /** The stored image is scaled down to fit this on its long side. */
  maxDimension: number;
  thumbDimension: number;
  timeoutSeconds: number;
};

export const DEFAULT_IMAGE_LIMITS: ImageLimits = {
  maxPixels: 40_000_000,
  maxFrames: 300,
  maxDimension: 4096,
  thumbDimension: 480,
  timeoutSeconds: 20,
};

const NOT_AN_IMAGE = 'Only JPEG, PNG, WebP and GIF images can be sent; this file is none of those.';

const unsupported = () => new DomainError('unsupported', NOT_AN_IMAGE, { title: 'Not an image we accept' });
const corrupt = () =>
  new DomainError('invalid', 'This image could not be read; the file may be damaged or incomplete.', {
    title: 'Damaged image',
  });
const tooManyPixels = (limits: ImageLimits, detail: string) =>
  new DomainError(
    'too_large',
    `This image has too many pixels (${detail}); at most ${Math.floor(limits.maxPixels / 1_000_000)} megapixels (all frames together) and ${limits.maxFrames} frames are accepted.`,
    { title: 'Image too large' },
  );

/**
 * The format from the file's first bytes. Only these four signatures ever reach a decoder, so
 * sharp's other loaders (SVG, TIFF, HEIF, PDF...) never see untrusted input, whatever the file is
 * called or claims to be.
 */
export function sniffFormat(bytes: Buffer): ImageFormat | null {
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return 'jpeg';
  if (bytes.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])))
    return 'png';
  const head = bytes.subarray(0, 12).toString('latin1');
  if (head.startsWith('GIF87a') || head.startsWith('GIF89a')) return 'gif';
  if (head.startsWith('RIFF') && head.slice(8, 12) === 'WEBP') return 'webp';
  return null;
}

function encode(pipeline: Sharp, format: ImageFormat): Sharp {
  switch (format) {
    case 'jpeg':
      return pipeline.jpeg({ quality: 85 });
    case 'png':
      return pipeline.png({ compressionLevel: 8 });
    case 'webp':
      return pipeline.webp({ quality: 85 });
    case 'gif':
      return pipeline.gif();
  }
}

async function render(pipeline: Sharp, contentType: string): Promise<ImageVariant> {
  const { data, info } = await pipeline.toBuffer({ resolveWithObject: true });
  // For animations sharp reports the height of all frames stacked; a page is one frame.
  return { data, contentType, width: info.width, height: info.pageHeight ?? info.height };
}

function isPixelLimitError(error: unknown): boolean {
  return /pixel limit/i.test((error as Error)?.message ?? '');
}

/**
 * Checks and re-encodes one uploaded image. The real format is read from the bytes (never the
 * name or declared type); the image is turned upright by its EXIF orientation and written anew
 * by sharp, which drops EXIF, GPS, XMP, comments and ICC profiles (converting to sRGB), and
 * anything appended to or hidden in the file. Nothing of the upload's bytes survives as such.
 *
 * Animated GIF and WebP stay animated: people send GIFs to move. Every frame is decoded and
 * re-encoded, and the pixel limit counts all frames, so an animation costs no more than a still
 * image of the same total size. The thumbnail is WebP (animated for animations).
 *
 * The decoding and encoding run on libuv's thread pool (sharp never blocks the event loop); how
 * many uploads are processed at once is the caller's business (AttachmentService's semaphore).
 */
export async function processImage(
  input: Buffer,
  limits: ImageLimits = DEFAULT_IMAGE_LIMITS,
): Promise<ProcessedImage> {
  const format = sniffFormat(input);
  if (!format) throw unsupported();
  const options = { limitInputPixels: limits.maxPixels, failOn: 'error' as const };

  let metadata: Metadata;
  try {
    // Headers only, nothing decoded yet: the limit is checked below, with the size in the message.
    metadata = await sharp(input, { ...options, limitInputPixels: false }).metadata();
  } catch {
    throw corrupt();
  }
  // A file that starts like one format and parses as another is not what it claims to be.
  if (metadata.format !== format) throw unsupported();
  const width = metadata.width ?? 0;
  const height = metadata.pageHeight ?? metadata.height ?? 0;
  const frames = metadata.pages ?? 1;
  if (width <= 0 || height <= 0) throw corrupt();
  if (frames > limits.maxFrames || width * height * frames > limits.maxPixels) {
    throw tooManyPixels(limits, `${width}×${height}${frames > 1 ? ` × ${frames} frames` : ''}`);
  }
  const animated = frames > 1 && (format === 'gif' || format === 'webp');

  const base = sharp(input, { ...options, animated })
    .timeout({ seconds: limits.timeoutSeconds })
    .rotate();
  const fit = (size: number) => ({
    width: size,
    height: size,
    fit: 'inside' as const,
    withoutEnlargement: true,
  });
  try {
    // One after the other: an upload then holds one thread of libuv's pool at a time, so the
    // caller's bound on uploads is a bound on the pool threads they take from file I/O and crypto.
    const image = await render(
      encode(base.clone().resize(fit(limits.maxDimension)), format),
      ACCEPTED_TYPES[format],
    );
    const thumb = await render(
      base.clone().resize(fit(limits.thumbDimension)).webp({ quality: 75 }),
      'image/webp',
    );
    return { image, thumb, animated };
  } catch (error) {
    if (isPixelLimitError(error)) throw tooManyPixels(limits, `${width}×${height}`);
    if (/timeout/i.test((error as Error)?.message ?? '')) {
      throw new DomainError('too_large', 'This image took too long to process; try a smaller one.', {
        title: 'Image too large',
      });
    }
    throw corrupt();
  }
}
