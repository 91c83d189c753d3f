import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { z } from 'zod';
import { ManualClock } from '../src/infra/clock.ts';
import { sql } from '../src/infra/db.ts';
import { buildTestApp, type TestApp } from './helpers/app.ts';
import { Client, openRoom } from './helpers/client.ts';
import { insertImage, insertMessage, roomIdOf, TINY_PNG } from './helpers/messages.ts';

const ADMIN_IP = '10.20.30.40';

/** The rows of the dashboard table, by room code, in page order. */
const listedCodes = (html: string) => [...html.matchAll(/<tr data-room="([A-Z0-9]{4})">/g)].map((m) => m[1]);

describe('admin panel', () => {
  let app: TestApp;
  let clock: ManualClock;
  const get = (url: string, headers: Record<string, string> = {}) =>
    app.admin.inject({ url, remoteAddress: ADMIN_IP, headers });

  before(async () => {
    clock = new ManualClock();
    app = await buildTestApp({ clock, env: { ALLOWED_ADMIN_CIDRS: '10.0.0.0/8,127.0.0.1/32' } });
  });
  after(() => app.close());

  describe('dashboard', () => {
    it('lists a room with status, times, both names, message and image counts, and totals', async () => {
      const { code, hostName, guestName } = await openRoom(app.chat);
      const roomId = await roomIdOf(app, code);
      await insertMessage(app, roomId, { slot: 1, text: 'first' });
      await insertMessage(app, roomId, { slot: 2, text: 'second' });
      await insertImage(app, roomId, { slot: 2 });

      const page = await get('/');
      assert.equal(page.statusCode, 200);
      const row = new RegExp(`<tr data-room="${code}">([\\s\\S]*?)</tr>`).exec(page.body)?.[1] ?? '';
      assert.match(row, new RegExp(`href="/rooms/${roomId}"`));
      assert.match(row, /admin-badge-active">active</);
      assert.ok(row.includes(hostName) && row.includes(guestName), 'both names');
      assert.match(
        row,
        /<td data-label="Messages" class="admin-num">3<\/td>\s*<td data-label="Images" class="admin-num">1<\/td>/,
      );
      assert.match(row, /<td data-label="Time left">24 h<\/td>/, 'time left');

      const counts = await app.resources.db.one(sql.type(
        z.object({ active: z.number(), messages: z.number(), images: z.number() }),
      )`
        SELECT (SELECT count(*) FROM rooms WHERE status = 'active')::int AS active,
               (SELECT count(*) FROM messages)::int AS messages,
               (SELECT count(*) FROM attachments)::int AS images`);
      assert.match(page.body, new RegExp(`data-total="active">${counts.active}<`));
      assert.match(page.body, new RegExp(`data-total="messages">${counts.messages}<`));
      assert.match(page.body, new RegExp(`data-total="images">${counts.images}<`));
    });

    it('filters by status and code prefix, newest first, in pages of 50', async () => {
      const codes: string[] = [];
      for (let index = 0; index < 52; index++) {
        clock.advance(1_000);
        codes.push((await openRoom(app.chat, { guest: false })).code);
      }
      const newest = codes.at(-1) as string;
      const page1 = listedCodes((await get('/?status=active')).body);
      const page2Response = await get('/?status=active&page=2');
      assert.equal(page2Response.statusCode, 200);
      const page2 = listedCodes(page2Response.body);
      assert.equal(page1.length, 50);
      assert.equal(page1[0], newest);
      assert.deepEqual(page1.slice(0, 50), [...codes].reverse().slice(0, 50));
      assert.ok(page2.includes(codes[1] as string) && page2.includes(codes[0] as string));
      assert.equal(page1.filter((code) => page2.includes(code)).length, 0, 'pages do not overlap');
      assert.match(page2Response.body, /href="\/\?status=active"[^>]*rel="prev"/);
      const beyond = (await get('/?status=active&page=9')).body;
      assert.match(beyond, /Past the last page \(2\)/, 'not "Page 9 of 2"');
      assert.match(beyond, /href="\/\?status=active&amp;page=2"[^>]*rel="prev"/);

      // end one room: it is the only one listed as expired
      const ended = await openRoom(app.chat);
      await ended.host.post(`/rooms/${ended.code}/end`, { confirm: 'yes' });
      const expired = listedCodes((await get('/?status=expired')).body);
      assert.ok(expired.includes(ended.code));
      assert.ok(!expired.includes(newest));

      const prefix = newest.slice(0, 3).toLowerCase();
      const searched = listedCodes((await get(`/?code=${prefix}`)).body);
      assert.ok(searched.includes(newest));
      assert.ok(searched.every((code) => code?.startsWith(prefix.toUpperCase())));
    });

    it('answers 400 with the form for a bad filter or page', async () => {
      for (const url of ['/?status=bogus', '/?code=0O1!', '/?page=0', '/?page=abc', '/audit?page=-1']) {
        const response = await get(url);
        assert.equal(response.statusCode, 400, url);
        assert.match(response.body, /Invalid filter|page must be/, url);
        assert.match(response.body, /<form method="get"/, url);
      }
      // A parameter given twice is refused, never read as no filter at all.
      for (const url of [
        '/?status=active&status=pending',
        '/?code=AB&code=CD',
        '/?page=1&page=2',
        '/audit?action=room.create&action=room.join',
        '/audit?code=ABCD&code=EFGH',
        '/audit?ip=10.0.0.1&ip=127.0.0.1',
        '/audit?upto=1&upto=2',
      ]) {
        const response = await get(url);
        assert.equal(response.statusCode, 400, url);
        assert.match(response.body, /Give &quot;[a-z]+&quot; once\./, url);
      }
      // What the form shows again carries no control characters.
      const withNul = await get('/audit?action=%00x');
      assert.equal(withNul.statusCode, 400);
      assert.ok(!withNul.body.includes(String.fromCharCode(0)), 'no NUL in the page');
      assert.match(withNul.body, /name="action"[^>]*value="x"|value="x"[^>]*name="action"/);
    });

    it('serves just the table to htmx, the whole page otherwise', async () => {
      const fragment = await get('/?page=1', { 'hx-request': 'true', 'hx-request-type': 'partial' });
      assert.equal(fragment.statusCode, 200);
      assert.match(fragment.body, /^<div id="rooms-table"/);
      assert.doesNotMatch(fragment.body, /<html/);
      assert.match((await get('/')).body, /<html[\s\S]*id="rooms-table"/);
    });
  });

  describe('room page', () => {
    it('shows when a room not yet activated lapses', async () => {
      const host = new Client(app.chat);
      const code = String((await host.post('/rooms')).headers.location)
        .split('/')
        .pop() as string;
      const page = await get(`/rooms/${await roomIdOf(app, code)}`);
      assert.match(page.body, /<dt>Lapses if not activated<\/dt><dd>\d/);
    });

    it('shows metadata, participants with IPs and devices, and the decrypted transcript in order', async () => {
      const { code, host } = await openRoom(app.chat);
      const roomId = await roomIdOf(app, code);
      await insertMessage(app, roomId, { slot: 1, text: 'Hello from the host', senderIp: '203.0.113.77' });
      await insertMessage(app, roomId, { slot: 2, text: 'And back\nwith two lines' });
      const image = await insertImage(app, roomId, { slot: 1, caption: 'a picture' });

      const page = await get(`/rooms/${roomId}`);
      assert.equal(page.statusCode, 200);
      assert.equal(page.headers['cache-control'], 'no-store', 'a decrypted transcript is never cached');
      assert.equal((await get('/')).headers['cache-control'], 'no-store');
      assert.match(page.body, new RegExp(`Room <span class="font-mono">${code}</span>`));
      const first = page.body.indexOf('Hello from the host');
      const second = page.body.indexOf('And back\nwith two lines');
      const third = page.body.indexOf('a picture');
      assert.ok(first > 0 && second > first && third > second, 'in order');
      assert.match(page.body, /#1<\/span>[\s\S]*?203\.0\.113\.77/);
      assert.match(page.body, /#2<\/span>[\s\S]*?198\.51\.100\.20/);
      for (const ip of ['192.0.2.10', '198.51.100.20']) assert.ok(page.body.includes(ip));
      const devicePrefix = createHash('sha256')
        .update(host.cookies.get('ccc_device') as string)
        .digest('hex')
        .slice(0, 12);
      assert.match(page.body, new RegExp(`>${devicePrefix}</td>`));
      assert.match(page.body, /test-client\/1\.0/);
      assert.ok(
        page.body.includes(`<a class="admin-image" href="/rooms/${roomId}/attachments/${image.id}">`),
      );
      assert.match(
        page.body,
        new RegExp(`<img src="/rooms/${roomId}/attachments/${image.id}/thumb" width="160" height="120"`),
      );
      assert.doesNotMatch(page.body, /unreadable/);
    });

    it('escapes HTML in messages and names', async () => {
      const { code } = await openRoom(app.chat);
      const roomId = await roomIdOf(app, code);
      await app.resources.db.query(sql.unsafe`
        UPDATE participants SET display_name = '<script>alert(1)</script>' WHERE room_id = ${roomId} AND slot = 2`);
      await insertMessage(app, roomId, { slot: 2, text: '<img src=x onerror=alert(2)>' });
      for (const url of [`/rooms/${roomId}`, `/?code=${code}`]) {
        const page = await get(url);
        assert.doesNotMatch(page.body, /<script>alert\(1\)/, url);
        assert.ok(page.body.includes('&lt;script&gt;alert(1)&lt;/script&gt;'), url);
      }
      const page = await get(`/rooms/${roomId}`);
      assert.doesNotMatch(page.body, /<img src=x/);
      assert.ok(page.body.includes('&lt;img src=x onerror=alert(2)&gt;'));
    });

    it('gives the same transcript as a JSON download', async () => {
      const { code, hostName } = await openRoom(app.chat);
      const roomId = await roomIdOf(app, code);
      await insertMessage(app, roomId, { slot: 1, text: 'json <one>', senderIp: '2001:db8::7' });
      await insertMessage(app, roomId, { slot: 2, text: 'json two' });
      const response = await get(`/rooms/${roomId}/transcript.json`);
      assert.equal(response.statusCode, 200);
      assert.match(response.headers['content-type'] as string, /^application\/json/);
      assert.match(
        response.headers['content-disposition'] as string,
        new RegExp(`^attachment; filename="room-${code}-${roomId}\\.json"$`),
      );
      const record = JSON.parse(response.body);
      assert.equal(record.room.code, code);
      assert.deepEqual(
        record.messages.map((m: { seq: number; text: string; senderIp: string; senderName: string }) => [
          m.seq,
          m.text,
          m.senderIp,
        ]),
        [
          [1, 'json <one>', '2001:db8::7'],
          [2, 'json two', '198.51.100.20'],
        ],
      );
      assert.equal(record.messages[0].senderName, hostName);
      assert.deepEqual(
        record.participants.map((p: { firstIp: string }) => p.firstIp),
        ['192.0.2.10', '198.51.100.20'],
      );
    });

    it('answers 400 for a malformed id and 404 for an unknown one', async () => {
      for (const suffix of ['', '/transcript.json', '/archive']) {
        const malformed = await get(`/rooms/not-a-uuid${suffix}`);
        assert.equal(malformed.statusCode, 400, suffix);
        assert.match(malformed.headers['content-type'] as string, /text\/html/);
        const unknown = await get(`/rooms/${randomUUID()}${suffix}`);
        assert.equal(unknown.statusCode, 404, suffix);
        assert.match(unknown.body, /There is no room with this id/);
      }
    });
  });

  describe('images', () => {
    it('serves the image and thumbnail decrypted, with safe headers; 404 when unknown or missing', async () => {
      const { code } = await openRoom(app.chat);
      const roomId = await roomIdOf(app, code);
      const thumb = Buffer.from('a thumbnail');
      const image = await insertImage(app, roomId, { slot: 2, thumb });

      const full = await get(`/rooms/${roomId}/attachments/${image.id}`);
      assert.equal(full.statusCode, 200);
      assert.deepEqual(full.rawPayload, TINY_PNG);
      assert.equal(full.headers['content-type'], 'image/png');
      assert.equal(full.headers['x-content-type-options'], 'nosniff');
      assert.equal(full.headers['cache-control'], 'private, no-store');
      assert.equal(full.headers['content-security-policy'], "default-src 'none'");
      const small = await get(`/rooms/${roomId}/attachments/${image.id}/thumb`);
      assert.equal(small.statusCode, 200);
      assert.deepEqual(small.rawPayload, thumb);
      assert.equal(small.headers['content-type'], 'image/webp');

      const other = await openRoom(app.chat);
      const otherId = await roomIdOf(app, other.code);
      assert.equal((await get(`/rooms/${otherId}/attachments/${image.id}`)).statusCode, 404, 'other room');
      assert.equal((await get(`/rooms/${roomId}/attachments/${randomUUID()}`)).statusCode, 404);
      assert.equal((await get(`/rooms/${roomId}/attachments/nope/thumb`)).statusCode, 400);
      await app.resources.store.delete(image.thumbKey);
      assert.equal((await get(`/rooms/${roomId}/attachments/${image.id}/thumb`)).statusCode, 404, 'missing');
    });
  });

  describe('audit log', () => {
    it('lists events newest first and filters by room code, action and IP', async () => {
      const a = await openRoom(app.chat);
      const b = await openRoom(app.chat);
      await new Client(app.chat, { remoteAddress: '203.0.113.55' }).get(`/join?code=${b.code}`);

      const byCode = await get(`/audit?code=${a.code.toLowerCase()}`);
      assert.equal(byCode.statusCode, 200);
      const actions = [
        ...byCode.body.matchAll(/<td data-label="Action" class="font-mono">([a-z_.]+)<\/td>/g),
      ].map((m) => m[1]);
      assert.deepEqual(actions, ['room.join', 'room.activate', 'room.create']);
      assert.ok(!byCode.body.includes(`>${b.code}</a>`));

      const byAction = await get('/audit?action=room.join_refused');
      assert.match(byAction.body, /room\.join_refused/);
      assert.doesNotMatch(byAction.body, />room\.create</);

      for (const ip of ['203.0.113.55', '203.0.113.0/24']) {
        const byIp = await get(`/audit?ip=${encodeURIComponent(ip)}`);
        assert.equal(byIp.statusCode, 200);
        assert.match(byIp.body, /<td data-label="IP" class="font-mono">203\.0\.113\.55<\/td>/);
        assert.doesNotMatch(byIp.body, /<td data-label="IP" class="font-mono">192\.0\.2\.10<\/td>/);
      }
      // One client, one spelling: an IPv4 peer named as IPv4-mapped IPv6 is recorded as IPv4, and
      // a filter written either way finds it.
      await new Client(app.chat, { remoteAddress: '::ffff:198.18.0.7' }).get(`/join?code=${b.code}`);
      for (const ip of ['198.18.0.7', '::ffff:198.18.0.7', '::ffff:198.18.0.0/112']) {
        const byIp = await get(`/audit?ip=${encodeURIComponent(ip)}`);
        assert.equal(byIp.statusCode, 200, ip);
        assert.match(byIp.body, /<td data-label="IP" class="font-mono">198\.18\.0\.7<\/td>/, ip);
      }
      for (const bad of ['300.1.1.1', 'banana', '10.0.0.0/33']) {
        const invalid = await get(`/audit?ip=${encodeURIComponent(bad)}`);
        assert.equal(invalid.statusCode, 400, bad);
        assert.match(invalid.body, /IP filter must be/);
      }
      assert.equal((await get('/audit?action=DROP%20TABLE')).statusCode, 400);
    });

    it('pages through one snapshot: views made meanwhile do not shift the next page', async () => {
      for (let index = 0; index < 20; index++) await openRoom(app.chat, { guest: false });
      const eventsOf = (html: string) => [...html.matchAll(/data-event="(\d+)"/g)].map((m) => Number(m[1]));
      const first = await get('/audit');
      const next = /href="([^"]+)"[^>]*rel="next"/.exec(first.body)?.[1]?.replaceAll('&amp;', '&');
      assert.ok(next?.includes('upto='), 'the next page keeps the snapshot');
      for (let index = 0; index < 3; index++) await get('/audit'); // each view is an event
      const second = await get(next as string);
      const page1 = eventsOf(first.body);
      const page2 = eventsOf(second.body);
      assert.equal(page1.length, 50);
      assert.ok(page2.length > 0);
      assert.ok(Math.max(...page2) < Math.min(...page1), 'no row of page 1 again on page 2');
      assert.equal((await get('/audit?upto=abc')).statusCode, 400);
    });

    it('records every successful admin page view, and not probes, metrics or assets', async () => {
      const { code } = await openRoom(app.chat);
      const roomId = await roomIdOf(app, code);
      const before = await app.resources.db.oneFirst(sql.type(z.object({ max: z.number() }))`
        SELECT coalesce(max(id), 0)::int AS max FROM audit_events`);
      for (const url of [
        '/?status=active',
        `/rooms/${roomId}`,
        '/audit',
        '/health',
        '/metrics',
        '/static/css/app.css',
        '/rooms/nope',
      ]) {
        await get(url, { 'user-agent': 'operator-browser' });
      }
      const views = await app.resources.db.any(sql.type(
        z.object({
          ip: z.string(),
          user_agent: z.string().nullable(),
          room_code: z.string().nullable(),
          detail: z.object({ path: z.string(), query: z.string().optional() }),
        }),
      )`
        SELECT host(ip) AS ip, user_agent, room_code, detail FROM audit_events
        WHERE action = 'admin.view' AND source = 'admin' AND id > ${before} ORDER BY id`);
      assert.deepEqual(
        views.map((view) => view.detail),
        [{ path: '/', query: 'status=active' }, { path: `/rooms/${roomId}` }, { path: '/audit' }],
      );
      assert.ok(views.every((view) => view.ip === ADMIN_IP && view.user_agent === 'operator-browser'));
      assert.equal(views[1]?.room_code, code);
      const page = await get(`/audit?action=admin.view&ip=${ADMIN_IP}`);
      assert.match(page.body, new RegExp(`/rooms/${roomId}`));
    });
  });

  describe('access', () => {
    const routes = (roomId: string) => [
      '/',
      '/audit',
      '/metrics',
      '/health',
      '/static/css/app.css',
      `/rooms/${roomId}`,
      `/rooms/${roomId}/transcript.json`,
      `/rooms/${roomId}/archive`,
      `/rooms/${roomId}/attachments/${randomUUID()}`,
      `/rooms/${roomId}/attachments/${randomUUID()}/thumb`,
    ];

    it('refuses every route to an address outside ALLOWED_ADMIN_CIDRS with 403', async () => {
      const roomId = await roomIdOf(app, (await openRoom(app.chat)).code);
      for (const url of routes(roomId)) {
        for (const remoteAddress of ['203.0.113.9', '::ffff:198.51.100.1', '2001:db8::1']) {
          const response = await app.admin.inject({ url, remoteAddress });
          assert.equal(response.statusCode, 403, `${url} from ${remoteAddress}`);
          assert.doesNotMatch(response.body, /ccc_rooms|Transcript/);
        }
      }
    });

    it('is read-only: anything but GET and HEAD is 405 on every route', async () => {
      const roomId = await roomIdOf(app, (await openRoom(app.chat)).code);
      for (const url of routes(roomId)) {
        for (const method of ['POST', 'PUT', 'DELETE'] as const) {
          const response = await app.admin.inject({ method, url, remoteAddress: ADMIN_IP });
          assert.equal(response.statusCode, 405, `${method} ${url}`);
        }
      }
    });
  });

  describe('metrics', () => {
    it('exposes room, message, image, socket, HTTP and archive metrics in Prometheus text', async () => {
      await app.chat.inject({ url: '/' });
      const response = await get('/metrics');
      assert.equal(response.statusCode, 200);
      assert.match(response.headers['content-type'] as string, /^text\/plain; version=0\.0\.4/);
      for (const name of [
        'ccc_rooms',
        'ccc_messages_stored',
        'ccc_images_stored',
        'ccc_open_sockets',
        'ccc_http_request_duration_seconds',
        'ccc_archive_runs_total',
        'ccc_archive_failures_total',
        'ccc_archives_written_total',
        'ccc_rooms_shredded_total',
      ]) {
        assert.match(response.body, new RegExp(`^# TYPE ${name} `, 'm'), name);
      }
      const counts = await app.resources.db.one(sql.type(
        z.object({ active: z.number(), messages: z.number(), images: z.number() }),
      )`
        SELECT (SELECT count(*) FROM rooms WHERE status = 'active')::int AS active,
               (SELECT count(*) FROM messages WHERE body_sealed IS NOT NULL)::int AS messages,
               (SELECT count(*) FROM attachments WHERE deleted_at IS NULL)::int AS images`);
      assert.ok(counts.active > 0 && counts.messages > 0);
      assert.match(response.body, new RegExp(`^ccc_rooms\\{status="active"\\} ${counts.active}$`, 'm'));
      assert.match(response.body, new RegExp(`^ccc_messages_stored ${counts.messages}$`, 'm'));
      assert.match(response.body, new RegExp(`^ccc_images_stored ${counts.images}$`, 'm'));
      assert.match(response.body, /^ccc_open_sockets 0$/m);
      assert.match(
        response.body,
        /^ccc_http_request_duration_seconds_count\{listener="chat",method="GET",route="\/",status="200"\} [1-9]/m,
      );
      assert.match(
        response.body,
        /^ccc_http_request_duration_seconds_count\{listener="admin",method="GET",route="\/rooms\/:id",status="200"\} [1-9]/m,
      );
      assert.doesNotMatch(response.body, /route="\/rooms\/[0-9a-f]{8}-/, 'route patterns, not raw URLs');
    });
  });
});
