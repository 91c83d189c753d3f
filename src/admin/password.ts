import { randomBytes, type ScryptOptions, scrypt, timingSafeEqual } from 'node:crypto';

/** scrypt cost for new hashes: 2^15 with r=8 takes about 50-100 ms and 32 MiB, as OWASP suggests. */
const DEFAULT_PARAMS = { N: 2 ** 15, r: 8, p: 1 };
const SALT_BYTES = 16;
const KEY_BYTES = 32;

export type PasswordHash = { N: number; r: number; p: number; salt: Buffer; hash: Buffer };

function derive(password: string, salt: Buffer, length: number, params: Omit<PasswordHash, 'salt' | 'hash'>) {
  // scrypt needs 128·N·r bytes; Node's default limit (32 MiB) is exactly that for our defaults.
  const options: ScryptOptions = { ...params, maxmem: 256 * params.N * params.r + 1024 * 1024 };
  return new Promise<Buffer>((resolve, reject) =>
    scrypt(password, salt, length, options, (error, key) => (error ? reject(error) : resolve(key))),
  );
}

/** `scrypt$N$r$p$saltB64$hashB64`, the format ADMIN_PASSWORD_HASH takes. */
export async function hashPassword(password: string, params = DEFAULT_PARAMS): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const hash = await derive(password, salt, KEY_BYTES, params);
  return ['scrypt', params.N, params.r, params.p, salt.toString('base64'), hash.toString('base64')].join('$');
}

/**
 * Parses `scrypt$N$r$p$salt$hash`. Parameters scrypt would refuse, or that would take gigabytes
 * per login (N = 2^30), are refused here, at start, instead of failing every login with a 500.
 */
export function parsePasswordHash(text: string): PasswordHash {
  const [scheme, n, r, p, salt, hash, ...rest] = text.split('$');
  const numbers = [n, r, p].map(Number);
  const [N = 0, R = 0, P = 0] = numbers;
  const saltBytes = Buffer.from(salt ?? '', 'base64');
  const hashBytes = Buffer.from(hash ?? '', 'base64');
  if (
    scheme !== 'scrypt' ||
    rest.length > 0 ||
    !numbers.every((value) => Number.isSafeInteger(value) && value > 0) ||
    (N & (N - 1)) !== 0 ||
    N < 2 ** 10 ||
    N > 2 ** 20 ||
    R > 32 ||
    P > 16 ||
    saltBytes.length < 8 ||
    hashBytes.length < 16
  ) {
    throw new Error(
      'not a scrypt$N$r$p$salt$hash password hash (N a power of two from 2^10 to 2^20, r at most 32, p at most 16, salt of 8 bytes or more, hash of 16 or more)',
    );
  }
  return { N, r: R, p: P, salt: saltBytes, hash: hashBytes };
}

/** Constant-time comparison of the derived key; a wrong password costs the same scrypt run. */
export async function verifyPassword(password: string, stored: PasswordHash): Promise<boolean> {
  const derived = await derive(password, stored.salt, stored.hash.length, stored);
  return derived.length === stored.hash.length && timingSafeEqual(derived, stored.hash);
}
