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

/**
 * Devices of recent requests by token: every request names its device, and hashing the token
 * again each time was a visible part of a send's CPU. A pure function of the token, so one cache
 * serves every app in the process; the least recently added go first. About 0.5 KB a device, so
 * it is kept small: it is for the devices sending now, not for every open socket.
 */
const recentDevices = new Map<string, Device>();
const RECENT_DEVICES_LIMIT = 4_096;

/** The device for a cookie value, or undefined if the value is not a well-formed token. */
export function deviceFromToken(token: unknown): Device | undefined {
  if (typeof token !== 'string') return undefined;
  const cached = recentDevices.get(token);
  if (cached) return cached;
  if (!TOKEN_PATTERN.test(token)) return undefined;
  const hash = createHash('sha256').update(token).digest();
  const device = Object.freeze({ token, hash, hashHex: hash.toString('hex') });
  if (recentDevices.size >= RECENT_DEVICES_LIMIT)
    recentDevices.delete(recentDevices.keys().next().value as string);
  recentDevices.set(token, device);
  return device;
}
