import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { z } from 'zod';
import { attachmentRow } from '../src/archive/room-record.ts';
import { Semaphore, SemaphoreFullError } from '../src/attachments/semaphore.ts';
import { sql } from '../src/infra/db.ts';
import { buildTestApp, type TestApp } from './helpers/app.ts';
import { Client, cookieHeader, openRoom } from './helpers/client.ts';
import { openLive } from './helpers/live.ts';
import { roomIdOf } from './helpers/messages.ts';
import { assertClosedInStages, sendMoreThanIsRead } from './helpers/unread-body.ts';
import {
  filesUnder,
  images,
  looksLikeAnImage,
  multipart,
  objectKeys,
  storedCounts,
  type UploadOptions,
  upload,
} from './helpers/uploads.ts';

const ADMIN = { remoteAddress: '127.0.0.1' };

type AttachmentRow = z.infer<typeof attachmentRow>;

const attachmentRows = (app: TestApp, code: string) =>
  app.resources.db.any(sql.type(attachmentRow)`
    SELECT a.id, a.message_seq, a.object_key, a.thumb_key, a.content_type, a.thumb_content_type, a.bytes,
           a.width, a.height, a.thumb_bytes, a.thumb_width, a.thumb_height, host(a.sender_ip) AS sender_ip,
           a.created_at
    FROM attachments a JOIN rooms r ON r.id = a.room_id
    WHERE r.code = ${code} AND r.status = 'active' ORDER BY a.message_seq`);

async function onlyAttachment(app: TestApp, code: string): Promise<AttachmentRow> {
  const rows = await attachmentRows(app, code);
  assert.equal(rows.length, 1, 'one attachment row');
  return rows[0] as AttachmentRow;
}

/** What an upload left behind: rows and objects, to compare before and after a refusal. */
async function snapshot(app: TestApp) {
  return { ...(await storedCounts(app)), objects: (await objectKeys(app)).length };
}

/** Red, green, blue of the pixel at (x, y). */
async function pixel(image: Buffer, x: number, y: number): Promise<number[]> {
  const { data, info } = await sharp(image).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const offset = (y * info.width + x) * info.channels;
  return [data[offset] as number, data[offset + 1] as number, data[offset + 2] as number];
}

const SAFE_IMAGE_HEADERS = (headers: Record<string, unknown>, contentType: string) => {
  assert.equal(headers['content-type'], contentType);
  assert.equal(headers['x-content-type-options'], 'nosniff');
  assert.match(String(headers['cache-control']), /^private\b/);
  assert.equal(headers['content-security-policy'], "default-src 'none'");
};

