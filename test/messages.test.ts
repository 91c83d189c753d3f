import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { z } from 'zod';
import { ManualClock } from '../src/infra/clock.ts';
import { sql } from '../src/infra/db.ts';
import { cleanMessageText } from '../src/messages/message-service.ts';
import { MessageWriter } from '../src/messages/message-writer.ts';
import { buildTestApp, type TestApp } from './helpers/app.ts';
import { Client, offeredNames, openRoom } from './helpers/client.ts';
import { openLive, seqsIn } from './helpers/live.ts';
import { roomIdOf } from './helpers/messages.ts';

const send = (client: Client, code: string, body: string, extra: Record<string, string> = {}, htmx = false) =>
  client.post(
    `/rooms/${code}/messages`,
    { body, ...extra },
    htmx ? { headers: { 'hx-request': 'true' } } : {},
  );

const messageRows = (app: TestApp, code: string) =>
  app.resources.db.any(sql.type(
    z.object({ seq: z.number(), client_msg_id: z.string().nullable(), sender_ip: z.string() }),
  )`
    SELECT m.seq, m.client_msg_id, host(m.sender_ip) AS sender_ip
    FROM messages m JOIN rooms r ON r.id = m.room_id WHERE r.code = ${code} AND r.status = 'active' ORDER BY m.seq`);

/** A full garbage collection, without starting the test process with --expose-gc. */
setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

