import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { z } from 'zod';
import { ManualClock } from '../src/infra/clock.ts';
import { sql } from '../src/infra/db.ts';
import { CODE_ALPHABET } from '../src/rooms/codes.ts';
import { buildTestApp, type TestApp } from './helpers/app.ts';
import { Client, offeredNames, openRoom } from './helpers/client.ts';

const HOUR = 3_600_000;

const auditActions = async (app: TestApp, roomCode: string) =>
  app.resources.db.anyFirst(sql.type(z.object({ action: z.string() }))`
    SELECT action FROM audit_events WHERE room_code = ${roomCode} ORDER BY id`);

describe('rooms', () => {
  let clock: ManualClock;
  let app: TestApp;
  before(async () => {
    clock = new ManualClock();
    app = await buildTestApp({ clock });
  });
  after(() => app.close());

  describe('hosting', () => {
    it('shows "Create room", creates a pending room bound to this device, and redirects to it', async () => {
      const host = new Client(app.chat);
      const page = await host.get('/host');
      assert.equal(page.statusCode, 200);
      assert.match(page.body, /<form method="post" action="\/rooms"[^>]*>[\s\S]*Create room/);

      const created = await host.post('/rooms');
      assert.equal(created.statusCode, 303);
      const location = String(created.headers.location);
      assert.match(location, new RegExp(`^/rooms/[${CODE_ALPHABET}]{4}$`));
      const code = location.slice('/rooms/'.length);

      const cookie = (
        created.cookies as { name: string; httpOnly?: boolean; sameSite?: string; secure?: boolean }[]
      ).find((c) => c.name === 'ccc_device');
      assert.ok(cookie, 'device cookie set');
      assert.equal(cookie.httpOnly, true);
      assert.equal(cookie.sameSite, 'Lax');
      assert.notEqual(cookie.secure, true);

      const token = host.cookies.get('ccc_device') as string;
      assert.match(token, /^[A-Za-z0-9_-]{43}$/);
      const stored = await app.resources.db.one(sql.type(
        z.object({
          status: z.string(),
          slot: z.number(),
          device_hash: z.instanceof(Buffer),
          wrapped: z.boolean(),
        }),
      )`
        SELECT r.status, p.slot, p.device_hash, k.wrapped_key IS NOT NULL AS wrapped
        FROM rooms r JOIN participants p ON p.room_id = r.id JOIN room_keys k ON k.room_id = r.id
        WHERE r.code = ${code}`);
      assert.equal(stored.status, 'pending');
      assert.equal(stored.slot, 1);
      assert.deepEqual(stored.device_hash, createHash('sha256').update(token).digest());
      assert.equal(stored.wrapped, true);

      const room = await host.get(location);
      assert.equal(room.statusCode, 200);
      assert.match(room.body, new RegExp(`class="room-code"[^>]*>${code}<`));
      assert.match(room.body, new RegExp(`href="/join\\?code=${code}"`));
      assert.match(room.body, new RegExp(`action="/rooms/${code}/activate"`));
      assert.match(room.body, /Accept &amp; Activate/);
      assert.ok(offeredNames(room.body).length >= 4);
      assert.match(room.body, /operator of this service can decrypt and read them/);
    });

    it('sets a Secure, __Host- device cookie when COOKIE_SECURE=true', async () => {
      const secure = await buildTestApp({ env: { COOKIE_SECURE: 'true' }, database: app.database });
      try {
        const response = await secure.chat.inject({ method: 'POST', url: '/rooms' });
        const cookie = (response.cookies as { name: string; secure?: boolean; path?: string }[])[0];
        assert.equal(cookie?.name, '__Host-ccc_device');
        assert.equal(cookie?.secure, true);
        assert.equal(cookie?.path, '/');
        // A plain cookie planted by someone else (a sibling subdomain, a network attacker can
        // write one; nobody can write a __Host- one) is not taken for a device here.
        const planted = 'A'.repeat(43);
        const fixed = await secure.chat.inject({
          method: 'POST',
          url: '/rooms',
          cookies: { ccc_device: planted },
        });
        assert.equal(fixed.statusCode, 303);
        const issued = (fixed.cookies as { name: string; value: string }[])[0];
        assert.equal(issued?.name, '__Host-ccc_device', 'a device of its own, not the planted one');
        assert.notEqual(issued?.value, planted);
        const code = String(fixed.headers.location).split('/').pop() as string;
        const withPlanted = await secure.chat.inject({
          url: `/rooms/${code}`,
          cookies: { ccc_device: planted },
        });
        assert.equal(withPlanted.statusCode, 404, 'the planted token opens nothing');
      } finally {
        await secure.close();
      }
    });

    it('activates with an offered name and starts the timer; refuses a name not offered', async () => {
      const host = new Client(app.chat);
      const code = String((await host.post('/rooms')).headers.location)
        .split('/')
        .pop() as string;
      const names = offeredNames((await host.get(`/rooms/${code}`)).body);

      const refused = await host.post(`/rooms/${code}/activate`, { name: 'Evil <b>Name</b>' });
      assert.equal(refused.statusCode, 400);
      assert.match(refused.body, /Choose one of the offered display names/);
      assert.deepEqual(offeredNames(refused.body), names);

      const started = clock.now().getTime();
      const activated = await host.post(`/rooms/${code}/activate`, { name: names[2] as string });
      assert.equal(activated.statusCode, 303);
      assert.equal(activated.headers.location, `/rooms/${code}`);
      const row = await app.resources.db.one(sql.type(
        z.object({
          status: z.string(),
          activated_at: z.number(),
          expires_at: z.number(),
          display_name: z.string(),
        }),
      )`
        SELECT r.status, r.activated_at, r.expires_at, p.display_name
        FROM rooms r JOIN participants p ON p.room_id = r.id WHERE r.code = ${code}`);
      assert.equal(row.status, 'active');
      assert.equal(row.activated_at, started);
      assert.equal(row.expires_at, started + 24 * HOUR);
      assert.equal(row.display_name, names[2]);

      const again = await host.post(`/rooms/${code}/activate`, { name: names[0] as string });
      assert.equal(again.statusCode, 409);
    });

    it('takes ROOM_TTL_HOURS with decimals', async () => {
      const short = await buildTestApp({ clock, env: { ROOM_TTL_HOURS: '1.5' }, database: app.database });
      try {
        const { code } = await openRoom(short.chat, { guest: false });
        const expiresAt = await short.resources.db.oneFirst(sql.type(z.object({ expires_at: z.number() }))`
          SELECT expires_at FROM rooms WHERE code = ${code} AND status = 'active'`);
        assert.equal(expiresAt, clock.now().getTime() + 1.5 * HOUR);
      } finally {
        await short.close();
      }
    });
  });

  describe('joining', () => {
    it('shows a code field, then (any case, spaces ignored) offers at least four names, none the host’s', async () => {
      const { code, hostName } = await openRoom(app.chat, { guest: false });
      const guest = new Client(app.chat);
      const empty = await guest.get('/join');
      assert.equal(empty.statusCode, 200);
      assert.match(empty.body, /<input id="code" name="code"/);

      const lookup = await guest.get(`/join?code=${encodeURIComponent(`  ${code.toLowerCase()} `)}`);
      assert.equal(lookup.statusCode, 200);
      for (const pasted of [`${code.slice(0, 2)} ${code.slice(2)}`, `${code.slice(0, 2)}-${code.slice(2)}`]) {
        const spaced = await new Client(app.chat).get(`/join?code=${encodeURIComponent(pasted)}`);
        assert.equal(spaced.statusCode, 200, `${pasted} is the code`);
      }
      const names = offeredNames(lookup.body);
      assert.ok(names.length >= 4, `only ${names.length} names offered`);
      assert.ok(!names.includes(hostName));
      assert.equal(new Set(names).size, names.length);
      assert.match(lookup.body, new RegExp(`action="/rooms/${code}/join"`));

      const wrong = await guest.post(`/rooms/${code}/join`, { name: 'Not Offered' });
      assert.equal(wrong.statusCode, 400);
      assert.match(wrong.body, /Choose one of the offered display names/);
      assert.deepEqual(offeredNames(wrong.body), names);
      const hostNameRefused = await guest.post(`/rooms/${code}/join`, { name: hostName });
      assert.equal(hostNameRefused.statusCode, 400);

      const joined = await guest.post(`/rooms/${code}/join`, { name: names[1] as string });
      assert.equal(joined.statusCode, 303);
      assert.equal(joined.headers.location, `/rooms/${code}`);
      const room = await guest.get(`/rooms/${code.toLowerCase()}`);
      assert.equal(room.statusCode, 200);
      assert.match(room.body, new RegExp(`with <strong>${hostName}</strong>`));
      assert.match(room.body, new RegExp(`You are <strong>${names[1]}</strong>`));
    });

    it('sends a member who looks up their own code straight to the room', async () => {
      const { code, host, guest } = await openRoom(app.chat);
      for (const member of [host, guest]) {
        const lookup = await member.get(`/join?code=${code}`);
        assert.equal(lookup.statusCode, 303);
        assert.equal(lookup.headers.location, `/rooms/${code}`);
      }
    });

    it('lets exactly one of two racing guests take the second seat', async () => {
      const { code } = await openRoom(app.chat, { guest: false });
      const guests = Array.from(
        { length: 6 },
        (_, index) => new Client(app.chat, { remoteAddress: `203.0.113.${index}` }),
      );
      const names = offeredNames((await (guests[0] as Client).get(`/join?code=${code}`)).body);
      const results = await Promise.all(
        guests.map((guest) => guest.post(`/rooms/${code}/join`, { name: names[0] as string })),
      );
      const statuses = results.map((result) => result.statusCode).sort();
      assert.deepEqual(statuses, [303, 404, 404, 404, 404, 404]);
      const seats = await app.resources.db.oneFirst(sql.type(z.object({ count: z.number() }))`
        SELECT count(*)::int AS count FROM participants p JOIN rooms r ON r.id = p.room_id WHERE r.code = ${code}`);
      assert.equal(seats, 2);
    });
  });

  describe('the two-device lock', () => {
    it('gives any other device exactly the 404 of an unknown code, on every route of the room', async () => {
      const { code, host } = await openRoom(app.chat);
      const stranger = new Client(app.chat, { remoteAddress: '203.0.113.77' });
      await stranger.get('/'); // no cookie yet; give it a device by joining nothing
      const unknown = 'ZZZZ';
      const probes: [string, string, Record<string, string>?][] = [
        ['GET', '/rooms/{code}'],
        ['GET', '/rooms/{code}/messages'],
        ['GET', '/rooms/{code}/end'],
        ['POST', '/rooms/{code}/end', { confirm: 'yes' }],
        ['POST', '/rooms/{code}/activate', { name: 'x' }],
        ['POST', '/rooms/{code}/join', { name: 'x' }],
        ['GET', '/join?code={code}'],
      ];
      for (const [method, path, form] of probes) {
        for (const who of [stranger, new Client(app.chat)]) {
          const locked = await who.request({
            method: method as 'GET',
            url: path.replace('{code}', code),
            form,
          });
          const missing = await who.request({
            method: method as 'GET',
            url: path.replace('{code}', unknown),
            form,
          });
          assert.equal(locked.statusCode, 404, `${method} ${path} (locked)`);
          assert.equal(missing.statusCode, 404, `${method} ${path} (unknown)`);
          // The join form shows the code as typed again; apart from that, not a byte differs.
          assert.equal(
            locked.body.replaceAll(code, '{code}'),
            missing.body.replaceAll(unknown, '{code}'),
            `${method} ${path}: bodies differ`,
          );
          assert.equal(locked.headers['content-type'], missing.headers['content-type']);
        }
      }
      // and the room itself is untouched
      assert.equal((await host.get(`/rooms/${code}`)).statusCode, 200);
    });

    it('lets a bound device come back: new tab, another address, a restarted server', async () => {
      const { code, host, guest } = await openRoom(app.chat);
      const sameCookieElsewhere = new Client(app.chat, { remoteAddress: '2001:db8::5' });
      for (const [name, value] of guest.cookies) sameCookieElsewhere.cookies.set(name, value);
      assert.equal((await sameCookieElsewhere.get(`/rooms/${code}`)).statusCode, 200);

      const restarted = await buildTestApp({
        clock,
        database: app.database,
        env: { MASTER_KEY: app.config.masterKey?.toString('base64') as string },
      });
      try {
        for (const member of [host, guest]) {
          const again = new Client(restarted.chat);
          for (const [name, value] of member.cookies) again.cookies.set(name, value);
          assert.equal((await again.get(`/rooms/${code}`)).statusCode, 200);
        }
      } finally {
        await restarted.close();
      }
    });

    it('treats a forged or truncated device cookie as no device', async () => {
      const { code, host } = await openRoom(app.chat);
      const token = host.cookies.get('ccc_device') as string;
      for (const forged of [
        token.slice(0, 20),
        `${token}x`,
        token.replace(/.$/, token.endsWith('A') ? 'B' : 'A'),
        '',
      ]) {
        const response = await app.chat.inject({ url: `/rooms/${code}`, cookies: { ccc_device: forged } });
        assert.equal(response.statusCode, 404);
      }
    });
  });

  describe('codes and errors', () => {
    it('answers 400 for a malformed code, 404 for an unknown one, as pages and as htmx fragments', async () => {
      const client = new Client(app.chat);
      for (const bad of ['AB', 'ABCDE', 'AB0O', 'AB1I', '%3Cscript%3E']) {
        const page = await client.get(`/rooms/${bad}`);
        assert.equal(page.statusCode, 400, bad);
        assert.match(page.body, /A room code is 4 characters/);
        assert.match(page.body, /href="\/"/);
      }
      const lookup = await client.get('/join?code=0000');
      assert.equal(lookup.statusCode, 400);
      assert.match(lookup.body, /<input id="code" name="code"[^>]*aria-invalid="true"/);

      // An unknown code at the join form: the form again (404), the code kept to be corrected.
      const typo = await client.get('/join?code=zzzz');
      assert.equal(typo.statusCode, 404);
      assert.match(typo.body, /There is no open room with that code/);
      assert.match(
        typo.body,
        /<input id="code" name="code" class="code-input" value="zzzz"[^>]*aria-invalid="true"/,
      );

      const unknown = await client.get('/rooms/ZZZZ');
      assert.equal(unknown.statusCode, 404);
      assert.match(unknown.body, /There is no open room with that code/);
      assert.match(unknown.body, /<a [^>]*href="\/"/);

      const fragment = await client.get('/rooms/ZZZZ', { headers: { 'hx-request': 'true' } });
      assert.equal(fragment.statusCode, 404);
      assert.doesNotMatch(fragment.body, /<html/);
      assert.match(fragment.body, /There is no open room with that code/);
    });

    it('sends a GET of a form-only URL back to its form, and takes a trailing slash', async () => {
      const { code, host } = await openRoom(app.chat);
      const lower = code.toLowerCase();
      const redirects: [string, string][] = [
        ['/rooms', '/host'],
        [`/rooms/${lower}/activate`, `/rooms/${code}`],
        [`/rooms/${lower}/join`, `/join?code=${code}`],
        [`/rooms/${code}/attachments`, `/rooms/${code}`],
      ];
      for (const [url, location] of redirects) {
        const response = await host.get(url);
        assert.equal(response.statusCode, 303, url);
        assert.equal(response.headers.location, location, url);
      }
      assert.equal((await host.get('/rooms/%0D%0A/activate')).statusCode, 400);
      assert.equal((await host.get(`/rooms/${code}/`)).statusCode, 200);
      assert.equal((await new Client(app.chat).get(`/rooms/${code}/`)).statusCode, 404);
    });

    it('refuses cross-site form posts, allows same-origin and curl-like ones', async () => {
      const client = new Client(app.chat);
      const crossOrigin = await client.post(
        '/rooms',
        {},
        { headers: { origin: 'https://evil.example', host: 'chat.example' } },
      );
      assert.equal(crossOrigin.statusCode, 403);
      const crossSite = await client.post('/rooms', {}, { headers: { 'sec-fetch-site': 'cross-site' } });
      assert.equal(crossSite.statusCode, 403);
      const sameOrigin = await client.post(
        '/rooms',
        {},
        {
          headers: { origin: 'http://chat.example', host: 'chat.example', 'sec-fetch-site': 'same-origin' },
        },
      );
      assert.equal(sameOrigin.statusCode, 303);
      assert.equal((await client.post('/rooms')).statusCode, 303);
      // A browser's own form post under our no-referrer policy: Origin null, Sec-Fetch-Site same-origin.
      const nullOrigin = { origin: 'null', host: 'chat.example' };
      const ownForm = await client.post(
        '/rooms',
        {},
        { headers: { ...nullOrigin, 'sec-fetch-site': 'same-origin' } },
      );
      assert.equal(ownForm.statusCode, 303);
      assert.equal((await client.post('/rooms', {}, { headers: nullOrigin })).statusCode, 403);
      const sandboxed = await client.post(
        '/rooms',
        {},
        { headers: { ...nullOrigin, 'sec-fetch-site': 'cross-site' } },
      );
      assert.equal(sandboxed.statusCode, 403);
    });
  });

  describe('time', () => {
    it('shows when the room closes and how long is left, correct at every load', async () => {
      const { code, host } = await openRoom(app.chat);
      const closesAt = new Date(clock.now().getTime() + 24 * HOUR).toISOString();
      let page = await host.get(`/rooms/${code}`);
      assert.match(page.body, new RegExp(`<time datetime="${closesAt}"`));
      assert.match(page.body, /24 h<\/span> left/);
      clock.advance(2.5 * HOUR);
      page = await host.get(`/rooms/${code}`);
      assert.match(page.body, /21 h 30 min<\/span> left/);
      clock.advance(-2.5 * HOUR);
    });

    it('ends a room at its time: 410 for participants at once, expired by the sweep, audited', async () => {
      const { code, host, guest } = await openRoom(app.chat);
      clock.advance(24 * HOUR);
      try {
        for (const member of [host, guest]) {
          const response = await member.get(`/rooms/${code}`);
          assert.equal(response.statusCode, 410);
          assert.match(response.body, /This chat has ended/);
        }
        assert.equal(await app.services.sweeper.runOnce(), true);
        const row = await app.resources.db.one(sql.type(
          z.object({ status: z.string(), end_reason: z.string() }),
        )`
          SELECT status, end_reason FROM rooms WHERE code = ${code} ORDER BY created_at DESC LIMIT 1`);
        // The same sweep expires the room and then writes its archive.
        assert.deepEqual(row, { status: 'archived', end_reason: 'expired' });
        assert.deepEqual(
          (await auditActions(app, code)).filter(
            (action) => action === 'room.expire' || action === 'room.archive',
          ),
          ['room.expire', 'room.archive'],
        );
        assert.equal((await host.post(`/rooms/${code}/end`, { confirm: 'yes' })).statusCode, 410);
      } finally {
        clock.advance(-24 * HOUR);
      }
    });

    it('lapses a pending room never activated after PENDING_TTL_MINUTES', async () => {
      const host = new Client(app.chat);
      const code = String((await host.post('/rooms')).headers.location)
        .split('/')
        .pop() as string;
      clock.advance(59 * 60_000);
      assert.equal((await host.get(`/rooms/${code}`)).statusCode, 200);
      clock.advance(60_000);
      try {
        const lapsed = await host.get(`/rooms/${code}`);
        assert.equal(lapsed.statusCode, 410);
        assert.match(lapsed.body, /never started, and its code has lapsed/, 'not "this chat has ended"');
        await app.services.sweeper.runOnce();
        assert.match((await host.get(`/rooms/${code}`)).body, /never started/);
        const reason = await app.resources.db.oneFirst(sql.type(z.object({ end_reason: z.string() }))`
          SELECT end_reason FROM rooms WHERE code = ${code} ORDER BY created_at DESC LIMIT 1`);
        assert.equal(reason, 'lapsed');
        assert.ok((await auditActions(app, code)).includes('room.lapse'));
      } finally {
        clock.advance(-60 * 60_000);
      }
    });

    it('runs the sweeper in two app instances at once without double work', async () => {
      const second = await buildTestApp({
        clock,
        database: app.database,
        env: { MASTER_KEY: app.config.masterKey?.toString('base64') as string },
      });
      try {
        const codes: string[] = [];
        for (let index = 0; index < 5; index++) codes.push((await openRoom(app.chat)).code);
        clock.advance(25 * HOUR);
        const ended: string[] = [];
        app.services.rooms.onRoomsEnded((rooms) => ended.push(...rooms.map((room) => room.code)));
        second.services.rooms.onRoomsEnded((rooms) => ended.push(...rooms.map((room) => room.code)));
        await Promise.all([app.services.sweeper.runOnce(), second.services.sweeper.runOnce()]);
        await Promise.all([app.services.sweeper.runOnce(), second.services.sweeper.runOnce()]);
        for (const code of codes) {
          assert.equal(ended.filter((item) => item === code).length, 1, `${code} reported once`);
          const expires = (await auditActions(app, code)).filter((action) => action === 'room.expire');
          assert.equal(expires.length, 1, `${code} expired once`);
        }
      } finally {
        clock.advance(-25 * HOUR);
        await second.close();
      }
    });
  });

  describe('ending early', () => {
    it('asks first, then ends the chat for both and frees the code', async () => {
      const { code, host, guest } = await openRoom(app.chat);
      const unconfirmed = await guest.post(`/rooms/${code}/end`);
      assert.equal(unconfirmed.statusCode, 303);
      assert.equal(unconfirmed.headers.location, `/rooms/${code}/end`);
      const question = await guest.get(`/rooms/${code}/end`);
      assert.match(question.body, /End this chat\?/);
      assert.match(question.body, /name="confirm" value="yes"/);
      assert.equal((await host.get(`/rooms/${code}`)).statusCode, 200);

      const endedResponse = await guest.post(`/rooms/${code}/end`, { confirm: 'yes' });
      assert.equal(endedResponse.statusCode, 303);
      for (const member of [host, guest]) assert.equal((await member.get(`/rooms/${code}`)).statusCode, 410);
      const row = await app.resources.db.one(
        sql.type(
          z.object({ status: z.string(), end_reason: z.string(), ended_by_slot: z.number() }),
        )`SELECT status, end_reason, ended_by_slot FROM rooms WHERE code = ${code} ORDER BY created_at DESC LIMIT 1`,
      );
      assert.deepEqual(row, { status: 'expired', end_reason: 'ended', ended_by_slot: 2 });
    });
  });

  describe('audit trail', () => {
    it('records every action with IP, user agent and device prefix', async () => {
      const { code, host, guest } = await openRoom(app.chat);
      const stranger = new Client(app.chat, { remoteAddress: '203.0.113.200' });
      await stranger.get(`/join?code=${code}`);
      await guest.post(`/rooms/${code}/end`, { confirm: 'yes' });
      const rows = await app.resources.db.any(
        sql.type(
          z.object({
            action: z.string(),
            ip: z.string().nullable(),
            user_agent: z.string().nullable(),
            device_prefix: z.string().nullable(),
          }),
        )`SELECT action, host(ip) AS ip, user_agent, device_prefix FROM audit_events WHERE room_code = ${code} ORDER BY id`,
      );
      assert.deepEqual(
        rows.map((row) => row.action),
        ['room.create', 'room.activate', 'room.join', 'room.join_refused', 'room.end'],
      );
      const hostPrefix = createHash('sha256')
        .update(host.cookies.get('ccc_device') as string)
        .digest('hex')
        .slice(0, 12);
      assert.deepEqual(rows[0], {
        action: 'room.create',
        ip: '192.0.2.10',
        user_agent: 'test-client/1.0',
        device_prefix: hostPrefix,
      });
      assert.equal(rows[2]?.ip, '198.51.100.20');
      assert.equal(rows[3]?.ip, '203.0.113.200');
      assert.ok(rows.every((row) => row.ip && row.user_agent));
    });
  });
});

