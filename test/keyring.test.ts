import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  associatedData,
  CryptoError,
  Keyring,
  keyIdOf,
  open,
  seal,
  secretKey,
} from '../src/crypto/keyring.ts';

describe('seal / open', () => {
  const key = secretKey(randomBytes(32));
  const aad = associatedData('message', 'room-1', 7);

  it('round-trips and uses the versioned layout', () => {
    const plaintext = Buffer.from('hello, world — ünïcødé');
    const sealed = seal(key, plaintext, aad);
    assert.equal(sealed[0], 0x01);
    assert.equal(sealed.length, 1 + 12 + plaintext.length + 16);
    assert.deepEqual(open(key, sealed, aad), plaintext);
  });

  it('uses a fresh nonce every time', () => {
    const a = seal(key, Buffer.from('same'), aad);
    const b = seal(key, Buffer.from('same'), aad);
    assert.notDeepEqual(a.subarray(1, 13), b.subarray(1, 13));
    assert.notDeepEqual(a, b);
    // Across several refills of the nonce pool, no nonce repeats and none changes after use.
    const sealedMany = Array.from({ length: 2_000 }, () => seal(key, Buffer.from('x'), aad));
    const nonces = new Set(sealedMany.map((sealed) => sealed.subarray(1, 13).toString('hex')));
    assert.equal(nonces.size, sealedMany.length);
    for (const sealed of sealedMany) assert.deepEqual(open(key, sealed, aad), Buffer.from('x'));
  });

  it('fails when any single byte is flipped', () => {
    const sealed = seal(key, Buffer.from('tamper with me'), aad);
    for (let index = 0; index < sealed.length; index++) {
      const copy = Buffer.from(sealed);
      copy[index] = (copy[index] as number) ^ 0x01;
      assert.throws(() => open(key, copy, aad), CryptoError, `byte ${index} flipped still opened`);
    }
  });

  it('fails with other associated data (a ciphertext moved to another row)', () => {
    const sealed = seal(key, Buffer.from('secret'), aad);
    assert.throws(() => open(key, sealed, associatedData('message', 'room-1', 8)), CryptoError);
    assert.throws(() => open(key, sealed, associatedData('message', 'room-2', 7)), CryptoError);
  });

  it('keeps associated-data parts apart', () => {
    assert.notDeepEqual(associatedData('ab', 'c'), associatedData('a', 'bc'));
  });

  it('lays associated data out as it always has (stored ciphertexts depend on it)', () => {
    // Each part: its UTF-8 length as a big-endian uint32, then its bytes.
    assert.equal(
      associatedData('message', 'é', 7).toString('hex'),
      `00000007${Buffer.from('message').toString('hex')}00000002c3a90000000137`,
    );
    assert.equal(associatedData().length, 0);
  });

  it('fails with the wrong key and on truncated input', () => {
    const sealed = seal(key, Buffer.from('secret'), aad);
    assert.throws(() => open(secretKey(randomBytes(32)), sealed, aad), CryptoError);
    assert.throws(() => open(key, sealed.subarray(0, 20), aad), CryptoError);
    assert.throws(() => open(key, Buffer.alloc(0), aad), CryptoError);
  });
});

describe('Keyring', () => {
  it('wraps and unwraps room data keys bound to the room', () => {
    const keyring = new Keyring(randomBytes(32));
    const dataKey = Keyring.newDataKey();
    const wrapped = keyring.wrapDataKey(dataKey, 'room-a');
    assert.equal(wrapped.keyId, keyring.currentKeyId);
    assert.match(wrapped.keyId, /^[0-9a-f]{16}$/);
    // (KeyObjects compare by their bytes only through equals().)
    assert.ok(keyring.unwrapDataKey(wrapped, 'room-a').equals(dataKey));
    assert.ok(
      !keyring.unwrapDataKey(keyring.wrapDataKey(Keyring.newDataKey(), 'room-a'), 'room-a').equals(dataKey),
    );
    assert.throws(() => keyring.unwrapDataKey(wrapped, 'room-b'), CryptoError);
  });

  it('opens keys wrapped under a previous master key, and wraps new ones under the current', () => {
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const before = new Keyring(oldKey);
    const dataKey = Keyring.newDataKey();
    const wrapped = before.wrapDataKey(dataKey, 'room-a');

    const rotated = new Keyring(newKey, [oldKey]);
    assert.ok(rotated.unwrapDataKey(wrapped, 'room-a').equals(dataKey));
    assert.equal(rotated.wrapDataKey(dataKey, 'room-a').keyId, keyIdOf(newKey));

    const withoutOld = new Keyring(newKey);
    assert.throws(() => withoutOld.unwrapDataKey(wrapped, 'room-a'), /MASTER_KEY_PREVIOUS/);
  });

  it('derives a stable key id that differs per key', () => {
    const key = randomBytes(32);
    assert.equal(keyIdOf(key), keyIdOf(Buffer.from(key)));
    assert.notEqual(keyIdOf(key), keyIdOf(randomBytes(32)));
  });

  it('refuses keys of the wrong size', () => {
    assert.throws(() => new Keyring(randomBytes(16)), CryptoError);
    assert.throws(() => secretKey(randomBytes(31)), CryptoError);
  });
});
