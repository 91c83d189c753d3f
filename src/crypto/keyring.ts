import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createSecretKey,
  type KeyObject,
  randomBytes,
} from 'node:crypto';

/**
 * Sealed byte layout (version 1):
 *   [0]      version byte (0x01)
 *   [1..13)  96-bit random nonce
 *   [13..-16) AES-256-GCM ciphertext
 *   [-16..]  128-bit authentication tag
 * The associated data is never stored: the caller rebuilds it from where the ciphertext lives
 * (room id, message seq, attachment id...), so a ciphertext moved elsewhere fails to open.
 */
const VERSION = 0x01;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const HEADER_BYTES = 1 + NONCE_BYTES;
const KEY_BYTES = 32;

export class CryptoError extends Error {
  override name = 'CryptoError';
}

/** A room key is wrapped under a master key this process was not given (a configuration fault). */
export class MasterKeyMissingError extends CryptoError {
  override name = 'MasterKeyMissingError';

  constructor(readonly keyId: string) {
    super(`no master key with id ${keyId} is configured (set MASTER_KEY_PREVIOUS)`);
  }
}

/**
 * Every key is a KeyObject, made once from its bytes: Node 24 (the image's runtime) checks a key
 * given as a Buffer by throwing and catching two TypeErrors inside every createCipheriv, which
 * made a message's seal four times slower (16 µs instead of 4, measured; Node 20 is indifferent).
 */
export function secretKey(bytes: Buffer): KeyObject {
  if (bytes.length !== KEY_BYTES) throw new CryptoError('key must be 32 bytes');
  return createSecretKey(bytes);
}

/**
 * Nonces are cut from a buffer the CSPRNG fills 4 KiB at a time: one call to it per 341 seals
 * instead of one per seal (measured: the per-call cost was most of a message's sealing). Each
 * nonce is handed out once; a refill is a new buffer, so handed-out nonces never change.
 */
const NONCE_POOL_BYTES = NONCE_BYTES * 341;
let noncePool = Buffer.alloc(0);
let nonceOffset = 0;

function nextNonce(): Buffer {
  if (nonceOffset + NONCE_BYTES > noncePool.length) {
    noncePool = randomBytes(NONCE_POOL_BYTES);
    nonceOffset = 0;
  }
  const nonce = noncePool.subarray(nonceOffset, nonceOffset + NONCE_BYTES);
  nonceOffset += NONCE_BYTES;
  return nonce;
}

export function seal(key: KeyObject, plaintext: Buffer, aad: Buffer): Buffer {
  const nonce = nextNonce();
  const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  const body = cipher.update(plaintext);
  const final = cipher.final();
  return Buffer.concat([Buffer.of(VERSION), nonce, body, final, cipher.getAuthTag()]);
}

export function open(key: KeyObject, sealed: Buffer, aad: Buffer): Buffer {
  if (sealed.length < HEADER_BYTES + TAG_BYTES) throw new CryptoError('open: sealed data is truncated');
  if (sealed[0] !== VERSION) throw new CryptoError(`open: unknown sealed format version ${sealed[0]}`);
  const nonce = sealed.subarray(1, HEADER_BYTES);
  const tag = sealed.subarray(sealed.length - TAG_BYTES);
  const body = sealed.subarray(HEADER_BYTES, sealed.length - TAG_BYTES);
  const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(body), decipher.final()]);
  } catch {
    throw new CryptoError('open: authentication failed (wrong key, wrong context or tampered data)');
  }
}

/** Builds associated data from labelled parts; the length prefixes keep ("ab","c") apart from ("a","bc"). */
export function associatedData(...parts: (string | number | bigint)[]): Buffer {
  // One buffer, written in place: every message's seal builds one.
  const texts = parts.map(String);
  let size = 0;
  for (const text of texts) size += 4 + Buffer.byteLength(text, 'utf8');
  const data = Buffer.allocUnsafe(size);
  let offset = 0;
  for (const text of texts) {
    const length = data.write(text, offset + 4, 'utf8');
    data.writeUInt32BE(length, offset);
    offset += 4 + length;
  }
  return data;
}

/** Key id = first 8 bytes of SHA-256 over a fixed label and the key, as hex. */
export function keyIdOf(key: Buffer): string {
  return createHash('sha256')
    .update('chittychattychat/kek-id/v1')
    .update(key)
    .digest()
    .subarray(0, 8)
    .toString('hex');
}

export type WrappedKey = { keyId: string; wrapped: Buffer };

/**
 * The master keys (KEKs): the current one wraps new room data keys; previous ones still unwrap
 * keys wrapped before a rotation.
 */
export class Keyring {
  readonly currentKeyId: string;
  private readonly keys = new Map<string, KeyObject>();

  constructor(current: Buffer, previous: Buffer[] = []) {
    if (current.length !== KEY_BYTES) throw new CryptoError('master key must be 32 bytes');
    this.currentKeyId = keyIdOf(current);
    this.keys.set(this.currentKeyId, secretKey(current));
    for (const key of previous) {
      if (key.length !== KEY_BYTES) throw new CryptoError('previous master key must be 32 bytes');
      const id = keyIdOf(key);
      if (!this.keys.has(id)) this.keys.set(id, secretKey(key));
    }
  }

  hasKey(keyId: string): boolean {
    return this.keys.has(keyId);
  }

  static newDataKey(): KeyObject {
    return secretKey(randomBytes(KEY_BYTES));
  }

  wrapDataKey(dataKey: KeyObject, roomId: string): WrappedKey {
    const kek = this.keys.get(this.currentKeyId) as KeyObject;
    return {
      keyId: this.currentKeyId,
      wrapped: seal(kek, dataKey.export(), associatedData('room-key', roomId, this.currentKeyId)),
    };
  }

  unwrapDataKey(wrapped: WrappedKey, roomId: string): KeyObject {
    const kek = this.keys.get(wrapped.keyId);
    if (kek === undefined) throw new MasterKeyMissingError(wrapped.keyId);
    return secretKey(open(kek, wrapped.wrapped, associatedData('room-key', roomId, wrapped.keyId)));
  }
}
