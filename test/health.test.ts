import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildTestApp } from './helpers/app.ts';

describe('GET /health', () => {
  it('is 200 with every part up, on both listeners', async () => {
    const app = await buildTestApp({ redis: true, s3: true });
    try {
      for (const server of [app.chat, app.admin]) {
        const response = await server.inject({ url: '/health', remoteAddress: '127.0.0.1' });
        assert.equal(response.statusCode, 200);
        assert.deepEqual(response.json(), {
          status: 'ok',
          database: 'up',
          bus: 'up',
          objectStore: 'up',
          busKind: 'redis',
          objectStoreKind: 'minio',
        });
      }
    } finally {
      await app.close();
    }
  });

  it('is 503 naming the part that is down', async () => {
    const app = await buildTestApp({ redis: true, s3: true });
    try {
      await app.redis?.stop();
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      let response = await app.chat.inject({ url: '/health' });
      assert.equal(response.statusCode, 503);
      assert.equal(response.json().bus, 'down');
      assert.equal(response.json().database, 'up');

      await app.s3?.stop();
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      response = await app.chat.inject({ url: '/health' });
      assert.equal(response.json().objectStore, 'down');

      await app.database.drop();
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      response = await app.admin.inject({ url: '/health', remoteAddress: '127.0.0.1' });
      assert.equal(response.statusCode, 503);
      assert.equal(response.json().database, 'down');
    } finally {
      await app.close();
    }
  });
});