describe('sending', () => {
  let app: TestApp;
  before(async () => {
    app = await buildTestApp({ env: { MAX_MESSAGE_CHARS: '50' } });
  });
  after(() => app.close());

  it('works without JS: 303 back to the room, which shows the message', async () => {
    const { code, host, guest, hostName } = await openRoom(app.chat);
    const sent = await send(host, code, 'Hello there');
    assert.equal(sent.statusCode, 303);
    assert.equal(sent.headers.location, `/rooms/${code}#msg-1`);
    const hostPage = await host.get(`/rooms/${code}`);
    assert.match(hostPage.body, /<li id="msg-1" data-seq="1" class="message message-mine">/);
    const guestPage = await guest.get(`/rooms/${code}`);
    assert.match(guestPage.body, /<li id="msg-1" data-seq="1" class="message message-theirs">/);
    assert.match(guestPage.body, new RegExp(`<p class="message-sender">${hostName}</p>`));
    assert.match(guestPage.body, /Hello there/);
    const rows = await messageRows(app, code);
    assert.deepEqual(rows, [{ seq: 1, client_msg_id: null, sender_ip: '192.0.2.10' }]);
  });

  it('answers htmx with the sender’s own message fragment and a fresh message id', async () => {
    const { code, host } = await openRoom(app.chat);
    const clientMsgId = randomUUID();
    const sent = await send(host, code, 'via htmx', { client_msg_id: clientMsgId }, true);
    assert.equal(sent.statusCode, 200);
    assert.doesNotMatch(sent.body, /<html/);
    assert.match(sent.body, /^<li id="msg-1" data-seq="1" class="message message-mine">/);
    const next = /id="client-msg-id" name="client_msg_id" value="([0-9a-f-]{36})" hx-swap-oob="true"/.exec(
      sent.body,
    );
    assert.ok(next, 'a new client_msg_id comes back out of band');
    assert.notEqual(next[1], clientMsgId);
  });

  it('refuses empty and whitespace-only messages (400) and too long ones (413), storing nothing', async () => {
    const { code, host } = await openRoom(app.chat);
    for (const body of [
      '',
      '   ',
      '\n\n\t \n',
      '\u0000\u0007',
      '\u200B',
      '\u202E \u200D\u3164',
      '\u00A0\u2800',
    ]) {
      const response = await send(host, code, body);
      assert.equal(response.statusCode, 400, JSON.stringify(body));
      assert.match(response.body, /Type a message first/);
    }
    const tooLong = await send(host, code, 'x'.repeat(51));
    assert.equal(tooLong.statusCode, 413);
    assert.match(tooLong.body, /at most 50 characters/);
    // Without JavaScript the error is a page of its own: it leads back to the chat.
    assert.match(
      tooLong.body,
      new RegExp(`<a class="button-primary" href="/rooms/${code}">Back to the chat</a>`),
    );
    const htmxTooLong = await send(host, code, 'é'.repeat(51), {}, true);
    assert.equal(htmxTooLong.statusCode, 413);
    assert.equal(htmxTooLong.headers['hx-retarget'], '#notice');
    assert.equal((await send(host, code, '😀'.repeat(50))).statusCode, 303, '50 emoji are 50 characters');
    const twice = await host.request({
      method: 'POST',
      url: `/rooms/${code}/messages`,
      payload: 'body=a&body=b',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    assert.equal(twice.statusCode, 400);
    assert.match(twice.body, /more than one message/);
    assert.equal((await messageRows(app, code)).length, 1);
  });

  it('drops control characters other than newline and tab', async () => {
    assert.equal(cleanMessageText('a\u0000b\u0007c\r\nd\te\u001b[31m\u2028'), 'abc\nd\te[31m');
    assert.equal(cleanMessageText('\n\n  indented\nline  \n\n'), '  indented\nline');
  });

  it('stores one message for a repeated client_msg_id, and answers both with it', async () => {
    const { code, host } = await openRoom(app.chat);
    const clientMsgId = randomUUID();
    const first = await send(host, code, 'only once', { client_msg_id: clientMsgId }, true);
    const again = await send(host, code, 'only once', { client_msg_id: clientMsgId }, true);
    assert.equal(first.statusCode, 200);
    assert.equal(again.statusCode, 200);
    const fragment = (body: string) => body.slice(0, body.indexOf('<input'));
    assert.equal(fragment(again.body), fragment(first.body));

    // at the same instant, too (the database decides)
    const racing = randomUUID();
    const results = await Promise.all(
      Array.from({ length: 5 }, () => send(host, code, 'raced', { client_msg_id: racing }, true)),
    );
    const seqs = new Set(results.map((result) => /data-seq="(\d+)"/.exec(result.body)?.[1]));
    assert.equal(seqs.size, 1);
    const rows = await messageRows(app, code);
    assert.equal(rows.length, 2);
    assert.deepEqual(
      rows.map((row) => row.client_msg_id),
      [clientMsgId, racing],
    );
    assert.equal((await send(host, code, 'bad id', { client_msg_id: 'not-a-uuid' })).statusCode, 400);
  });

  it('is for participants of a live room only', async () => {
    const { code, guest } = await openRoom(app.chat);
    const stranger = new Client(app.chat);
    assert.equal((await send(stranger, code, 'hi')).statusCode, 404);
    const pendingHost = new Client(app.chat);
    const pendingCode = /\/rooms\/([A-Z0-9]{4})/.exec(
      String((await pendingHost.post('/rooms')).headers.location),
    )?.[1];
    const early = await send(pendingHost, pendingCode as string, 'too early');
    assert.equal(early.statusCode, 409, 'a room not yet activated has not begun: not 410');
    assert.match(early.body, /once the chat has started/);
    await guest.post(`/rooms/${code}/end`, { confirm: 'yes' });
    assert.equal((await send(guest, code, 'too late')).statusCode, 410);
  });
});

describe('two writers on one room', () => {
  let app: TestApp;
  let other: TestApp;
  before(async () => {
    app = await buildTestApp();
    // A second app on the same database: another process writing to the same rooms.
    other = await buildTestApp({
      database: app.database,
      env: { MASTER_KEY: (app.config.masterKey as Buffer).toString('base64') },
    });
  });
  after(async () => {
    await other.close();
    await app.close();
  });

  it('keeps seqs unique and in order, each body sealed to its own seq, when both write in turn', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    // The guest's cookie, used against the other app (as behind a load balancer).
    const guestThere = new Client(other.chat, { remoteAddress: '198.51.100.20' });
    for (const [name, value] of guest.cookies) guestThere.cookies.set(name, value);
    const texts: string[] = [];
    for (let round = 0; round < 4; round++) {
      const sends = [
        send(host, code, `host ${round} a`, { client_msg_id: randomUUID() }, true),
        send(host, code, `host ${round} b`, { client_msg_id: randomUUID() }, true),
        send(guestThere, code, `guest ${round}`, { client_msg_id: randomUUID() }, true),
      ];
      for (const response of await Promise.all(sends)) assert.equal(response.statusCode, 200);
      texts.push(`host ${round} a`, `host ${round} b`, `guest ${round}`);
    }
    const rows = await messageRows(app, code);
    assert.equal(rows.length, texts.length);
    assert.deepEqual(
      rows.map((row) => row.seq),
      [...rows.map((row) => row.seq)].sort((a, b) => a - b),
    );
    assert.equal(new Set(rows.map((row) => row.seq)).size, rows.length);
    // Every body opens with its room and seq (the AAD), whichever app sealed it.
    const page = (await host.get(`/rooms/${code}/messages?after=0`, { headers: { 'hx-request': 'true' } }))
      .body;
    assert.doesNotMatch(page, /unreadable/);
    for (const text of texts) assert.match(page, new RegExp(text));
  });
});

describe('group commit', () => {
  let app: TestApp;
  before(async () => {
    app = await buildTestApp();
  });
  after(() => app.close());

  /** The transaction that stored each message of a room, by seq (rows of one transaction share xmin). */
  const transactionsOf = (roomId: string) =>
    app.resources.db.any(sql.type(z.object({ seq: z.number(), xmin: z.string() }))`
      SELECT seq, xmin::text AS xmin FROM messages WHERE room_id = ${roomId} ORDER BY seq`);

  it('lets messages that reach an idle writer within its gather window share one commit', async () => {
    const { code } = await openRoom(app.chat);
    const roomId = await app.resources.db.oneFirst(sql.type(z.object({ id: z.string() }))`
      SELECT id FROM rooms WHERE code = ${code} AND status = 'active'`);
    const participantId = await app.resources.db.oneFirst(sql.type(z.object({ id: z.string() }))`
      SELECT id FROM participants WHERE room_id = ${roomId} AND slot = 1`);
    const message = (text: string) => ({
      roomId,
      participantId,
      kind: 'text' as const,
      clientMsgId: null,
      text,
      senderIp: '127.0.0.1',
    });
    const writerWith = (gatherMs: number) =>
      new MessageWriter(app.resources.db, app.services.roomKeys, app.resources.clock, app.resources.logger, {
        gatherMs,
      });
    const later = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

    // Two messages 5 ms apart, in separate ticks: with a 40 ms window they commit together...
    const gathering = writerWith(40);
    const together = [gathering.write(message('a')), later(5).then(() => gathering.write(message('b')))];
    const [first, second] = await Promise.all(together);
    // ...without one: the first is written at once, the second waits for it and commits alone.
    const eager = writerWith(0);
    const apart = [eager.write(message('c')), later(5).then(() => eager.write(message('d')))];
    await Promise.all(apart);

    const rows = await transactionsOf(roomId);
    assert.deepEqual(
      rows.map((row) => row.seq),
      [1, 2, 3, 4],
    );
    assert.deepEqual([first?.seq, second?.seq], [1, 2]);
    assert.equal(rows[0]?.xmin, rows[1]?.xmin, 'gathered into one transaction');
    assert.notEqual(rows[2]?.xmin, rows[3]?.xmin, 'no window: two transactions');
  });
});

describe('the room page', () => {
  let app: TestApp;
  let other: TestApp;
  let clock: ManualClock;
  before(async () => {
    clock = new ManualClock(Date.UTC(2026, 0, 15, 22, 0, 0));
    app = await buildTestApp({ clock, env: { ROOM_TTL_HOURS: '72' } });
    other = await buildTestApp({
      database: app.database,
      clock,
      env: { ROOM_TTL_HOURS: '72', MASTER_KEY: (app.config.masterKey as Buffer).toString('base64') },
    });
  });
  after(async () => {
    await other.close();
    await app.close();
  });

  /** Each message of a page: its seq, whose it is, and its day separator (day and label) if it has one. */
  const messagesOf = (html: string) =>
    [
      ...html.matchAll(
        /<li id="msg-(\d+)" data-seq="\d+" class="message message-(mine|theirs)">\s*(?:<p class="day-divider"><time datetime="([\d-]+)">([^<]+)<\/time><\/p>)?\s*<div class="bubble">/g,
      ),
    ].map(([, seq, whose, day, label]) => `${seq} ${whose}${day ? ` ${day} ${label}` : ' (no separator)'}`);

  it('labels the day separators by the time of each load, for each reader, while days pass', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    assert.equal((await send(host, code, 'late evening')).statusCode, 303);
    assert.deepEqual(messagesOf((await guest.get(`/rooms/${code}`)).body), ['1 theirs 2026-01-15 Today']);
    clock.advance(3 * 3_600_000);
    assert.equal((await send(guest, code, 'after midnight')).statusCode, 303);
    assert.equal((await send(host, code, 'still up')).statusCode, 303);
    const expected = ['1 mine 2026-01-15 Yesterday', '2 theirs 2026-01-16 Today', '3 mine (no separator)'];
    assert.deepEqual(messagesOf((await host.get(`/rooms/${code}`)).body), expected);
    assert.deepEqual(messagesOf((await host.get(`/rooms/${code}`)).body), expected);
    assert.deepEqual(messagesOf((await guest.get(`/rooms/${code}`)).body), [
      '1 theirs 2026-01-15 Yesterday',
      '2 mine 2026-01-16 Today',
      '3 theirs (no separator)',
    ]);
    clock.advance(24 * 3_600_000);
    assert.deepEqual(messagesOf((await host.get(`/rooms/${code}`)).body), [
      '1 mine 2026-01-15 15 Jan 2026',
      '2 theirs 2026-01-16 Yesterday',
      '3 mine (no separator)',
    ]);
    // The no-JS frame and the htmx history read the same partial.
    assert.deepEqual(
      messagesOf(
        (await host.get(`/rooms/${code}/messages?after=0`, { headers: { 'hx-request': 'true' } })).body,
      ),
      ['1 mine 2026-01-15 15 Jan 2026', '2 theirs 2026-01-16 16 Jan 2026', '3 mine (no separator)'],
    );
  });

  it('shows every message acknowledged before a load, however many loads and writers run at once', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    const second = await openRoom(app.chat);
    // The guest writes through the other app (another process on the same database).
    const guestThere = new Client(other.chat, { remoteAddress: '198.51.100.20' });
    for (const [name, value] of guest.cookies) guestThere.cookies.set(name, value);
    let acknowledged = 0;
    for (let round = 0; round < 6; round++) {
      const writer = round % 2 === 0 ? guestThere : host;
      const sent = await send(writer, code, `round ${round}`, { client_msg_id: randomUUID() }, true);
      assert.equal(sent.statusCode, 200);
      acknowledged = Number(/data-seq="(\d+)"/.exec(sent.body)?.[1]);
      // Loads of this room and another at once, while the other room gets a message too.
      const loads = await Promise.all([
        ...Array.from({ length: 5 }, () => host.get(`/rooms/${code}`)),
        guest.get(`/rooms/${code}`),
        second.host.get(`/rooms/${second.code}`),
        send(second.guest, second.code, `other room ${round}`),
        second.guest.get(`/rooms/${second.code}`),
      ]);
      for (const page of loads.slice(0, 6)) {
        assert.equal(page.statusCode, 200);
        const seqs = messagesOf(page.body).map((line) => Number(line.split(' ')[0]));
        assert.deepEqual(
          seqs,
          Array.from({ length: acknowledged }, (_, index) => index + 1),
        );
        assert.match(page.body, new RegExp(`round ${round}`));
      }
      for (const page of [loads[6], loads[8]]) assert.equal(page?.statusCode, 200);
    }
    const afterAll = messagesOf((await second.host.get(`/rooms/${second.code}`)).body);
    assert.equal(afterAll.length, 6);
  });
});