describe('images on the MinIO path (s3rver)', () => {
  let app: TestApp;
  before(async () => {
    app = await buildTestApp({
      s3: true,
      listen: true,
      env: { MAX_UPLOAD_MB: '2', MAX_MESSAGE_CHARS: '40' },
    });
  });
  after(() => app.close());

  it('works without JS: 303 back to the room, which shows the thumbnail with its size', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    const sent = await upload(host, code, await images.jpeg(), { caption: 'our view' });
    assert.equal(sent.statusCode, 303, sent.body);
    assert.equal(sent.headers.location, `/rooms/${code}#msg-1`);
    const row = await onlyAttachment(app, code);
    const page = await guest.get(`/rooms/${code}`);
    assert.match(page.body, /<li id="msg-1" data-seq="1" class="message message-theirs">/);
    assert.ok(
      page.body.includes(
        `<img src="/rooms/${code}/attachments/${row.id}/thumb" width="${row.thumb_width}" height="${row.thumb_height}" alt="Image: our view"`,
      ),
    );
    assert.ok(page.body.includes(`href="/rooms/${code}/attachments/${row.id}"`));
    assert.deepEqual(
      {
        type: row.content_type,
        w: row.width,
        h: row.height,
        thumb: row.thumb_content_type,
        ip: row.sender_ip,
      },
      { type: 'image/jpeg', w: 640, h: 480, thumb: 'image/webp', ip: '192.0.2.10' },
    );
    assert.deepEqual([row.thumb_width, row.thumb_height], [480, 360]);
    assert.deepEqual(row.object_key, `attachments/${await roomIdOf(app, code)}/${row.id}.image`);
    assert.deepEqual(row.thumb_key, `attachments/${await roomIdOf(app, code)}/${row.id}.thumb`);
    // the upload form is on the page, with a fresh id of its own
    assert.match(page.body, /<form id="upload-form"[^>]*enctype="multipart\/form-data"/);
    assert.match(page.body, /<label for="upload-file">Image<\/label>/);
    assert.match(page.body, /id="upload-msg-id" name="client_msg_id" value="[0-9a-f-]{36}"/);
  });

  it('re-encodes: no EXIF, no GPS, no camera name; the stored image is what sharp wrote', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    const original = await images.jpegWithGps();
    assert.ok((await sharp(original).metadata()).exif, 'the test photo does carry EXIF');
    assert.ok(original.includes(Buffer.from('SecretCam')));
    assert.equal((await upload(host, code, original)).statusCode, 303);
    const row = await onlyAttachment(app, code);
    for (const suffix of ['', '/thumb']) {
      const served = await guest.get(`/rooms/${code}/attachments/${row.id}${suffix}`);
      assert.equal(served.statusCode, 200);
      const bytes = served.rawPayload;
      const metadata = await sharp(bytes).metadata();
      assert.equal(metadata.exif, undefined, `no EXIF in ${suffix || 'image'}`);
      assert.equal(metadata.xmp, undefined);
      assert.equal(metadata.icc, undefined);
      for (const secret of ['SecretCam', 'Spyglass', 'Private Person', 'Exif']) {
        assert.ok(!bytes.includes(Buffer.from(secret)), `${secret} is gone`);
      }
      assert.ok(!bytes.equals(original));
    }
    assert.equal(row.bytes, (await guest.get(`/rooms/${code}/attachments/${row.id}`)).rawPayload.length);
  });

  it('turns a photo upright by its EXIF orientation (and then forgets the orientation)', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    const sideways = await images.sideways();
    const before = await sharp(sideways).metadata();
    assert.deepEqual([before.width, before.height, before.orientation], [1200, 800, 6]);
    assert.equal((await upload(host, code, sideways)).statusCode, 303);
    const row = await onlyAttachment(app, code);
    assert.deepEqual([row.width, row.height, row.thumb_width, row.thumb_height], [800, 1200, 320, 480]);
    const full = (await guest.get(`/rooms/${code}/attachments/${row.id}`)).rawPayload;
    const metadata = await sharp(full).metadata();
    assert.deepEqual([metadata.width, metadata.height], [800, 1200]);
    assert.ok(metadata.orientation === undefined || metadata.orientation === 1);
    // turned clockwise: what was the left (red) is now the top
    const [topRed, , topBlue] = await pixel(full, 400, 100);
    const [bottomRed, , bottomBlue] = await pixel(full, 400, 1100);
    assert.ok((topRed as number) > 200 && (topBlue as number) < 60, 'top is red');
    assert.ok((bottomBlue as number) > 200 && (bottomRed as number) < 60, 'bottom is blue');
    const thumb = (await guest.get(`/rooms/${code}/attachments/${row.id}/thumb`)).rawPayload;
    assert.deepEqual(await pixel(thumb, 160, 20).then((rgb) => (rgb[0] as number) > 200), true);
  });

  it('accepts PNG, WebP and GIF in their own format; an animated GIF stays animated', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    const cases = [
      { data: await images.png(), type: 'image/png', format: 'png' },
      { data: await images.webp(), type: 'image/webp', format: 'webp' },
      { data: await images.gif(), type: 'image/gif', format: 'gif' },
      { data: await images.animatedGif(), type: 'image/gif', format: 'gif' },
    ];
    for (const item of cases) {
      // the declared type and name are ignored: the bytes decide
      const sent = await upload(host, code, item.data, { filename: 'x.txt', contentType: 'text/plain' });
      assert.equal(sent.statusCode, 303, sent.body);
    }
    const rows = await attachmentRows(app, code);
    assert.deepEqual(
      rows.map((row) => row.content_type),
      cases.map((item) => item.type),
    );
    for (const [index, row] of rows.entries()) {
      const served = await guest.get(`/rooms/${code}/attachments/${row.id}`);
      SAFE_IMAGE_HEADERS(served.headers, (cases[index] as { type: string }).type);
      assert.equal(
        (await sharp(served.rawPayload).metadata()).format,
        (cases[index] as { format: string }).format,
      );
    }
    const animated = rows[3] as AttachmentRow;
    assert.deepEqual([animated.width, animated.height], [120, 90], 'one frame’s size, not the stack');
    const full = await sharp(
      (await guest.get(`/rooms/${code}/attachments/${animated.id}`)).rawPayload,
    ).metadata();
    assert.equal(full.pages, 3);
    const thumb = await guest.get(`/rooms/${code}/attachments/${animated.id}/thumb`);
    SAFE_IMAGE_HEADERS(thumb.headers, 'image/webp');
    assert.equal((await sharp(thumb.rawPayload).metadata()).pages, 3, 'the thumbnail moves too');
  });

  it('keeps nothing hidden in a file: a script in a JPEG comment, a zip after a GIF', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    const jpeg = await images.jpeg(64, 64);
    // a COM segment right after SOI, holding HTML
    const script = Buffer.from('<script>alert(document.cookie)</script>');
    const comment = Buffer.concat([Buffer.from([0xff, 0xfe, 0, script.length + 2]), script]);
    const withComment = Buffer.concat([jpeg.subarray(0, 2), comment, jpeg.subarray(2)]);
    const zip = Buffer.concat([Buffer.from('PK\u0003\u0004'), Buffer.from('secret.txt is in here')]);
    const gifar = Buffer.concat([await images.gif(32, 32), zip]);
    assert.equal((await upload(host, code, withComment)).statusCode, 303);
    assert.equal((await upload(host, code, gifar, { filename: 'cat.gif' })).statusCode, 303);
    for (const row of await attachmentRows(app, code)) {
      for (const suffix of ['', '/thumb']) {
        const bytes = (await guest.get(`/rooms/${code}/attachments/${row.id}${suffix}`)).rawPayload;
        assert.ok(!bytes.includes(Buffer.from('<script')), 'the script is gone');
        assert.ok(!bytes.includes(Buffer.from('PK\u0003\u0004')), 'the zip is gone');
      }
    }
  });

  it('delivers the image live to the partner, and answers htmx with the sender’s fragment', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    const guestSocket = await openLive(app.chatUrl, code, guest);
    const clientMsgId = randomUUID();
    const sent = await upload(host, code, await images.png(), { htmx: true, caption: 'live', clientMsgId });
    assert.equal(sent.statusCode, 200, sent.body);
    assert.doesNotMatch(sent.body, /<html/);
    assert.match(sent.body, /^<li id="msg-1" data-seq="1" class="message message-mine">/);
    const next = /id="upload-msg-id" name="client_msg_id" value="([0-9a-f-]{36})" hx-swap-oob="true"/.exec(
      sent.body,
    );
    assert.ok(next, 'a new upload id comes back out of band');
    assert.notEqual(next[1], clientMsgId);

    const row = await onlyAttachment(app, code);
    const frame = await guestSocket.waitFor(/msg-1/);
    assert.match(frame, /message-theirs/);
    assert.ok(
      frame.includes(
        `<img src="/rooms/${code}/attachments/${row.id}/thumb" width="${row.thumb_width}" height="${row.thumb_height}"`,
      ),
    );
    assert.match(frame, /live/);
    guestSocket.close();

    const full = await guest.get(`/rooms/${code}/attachments/${row.id}`);
    assert.equal(full.statusCode, 200);
    SAFE_IMAGE_HEADERS(full.headers, 'image/png');
    const thumb = await guest.get(`/rooms/${code}/attachments/${row.id}/thumb`);
    SAFE_IMAGE_HEADERS(thumb.headers, 'image/webp');
    const thumbMeta = await sharp(thumb.rawPayload).metadata();
    assert.deepEqual([thumbMeta.width, thumbMeta.height], [row.thumb_width, row.thumb_height]);
    // the sender sees their own, too
    assert.equal((await host.get(`/rooms/${code}/attachments/${row.id}/thumb`)).statusCode, 200);
  });

  it('stores a retried upload once (same client_msg_id), and leaves no extra objects', async () => {
    const { code, host } = await openRoom(app.chat);
    const before = await snapshot(app);
    const clientMsgId = randomUUID();
    const png = await images.png();
    const first = await upload(host, code, png, { htmx: true, clientMsgId });
    const again = await upload(host, code, png, { htmx: true, clientMsgId });
    assert.equal(first.statusCode, 200);
    assert.equal(again.statusCode, 200);
    const fragment = (body: string) => body.slice(0, body.indexOf('<input'));
    assert.equal(fragment(again.body), fragment(first.body));
    const after = await snapshot(app);
    assert.deepEqual(after, {
      attachments: before.attachments + 1,
      imageMessages: before.imageMessages + 1,
      objects: before.objects + 2,
    });
  });

  it('serves images to participants only: a stranger and a malformed id get the unknown-room 404', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    await upload(host, code, await images.png());
    const row = await onlyAttachment(app, code);
    const stranger = new Client(app.chat, { remoteAddress: '203.0.113.9' });
    await stranger.post('/rooms'); // a device of its own, bound to another room
    const unknownRoom = await stranger.get(`/rooms/ZZZZ/attachments/${row.id}`);
    assert.equal(unknownRoom.statusCode, 404);
    assert.match(unknownRoom.body, /no open room with that code/i);
    for (const url of [
      `/rooms/${code}/attachments/${row.id}`,
      `/rooms/${code}/attachments/${row.id}/thumb`,
    ]) {
      const response = await stranger.get(url);
      assert.equal(response.statusCode, 404);
      assert.equal(response.body, unknownRoom.body);
      assert.equal((await new Client(app.chat).get(url)).body, unknownRoom.body, 'no device at all');
    }
    for (const bad of ['nope', '..%2F..%2Fmaster.key', `${row.id}x`, '1']) {
      const response = await guest.get(`/rooms/${code}/attachments/${bad}`);
      assert.equal(response.statusCode, 404, bad);
      assert.equal(response.body, unknownRoom.body, bad);
    }
    // an image of another room is not found through this one
    const other = await openRoom(app.chat);
    assert.equal((await other.guest.get(`/rooms/${other.code}/attachments/${row.id}`)).statusCode, 404);
    // a stranger cannot upload either, and nothing is stored
    const before = await snapshot(app);
    const refused = await upload(stranger, code, await images.png());
    assert.equal(refused.statusCode, 404);
    assert.deepEqual(await snapshot(app), before);
    assert.equal((await guest.get(`/rooms/${code}/attachments/${randomUUID()}`)).statusCode, 404);
  });

  it('answers 410 once the chat has ended, for images and uploads', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    await upload(host, code, await images.png());
    const row = await onlyAttachment(app, code);
    await guest.post(`/rooms/${code}/end`, { confirm: 'yes' });
    assert.equal((await guest.get(`/rooms/${code}/attachments/${row.id}`)).statusCode, 410);
    assert.equal((await host.get(`/rooms/${code}/attachments/${row.id}/thumb`)).statusCode, 410);
    const before = await snapshot(app);
    assert.equal((await upload(host, code, await images.png())).statusCode, 410);
    assert.deepEqual(await snapshot(app), before);
  });

  it('refuses what is not an accepted image, or not a proper upload, and stores nothing', async () => {
    const { code, host } = await openRoom(app.chat);
    const png = await images.png(64, 64);
    const jpeg = await images.jpeg(64, 64);
    const asPng = { filename: 'photo.png', contentType: 'image/png' };
    const file = (data: Buffer, name = 'file') => ({
      name,
      filename: 'a.png',
      contentType: 'image/png',
      data,
    });
    const cases: { name: string; file?: Buffer; options?: UploadOptions; status: number; message: RegExp }[] =
      [
        {
          name: 'SVG named .png',
          file: Buffer.from(
            '<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><script>alert(1)</script></svg>',
          ),
          options: asPng,
          status: 415,
          message: /Only JPEG, PNG, WebP and GIF images can be sent/,
        },
        {
          name: 'HTML named .gif',
          file: Buffer.from('<!doctype html><title>x</title><script>alert(1)</script>'),
          options: { filename: 'x.gif', contentType: 'image/gif' },
          status: 415,
          message: /Only JPEG, PNG, WebP and GIF/,
        },
        {
          name: 'text named .png',
          file: Buffer.from('just words'),
          options: asPng,
          status: 415,
          message: /Only JPEG/,
        },
        {
          name: 'polyglot: HTML with a PNG inside',
          file: Buffer.concat([Buffer.from('<html><script>alert(1)</script><!--'), png, Buffer.from('-->')]),
          options: asPng,
          status: 415,
          message: /Only JPEG/,
        },
        {
          name: 'TIFF (an image, not one we take)',
          file: await sharp(png).tiff().toBuffer(),
          status: 415,
          message: /Only JPEG/,
        },
        {
          name: 'PNG signature, then garbage',
          file: Buffer.concat([png.subarray(0, 8), randomBytes(600)]),
          status: 400,
          message: /could not be read/,
        },
        {
          name: 'truncated JPEG',
          file: jpeg.subarray(0, jpeg.length / 2),
          status: 400,
          message: /could not be read/,
        },
        { name: 'empty file', file: Buffer.alloc(0), status: 400, message: /Choose an image/ },
        {
          name: 'caption too long',
          file: png,
          options: { caption: 'é'.repeat(41) },
          status: 413,
          message: /at most 40 characters long; this one has 41/,
        },
        {
          name: 'caption far too long (cut by the parser)',
          file: png,
          options: { caption: 'x'.repeat(5_000) },
          status: 413,
          message: /at most 40 characters/,
        },
        {
          name: 'caption not UTF-8 (stored as U+FFFD before)',
          options: { parts: [file(png), { name: 'caption', value: Buffer.from([0x63, 0xff, 0xfe, 0x21]) }] },
          status: 400,
          message: /not valid UTF-8/,
        },
        {
          name: 'bad message id',
          file: png,
          options: { clientMsgId: 'nope' },
          status: 400,
          message: /damaged/,
        },
        {
          name: 'no file part',
          options: { parts: [{ name: 'caption', value: 'hi' }] },
          status: 400,
          message: /Choose an image/,
        },
        {
          name: 'two files',
          options: { parts: [file(png), file(png)] },
          status: 400,
          message: /one image at a time/,
        },
        {
          name: 'caption given twice',
          options: {
            parts: [file(png), { name: 'caption', value: 'a' }, { name: 'caption', value: 'b' }],
          },
          status: 400,
          message: /more than one “caption”/,
        },
        {
          name: 'file in another field',
          options: { parts: [file(png, 'image')] },
          status: 400,
          message: /named “file”/,
        },
      ];
    for (const item of cases) {
      const before = await snapshot(app);
      for (const htmx of [false, true]) {
        const response = await upload(host, code, item.file ?? Buffer.alloc(0), { ...item.options, htmx });
        assert.equal(response.statusCode, item.status, `${item.name}: ${response.body}`);
        assert.match(response.body, item.message, item.name);
        if (htmx) {
          assert.equal(response.headers['hx-retarget'], '#notice', item.name);
          assert.match(response.body, /^<div class="notice notice-error"/, item.name);
        } else {
          assert.match(response.body, /^<!doctype html>/, item.name);
        }
      }
      assert.deepEqual(await snapshot(app), before, `${item.name} stored something`);
    }
    // Each refusal is on the audit record, with the sender's IP and the reason.
    const refusals = await app.resources.db.any(sql.type(
      z.object({ reason: z.string(), ip: z.string().nullable() }),
    )`
      SELECT detail->>'reason' AS reason, host(ip) AS ip FROM audit_events
      WHERE action = 'attachment.refused' AND room_code = ${code}`);
    assert.equal(refusals.length, cases.length * 2);
    assert.deepEqual([...new Set(refusals.map((row) => row.reason))].sort(), [
      'invalid',
      'too_large',
      'unsupported',
    ]);
    assert.deepEqual([...new Set(refusals.map((row) => row.ip))], ['192.0.2.10']); // the host's address (openRoom)
  });

  it('refuses decompression bombs: small files that decode to too many pixels', async () => {
    const { code, host } = await openRoom(app.chat);
    const flat = (width: number, height: number, grey = 128) =>
      sharp({ create: { width, height, channels: 3, background: { r: grey, g: grey, b: grey } } });
    const bigPng = await flat(6500, 6500).png().toBuffer();
    // distinct frames: identical ones would be merged by the encoder
    const frames = await Promise.all(
      Array.from({ length: 11 }, (_, index) =>
        flat(2000, 2000, index * 20)
          .png({ compressionLevel: 1 })
          .toBuffer(),
      ),
    );
    const longGif = await sharp(frames, { join: { animated: true } })
      .gif({ effort: 1, colours: 2, dither: 0 })
      .toBuffer();
    assert.equal((await sharp(longGif).metadata()).pages, 11);
    for (const [name, data, size] of [
      ['42 MP PNG', bigPng, '6500×6500'],
      ['11 frames of 4 MP', longGif, '2000×2000 × 11 frames'],
    ] as const) {
      assert.ok(data.length < 2 * 1024 * 1024, `${name} is a small file (${data.length} bytes)`);
      const before = await snapshot(app);
      const started = Date.now();
      const response = await upload(host, code, data);
      assert.equal(response.statusCode, 413, name);
      assert.ok(response.body.includes(`too many pixels (${size}); at most 40 megapixels`), response.body);
      assert.ok(Date.now() - started < 5_000, `${name} refused quickly`);
      assert.deepEqual(await snapshot(app), before);
    }
  });

  it('refuses bodies that are not multipart uploads with clear 415s', async () => {
    const { code, host } = await openRoom(app.chat);
    const url = `/rooms/${code}/attachments`;
    const form = await host.post(url, { caption: 'no file here' });
    assert.equal(form.statusCode, 415);
    assert.match(form.body, /multipart\/form-data upload/);
    const json = await host.request({
      method: 'POST',
      url,
      payload: JSON.stringify({ file: 'x' }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(json.statusCode, 415);
    const broken = await host.request({
      method: 'POST',
      url,
      payload: '--nope\r\nthis is not multipart\r\n',
      headers: { 'content-type': 'multipart/form-data; boundary=other' },
    });
    assert.equal(broken.statusCode, 400);
    assert.match(broken.body, /malformed or cut short/);
    // multipart goes to the upload route only
    const elsewhere = multipart([{ name: 'body', value: 'hi' }]);
    const message = await host.request({
      method: 'POST',
      url: `/rooms/${code}/messages`,
      payload: elsewhere.payload,
      headers: { 'content-type': elsewhere.contentType },
    });
    assert.equal(message.statusCode, 415);
  });

  it('refuses a file over MAX_UPLOAD_MB with 413, by a byte', async () => {
    const { code, host } = await openRoom(app.chat);
    const before = await snapshot(app);
    const response = await upload(host, code, randomBytes(2 * 1024 * 1024 + 1));
    assert.equal(response.statusCode, 413);
    assert.match(response.body, /An image can be at most 2 MB/);
    assert.deepEqual(await snapshot(app), before);
    // exactly at the limit the size is fine (and the bytes are judged instead)
    const atLimit = await upload(host, code, randomBytes(2 * 1024 * 1024));
    assert.equal(atLimit.statusCode, 415);
  });

  it('shows the uploaded image in the admin transcript, served by the admin routes', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    await upload(host, code, await images.jpeg(), { caption: 'for the record' });
    const row = await onlyAttachment(app, code);
    const roomId = await roomIdOf(app, code);
    const page = await app.admin.inject({ url: `/rooms/${roomId}`, ...ADMIN });
    assert.equal(page.statusCode, 200);
    assert.ok(page.body.includes(`<img src="/rooms/${roomId}/attachments/${row.id}/thumb"`));
    assert.match(page.body, /for the record/);
    for (const suffix of ['', '/thumb']) {
      const admin = await app.admin.inject({
        url: `/rooms/${roomId}/attachments/${row.id}${suffix}`,
        ...ADMIN,
      });
      const chat = await guest.get(`/rooms/${code}/attachments/${row.id}${suffix}`);
      assert.equal(admin.statusCode, 200);
      assert.ok(admin.rawPayload.equals(chat.rawPayload), 'the same bytes on both sides');
    }
  });

  it('leaves nothing readable as an image in the bucket', async () => {
    // Every upload of this file is in the bucket by now; add one of each kind to be sure.
    const { code, host } = await openRoom(app.chat);
    for (const data of [
      await images.jpeg(),
      await images.png(),
      await images.webp(),
      await images.animatedGif(),
    ]) {
      assert.equal((await upload(host, code, data)).statusCode, 303);
    }
    const keys = await objectKeys(app);
    assert.ok(keys.length >= 8);
    for (const key of keys) {
      assert.match(key, /^attachments\/[0-9a-f-]{36}\/[0-9a-f-]{36}\.(image|thumb)$/);
      assert.ok(!looksLikeAnImage(await app.resources.store.get(key)), `${key} looks like an image`);
    }
    // and on s3rver's disk, below the API
    const s3 = app.s3 as NonNullable<TestApp['s3']>;
    const files = await filesUnder(path.join(s3.directory, s3.config.bucket));
    const objects = files.filter((entry) => entry.file.includes('attachments'));
    assert.ok(objects.length >= keys.length, 'the scan saw the stored objects');
    for (const { file, data } of objects) assert.ok(!looksLikeAnImage(data), `${file} looks like an image`);
    // the scan does find images, when there are any
    assert.ok(looksLikeAnImage(await images.webp()) && looksLikeAnImage(await images.jpeg()));
  });
});

