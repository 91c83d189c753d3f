import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createAddressCheck, normalizeAddress } from '../src/admin/cidr-guard.ts';
import { parseCidrList } from '../src/config.ts';
import { buildTestApp, type TestApp } from './helpers/app.ts';

describe('address check', () => {
  const check = createAddressCheck(parseCidrList('10.0.0.0/8,192.168.1.0/24,127.0.0.1,::1,fd00::/8'));

  it('admits addresses inside the CIDRs of both families', () => {
    for (const address of ['10.1.2.3', '192.168.1.77', '127.0.0.1', '::1', 'fd00::1234']) {
      assert.equal(check(address), true, address);
    }
  });

  it('treats IPv4-mapped IPv6 as the IPv4 address', () => {
    assert.equal(check('::ffff:10.1.2.3'), true);
    assert.equal(check('::FFFF:192.168.1.5'), true);
    assert.equal(check('::ffff:8.8.8.8'), false);
    assert.deepEqual(normalizeAddress('::ffff:10.1.2.3'), { address: '10.1.2.3', family: 'ipv4' });
  });

  it('denies everything else, and nonsense', () => {
    for (const address of ['8.8.8.8', '192.168.2.1', '11.0.0.1', '2001:db8::1', 'fe80::1', '', 'banana']) {
      assert.equal(check(address), false, address);
    }
    assert.equal(check(undefined), false);
  });
});

describe('admin listener guard', () => {
  let app: TestApp;
  let proxied: TestApp;
  before(async () => {
    app = await buildTestApp({ env: { ALLOWED_ADMIN_CIDRS: '10.0.0.0/8,127.0.0.1/32' } });
    proxied = await buildTestApp({
      env: { ALLOWED_ADMIN_CIDRS: '10.0.0.0/8', TRUST_PROXY: '127.0.0.1' },
      database: app.database,
    });
  });
  after(async () => {
    await proxied.close();
    await app.close();
  });

  for (const url of ['/', '/health', '/no-such-page']) {
    it(`denies ${url} from outside the allowed networks with a 403 page`, async () => {
      const response = await app.admin.inject({ url, remoteAddress: '203.0.113.9' });
      assert.equal(response.statusCode, 403);
      assert.match(response.headers['content-type'] as string, /text\/html/);
      assert.match(response.body, /only reachable from the allowed networks/);
    });
  }

  it('admits an allowed peer, plain or IPv4-mapped', async () => {
    assert.equal((await app.admin.inject({ url: '/', remoteAddress: '10.9.8.7' })).statusCode, 200);
    assert.equal((await app.admin.inject({ url: '/', remoteAddress: '::ffff:10.9.8.7' })).statusCode, 200);
    assert.equal((await app.admin.inject({ url: '/', remoteAddress: '::ffff:203.0.113.9' })).statusCode, 403);
  });

  it('answers only requests addressed to it by IP, localhost or a name in ADMIN_HOSTNAMES (DNS rebinding)', async () => {
    const named = await buildTestApp({
      env: { ALLOWED_ADMIN_CIDRS: '10.0.0.0/8', ADMIN_HOSTNAMES: 'chat-admin.lan' },
      database: app.database,
    });
    try {
      for (const host of [
        '10.1.2.3:5056',
        '[fd00::1]:5056',
        'localhost:5056',
        'CHAT-ADMIN.lan',
        'chat-admin.lan:8080',
      ]) {
        const response = await named.admin.inject({ url: '/', remoteAddress: '10.9.8.7', headers: { host } });
        assert.equal(response.statusCode, 200, host);
      }
      // An allowed peer (the operator's browser) sent to a page's own name that now points here.
      for (const host of [
        'rebind.attacker.example',
        'rebind.attacker.example:5056',
        'chat-admin.lan.evil.example',
      ]) {
        const response = await named.admin.inject({
          url: '/rooms/00000000-0000-4000-8000-000000000000/transcript.json',
          remoteAddress: '10.9.8.7',
          headers: { host },
        });
        assert.equal(response.statusCode, 403, host);
        assert.match(response.body, /ADMIN_HOSTNAMES/);
      }
    } finally {
      await named.close();
    }
  });

  it('ignores a spoofed X-Forwarded-For when no proxy is trusted', async () => {
    const response = await app.admin.inject({
      url: '/',
      remoteAddress: '203.0.113.9',
      headers: { 'x-forwarded-for': '10.0.0.1' },
    });
    assert.equal(response.statusCode, 403);
  });

  it('logs the denied address', async () => {
    await app.admin.inject({ url: '/health', remoteAddress: '198.51.100.4' });
    assert.ok(app.logs.some((line) => line.includes('admin access denied') && line.includes('198.51.100.4')));
  });

  it('honours X-Forwarded-For only from a proxy named in TRUST_PROXY', async () => {
    const viaProxy = (forwardedFor: string, remoteAddress = '127.0.0.1') =>
      proxied.admin.inject({ url: '/', remoteAddress, headers: { 'x-forwarded-for': forwardedFor } });
    assert.equal((await viaProxy('10.1.1.1')).statusCode, 200);
    assert.equal((await viaProxy('203.0.113.9')).statusCode, 403);
    // the proxy itself is not in the allowed list, and another peer cannot borrow its trust
    assert.equal((await proxied.admin.inject({ url: '/', remoteAddress: '127.0.0.1' })).statusCode, 403);
    assert.equal((await viaProxy('10.1.1.1', '203.0.113.50')).statusCode, 403);
  });

  it('answers only GET and HEAD (405 otherwise, with Allow)', async () => {
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH'] as const) {
      const response = await app.admin.inject({ method, url: '/', remoteAddress: '10.0.0.5' });
      assert.equal(response.statusCode, 405, method);
      assert.equal(response.headers.allow, 'GET, HEAD');
    }
    assert.equal(
      (await app.admin.inject({ method: 'HEAD', url: '/', remoteAddress: '10.0.0.5' })).statusCode,
      200,
    );
  });
});
