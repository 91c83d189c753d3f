/**
 * The zero-setup database: its password is drawn per cluster and kept beside it, readable by its
 * owner only (a cluster made with the old built-in password gets its own on its next start); as
 * root it runs from a folder only root can enter; a failure to start is one clear error.
 */
import assert from 'node:assert/strict';
import { chmod, cp, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import pino from 'pino';
import {
  EmbeddedPostgresError,
  LEGACY_PASSWORD,
  startEmbeddedPostgres,
} from '../src/infra/embedded-postgres.ts';
import { packagedInstallation } from '../src/infra/postgres-server.ts';
import { startAppProcess } from './helpers/process.ts';

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

/** A folder for one test, removed after the file. */
const scratch = (() => {
  const dirs: string[] = [];
  after(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });
  return async (prefix: string) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
    dirs.push(dir);
    return dir;
  };
})();

/** A copy of the packaged PostgreSQL binaries in `directory`, as npm would put them in a clone there. */
async function copyOfBinaries(directory: string) {
  const packaged = await packagedInstallation();
  const copy = { directory: path.join(directory, 'native'), version: packaged.version };
  await cp(packaged.directory, copy.directory, { recursive: true, verbatimSymlinks: true });
  return copy;
}

/** A pino logger whose lines the test can read. */
function capturedLogger() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      lines.push(JSON.parse(String(chunk)));
      done();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}

describe('as root, from a folder only root can enter (a clone under /root)', {
  skip: process.getuid?.() !== 0 && 'the server runs as the postgres user only when started as root',
}, () => {
  it('runs the binaries and keeps the cluster where the postgres user can reach them, and the log says where', async () => {
    const rootOnly = await scratch('ccc-root-only-');
    await chmod(rootOnly, 0o700);
    const installation = await copyOfBinaries(rootOnly);
    // Stands in for /var/lib/chittychattychat (its parent open to all, as /var/lib is).
    const sharedParent = await scratch('ccc-shared-');
    await chmod(sharedParent, 0o755);
    const sharedHome = path.join(sharedParent, 'home');
    const dataDir = path.join(rootOnly, 'data', 'pg');
    const { logger, lines } = capturedLogger();

    const first = await startEmbeddedPostgres({
      dataDir,
      database: 'chat',
      installation,
      sharedHome,
      logger,
    });
    try {
      assert.ok(first.binaries.startsWith(`${sharedHome}/`), first.binaries);
      assert.ok(first.clusterDir.startsWith(`${sharedHome}/`), first.clusterDir);
      const said = lines.map((line) => String(line.msg)).join('\n');
      assert.match(said, /copied them where it can/);
      assert.ok(
        said.includes(`cannot pass through ${rootOnly}, so the cluster lives in ${first.clusterDir}`),
      );
      const client = new pg.Client(first.url);
      await client.connect();
      await client.query('CREATE TABLE kept (note text); INSERT INTO kept VALUES ($$still here$$)');
      await client.end();
    } finally {
      await first.stop();
    }
    assert.equal((await stat(rootOnly)).mode & 0o777, 0o700, 'the folder stays closed to other users');

    // The next start finds the same cluster (and its password) there.
    const second = await startEmbeddedPostgres({ dataDir, database: 'chat', installation, sharedHome });
    try {
      assert.equal(second.clusterDir, first.clusterDir);
      const client = new pg.Client(second.url);
      await client.connect();
      assert.deepEqual((await client.query('SELECT note FROM kept')).rows, [{ note: 'still here' }]);
      await client.end();
    } finally {
      await second.stop();
    }
  });
});

describe('a start-up failure of the embedded database', () => {
  it('is one EmbeddedPostgresError line when the server binary may not be run (no unhandled error event)', async () => {
    const dir = await scratch('ccc-noexec-');
    const installation = await copyOfBinaries(dir);
    await chmod(path.join(installation.directory, 'bin', 'postgres'), 0o644);
    const error = await startEmbeddedPostgres({
      dataDir: path.join(dir, 'pg'),
      database: 'chat',
      installation,
      sharedHome: path.join(dir, 'home'),
    }).then(
      () => assert.fail('started without a runnable server binary'),
      (failure: unknown) => failure,
    );
    assert.ok(error instanceof EmbeddedPostgresError, String(error));
    assert.doesNotMatch(error.message, /\n/);
    assert.match(error.message, /bin\/postgres/);
  });

  it('stops the app with one line naming the cause, not a stack trace', async () => {
    const dataDir = await scratch('ccc-badcluster-');
    // A cluster folder PostgreSQL will not start on: it claims a version this server is not.
    await mkdir(path.join(dataDir, 'pg'), { recursive: true, mode: 0o700 });
    await writeFile(path.join(dataDir, 'pg', 'PG_VERSION'), '9\n');
    const app = startAppProcess({ DATA_DIR: dataDir, CHAT_PORT: '0', ADMIN_PORT: '0' });
    assert.equal(await app.exited, 1);
    const failures = app.lines.filter((line) => line.startsWith('chittychattychat:'));
    assert.equal(failures.length, 1, app.lines.join('\n'));
    assert.match(
      failures[0] as string,
      new RegExp(
        `embedded PostgreSQL did not start \\(exit \\d+; cluster in ${path.join(dataDir, 'pg')}\\): \\S.+`,
      ),
    );
    assert.ok(!app.lines.some((line) => /^\s+at /.test(line)), app.lines.join('\n'));
  });
});
