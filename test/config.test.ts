import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { hashPassword } from '../src/admin/password.ts';
import { ConfigError, loadConfig, parseCidrList } from '../src/config.ts';

const key = randomBytes(32).toString('base64');

describe('loadConfig', () => {
  it('has working defaults with no environment at all', () => {
    const config = loadConfig({});
    assert.equal(config.chatPort, 5055);
    assert.equal(config.adminPort, 5056);
    assert.equal(config.databaseUrl, undefined);
    assert.equal(config.redisUrl, undefined);
    assert.equal(config.minio, undefined);
    assert.equal(config.masterKey, undefined);
    assert.equal(config.roomTtlHours, 24);
    assert.equal(config.pendingTtlMinutes, 60);
    assert.equal(config.maxMessageChars, 4000);
    assert.equal(config.archiveRetentionDays, undefined);
    assert.ok(config.allowedAdminCidrs.includes('192.168.0.0/16'));
    assert.ok(config.allowedAdminCidrs.includes('::1/128'));
    assert.ok(config.dataDir.endsWith('.data'));
  });

  it('reads production settings', () => {
    const config = loadConfig({
      DATABASE_URL: 'postgres://u:p@db:5432/chittychat',
      MASTER_KEY: key,
      REDIS_URL: 'redis://redis:6379',
      MINIO_ENDPOINT: 'minio',
      MINIO_PORT: '9000',
      MINIO_USE_SSL: 'false',
      MINIO_ACCESS_KEY: 'access',
      MINIO_SECRET_KEY: 'secret',
      MINIO_BUCKET: 'chitty-files',
      ROOM_TTL_HOURS: '0.5',
      TRUST_PROXY: '10.0.0.1, 10.0.1.0/24',
    });
    assert.equal(config.masterKey?.length, 32);
    assert.deepEqual(config.minio, {
      endPoint: 'minio',
      port: 9000,
      useSSL: false,
      accessKey: 'access',
      secretKey: 'secret',
      bucket: 'chitty-files',
    });
    assert.equal(config.roomTtlHours, 0.5);
    assert.deepEqual(config.trustProxy, ['10.0.0.1/32', '10.0.1.0/24']);
  });

  const refuses = (env: Record<string, string>, pattern: RegExp) => {
    assert.throws(
      () => loadConfig(env),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.match(error.message, pattern);
        return true;
      },
    );
  };

  it('requires MASTER_KEY with DATABASE_URL and says how to make one', () => {
    refuses(
      { DATABASE_URL: 'postgres://x/y' },
      /MASTER_KEY is required.*npm run gen-master-key.*randomBytes\(32\)/,
    );
  });

  it('refuses a MASTER_KEY that is not base64 or not 32 bytes', () => {
    refuses({ MASTER_KEY: 'not base64!!' }, /MASTER_KEY is not valid base64/);
    refuses(
      { MASTER_KEY: randomBytes(16).toString('base64') },
      /MASTER_KEY must decode to exactly 32 bytes \(got 16\)/,
    );
    refuses({ MASTER_KEY: key, MASTER_KEY_PREVIOUS: `${key},short` }, /MASTER_KEY_PREVIOUS\[1\]/);
  });

  it('refuses bad ports, CIDRs, URLs and numbers, naming each variable', () => {
    refuses({ CHAT_PORT: '70000' }, /CHAT_PORT="70000": must be between 0 and 65535/);
    refuses({ ADMIN_PORT: 'abc' }, /ADMIN_PORT="abc"/);
    refuses({ CHAT_PORT: '8080', ADMIN_PORT: '8080' }, /must differ/);
    refuses({ ALLOWED_ADMIN_CIDRS: '10.0.0.0/33' }, /ALLOWED_ADMIN_CIDRS=.*invalid prefix/);
    refuses({ ALLOWED_ADMIN_CIDRS: 'banana' }, /ALLOWED_ADMIN_CIDRS=.*not an IP address or CIDR/);
    refuses({ TRUST_PROXY: 'true' }, /TRUST_PROXY/);
    refuses({ DATABASE_URL: 'mysql://x/y', MASTER_KEY: key }, /DATABASE_URL=.*postgres:\/\//);
    refuses({ REDIS_URL: 'http://x' }, /REDIS_URL/);
    refuses({ ROOM_TTL_HOURS: '-1' }, /ROOM_TTL_HOURS.*greater than 0/);
    refuses({ MAX_MESSAGE_CHARS: '1.5' }, /MAX_MESSAGE_CHARS.*whole number/);
    refuses({ COOKIE_SECURE: 'maybe' }, /COOKIE_SECURE.*true or false/);
    refuses({ MINIO_ENDPOINT: 'minio' }, /MINIO_ACCESS_KEY and MINIO_SECRET_KEY are required/);
    refuses({ MINIO_BUCKET: 'Bad_Bucket' }, /MINIO_BUCKET/);
    refuses({ ADMIN_PASSWORD_HASH: 'plain' }, /ADMIN_PASSWORD_HASH/);
    refuses({ BIND_HOST: 'localhost' }, /BIND_HOST/);
  });

  it('refuses numbers too large to mean anything (Infinity, 1e300) before they break a timer', () => {
    refuses({ SWEEP_INTERVAL_SECONDS: '3000000' }, /SWEEP_INTERVAL_SECONDS="3000000": must be at most 86400/);
    refuses({ ROOM_TTL_HOURS: 'Infinity' }, /ROOM_TTL_HOURS="Infinity": must be at most/);
    refuses({ ARCHIVE_RETENTION_DAYS: '1e300' }, /ARCHIVE_RETENTION_DAYS="1e300": must be at most/);
    refuses({ MAX_UPLOAD_MB: 'Infinity' }, /MAX_UPLOAD_MB/);
    refuses({ PENDING_TTL_MINUTES: '1e9' }, /PENDING_TTL_MINUTES/);
    assert.equal(loadConfig({ SWEEP_INTERVAL_SECONDS: '86400' }).sweepIntervalSeconds, 86400);
  });

  it('refuses admin password hashes scrypt would refuse or choke on, without showing them', async () => {
    for (const hash of [
      'scrypt$1$8$1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA==',
      'scrypt$16384$8$1$c2FsdA==$=',
      `scrypt$${2 ** 30}$8$1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA==`,
    ]) {
      refuses(
        { ADMIN_PASSWORD_HASH: hash },
        /ADMIN_PASSWORD_HASH=\(hidden, \d+ characters\): must be scrypt/,
      );
    }
    const good = await hashPassword('letmein', { N: 1024, r: 8, p: 1 });
    assert.equal(loadConfig({ ADMIN_PASSWORD_HASH: good }).adminPasswordHash, good);
  });

  it('never shows a URL’s password or a secret in its error', () => {
    assert.throws(
      () =>
        loadConfig({ DATABASE_URL: 'postgress://chitty:S3cretPassw0rd@db:5432/chittychat', MASTER_KEY: key }),
      (error: unknown) => {
        assert.match(String(error), /DATABASE_URL="postgress:\/\/chitty:\*\*\*@db:5432\/chittychat"/);
        assert.doesNotMatch(String(error), /S3cretPassw0rd/);
        return true;
      },
    );
    assert.throws(
      () => loadConfig({ REDIS_URL: 'http://:hunter2@cache:6379' }),
      (error: unknown) => !String(error).includes('hunter2'),
    );
  });

  it('reports several problems at once', () => {
    refuses({ CHAT_PORT: 'x', ROOM_TTL_HOURS: 'y' }, /CHAT_PORT.*ROOM_TTL_HOURS/);
  });
});

describe('parseCidrList', () => {
  it('normalizes addresses and CIDRs of both families', () => {
    assert.deepEqual(parseCidrList(' 127.0.0.1 , 10.0.0.0/8,::1, fd00::/8 '), [
      '127.0.0.1/32',
      '10.0.0.0/8',
      '::1/128',
      'fd00::/8',
    ]);
    assert.deepEqual(parseCidrList(''), []);
    assert.throws(() => parseCidrList('1.2.3.4/8/9'));
    assert.throws(() => parseCidrList('fd00::/129'));
    assert.throws(() => parseCidrList('1.2.3.4/x'));
  });
});
