import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { buildTestApp, type TestApp } from './helpers/app.ts';
import { type Client, openRoom } from './helpers/client.ts';
import { images, storedCounts } from './helpers/uploads.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** A browser page carrying this client's device cookie. */
async function pageFor(
  browser: Browser,
  app: TestApp,
  client: Client,
  options: { javaScriptEnabled?: boolean } = {},
): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext(options);
  await context.addCookies(
    [...client.cookies].map(([name, value]) => ({ name, value, url: app.chatUrl, httpOnly: true })),
  );
  return { context, page: await context.newPage() };
}

/** Pastes a file into the conversation, or drops it there, as the user's browser would. */
async function deliverFile(
  page: Page,
  how: 'paste' | 'drop',
  file: { name: string; type: string; data: Buffer },
) {
  await page.evaluate(
    ({ how, name, type, base64 }) => {
      const bytes = Uint8Array.from(atob(base64), (char) => char.charCodeAt(0));
      const transfer = new DataTransfer();
      transfer.items.add(new File([bytes], name, { type }));
      const target = document.getElementById('messages') as HTMLElement;
      const events =
        how === 'paste'
          ? [new ClipboardEvent('paste', { clipboardData: transfer, bubbles: true, cancelable: true })]
          : ['dragenter', 'dragover', 'drop'].map(
              (kind) => new DragEvent(kind, { dataTransfer: transfer, bubbles: true, cancelable: true }),
            );
      for (const event of events) target.dispatchEvent(event);
    },
    { how, name: file.name, type: file.type, base64: file.data.toString('base64') },
  );
}