describe('room creation limits', () => {
  it('answer 429 with Retry-After past CREATE_RATE_PER_MINUTE per IP, and create nothing more', async () => {
    const app = await buildTestApp({ env: { CREATE_RATE_PER_MINUTE: '3' } });
    try {
      const rooms = async () =>
        app.resources.db.oneFirst(sql.type(z.object({ count: z.number() }))`
          SELECT count(*)::int AS count FROM rooms`);
      const host = new Client(app.chat, { remoteAddress: '203.0.113.5' });
      for (let attempt = 0; attempt < 3; attempt++) assert.equal((await host.post('/rooms')).statusCode, 303);
      const limited = await host.post('/rooms');
      assert.equal(limited.statusCode, 429);
      assert.ok(Number(limited.headers['retry-after']) > 0);
      assert.match(limited.body, /Too many attempts/);
      // A new device from the same address shares the address's budget.
      assert.equal(
        (await new Client(app.chat, { remoteAddress: '203.0.113.5' }).post('/rooms')).statusCode,
        429,
      );
      assert.equal(await rooms(), 3);
      assert.equal(
        (await new Client(app.chat, { remoteAddress: '203.0.113.6' }).post('/rooms')).statusCode,
        303,
      );
      assert.equal(await rooms(), 4);
    } finally {
      await app.close();
    }
  });
});