describe('sealing', () => {
  let app: TestApp;
  before(async () => {
    app = await buildTestApp();
  });
  after(() => app.close());

  it('leaves no plaintext of any message anywhere in the database', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    const secret = `Zebra-${randomUUID()}-plaintext`;
    await send(host, code, secret);
    await send(guest, code, `${secret} reply`, { client_msg_id: randomUUID() }, true);
    const tables = await app.resources.db.anyFirst(sql.type(z.object({ table_name: z.string() }))`
      SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'`);
    assert.ok(tables.includes('messages') && tables.includes('audit_events'));
    const needles = [
      secret,
      Buffer.from(secret).toString('hex'),
      Buffer.from(secret).toString('base64').slice(0, 24),
    ];
    const rowsSeen: Record<string, number> = {};
    for (const table of tables) {
      const dump = await app.resources.db.anyFirst(sql.type(z.object({ row: z.string() }))`
        SELECT t::text AS row FROM ${sql.identifier([table])} t`);
      rowsSeen[table] = dump.length;
      for (const row of dump) {
        for (const needle of needles) assert.ok(!row.includes(needle), `plaintext found in ${table}: ${row}`);
      }
    }
    // the dump did see the rows that hold the messages
    assert.equal(rowsSeen.messages, 2);
    assert.equal(rowsSeen.participants, 2);
    // ...while the participants read it fine
    assert.match((await guest.get(`/rooms/${code}`)).body, new RegExp(secret));
    // and the logs never saw it either
    assert.ok(!app.logs.join('\n').includes(secret));
  });

  it('shows a corrupted or moved ciphertext as [unreadable message], logs it, and crashes nothing', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    await send(host, code, 'first message');
    await send(host, code, 'second message');
    await send(host, code, 'third message');
    const roomId = await app.resources.db.oneFirst(sql.type(z.object({ id: z.string() }))`
      SELECT id FROM rooms WHERE code = ${code} AND status = 'active'`);
    // flip one byte of the first, swap the second and third
    await app.resources.db.query(sql.unsafe`
      UPDATE messages SET body_sealed = set_byte(body_sealed, 20, get_byte(body_sealed, 20) # 1)
      WHERE room_id = ${roomId} AND seq = 1`);
    await app.resources.db.query(sql.unsafe`
      UPDATE messages m SET body_sealed = o.body_sealed
      FROM messages o WHERE m.room_id = ${roomId} AND o.room_id = ${roomId}
        AND ((m.seq = 2 AND o.seq = 3) OR (m.seq = 3 AND o.seq = 2))`);
    await send(host, code, 'fourth message');
    const page = await guest.get(`/rooms/${code}`);
    assert.equal(page.statusCode, 200);
    assert.equal((page.body.match(/\[unreadable message\]/g) ?? []).length, 3);
    assert.match(page.body, /fourth message/);
    assert.doesNotMatch(page.body, /first message|second message|third message/);
    assert.ok(
      app.logs.some((line) => line.includes('message ciphertext did not open') && line.includes(roomId)),
    );
    const transcript = await guest.get(`/rooms/${code}/transcript.txt`);
    assert.equal(transcript.statusCode, 200);
  });
});