async function waitUntil(condition: () => boolean, explain: () => string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(explain());
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const loadedImages = (page: Page, selector: string) =>
  page.$$eval(selector, (found) =>
    found.map((image) => ({
      natural: (image as HTMLImageElement).naturalWidth,
      src: image.getAttribute('src'),
    })),
  );

describe('uploading images in a browser', { skip: !existsSync(CHROMIUM) && 'no Chromium here' }, () => {
  let app: TestApp;
  let browser: Browser;
  before(async () => {
    app = await buildTestApp({ listen: true, env: { MAX_UPLOAD_MB: '2' } });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  });
  after(async () => {
    await browser?.close();
    await app.close();
  });

  it('sends with htmx (progress shown, form emptied), the partner sees it live; drop and paste ask first', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    const hostSide = await pageFor(browser, app, host);
    const guestSide = await pageFor(browser, app, guest);
    const hostPage = hostSide.page;
    const guestPage = guestSide.page;
    // What both pages did, to tell what went wrong if a wait below times out.
    const notes: string[] = [];
    try {
      for (const [who, page] of [
        ['host', hostPage],
        ['guest', guestPage],
      ] as const) {
        page.on('console', (message) => notes.push(`${who} console ${message.type()}: ${message.text()}`));
        page.on('pageerror', (error) => notes.push(`${who} page error: ${error.message}`));
        page.on('requestfailed', (request) =>
          notes.push(`${who} failed: ${request.url()} ${request.failure()?.errorText}`),
        );
        page.on('response', (response) => notes.push(`${who} ${response.status()} ${response.url()}`));
        page.on('dialog', (dialog) => notes.push(`${who} dialog: ${dialog.message()}`));
        page.on('websocket', (socket) => {
          notes.push(`${who} websocket ${socket.url()}`);
          socket.on('close', () => notes.push(`${who} websocket closed`));
        });
      }
      await guestPage.goto(`${app.chatUrl}/rooms/${code}`);
      await hostPage.goto(`${app.chatUrl}/rooms/${code}`);
      // Folded until asked for, so a phone's keyboard leaves the conversation its room.
      assert.equal(await hostPage.isVisible('#upload-caption'), false);
      await hostPage.getByText('Send an image', { exact: true }).click();
      await waitUntil(
        () => app.services.hub.socketCount() === 2,
        () => 'the sockets did not open',
      );

      await hostPage.evaluate(() => {
        const progress = document.getElementById('upload-progress') as HTMLProgressElement;
        const seen: { shown: boolean; values: number[] } = { shown: false, values: [] };
        (window as unknown as { seenProgress: typeof seen }).seenProgress = seen;
        new MutationObserver(() => {
          if (!progress.hidden) seen.shown = true;
          seen.values.push(progress.value);
        }).observe(progress, { attributes: true });
      });
      const firstId = await hostPage.inputValue('#upload-msg-id');
      await hostPage.setInputFiles('#upload-file', {
        name: 'holiday.png',
        mimeType: 'image/png',
        buffer: await images.png(900, 600),
      });
      await hostPage.fill('#upload-caption', 'at the lake');
      await hostPage.click('#upload-form button[type="submit"]');

      await hostPage.waitForSelector('#messages li.message-mine img');
      const theirs = await guestPage.waitForSelector('#messages li.message-theirs img');
      await guestPage.waitForFunction(() => {
        const image = document.querySelector('#messages li.message-theirs img') as HTMLImageElement | null;
        return image?.complete && image.naturalWidth > 0;
      });
      assert.equal(await theirs.getAttribute('alt'), 'Image: at the lake');
      assert.equal(await theirs.getAttribute('width'), '480');
      assert.equal(await theirs.getAttribute('height'), '320');
      const progress = await hostPage.evaluate(
        () => (window as unknown as { seenProgress: { shown: boolean; values: number[] } }).seenProgress,
      );
      assert.ok(progress.shown, 'the progress bar was shown');
      assert.equal(Math.max(...progress.values), 100, 'and reached the end');
      assert.equal(await hostPage.isHidden('#upload-progress'), true, 'then hidden again');
      assert.equal(await hostPage.inputValue('#upload-caption'), '');
      assert.equal(
        await hostPage.$eval('#upload-file', (input) => (input as HTMLInputElement).files?.length),
        0,
      );
      assert.notEqual(await hostPage.inputValue('#upload-msg-id'), firstId, 'a fresh id for the next upload');
      // Sent: the panel folds again, and the focus is on its toggle, not lost to the page.
      await hostPage.waitForFunction(() => document.activeElement?.tagName === 'SUMMARY');
      assert.equal(await hostPage.isVisible('#upload-caption'), false, 'folded after sending');
      await hostPage.getByText('Send an image', { exact: true }).click();
      const mine = await loadedImages(hostPage, '#messages li.message-mine img');
      assert.equal(mine.length, 1);

      // too large: said at once, nothing sent
      const before = await storedCounts(app);
      await hostPage.setInputFiles('#upload-file', {
        name: 'huge.jpg',
        mimeType: 'image/jpeg',
        buffer: Buffer.alloc(2 * 1024 * 1024 + 1),
      });
      await hostPage.click('#upload-form button[type="submit"]');
      await hostPage.waitForSelector('#notice .notice-error');
      assert.match((await hostPage.textContent('#notice')) ?? '', /at most 2 MB; this one is 2\.0 MB/);
      // not an image: the server says so in the notice area
      await hostPage.setInputFiles('#upload-file', {
        name: 'notes.png',
        mimeType: 'image/png',
        buffer: Buffer.from('these are notes, not a picture'),
      });
      await hostPage.click('#upload-form button[type="submit"]');
      await hostPage.waitForFunction(() =>
        document.getElementById('notice')?.textContent?.includes('Only JPEG, PNG, WebP and GIF'),
      );
      assert.deepEqual(await storedCounts(app), before);

      // paste, declined: nothing happens
      let asked = '';
      hostPage.once('dialog', (dialog) => {
        asked = dialog.message();
        void dialog.dismiss();
      });
      await deliverFile(hostPage, 'paste', {
        name: 'image.png',
        type: 'image/png',
        data: await images.png(40, 40),
      });
      await hostPage.waitForTimeout(300);
      assert.match(asked, /^Send this image \(\d+ KB\) to your partner\?$/);
      assert.deepEqual(await storedCounts(app), before);

      // paste, confirmed
      hostPage.once('dialog', (dialog) => void dialog.accept());
      await deliverFile(hostPage, 'paste', {
        name: 'image.png',
        type: 'image/png',
        data: await images.png(40, 40),
      });
      await guestPage.waitForFunction(
        () => document.querySelectorAll('#messages li.message-theirs img').length === 2,
      );

      // dropped on the conversation, confirmed
      hostPage.once('dialog', (dialog) => {
        asked = dialog.message();
        void dialog.accept();
      });
      await deliverFile(hostPage, 'drop', {
        name: 'cat.gif',
        type: 'image/gif',
        data: await images.animatedGif(),
      });
      await guestPage.waitForFunction(
        () => document.querySelectorAll('#messages li.message-theirs img').length === 3,
      );
      assert.match(asked, /^Send “cat\.gif” \(\d+ KB\) to your partner\?$/);
      const delivered = await loadedImages(guestPage, '#messages li.message-theirs img');
      assert.equal(delivered.length, 3);
      assert.equal((await storedCounts(app)).attachments, before.attachments + 2);
    } catch (error) {
      (error as Error).message += `\nstored: ${JSON.stringify(await storedCounts(app))}\n${notes.join('\n')}`;
      throw error;
    } finally {
      await hostSide.context.close();
      await guestSide.context.close();
    }
  });

  it('sends an image pasted while another is still uploading as a message of its own', async () => {
    const { code, host } = await openRoom(app.chat);
    const { context, page } = await pageFor(browser, app, host);
    try {
      let answers = 0;
      await page.route('**/attachments', async (route) => {
        // the first answer is slow, so the second image is pasted before the next id arrives
        const response = await route.fetch();
        if (answers++ === 0) await new Promise((resolve) => setTimeout(resolve, 800));
        await route.fulfill({ response });
      });
      page.on('dialog', (dialog) => void dialog.accept());
      await page.goto(`${app.chatUrl}/rooms/${code}`);
      const before = await storedCounts(app);
      await deliverFile(page, 'paste', {
        name: 'one.png',
        type: 'image/png',
        data: await images.png(40, 40),
      });
      await deliverFile(page, 'paste', {
        name: 'two.png',
        type: 'image/png',
        data: await images.png(50, 50),
      });
      await page.waitForFunction(
        () => document.querySelectorAll('#messages li.message-mine img').length === 2,
      );
      assert.equal((await storedCounts(app)).attachments, before.attachments + 2);
    } finally {
      await context.close();
    }
  });

  it('sent with Enter in the caption, the folded panel hands the focus to its toggle', async () => {
    const { code, host } = await openRoom(app.chat);
    const { context, page } = await pageFor(browser, app, host);
    try {
      await page.goto(`${app.chatUrl}/rooms/${code}`);
      await page.getByText('Send an image', { exact: true }).click();
      await page.setInputFiles('#upload-file', {
        name: 'keys.png',
        mimeType: 'image/png',
        buffer: await images.png(40, 40),
      });
      await page.focus('#upload-caption');
      await page.keyboard.type('by keyboard');
      await page.keyboard.press('Enter');
      await page.waitForSelector('#messages li.message-mine img');
      // The caption field is hidden once the panel folds; the focus must not stay on it (the
      // browser would drop it to the page at its next frame).
      await page.waitForFunction(() => document.activeElement?.tagName === 'SUMMARY');
      assert.equal(await page.isVisible('#upload-caption'), false, 'folded after sending');
    } finally {
      await context.close();
    }
  });

  it('goes live even when the WebSocket extension arrives after htmx (slow network)', async () => {
    const { code, host } = await openRoom(app.chat);
    const { context, page } = await pageFor(browser, app, host);
    try {
      await page.route('**/static/js/vendor/hx-ws.js', async (route) => {
        await new Promise((resolve) => setTimeout(resolve, 400));
        await route.continue();
      });
      const before = app.services.hub.socketCount();
      await page.goto(`${app.chatUrl}/rooms/${code}`);
      await waitUntil(
        () => app.services.hub.socketCount() === before + 1,
        () => 'the page never opened its socket',
        5_000,
      );
    } finally {
      await context.close();
    }
  });

  it('works without JavaScript: the form posts and the room page comes back with the image', async () => {
    const { code, host } = await openRoom(app.chat);
    const { context, page } = await pageFor(browser, app, host, { javaScriptEnabled: false });
    try {
      await page.goto(`${app.chatUrl}/rooms/${code}`);
      await page.getByText('Send an image', { exact: true }).click();
      await page.setInputFiles('#upload-file', {
        name: 'a.jpg',
        mimeType: 'image/jpeg',
        buffer: await images.jpeg(),
      });
      await page.fill('#upload-caption', 'no script needed');
      await Promise.all([page.waitForURL(/#msg-1$/), page.click('#upload-form button[type="submit"]')]);
      // Without scripting the page shows the conversation in its self-refreshing frame.
      const frame = page.frame({ url: /\/rooms\/[A-Z0-9]{4}\/messages/ });
      assert.ok(frame, 'the conversation frame is there');
      const image = await frame.waitForSelector('li.message-mine img');
      assert.equal(await image.getAttribute('alt'), 'Image: no script needed');
      await frame.waitForFunction(() => {
        const found = document.querySelector('li.message-mine img') as HTMLImageElement | null;
        return found?.complete && found.naturalWidth === 480;
      });
    } finally {
      await context.close();
    }
  });
});
