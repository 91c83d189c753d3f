import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { freePort } from '../src/infra/free-port.ts';
import { startAppProcess } from './helpers/process.ts';

describe('zero-setup start (no .env, no services)', () => {
  let dataDir: string;
  before(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'ccc-start-'));
  });
  after(() => rm(dataDir, { recursive: true, force: true }));

  it('serves chat and admin on embedded parts, keeps data across restarts, and stops on SIGTERM', async () => {
    const chatPort = await freePort();
    const adminPort = await freePort();
    const env = { DATA_DIR: dataDir, CHAT_PORT: String(chatPort), ADMIN_PORT: String(adminPort) };

    const first = startAppProcess(env);
    const started = Date.now();
    const listening = await first.waitForLog('listening');
    assert.ok(Date.now() - started < 30_000);
    assert.equal(listening.chatUrl, `http://localhost:${chatPort}`);
    assert.ok(first.lines.some((line) => line.includes('no MASTER_KEY set: created a new master key')));

    const keyFile = path.join(dataDir, 'master.key');
    assert.equal((await stat(keyFile)).mode & 0o777, 0o600);
    const key = await readFile(keyFile, 'utf8');
    assert.equal(Buffer.from(key.trim(), 'base64').length, 32);

    const home = await fetch(`http://127.0.0.1:${chatPort}/`);
    assert.equal(home.status, 200);
    assert.match(await home.text(), /Host chat/);
    const health = await fetch(`http://127.0.0.1:${adminPort}/health`);
    assert.equal(health.status, 200);
    assert.equal((await health.json()).database, 'up');

    // Write a row straight into the embedded database; it must survive the restart.
    // Its password was drawn for this cluster and kept beside it, for its owner only.
    const passwordFile = path.join(dataDir, 'pg.password');
    assert.equal((await stat(passwordFile)).mode & 0o777, 0o600);
    const password = (await readFile(passwordFile, 'utf8')).trim();
    const pgPort = (await first.waitForLog('embedded PostgreSQL started')).port;
    const client = new pg.Client({
      connectionString: `postgres://postgres:${password}@127.0.0.1:${pgPort}/chittychat`,
    });
    await client.connect();
    await client.query(`INSERT INTO rooms (code, created_at, created_ip, pending_until, last_activity_at)
                        VALUES ('KEEP', now(), '127.0.0.1', now(), now())`);
    await client.end();

    const stopped = await first.stop('SIGTERM');
    assert.equal(stopped.code, 0);
    assert.ok(stopped.ms < 10_000, `shutdown took ${stopped.ms} ms`);

    const second = startAppProcess(env);
    await second.waitForLog('listening');
    assert.ok(!second.lines.some((line) => line.includes('database migrations applied')));
    assert.ok(!second.lines.some((line) => line.includes('created a new master key')));
    assert.equal(await readFile(keyFile, 'utf8'), key);
    const secondPgPort = (await second.waitForLog('embedded PostgreSQL started')).port;
    const again = new pg.Client({
      connectionString: `postgres://postgres:${password}@127.0.0.1:${secondPgPort}/chittychat`,
    });
    await again.connect();
    const rows = await again.query(`SELECT code FROM rooms WHERE code = 'KEEP'`);
    await again.end();
    assert.equal(rows.rowCount, 1);
    assert.equal((await second.stop('SIGINT')).code, 0);
  });

  it('refuses to start without MASTER_KEY when DATABASE_URL is set, before listening', async () => {
    const chatPort = await freePort();
    const app = startAppProcess({
      DATA_DIR: dataDir,
      DATABASE_URL: 'postgres://user:pass@127.0.0.1:1/none',
      CHAT_PORT: String(chatPort),
      ADMIN_PORT: String(await freePort()),
    });
    const code = await app.exited;
    assert.equal(code, 1);
    const output = app.lines.filter((line) => line.trim() !== '');
    assert.equal(output.length, 1, output.join('\n'));
    assert.match(output[0] as string, /MASTER_KEY is required/);
    assert.match(output[0] as string, /randomBytes\(32\)\.toString\('base64'\)/);
    await assert.rejects(fetch(`http://127.0.0.1:${chatPort}/`));
  });

  it('exits non-zero with a clear line on a bad port', async () => {
    const app = startAppProcess({ DATA_DIR: dataDir, CHAT_PORT: 'http' });
    assert.equal(await app.exited, 1);
    assert.match(app.lines.join('\n'), /CHAT_PORT="http": must be a number/);
  });
});