/**
 * Streams a multipart upload of `fileBytes` to a listening server, as fast as the server reads
 * it, and notes how much had been sent when the answer came.
 */
function streamUpload(
  baseUrl: string,
  code: string,
  client: Client,
  fileBytes: number,
  declareLength: boolean,
): Promise<{
  status: number;
  body: string;
  connection: string | undefined;
  sentAtResponse: number;
  sentInAll: number;
  ms: number;
}> {
  const boundary = 'streamed-upload-boundary';
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n`,
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  async function* body() {
    yield head;
    for (let sent = 0; sent < fileBytes; sent += chunk.length)
      yield chunk.subarray(0, Math.min(chunk.length, fileBytes - sent));
    yield tail;
  }
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const request = httpRequest(new URL(`/rooms/${code}/attachments`, baseUrl), {
      method: 'POST',
      headers: {
        'content-type': `multipart/form-data; boundary=${boundary}`,
        cookie: cookieHeader(client),
        ...(declareLength ? { 'content-length': String(head.length + fileBytes + tail.length) } : {}),
      },
    });
    let answered = false;
    request.on('response', (response) => {
      answered = true;
      const socket = request.socket;
      const sentAtResponse = socket?.bytesWritten ?? Number.POSITIVE_INFINITY;
      const ms = Date.now() - started;
      const chunks: Buffer[] = [];
      response.on('data', (data: Buffer) => chunks.push(data));
      // As curl and browsers do: an answer before the body is sent ends the upload.
      response.on('end', () => request.destroy());
      // Once the exchange is over: the server closed the connection, or took the whole body after all.
      request.on('close', () =>
        resolve({
          status: response.statusCode ?? 0,
          body: Buffer.concat(chunks).toString('utf8'),
          connection: response.headers.connection,
          sentAtResponse,
          sentInAll: socket?.bytesWritten ?? Number.POSITIVE_INFINITY,
          ms,
        }),
      );
    });
    // Writing into a connection the server has closed fails; that is the point, once answered.
    request.on('error', (error) => {
      if (!answered) reject(error);
    });
    Readable.from(body())
      .on('error', () => undefined)
      .pipe(request);
  });
}

describe('images on the disk store', () => {
  let app: TestApp;
  before(async () => {
    app = await buildTestApp({ listen: true, env: { MAX_UPLOAD_MB: '2', UPLOAD_RATE_PER_MINUTE: '10000' } });
  });
  after(() => app.close());

  it('stores sealed objects under DATA_DIR/objects: no image readable on disk, EXIF gone', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    for (const data of [
      await images.jpegWithGps(),
      await images.png(),
      await images.webp(),
      await images.gif(),
    ]) {
      assert.equal((await upload(host, code, data)).statusCode, 303);
    }
    const rows = await attachmentRows(app, code);
    assert.equal(rows.length, 4);
    const exif = await sharp(
      (await guest.get(`/rooms/${code}/attachments/${rows[0]?.id}`)).rawPayload,
    ).metadata();
    assert.equal(exif.exif, undefined);
    const files = (await filesUnder(path.join(app.config.dataDir, 'objects'))).filter((entry) =>
      entry.file.includes(`${path.sep}attachments${path.sep}`),
    );
    assert.equal(files.length, 8, 'an image and a thumbnail per upload, nothing else');
    for (const { file, data } of files) {
      assert.match(path.basename(file), /^[0-9a-f-]{36}\.(image|thumb)$/);
      assert.ok(!looksLikeAnImage(data), `${file} looks like an image`);
      assert.ok(!data.includes(Buffer.from('SecretCam')));
    }
  });

  it('refuses a 50 MB upload at the limit while it streams, without reading it to the end', async () => {
    const { code, host } = await openRoom(app.chat);
    const before = await snapshot(app);
    const fiftyMegabytes = 50 * 1024 * 1024;
    for (const declareLength of [true, false]) {
      const result = await streamUpload(app.chatUrl, code, host, fiftyMegabytes, declareLength);
      const how = declareLength ? 'with Content-Length' : 'chunked';
      assert.equal(result.status, 413, `${how}: ${result.body}`);
      assert.match(result.body, /An image can be at most 2 MB/);
      assert.equal(result.connection, 'close', how);
      // Loopback socket buffers hold a few MB; the server stopped reading long before 50 MB.
      assert.ok(
        result.sentAtResponse < 16 * 1024 * 1024,
        `${how}: ${result.sentAtResponse} bytes were sent before the answer`,
      );
      assert.ok(result.sentInAll < 16 * 1024 * 1024, `${how}: ${result.sentInAll} bytes went out in all`);
      assert.ok(result.ms < 5_000, `${how}: answered in ${result.ms} ms`);
    }
    assert.deepEqual(await snapshot(app), before);
    // the server is fine afterwards
    assert.equal((await upload(host, code, await images.png())).statusCode, 303);
  });

  it('refuses before reading the file: a room not started yet (409), and a pile of slow uploads (503)', async () => {
    /** Starts an upload over TCP (from 127.0.0.1) that sends its headers and then trickles. */
    const slowUpload = (code: string, client: Client) =>
      new Promise<{ socket: Socket; answer: Promise<string> }>((resolve, reject) => {
        const { port } = new URL(app.chatUrl);
        const socket = connect(Number(port), '127.0.0.1', () => {
          const boundary = 'slow-upload';
          socket.write(
            `POST /rooms/${code}/attachments HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: ${cookieHeader(client)}\r\n` +
              `Content-Type: multipart/form-data; boundary=${boundary}\r\nContent-Length: ${1024 * 1024}\r\n\r\n` +
              `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.jpg"\r\n` +
              'Content-Type: image/jpeg\r\n\r\n',
          );
          const answer = new Promise<string>((done) => {
            let text = '';
            socket.on('data', (chunk) => {
              text += chunk;
              if (text.includes('\r\n\r\n')) done(text);
            });
            socket.on('close', () => done(text));
          });
          resolve({ socket, answer });
        });
        socket.on('error', reject);
      });
    const noAnswerWithin = (answer: Promise<string>, ms: number) =>
      Promise.race([
        answer.then(() => false),
        new Promise<boolean>((done) => setTimeout(() => done(true), ms)),
      ]);

    // A room the host has not activated: refused at once, its body never read.
    const host = new Client(app.chat);
    const pendingCode = String((await host.post('/rooms')).headers.location)
      .split('/')
      .pop() as string;
    const early = await slowUpload(pendingCode, host);
    assert.match(await early.answer, /^HTTP\/1\.1 409/);
    early.socket.destroy();

    // Four files trickling in from one address are all it may have on their way at once.
    const { code, host: sender } = await openRoom(app.chat);
    const trickling = [];
    for (let index = 0; index < 4; index++) trickling.push(await slowUpload(code, sender));
    for (const upload of trickling) assert.ok(await noAnswerWithin(upload.answer, 200), 'still reading');
    const fifth = await slowUpload(code, sender);
    const refused = await fifth.answer;
    assert.match(refused, /^HTTP\/1\.1 503/);
    assert.match(refused, /retry-after: 5/i);
    fifth.socket.destroy();
    for (const upload of trickling) upload.socket.destroy();
    // Once they are gone, uploads go through again, from that address too (its count was given back).
    await new Promise((resolve) => setTimeout(resolve, 100));
    const again = await slowUpload(code, sender);
    assert.ok(await noAnswerWithin(again.answer, 200), 'read, not refused');
    again.socket.destroy();
    assert.equal((await upload(sender, code, await images.png())).statusCode, 303);
  });

  it('closes a refused upload in stages: the answer, then FIN, no reset while the client still sends', async () => {
    const { code, host } = await openRoom(app.chat);
    const boundary = 'staged-close-boundary';
    const cookie = cookieHeader(host);
    const outcome = await sendMoreThanIsRead(
      app.chatUrl,
      `POST /rooms/${code}/attachments HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: ${cookie}\r\n` +
        `Content-Type: multipart/form-data; boundary=${boundary}\r\nContent-Length: ${50 * 1024 * 1024}\r\n\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n` +
        'Content-Type: image/jpeg\r\n\r\n',
      // past the 2 MB limit, and more than the server and the loopback's buffers take
      { bodyBytes: 24 * 1024 * 1024, chunked: false },
    );
    assertClosedInStages(outcome, 413);
    assert.match(outcome.answer, /An image can be at most 2 MB/);
  });

  it('leaves no row and no object when the commit fails, and works again after', async () => {
    const { code, host } = await openRoom(app.chat);
    const { db } = app.resources;
    await db.query(sql.unsafe`
      CREATE FUNCTION test_refuse_attachment() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'refused by the test'; END $$`);
    await db.query(sql.unsafe`
      CREATE TRIGGER test_refuse BEFORE INSERT ON attachments FOR EACH ROW EXECUTE FUNCTION test_refuse_attachment()`);
    const before = await snapshot(app);
    try {
      const refused = await upload(host, code, await images.png());
      assert.equal(refused.statusCode, 500);
      // the message row went with the attachments row: both are in one transaction
      assert.deepEqual(await snapshot(app), before);
      const messages = await db.oneFirst(sql.type(z.object({ count: z.number() }))`
        SELECT count(*)::int AS count FROM messages m JOIN rooms r ON r.id = m.room_id WHERE r.code = ${code}`);
      assert.equal(messages, 0);
    } finally {
      await db.query(sql.unsafe`DROP TRIGGER test_refuse ON attachments`);
      await db.query(sql.unsafe`DROP FUNCTION test_refuse_attachment()`);
    }
    assert.equal((await upload(host, code, await images.png())).statusCode, 303);
    assert.equal((await snapshot(app)).objects, before.objects + 2);
  });
});

