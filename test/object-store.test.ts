import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  createFsObjectStore,
  createMinioObjectStore,
  ObjectNotFoundError,
  type ObjectStore,
} from '../src/infra/object-store.ts';
import { type S3Server, startS3 } from './helpers/servers.ts';

function behavesAsAnObjectStore(
  name: string,
  open: () => Promise<{ store: ObjectStore; close(): Promise<void> }>,
) {
  describe(name, () => {
    let store: ObjectStore;
    let close: () => Promise<void>;
    before(async () => {
      ({ store, close } = await open());
    });
    after(() => close());

    it('stores, reads back, lists and deletes objects', async () => {
      const data = Buffer.from([0, 1, 2, 250, 251, 252]);
      await store.put('rooms/abc/one.bin', data);
      await store.put('rooms/abc/two.bin', Buffer.from('two'));
      await store.put('rooms/xyz/three.bin', Buffer.from('three'));
      assert.deepEqual(await store.get('rooms/abc/one.bin'), data);
      assert.deepEqual(await store.list('rooms/abc/'), ['rooms/abc/one.bin', 'rooms/abc/two.bin']);
      // A prefix is a prefix of keys, not only a folder.
      assert.deepEqual(await store.list('rooms/ab'), ['rooms/abc/one.bin', 'rooms/abc/two.bin']);
      assert.deepEqual(await store.list('rooms/abc/t'), ['rooms/abc/two.bin']);
      assert.deepEqual(await store.list('rooms/nothing/'), []);
      await store.delete('rooms/abc/one.bin');
      await store.delete('rooms/abc/one.bin');
      assert.deepEqual(await store.list('rooms/abc/'), ['rooms/abc/two.bin']);
      await assert.rejects(store.get('rooms/abc/one.bin'), ObjectNotFoundError);
    });

    it('overwrites an object in place', async () => {
      await store.put('rooms/ow/x.bin', Buffer.from('first'));
      await store.put('rooms/ow/x.bin', Buffer.from('second'));
      assert.equal((await store.get('rooms/ow/x.bin')).toString(), 'second');
    });

    it('handles a large object', async () => {
      const big = Buffer.alloc(3 * 1024 * 1024, 7);
      await store.put('rooms/big/blob.bin', big);
      assert.ok((await store.get('rooms/big/blob.bin')).equals(big));
    });

    it('refuses keys that could escape or are not ours', async () => {
      for (const key of ['../etc/passwd', '/abs', 'a//b', 'A/B', 'a/../b', '']) {
        await assert.rejects(store.put(key, Buffer.from('x')), /invalid object key/, key);
      }
    });

    it('answers a ping', async () => {
      await store.ping();
    });
  });
}

behavesAsAnObjectStore('file object store', async () => {
  const directory = await mkdtemp(path.join(os.tmpdir(), 'ccc-objects-'));
  return {
    store: createFsObjectStore(path.join(directory, 'objects')),
    close: () => rm(directory, { recursive: true, force: true }),
  };
});

behavesAsAnObjectStore('MinIO object store (against s3rver)', async () => {
  const s3: S3Server = await startS3('chitty-files');
  // The bucket does not exist yet: the store creates it.
  const store = await createMinioObjectStore(s3.config);
  return { store, close: () => s3.stop() };
});

describe('MinIO object store when the server is down', () => {
  it('fails the ping and the calls with an error, not a hang', async () => {
    const s3 = await startS3('chitty-down');
    const store = await createMinioObjectStore(s3.config);
    await s3.stop();
    await assert.rejects(store.ping());
    await assert.rejects(store.put('rooms/a/b.bin', Buffer.from('x')));
  });
});