describe('join rate limits', () => {
  it('answer 429 with Retry-After past JOIN_RATE_PER_MINUTE, per IP and per IPv6 /64', async () => {
    const app = await buildTestApp({ env: { JOIN_RATE_PER_MINUTE: '3' } });
    try {
      const v4 = new Client(app.chat, { remoteAddress: '203.0.113.1' });
      for (let attempt = 0; attempt < 3; attempt++)
        assert.equal((await v4.get('/join?code=ZZZZ')).statusCode, 404);
      const limited = await v4.get('/join?code=ZZZZ');
      assert.equal(limited.statusCode, 429);
      assert.ok(Number(limited.headers['retry-after']) > 0);
      assert.match(limited.body, /Too many attempts/);
      assert.equal((await v4.post('/rooms/ZZZZ/join', { name: 'x' })).statusCode, 429);
      // another IPv4 address has its own budget
      assert.equal(
        (await new Client(app.chat, { remoteAddress: '203.0.113.2' }).get('/join?code=ZZZZ')).statusCode,
        404,
      );

      // one IPv6 /64 shares a budget, whatever the interface id
      for (let attempt = 0; attempt < 3; attempt++) {
        const client = new Client(app.chat, { remoteAddress: `2001:db8:1:2::${attempt + 1}` });
        assert.equal((await client.get('/join?code=ZZZZ')).statusCode, 404);
      }
      assert.equal(
        (await new Client(app.chat, { remoteAddress: '2001:db8:1:2:ffff::9' }).get('/join?code=ZZZZ'))
          .statusCode,
        429,
      );
      assert.equal(
        (await new Client(app.chat, { remoteAddress: '2001:db8:1:3::1' }).get('/join?code=ZZZZ')).statusCode,
        404,
      );

      // Hammering a limit writes no more audit rows: the first refusal per key and window is
      // recorded (here the IPv4 address and the IPv6 /64), not each one.
      for (let attempt = 0; attempt < 50; attempt++)
        assert.equal((await v4.get('/join?code=ZZZZ')).statusCode, 429);
      const limitedEvents = await app.resources.db.any(sql.type(
        z.object({ ip: z.string(), detail: z.object({ limit: z.string(), until: z.string() }) }),
      )`
        SELECT host(ip) AS ip, detail FROM audit_events WHERE action = 'rate_limited' ORDER BY id`);
      assert.deepEqual(
        limitedEvents.map((event) => [event.ip, event.detail.limit]),
        [
          ['203.0.113.1', 'join'],
          ['2001:db8:1:2:ffff::9', 'join'],
        ],
      );
      assert.ok(Date.parse(limitedEvents[0]?.detail.until ?? '') > Date.now(), 'says until when');
    } finally {
      await app.close();
    }
  });

  it('are shared through Redis and fail closed (503) when Redis is down', async () => {
    const app = await buildTestApp({ redis: true, env: { JOIN_RATE_PER_MINUTE: '2' } });
    const second = await buildTestApp({
      redis: app.redis,
      database: app.database,
      env: { JOIN_RATE_PER_MINUTE: '2' },
    });
    try {
      const address = { remoteAddress: '203.0.113.9' };
      assert.equal((await new Client(app.chat, address).get('/join?code=ZZZZ')).statusCode, 404);
      assert.equal((await new Client(second.chat, address).get('/join?code=ZZZZ')).statusCode, 404);
      assert.equal((await new Client(app.chat, address).get('/join?code=ZZZZ')).statusCode, 429);

      await app.redis?.stop();
      const started = Date.now();
      const down = await new Client(app.chat, { remoteAddress: '203.0.113.99' }).get('/join?code=ZZZZ');
      assert.equal(down.statusCode, 503);
      assert.ok(Date.now() - started < 3_000, 'the refusal must not hang');
      assert.match(down.body, /cannot check request limits/);
      // pages that need no limiter still work
      assert.equal((await app.chat.inject({ url: '/' })).statusCode, 200);
    } finally {
      await second.close();
      await app.close();
    }
  });
});
