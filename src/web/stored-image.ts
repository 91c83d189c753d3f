import type { FastifyReply } from 'fastify';

/**
 * Sends a decrypted stored image. It was re-encoded by us, but the headers still assume the
 * worst: the browser must take it for exactly this type (no sniffing) and, opened directly, it
 * may run nothing and load nothing.
 */
export function sendStoredImage(
  reply: FastifyReply,
  image: { contentType: string; data: Buffer },
  cacheControl: string,
): FastifyReply {
  return reply
    .type(image.contentType)
    .header('x-content-type-options', 'nosniff')
    .header('cache-control', cacheControl)
    .header('content-security-policy', "default-src 'none'")
    .send(image.data);
}