describe('upload limits', () => {
  it('rate-limits uploads per device, storing nothing once over; text messages are not affected', async () => {
    const app = await buildTestApp({ env: { UPLOAD_RATE_PER_MINUTE: '2' } });
    try {
      const { code, host, guest } = await openRoom(app.chat);
      const png = await images.png(32, 32);
      assert.equal((await upload(host, code, png)).statusCode, 303);
      assert.equal((await upload(host, code, png)).statusCode, 303);
      const before = await snapshot(app);
      const limited = await upload(host, code, png, { htmx: true });
      assert.equal(limited.statusCode, 429);
      assert.match(limited.body, /Too many attempts/);
      assert.ok(Number(limited.headers['retry-after']) > 0);
      assert.deepEqual(await snapshot(app), before);
      // per device: the partner may still send images, and the host text
      assert.equal((await upload(guest, code, png)).statusCode, 303);
      assert.equal((await host.post(`/rooms/${code}/messages`, { body: 'still here' })).statusCode, 303);
    } finally {
      await app.close();
    }
  });

  it('answers 503 and stores nothing while the object store is down; text chat carries on', async () => {
    const app = await buildTestApp({ s3: true });
    try {
      const { code, host, guest } = await openRoom(app.chat);
      assert.equal((await upload(host, code, await images.png())).statusCode, 303);
      const row = await onlyAttachment(app, code);
      const before = await storedCounts(app);
      await app.s3?.stop();
      for (const htmx of [false, true]) {
        const response = await upload(host, code, await images.png(), { htmx });
        assert.equal(response.statusCode, 503);
        assert.match(response.body, /image store is not reachable right now, so the image was not sent/);
        assert.ok(Number(response.headers['retry-after']) > 0);
      }
      assert.deepEqual(await storedCounts(app), before);
      // showing a stored image says the same kind of thing
      const image = await guest.get(`/rooms/${code}/attachments/${row.id}`);
      assert.equal(image.statusCode, 503);
      assert.match(image.body, /image store is not reachable/);
      assert.equal(
        (await host.post(`/rooms/${code}/messages`, { body: 'text still works' })).statusCode,
        303,
      );
      assert.match((await guest.get(`/rooms/${code}`)).body, /text still works/);
      assert.ok(app.logs.some((line) => line.includes('image not stored: object store failed')));
    } finally {
      await app.close();
    }
  });

  it('processes a bounded number of images at once and refuses beyond the queue', async () => {
    const semaphore = new Semaphore(2, 3);
    let running = 0;
    let most = 0;
    const release: (() => void)[] = [];
    const task = () =>
      new Promise<void>((resolve) => {
        running += 1;
        most = Math.max(most, running);
        release.push(() => {
          running -= 1;
          resolve();
        });
      });
    const accepted = Array.from({ length: 5 }, () => semaphore.run(task));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(semaphore.running, 2);
    assert.equal(semaphore.queued, 3);
    await assert.rejects(semaphore.run(task), SemaphoreFullError);
    while (release.length > 0 || running > 0) {
      release.shift()?.();
      await new Promise((resolve) => setImmediate(resolve));
    }
    await Promise.all(accepted);
    assert.equal(most, 2);
    assert.equal(semaphore.running, 0);
  });
});
