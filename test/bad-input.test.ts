import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Agent, request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { z } from 'zod';
import { sql } from '../src/infra/db.ts';
import { buildTestApp, type TestApp } from './helpers/app.ts';
import { type Client, cookieHeader, openRoom } from './helpers/client.ts';
import { assertClosedInStages, sendMoreThanIsRead } from './helpers/unread-body.ts';

/** Everything stored that a bad request could have changed, to compare before and after. */
async function snapshot(app: TestApp) {
  return app.resources.db.one(sql.type(
    z.object({
      rooms: z.number(),
      participants: z.number(),
      messages: z.number(),
      seqs: z.string().nullable(),
    }),
  )`
    SELECT (SELECT count(*)::int FROM rooms) AS rooms,
           (SELECT count(*)::int FROM participants) AS participants,
           (SELECT count(*)::int FROM messages) AS messages,
           (SELECT string_agg(id::text || ':' || status || ':' || last_seq, ',' ORDER BY id) FROM rooms) AS seqs`);
}

/** Sends raw bytes over TCP and returns the status line (for requests inject cannot express). */
function rawRequest(baseUrl: string, request: Buffer | string): Promise<string> {
  const { port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1');
    let response = '';
    socket.on('data', (chunk) => {
      response += chunk.toString('latin1');
    });
    socket.on('end', () => resolve(response.split('\r\n')[0] ?? ''));
    socket.on('error', reject);
    socket.setTimeout(5_000, () => {
      socket.destroy();
      resolve(response.split('\r\n')[0] ?? '(timeout)');
    });
    socket.end(request);
  });
}

