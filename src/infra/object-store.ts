import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Client as MinioClient } from 'minio';
import type { MinioConfig } from '../config.ts';

/**
 * Where sealed blobs (images, thumbnails, archive bundles) live. Keys are slash-separated
 * paths of safe characters chosen by the server, never by a user.
 */
export interface ObjectStore {
  readonly kind: 'fs' | 'minio';
  put(key: string, data: Buffer): Promise<void>;
  /** Throws `ObjectNotFoundError` when there is no such object. */
  get(key: string): Promise<Buffer>;
  /** Removing a missing object is not an error. */
  delete(key: string): Promise<void>;
  list(prefix: string): Promise<string[]>;
  ping(): Promise<void>;
}

export class ObjectNotFoundError extends Error {
  override name = 'ObjectNotFoundError';
}

const KEY_PATTERN = /^[a-z0-9][a-z0-9._-]*(\/[a-z0-9][a-z0-9._-]*)*$/;

export function assertObjectKey(key: string): void {
  if (!KEY_PATTERN.test(key) || key.includes('..')) throw new Error(`invalid object key: ${key}`);
}

/** Files under a directory; writes go through a temporary file and a rename, so a reader never sees half an object. */
export function createFsObjectStore(root: string): ObjectStore {
  const resolved = path.resolve(root);
  const fileOf = (key: string) => {
    assertObjectKey(key);
    return path.join(resolved, ...key.split('/'));
  };
  return {
    kind: 'fs',
    async put(key, data) {
      const file = fileOf(key);
      await mkdir(path.dirname(file), { recursive: true });
      const temporary = `${file}.${randomBytes(6).toString('hex')}.tmp`;
      await writeFile(temporary, data, { mode: 0o600 });
      await rename(temporary, file);
    },
    async get(key) {
      try {
        return await readFile(fileOf(key));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new ObjectNotFoundError(key);
        throw error;
      }
    },
    async delete(key) {
      await rm(fileOf(key), { force: true });
    },
    async list(prefix) {
      const found: string[] = [];
      const walk = async (directory: string, keyPrefix: string): Promise<void> => {
        let entries: import('node:fs').Dirent[];
        try {
          entries = await readdir(directory, { withFileTypes: true });
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
          throw error;
        }
        for (const entry of entries) {
          const key = keyPrefix === '' ? entry.name : `${keyPrefix}/${entry.name}`;
          if (entry.isDirectory()) await walk(path.join(directory, entry.name), key);
          else if (!entry.name.endsWith('.tmp') && key.startsWith(prefix)) found.push(key);
        }
      };
      // Walk only the directory the prefix names (its part up to the last '/'), not the whole store.
      const directoryPart = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
      if (directoryPart !== '') assertObjectKey(directoryPart);
      await walk(directoryPart === '' ? resolved : fileOf(directoryPart), directoryPart);
      return found.sort();
    },
    async ping() {
      await mkdir(resolved, { recursive: true });
      await stat(resolved);
    },
  };
}

export async function createMinioObjectStore(config: MinioConfig): Promise<ObjectStore> {
  const client = new MinioClient({
    endPoint: config.endPoint,
    port: config.port,
    useSSL: config.useSSL,
    accessKey: config.accessKey,
    secretKey: config.secretKey,
    pathStyle: true,
  });
  const { bucket } = config;
  if (!(await client.bucketExists(bucket))) {
    try {
      await client.makeBucket(bucket);
    } catch (error) {
      // Another process may have created it between the check and now.
      if (!(await client.bucketExists(bucket))) throw error;
    }
  }
  const isMissing = (error: unknown) => {
    const code = (error as { code?: string }).code;
    return code === 'NoSuchKey' || code === 'NotFound';
  };
  return {
    kind: 'minio',
    async put(key, data) {
      assertObjectKey(key);
      await client.putObject(bucket, key, data, data.length, { 'Content-Type': 'application/octet-stream' });
    },
    async get(key) {
      assertObjectKey(key);
      try {
        const stream = await client.getObject(bucket, key);
        const chunks: Buffer[] = [];
        for await (const chunk of stream) chunks.push(chunk as Buffer);
        return Buffer.concat(chunks);
      } catch (error) {
        if (isMissing(error)) throw new ObjectNotFoundError(key);
        throw error;
      }
    },
    async delete(key) {
      assertObjectKey(key);
      try {
        await client.removeObject(bucket, key);
      } catch (error) {
        if (!isMissing(error)) throw error;
      }
    },
    async list(prefix) {
      const keys: string[] = [];
      const stream = client.listObjectsV2(bucket, prefix, true);
      for await (const item of stream) {
        if (item.name) keys.push(item.name);
      }
      return keys.sort();
    },
    async ping() {
      if (!(await client.bucketExists(bucket))) throw new Error(`bucket ${bucket} is missing`);
    },
  };
}