describe('history', () => {
  let app: TestApp;
  before(async () => {
    app = await buildTestApp();
  });
  after(() => app.close());

  it('returns the messages after seq N as a fragment for htmx, and as a self-refreshing page otherwise', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    for (const text of ['one', 'two', 'three']) await send(host, code, text);
    const fragment = await guest.get(`/rooms/${code}/messages?after=1`, {
      headers: { 'hx-request': 'true' },
    });
    assert.equal(fragment.statusCode, 200);
    assert.doesNotMatch(fragment.body, /<html/);
    assert.deepEqual(seqsIn([fragment.body]), [2, 3]);
    const page = await guest.get(`/rooms/${code}/messages`);
    assert.match(
      page.body,
      /<meta http-equiv="refresh" content="5;url=\/rooms\/[A-Z0-9]{4}\/messages\?at=\d+#end">/,
      'the refresh URL differs before the fragment, or the browser would only scroll',
    );
    assert.deepEqual(seqsIn([page.body]), [1, 2, 3]);
    assert.match(String(page.headers['content-security-policy']), /frame-ancestors 'self'/);
    // Inside the room page: no skip link or notice area of its own (the page around it has both).
    assert.doesNotMatch(page.body, /Skip to content|id="notice"/);
    // Each refresh jumps to the newest message: reading back takes pausing, and resuming.
    assert.match(
      page.body,
      new RegExp(`<a href="/rooms/${code}/messages\\?paused=1">Pause to read back</a>`),
    );
    const paused = await guest.get(`/rooms/${code}/messages?paused=1`);
    assert.equal(paused.statusCode, 200);
    assert.doesNotMatch(paused.body, /http-equiv="refresh"/);
    assert.deepEqual(seqsIn([paused.body]), [1, 2, 3]);
    assert.match(paused.body, new RegExp(`<a href="/rooms/${code}/messages#end">Resume updates</a>`));
    const stranger = await new Client(app.chat).get(`/rooms/${code}/messages`);
    assert.equal(stranger.statusCode, 404);
    assert.doesNotMatch(stranger.body, /Back to the chat/);
  });

  it('shows the frame’s errors inside the frame: an ended chat says so, and stays framable', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    await send(host, code, 'one');
    assert.equal((await host.post(`/rooms/${code}/end`, { confirm: 'yes' })).statusCode, 303);
    const ended = await guest.get(`/rooms/${code}/messages?at=1`);
    assert.equal(ended.statusCode, 410);
    // The room page frames it: a frame-ancestors 'none' error would leave the frame blank.
    assert.match(String(ended.headers['content-security-policy']), /frame-ancestors 'self'/);
    assert.equal(ended.headers['x-frame-options'], 'SAMEORIGIN');
    assert.match(ended.body, /This chat has ended/);
    assert.doesNotMatch(
      ended.body,
      /class="site-header|http-equiv="refresh"/,
      'no header, no retry: it will not pass',
    );
  });

  it('renders HTML and htmx attributes in messages and names inert, everywhere', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    const nasty = `<script>alert(1)</script> <img src=x onerror=alert(2)> <a hx-get="/rooms" hx-trigger="load">x</a> "'&`;
    const sent = await send(host, code, nasty, { client_msg_id: randomUUID() }, true);
    const live = await guest.get(`/rooms/${code}`);
    const frame = await guest.get(`/rooms/${code}/messages`);
    const fragment = await guest.get(`/rooms/${code}/messages?after=0`, {
      headers: { 'hx-request': 'true' },
    });
    for (const body of [sent.body, live.body, frame.body, fragment.body]) {
      assert.ok(!body.includes('<script>alert'), 'script tag rendered');
      assert.ok(!body.includes('<img src=x'), 'img tag rendered');
      assert.ok(!body.includes('<a hx-get'), 'htmx attribute rendered');
      assert.ok(body.includes('&lt;script&gt;alert(1)&lt;/script&gt; &lt;img src=x onerror=alert(2)&gt;'));
      assert.ok(body.includes('&quot;&#39;&amp;'));
    }
    const transcript = await guest.get(`/rooms/${code}/transcript.txt`);
    assert.equal(transcript.headers['content-type'], 'text/plain; charset=utf-8');
    assert.equal(transcript.headers['x-content-type-options'], 'nosniff');
    assert.ok(transcript.body.includes(nasty));
  });

  it('downloads the conversation so far as plain text, for participants only', async () => {
    const { code, host, guest, hostName, guestName } = await openRoom(app.chat);
    await send(host, code, 'line one\nline two');
    await send(guest, code, 'answer');
    const transcript = await guest.get(`/rooms/${code}/transcript.txt`);
    assert.equal(transcript.statusCode, 200);
    assert.equal(transcript.headers['content-disposition'], `attachment; filename="chittychat-${code}.txt"`);
    const lines = transcript.body.split('\n');
    assert.match(lines[0] as string, new RegExp(`room ${code}`));
    assert.match(transcript.body, new RegExp(`UTC\\] ${hostName}: line one\\n    line two`));
    assert.match(transcript.body, new RegExp(`UTC\\] ${guestName} \\(you\\): answer`));
    assert.equal((await new Client(app.chat).get(`/rooms/${code}/transcript.txt`)).statusCode, 404);
  });
});

