import { createHash, randomBytes } from 'node:crypto';

/**
 * A device is a random 256-bit token kept in a cookie; the server stores only its SHA-256. Whoever
 * holds the cookie is that device, so the cookie is HttpOnly and never logged.
 */
export type Device = { token: string; hash: Buffer; hashHex: string };

const TOKEN_PATTERN = /^[A-Za-z0-9_-]{43}$/;

export function newDevice(): Device {
  return deviceFromToken(randomBytes(32).toString('base64url')) as Device;
}

/** The device for a cookie value, or undefined if the value is not a well-formed token. */
export function deviceFromToken(token: unknown): Device | undefined {
  if (typeof token !== 'string' || !TOKEN_PATTERN.test(token)) return undefined;
  const hash = createHash('sha256').update(token).digest();
  return { token, hash, hashHex: hash.toString('hex') };
}