describe('bad input is refused with the right status, and nothing stored changes', () => {
  let app: TestApp;
  let code: string;
  let host: Client;
  before(async () => {
    app = await buildTestApp({ listen: true });
    ({ code, host } = await openRoom(app.chat));
    await host.post(`/rooms/${code}/messages`, { body: 'the only message' });
  });
  after(() => app.close());

  const post = (url: string, payload: string | Buffer, contentType: string, client = host) =>
    client.request({ method: 'POST', url, payload, headers: { 'content-type': contentType } });

  it('oversized, malformed, non-UTF-8 and wrongly typed bodies', async () => {
    const before = await snapshot(app);
    const url = `/rooms/${code}/messages`;
    const cases: [string, string | Buffer, string, number][] = [
      ['oversized form', `body=${'x'.repeat(70 * 1024)}`, 'application/x-www-form-urlencoded', 413],
      [
        'raw invalid UTF-8',
        Buffer.concat([Buffer.from('body='), Buffer.from([0xff, 0xfe, 0x41])]),
        'application/x-www-form-urlencoded',
        400,
      ],
      ['percent-encoded invalid UTF-8', 'body=%FF%FE', 'application/x-www-form-urlencoded', 400],
      ['malformed escape', 'body=%zz', 'application/x-www-form-urlencoded', 400],
      ['JSON', JSON.stringify({ body: 'hi' }), 'application/json', 415],
      ['text/plain', 'body=hi', 'text/plain', 415],
      ['XML', '<body>hi</body>', 'application/xml', 415],
      [
        'multipart where none is taken',
        '--x\r\nContent-Disposition: form-data; name="body"\r\n\r\nhi\r\n--x--\r\n',
        'multipart/form-data; boundary=x',
        415,
      ],
      ['a field given twice', 'body=a&body=b', 'application/x-www-form-urlencoded', 400],
      ['no fields', '', 'application/x-www-form-urlencoded', 400],
    ];
    for (const [name, payload, contentType, status] of cases) {
      const response = await post(url, payload, contentType);
      assert.equal(response.statusCode, status, name);
      assert.match(String(response.headers['content-type']), /text\/html/, name);
      assert.doesNotMatch(response.body, /at .*\.ts:\d+|node_modules|Error:/, `${name}: no stack trace`);
    }
    assert.deepEqual(await snapshot(app), before);
  });

  it('answers an endless body with 413 (405 on the admin panel) and lets a client still sending read it', async () => {
    const before = await snapshot(app);
    const cookie = cookieHeader(host);
    const head = `POST /rooms/${code}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: ${cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\n`;
    // declared too large (refused before reading), and chunked (refused at 64 KiB)
    for (const [extra, chunked] of [
      [`Content-Length: ${64 * 1024 * 1024}\r\n\r\n`, false],
      ['Transfer-Encoding: chunked\r\n\r\n', true],
    ] as const) {
      const outcome = await sendMoreThanIsRead(app.chatUrl, head + extra, {
        bodyBytes: 24 * 1024 * 1024,
        chunked,
      });
      assertClosedInStages(outcome, 413);
      assert.match(outcome.answer, /text\/html/);
    }
    // the read-only admin panel refuses a write before reading its body, the same way
    const refused = await sendMoreThanIsRead(
      app.adminUrl,
      `POST /rooms HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${64 * 1024 * 1024}\r\n\r\n`,
      { bodyBytes: 24 * 1024 * 1024, chunked: false },
    );
    assertClosedInStages(refused, 405);
    assert.deepEqual(await snapshot(app), before);
  });

  it('keeps the connection of an answer given after its body was read, refusals included', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const cookie = cookieHeader(host);
    const send = (body: string) =>
      new Promise<{ status: number; reused: boolean; connection: string | undefined }>((resolve, reject) => {
        const request = httpRequest(new URL(`/rooms/${code}/messages`, app.chatUrl), {
          method: 'POST',
          agent,
          headers: { 'content-type': 'application/x-www-form-urlencoded', cookie, 'hx-request': 'true' },
        });
        request.on('response', (response) => {
          response.resume();
          response.on('end', () =>
            resolve({
              status: response.statusCode ?? 0,
              reused: request.reusedSocket,
              connection: response.headers.connection,
            }),
          );
        });
        request.on('error', reject);
        request.end(body);
      });
    try {
      const answers = [await send('body=one'), await send('body=%20%20'), await send('body=two')];
      assert.deepEqual(
        answers.map((answer) => answer.status),
        [200, 400, 200],
      );
      assert.deepEqual(
        answers.map((answer) => [answer.reused, answer.connection]),
        [
          [false, 'keep-alive'],
          [true, 'keep-alive'],
          [true, 'keep-alive'],
        ],
      );
    } finally {
      agent.destroy();
    }
  });

  it('absurd and tricky codes and paths: 400 or 404, never 500', async () => {
    const before = await snapshot(app);
    const paths = [
      `/rooms/${'A'.repeat(10_000)}`,
      `/join?code=${'A'.repeat(10_000)}`,
      '/rooms/..%2F..%2Fetc%2Fpasswd',
      '/rooms/%2e%2e/messages',
      '/rooms/AB%00C',
      `/rooms/${code}%00`,
      `/rooms/${code}/messages?after=-1`,
      `/rooms/${code}/messages?after=1e999`,
      `/rooms/${code}/messages?after=99999999999999999999`,
      `/rooms/${code}/messages?after=1&after=2`,
      `/rooms/${code}/messages?after[]=1`,
      '/static/../src/config.ts',
      '/static/%2e%2e/%2e%2e/package.json',
      '/rooms/ABCD/../../static/js/app.js',
      '/join?code=%F0%9F%98%80%F0%9F%98%80',
      '/join?code[]=ABCD',
    ];
    for (const path of paths) {
      const response = await host.get(path);
      assert.ok(response.statusCode < 500, `${path.slice(0, 40)}: ${response.statusCode}`);
      assert.doesNotMatch(
        response.body,
        /"password"|\bMASTER_KEY\b=|node_modules|at .*\.ts:\d+/,
        path.slice(0, 40),
      );
    }
    // A path that exists for other methods: 405 naming them, for any code alike (no room is
    // looked up); one that exists for none: 404.
    for (const [method, path, allow] of [
      ['DELETE', `/rooms/${code}`, 'GET, HEAD'],
      ['DELETE', '/rooms/ZZZZ', 'GET, HEAD'],
      ['OPTIONS', `/rooms/${code}/messages`, 'GET, HEAD, POST'],
      ['PUT', '/rooms', 'GET, HEAD, POST'],
    ] as const) {
      const response = await host.request({ method, url: path });
      assert.equal(response.statusCode, 405, `${method} ${path}`);
      assert.equal(response.headers.allow, allow, `${method} ${path}`);
      assert.match(response.body, /Method not allowed/);
    }
    assert.equal((await host.request({ method: 'PUT', url: '/no-such-page' })).statusCode, 404);
    // What the static files plugin refuses (a climb out of its folder, a NUL, a folder) is simply
    // not there: 404, not a 403 that says the request was not understood.
    for (const path of ['/static/../package.json', '/static/%00', '/static/css/']) {
      const response = await host.get(path);
      assert.equal(response.statusCode, 404, path);
      assert.match(response.body, /There is nothing at this address\./, path);
    }
    for (const path of [
      `/rooms/${'A'.repeat(10_000)}/end`,
      `/rooms/AB%2F/join`,
      '/rooms/%00%00%00%00/activate',
    ]) {
      const response = await post(path, 'confirm=yes&name=x', 'application/x-www-form-urlencoded');
      assert.ok(
        [400, 404, 414].includes(response.statusCode),
        `${path.slice(0, 40)}: ${response.statusCode}`,
      );
    }
    assert.deepEqual(await snapshot(app), before);
  });

  it('a device cookie of another room opens nothing here', async () => {
    const other = await openRoom(app.chat);
    const response = await other.host.get(`/rooms/${code}`);
    assert.equal(response.statusCode, 404);
    const sent = await other.guest.post(`/rooms/${code}/messages`, { body: 'intruder' });
    assert.equal(sent.statusCode, 404);
    const ended = await other.guest.post(`/rooms/${code}/end`, { confirm: 'yes' });
    assert.equal(ended.statusCode, 404);
    assert.equal((await host.get(`/rooms/${code}`)).statusCode, 200);
  });

  it('oversized headers and a request line that is not HTTP are refused at the door', async () => {
    const hugeHeader = await rawRequest(
      app.chatUrl,
      `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\nConnection: close\r\n\r\n`,
    );
    assert.match(hugeHeader, /^HTTP\/1\.1 431/);
    const garbage = await rawRequest(
      app.chatUrl,
      Buffer.from([0x16, 0x03, 0x01, 0x00, 0xff, 0x00, 0x0d, 0x0a, 0x0d, 0x0a]),
    );
    assert.match(garbage, /^HTTP\/1\.1 400|^$/);
    const stillUp = await fetch(`${app.chatUrl}/health`);
    assert.equal(stillUp.status, 200);
  });

  it('an unexpected failure answers a plain 500 page: no stack, no details, and it is logged', async () => {
    const { code: brokenCode, host: brokenHost } = await openRoom(app.chat);
    // Break the schema under the app: the send fails in a way nothing anticipates.
    await app.resources.db.query(sql.unsafe`ALTER TABLE messages RENAME COLUMN sender_ip TO sender_ip_gone`);
    try {
      const response = await brokenHost.post(`/rooms/${brokenCode}/messages`, {
        body: 'secret text that must not be logged',
        client_msg_id: randomUUID(),
      });
      assert.equal(response.statusCode, 500);
      assert.match(response.body, /An unexpected error happened on our side/);
      assert.doesNotMatch(response.body, /sender_ip|column|SELECT|INSERT|at .*\.ts:\d+|node_modules/);
      assert.ok(app.logs.some((line) => line.includes('"level":50')));
      assert.ok(!app.logs.join('\n').includes('secret text that must not be logged'));
    } finally {
      await app.resources.db.query(
        sql.unsafe`ALTER TABLE messages RENAME COLUMN sender_ip_gone TO sender_ip`,
      );
    }
  });

  it('secrets never reach the logs: no master key, no device token, no cookie', async () => {
    const master = app.config.masterKey?.toString('base64') as string;
    const token = host.cookies.get('ccc_device') as string;
    const logs = app.logs.join('\n');
    assert.ok(logs.length > 1000, 'the app did log requests');
    assert.ok(!logs.includes(master));
    assert.ok(!logs.includes(token));
    assert.ok(!logs.includes('ccc_device='));
    assert.ok(!logs.includes('the only message'));
  });
});