describe('live delivery', () => {
  let app: TestApp;
  before(async () => {
    app = await buildTestApp({ listen: true, hub: { typingTimeoutMs: 300, maxSocketsPerParticipant: 3 } });
  });
  after(() => app.close());

  it('pushes a committed message to the partner’s page and the sender’s other tabs', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    const guestSocket = await openLive(app.chatUrl, code, guest);
    const hostOtherTab = await openLive(app.chatUrl, code, host);
    await send(host, code, 'live hello', { client_msg_id: randomUUID() }, true);
    const theirs = await guestSocket.waitFor(/msg-1/);
    assert.match(theirs, /message-theirs/);
    assert.match(theirs, /live hello/);
    const mine = await hostOtherTab.waitFor(/msg-1/);
    assert.match(mine, /message-mine/);
    await send(guest, code, 'and back');
    assert.match(await hostOtherTab.waitFor(/msg-2/), /message-theirs[\s\S]*and back/);
    guestSocket.close();
    hostOtherTab.close();
  });

  it('does not push a message back down the socket of the page that sent it', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    const tab = randomUUID();
    const sendingPage = await openLive(app.chatUrl, code, host, { tab });
    const otherTab = await openLive(app.chatUrl, code, host, { tab: randomUUID() });
    const guestSocket = await openLive(app.chatUrl, code, guest, { tab });
    const answer = await host.post(
      `/rooms/${code}/messages`,
      { body: 'from this page', client_msg_id: randomUUID() },
      { headers: { 'hx-request': 'true', 'x-tab-id': tab } },
    );
    assert.equal(answer.statusCode, 200);
    assert.match(answer.body, /msg-1[\s\S]*from this page/);
    // The other tab of the sender and the partner get it (a partner's page with the same id
    // changes nothing: only the sender's own page is skipped).
    assert.match(await otherTab.waitFor(/msg-1/), /message-mine/);
    assert.match(await guestSocket.waitFor(/msg-1/), /message-theirs/);
    await send(guest, code, 'reply');
    assert.match(await sendingPage.waitFor(/msg-2/), /reply/);
    // Skipped, not lost: no hole is filled from the database afterwards either.
    await new Promise((resolve) => setTimeout(resolve, 600));
    assert.deepEqual(seqsIn(sendingPage.frames), [2]);
    for (const socket of [sendingPage, otherTab, guestSocket]) socket.close();
  });

  it('shows the partner’s presence and typing', async () => {
    const { code, host, guest, guestName } = await openRoom(app.chat);
    const hostSocket = await openLive(app.chatUrl, code, host);
    assert.match(await hostSocket.waitFor(/partner-status/), /away/);
    const guestSocket = await openLive(app.chatUrl, code, guest);
    await hostSocket.waitFor((frame) => frame.includes('presence-online') && frame.includes(guestName));
    assert.match(await guestSocket.waitFor(/partner-status/), /presence-online/);

    guestSocket.socket.send(JSON.stringify({ typing: true, headers: {} }));
    const typing = await hostSocket.waitFor(/is typing/);
    assert.match(typing, new RegExp(`${guestName} is typing…`));
    assert.match(typing, /id="typing"[^>]*hx-swap-oob="true"/);
    // it clears by itself when the typing stops
    await hostSocket.waitFor((frame) => /id="typing"/.test(frame) && !frame.includes('is typing'), 3_000);

    guestSocket.close();
    await hostSocket.waitFor((frame) => frame.includes('presence-away') && frame.includes(guestName));
    hostSocket.close();
  });

  it('tells the host’s open page when a guest joins without a socket (no JavaScript, curl)', async () => {
    const { code, host } = await openRoom(app.chat, { guest: false });
    const hostSocket = await openLive(app.chatUrl, code, host);
    assert.match(await hostSocket.waitFor(/partner-status/), /Waiting for someone to join/);
    const guest = new Client(app.chat, { remoteAddress: '198.51.100.21' });
    const guestName = offeredNames((await guest.get(`/join?code=${code}`)).body)[0] as string;
    assert.equal((await guest.post(`/rooms/${code}/join`, { name: guestName })).statusCode, 303);
    const joined = await hostSocket.waitFor((frame) => frame.includes(guestName));
    assert.match(joined, /presence-away/, 'named, and away: the guest has no socket');
    assert.match(joined, /id="room-empty"[^>]*hx-swap-oob="true"/, 'the page stops asking to share');
    hostSocket.close();
  });

  it('gives a reconnecting page exactly what it missed, in order, once', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    for (const text of ['a', 'b', 'c', 'd', 'e']) await send(host, code, text);
    const socket = await openLive(app.chatUrl, code, guest, { after: 2 });
    await socket.waitFor(/msg-5/);
    await send(host, code, 'f');
    await socket.waitFor(/msg-6/);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(seqsIn(socket.frames), [3, 4, 5, 6]);
    socket.close();

    // without `after`, a socket only hears what comes next
    const fresh = await openLive(app.chatUrl, code, guest);
    await send(host, code, 'g');
    await fresh.waitFor(/msg-7/);
    assert.deepEqual(seqsIn(fresh.frames), [7]);
    fresh.close();
  });

  it('fills a hole in a socket’s messages from the database (a message whose live event never came)', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    const socket = await openLive(app.chatUrl, code, guest, { after: 0 });
    await send(host, code, 'one');
    await socket.waitFor(/msg-1/);
    // Stored, but never published: as if its live event were lost on the way.
    const roomId = await app.resources.db.oneFirst(sql.type(z.object({ id: z.string() }))`
      SELECT id FROM rooms WHERE code = ${code} AND status = 'active'`);
    const participantId = await app.resources.db.oneFirst(sql.type(z.object({ id: z.string() }))`
      SELECT id FROM participants WHERE room_id = ${roomId} AND slot = 1`);
    await app.services.writer.write({
      roomId,
      participantId,
      kind: 'text',
      clientMsgId: null,
      text: 'silently stored',
      senderIp: '127.0.0.1',
    });
    await send(host, code, 'three');
    assert.match(await socket.waitFor(/msg-2/, 3_000), /silently stored/);
    assert.deepEqual(seqsIn(socket.frames), [1, 3, 2]);
    socket.close();
  });

  it('holds a few live pages per device, not a flood: beyond, the upgrade is refused (429)', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    const tabs = [];
    for (let tab = 0; tab < 3; tab++) tabs.push(await openLive(app.chatUrl, code, host));
    await assert.rejects(openLive(app.chatUrl, code, host), { status: 429 });
    // Its own count: the partner is not affected; a page closed makes room for another.
    const partner = await openLive(app.chatUrl, code, guest);
    tabs.pop()?.close();
    const roomId = await roomIdOf(app, code);
    for (let wait = 0; wait < 100 && !app.services.hub.hasRoomFor(roomId, 1); wait++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    tabs.push(await openLive(app.chatUrl, code, host));
    for (const socket of [...tabs, partner]) socket.close();
  });

  it('refuses an upgrade from another origin, or for a device not in the room, before upgrading', async () => {
    const { code, guest } = await openRoom(app.chat);
    await assert.rejects(openLive(app.chatUrl, code, guest, { origin: 'https://evil.example' }), {
      status: 403,
    });
    await assert.rejects(openLive(app.chatUrl, code, new Client(app.chat)), { status: 404 });
    await assert.rejects(openLive(app.chatUrl, code, undefined), { status: 404 });
    await assert.rejects(openLive(app.chatUrl, 'ZZZZ', guest), { status: 404 });
    // same origin, and no Origin at all (a CLI client), are fine
    const same = await openLive(app.chatUrl, code, guest, { origin: app.chatUrl });
    same.close();
  });

  it('closes a socket that sends a frame over 16 KiB, a binary frame, or a flood', async () => {
    const { code, guest } = await openRoom(app.chat);
    const big = await openLive(app.chatUrl, code, guest);
    big.socket.send('x'.repeat(17 * 1024));
    assert.equal((await big.closed).code, 1009);

    const binary = await openLive(app.chatUrl, code, guest);
    binary.socket.send(Buffer.from([1, 2, 3]));
    assert.equal((await binary.closed).code, 1003);

    const flood = await openLive(app.chatUrl, code, guest);
    for (let index = 0; index < 100; index++) flood.socket.send('{"typing":true}');
    assert.equal((await flood.closed).code, 1008);

    const garbage = await openLive(app.chatUrl, code, guest);
    garbage.socket.send('{not json');
    garbage.socket.send('42');
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(garbage.socket.readyState, garbage.socket.OPEN, 'malformed JSON is ignored, not fatal');
    garbage.close();
  });

  it('lets the upgrade request go once the socket is open (an idle socket keeps only itself)', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    const upgrades: WeakRef<IncomingMessage>[] = [];
    const onUpgrade = (request: IncomingMessage) => upgrades.push(new WeakRef(request));
    app.chat.server.on('upgrade', onUpgrade);
    const socket = await openLive(app.chatUrl, code, guest, { after: 0 });
    app.chat.server.off('upgrade', onUpgrade);
    await socket.waitFor(/partner-status/);
    assert.equal(upgrades.length, 1);
    // The catch-up read may still hold it for a moment; after that, nothing may.
    const deadline = Date.now() + 5_000;
    while (upgrades[0]?.deref() !== undefined && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      collectGarbage();
    }
    assert.equal(upgrades[0]?.deref(), undefined, 'an open socket still holds its upgrade request');
    // and the socket still works
    await send(host, code, 'still live');
    assert.match(await socket.waitFor(/msg-1/), /still live/);
    socket.close();
  });

  it('tells open sockets when the chat ends, closes them, and refuses further sends', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    const hostSocket = await openLive(app.chatUrl, code, host);
    const guestSocket = await openLive(app.chatUrl, code, guest);
    // The question first: it says the messages go, and offers the transcript before they do.
    const question = await host.get(`/rooms/${code}/end`);
    assert.match(question.body, /nor read its messages here/);
    assert.match(question.body, new RegExp(`href="/rooms/${code}/transcript\\.txt" download`));
    await host.post(`/rooms/${code}/end`, { confirm: 'yes' });
    for (const socket of [hostSocket, guestSocket]) {
      const ended = await socket.waitFor(/chat-ended/);
      assert.match(ended, /This chat has ended/);
      // The header stops showing presence and the countdown.
      assert.match(ended, /<p id="partner-status"[^>]*hx-swap-oob="true">Chat ended<\/p>/);
      assert.match(ended, /<p id="time-left"[^>]*hx-swap-oob="true">Closed<\/p>/);
      assert.match(ended, /<span id="chat-end" hx-swap-oob="true"><\/span>/, 'End chat goes');
      assert.equal((await socket.closed).code, 1000);
    }
    const after = await send(guest, code, 'after the end');
    assert.equal(after.statusCode, 410);
    // The room page itself is the ended one: no link back to it.
    const page = await guest.get(`/rooms/${code}`);
    assert.equal(page.statusCode, 410);
    assert.doesNotMatch(page.body, /Back to the chat/);
    // News, not a fault: an info box under the heading, which it does not repeat.
    assert.match(page.body, /<div class="notice notice-info"/);
    assert.doesNotMatch(page.body, /class="notice-title"/);
    assert.match(page.body, /href="\/">Back to the start/);
  });

  it('closes every socket with 1012 when the server shuts down', async () => {
    const own = await buildTestApp({ listen: true, database: app.database });
    const { code, host } = await openRoom(own.chat);
    const socket = await openLive(own.chatUrl, code, host);
    await own.close();
    assert.equal((await socket.closed).code, 1012);
  });
});

