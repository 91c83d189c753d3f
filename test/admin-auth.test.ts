import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { basicPassword } from '../src/admin/basic-auth.ts';
import { hashPassword, parsePasswordHash, verifyPassword } from '../src/admin/password.ts';
import { loadConfig } from '../src/config.ts';
import { projectPath } from '../src/paths.ts';
import { buildTestApp, type TestApp } from './helpers/app.ts';

const basic = (user: string, password: string) =>
  `Basic ${Buffer.from(`${user}:${password}`, 'utf8').toString('base64')}`;

/** Runs `npm run hash-admin-password` as an operator would (through tsx), feeding stdin. */
function runHashScript(args: string[], stdin: string): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', projectPath('scripts', 'hash-admin-password.ts'), ...args],
      { cwd: projectPath(), stdio: ['pipe', 'pipe', 'ignore'] },
    );
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, stdout }));
    child.stdin.end(stdin);
  });
}

describe('admin password hashes', () => {
  it('verifies the right password and rejects others', async () => {
    const stored = parsePasswordHash(await hashPassword('correct horse', { N: 1024, r: 8, p: 1 }));
    assert.equal(await verifyPassword('correct horse', stored), true);
    assert.equal(await verifyPassword('correct hors', stored), false);
    assert.equal(await verifyPassword('', stored), false);
  });

  it('rejects malformed hashes', () => {
    for (const text of [
      'scrypt$1000$8$1$c2FsdA==$aGFzaA==',
      'bcrypt$1$2$3$a$b',
      'scrypt$1024$8$1$$aGFzaA==',
    ]) {
      assert.throws(() => parsePasswordHash(text), /scrypt/, text);
    }
  });

  it('reads the password from a Basic header, any user name, colons allowed in the password', () => {
    assert.equal(basicPassword(basic('anyone', 'pa:ss wörd')), 'pa:ss wörd');
    assert.equal(basicPassword(basic('', 'x')), 'x');
    assert.equal(basicPassword('Bearer abc'), undefined);
    assert.equal(basicPassword(`Basic ${Buffer.from('no-colon').toString('base64')}`), undefined);
    assert.equal(basicPassword(undefined), undefined);
  });

  it('npm run hash-admin-password prints a hash that config accepts and that verifies (stdin and argv)', async () => {
    const piped = await runHashScript([], 's3cret pass\n');
    assert.equal(piped.code, 0);
    const fromStdin = piped.stdout.trim();
    assert.match(fromStdin, /^scrypt\$32768\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    assert.equal(loadConfig({ ADMIN_PASSWORD_HASH: fromStdin }).adminPasswordHash, fromStdin);
    assert.equal(await verifyPassword('s3cret pass', parsePasswordHash(fromStdin)), true, 'newline stripped');

    const fromArgv = (await runHashScript(['other'], '')).stdout.trim();
    assert.equal(await verifyPassword('other', parsePasswordHash(fromArgv)), true);
    assert.notEqual(fromArgv, fromStdin);
    assert.equal((await runHashScript([], '')).code, 2, 'an empty password is refused');
  });
});

describe('admin panel with ADMIN_PASSWORD_HASH', () => {
  let app: TestApp;
  const get = (url: string, authorization?: string, remoteAddress = '10.0.0.8') =>
    app.admin.inject({ url, remoteAddress, headers: authorization ? { authorization } : {} });

  before(async () => {
    app = await buildTestApp({
      env: {
        ALLOWED_ADMIN_CIDRS: '10.0.0.0/8',
        ADMIN_PASSWORD_HASH: await hashPassword('letmein', { N: 2048, r: 8, p: 1 }),
      },
    });
  });
  after(() => app.close());

  it('asks for Basic credentials on every page, /metrics included', async () => {
    for (const url of ['/', '/audit', '/metrics', '/static/css/app.css', '/rooms/x']) {
      const response = await get(url);
      assert.equal(response.statusCode, 401, url);
      assert.match(response.headers['www-authenticate'] as string, /^Basic realm="ChittyChattyChat admin"/);
    }
  });

  it('refuses a wrong password and admits the right one with any user name', async () => {
    assert.equal((await get('/', basic('admin', 'wrong'))).statusCode, 401);
    assert.equal((await get('/', 'Basic !!!')).statusCode, 401);
    assert.ok(app.logs.some((line) => line.includes('admin password rejected')));
    for (const user of ['admin', 'someone-else', '']) {
      assert.equal((await get('/', basic(user, 'letmein'))).statusCode, 200, user);
    }
    const metrics = await get('/metrics', basic('prometheus', 'letmein'));
    assert.equal(metrics.statusCode, 200);
    assert.match(metrics.body, /ccc_rooms/);
  });

  it('keeps the CIDR guard first and leaves /health to probes', async () => {
    assert.equal((await get('/', basic('admin', 'letmein'), '203.0.113.1')).statusCode, 403);
    assert.equal((await get('/health')).statusCode, 200);
    assert.equal((await get('/health', undefined, '203.0.113.1')).statusCode, 403);
  });
});
