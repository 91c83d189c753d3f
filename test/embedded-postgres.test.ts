/**
 * The zero-setup database's password: drawn per cluster and kept beside it, readable by its owner
 * only; a cluster made with the old built-in password gets its own on its next start.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { LEGACY_PASSWORD, startEmbeddedPostgres } from '../src/infra/embedded-postgres.ts';

/** Whether the cluster on `port` lets the postgres user in with `password`. */
async function logsIn(port: number, password: string): Promise<boolean> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password, database: 'postgres' });
  try {
    await client.connect();
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

describe('the embedded PostgreSQL password', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });
  /** Where a new cluster goes: `pg` in a fresh folder, with room beside it for its password file. */
  const freshDataDir = async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ccc-pgpass-'));
    dirs.push(dir);
    return path.join(dir, 'pg');
  };

  it('is drawn for a new cluster, kept at mode 0600 beside it, and used again on the next start', async () => {
    const dataDir = await freshDataDir();
    const first = await startEmbeddedPostgres({ dataDir, database: 'chat' });
    const password = (await readFile(`${dataDir}.password`, 'utf8')).trim();
    try {
      assert.match(password, /^[0-9a-f]{48}$/);
      assert.equal((await stat(`${dataDir}.password`)).mode & 0o777, 0o600);
      assert.equal(new URL(first.url).password, password);
      assert.equal(await logsIn(first.port, password), true);
      assert.equal(await logsIn(first.port, LEGACY_PASSWORD), false, 'the built-in password is no key');
    } finally {
      await first.stop();
    }
    const second = await startEmbeddedPostgres({ dataDir, database: 'chat' });
    try {
      assert.equal(new URL(second.url).password, password, 'the same password after a restart');
      assert.equal(await logsIn(second.port, password), true);
    } finally {
      await second.stop();
    }
  });

  it('replaces the built-in password of a cluster made before', async () => {
    const dataDir = await freshDataDir();
    // A cluster as earlier versions left it: the built-in password, no password file.
    const old = await startEmbeddedPostgres({ dataDir, database: 'chat' });
    const drawn = (await readFile(`${dataDir}.password`, 'utf8')).trim();
    const client = new pg.Client(old.adminUrl);
    await client.connect();
    await client.query(`ALTER ROLE postgres PASSWORD '${LEGACY_PASSWORD}'`);
    await client.end();
    await old.stop();
    await rm(`${dataDir}.password`);

    // A start cut short after drawing the new password (before or after setting it) tries the
    // drawn one first, then the old one: never locked out.
    await writeFile(`${dataDir}.password.next`, 'f'.repeat(48), { mode: 0o600 });

    const upgraded = await startEmbeddedPostgres({ dataDir, database: 'chat' });
    try {
      const password = (await readFile(`${dataDir}.password`, 'utf8')).trim();
      assert.match(password, /^[0-9a-f]{48}$/);
      assert.notEqual(password, drawn);
      assert.equal(password, 'f'.repeat(48), 'the pending password was taken');
      assert.equal(new URL(upgraded.url).password, password);
      assert.equal(await logsIn(upgraded.port, password), true);
      assert.equal(await logsIn(upgraded.port, LEGACY_PASSWORD), false);
    } finally {
      await upgraded.stop();
    }
    // Cut short after the ALTER, before the file was renamed: the pending one is the one set.
    await rename(`${dataDir}.password`, `${dataDir}.password.next`);
    const resumed = await startEmbeddedPostgres({ dataDir, database: 'chat' });
    try {
      assert.equal(new URL(resumed.url).password, 'f'.repeat(48));
      assert.equal(await logsIn(resumed.port, 'f'.repeat(48)), true);
      assert.equal((await readFile(`${dataDir}.password`, 'utf8')).trim(), 'f'.repeat(48));
    } finally {
      await resumed.stop();
    }
  });
});