describe('slow and dead peers', () => {
  it('cuts off a socket whose unsent data passes the bound, instead of buffering without limit', async () => {
    const app = await buildTestApp({ listen: true, hub: { maxBufferedBytes: 64 * 1024 } });
    try {
      const { code, host, guest } = await openRoom(app.chat);
      const reader = await openLive(app.chatUrl, code, guest);
      // Stop reading: the kernel buffers fill, then the server's send buffer grows.
      (reader.socket as unknown as { _socket: import('node:net').Socket })._socket.pause();
      const text = 'y'.repeat(3_900);
      let closedByServer = false;
      void reader.closed.then(() => {
        closedByServer = true;
      });
      for (let round = 0; round < 40 && app.services.hub.socketCount() > 0; round++) {
        await Promise.all(Array.from({ length: 50 }, () => send(host, code, text)));
      }
      assert.equal(app.services.hub.socketCount(), 0, 'the slow socket was closed');
      assert.ok(app.logs.some((line) => line.includes('slow socket closed')));
      void closedByServer;
    } finally {
      await app.close();
    }
  });

  it('terminates a peer that never answers pings', async () => {
    const app = await buildTestApp({ listen: true, hub: { heartbeatMs: 150 } });
    try {
      const { code, guest } = await openRoom(app.chat);
      const silent = await openLive(app.chatUrl, code, guest);
      // ws answers pings automatically; a dead peer does not: stop its socket from reading.
      (silent.socket as unknown as { _socket: import('node:net').Socket })._socket.pause();
      const started = Date.now();
      while (app.services.hub.socketCount() > 0 && Date.now() - started < 5_000) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.equal(app.services.hub.socketCount(), 0);
    } finally {
      await app.close();
    }
  });
});
