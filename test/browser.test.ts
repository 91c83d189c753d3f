/**
 * The interface in a real browser: Debian's Chromium driven by playwright-core, against a real
 * listening server (embedded PostgreSQL, real WebSockets). Two contexts are two devices.
 */
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import type { Browser, FrameLocator, Page, WebSocketRoute } from 'playwright-core';
import { z } from 'zod';
import { sql } from '../src/infra/db.ts';
import { projectPath } from '../src/paths.ts';
import { buildTestApp, type TestApp } from './helpers/app.ts';
import {
  DESKTOP,
  eventually,
  hostRoom,
  joinRoom,
  launchChromium,
  openDevice,
  PHONE,
  seriousViolations,
} from './helpers/browser.ts';
import { Client, openRoom } from './helpers/client.ts';
import { insertImage, insertMessage, roomIdOf } from './helpers/messages.ts';

/**
 * Screenshots go to test-results/ on every run; `UPDATE_SCREENSHOTS=1 npm test` refreshes the
 * ones in docs/screenshots that the README and docs/interface.md show (they change with every run:
 * random codes, names and times).
 */
const SCREENSHOTS = process.env.UPDATE_SCREENSHOTS
  ? projectPath('docs', 'screenshots')
  : projectPath('test-results', 'screenshots');
const DARK_BG = 'rgb(2, 6, 23)';
const LIGHT_BG = 'rgb(248, 250, 252)';

/** The text of the first match, white space collapsed. */
const textOf = async (page: Page | FrameLocator, selector: string) =>
  ((await page.locator(selector).first().textContent()) ?? '').replace(/\s+/g, ' ').trim();

/** Waits until the page's header shows its partner (by name, if given) online. */
const seesPartnerOnline = (page: Page, what: string, name = '') =>
  eventually(
    () => textOf(page, '#partner-status'),
    (text) => text.includes(name) && text.includes('online'),
    what,
  );

/** The ids of the messages in the live list, in page order. */
const messageIds = (page: Page) =>
  page.locator('#messages li').evaluateAll((items) => items.map((item) => item.id));

const texts = (page: Page, selector: string) =>
  page.locator(selector).evaluateAll((nodes) => nodes.map((node) => node.textContent?.trim() ?? ''));

/** Sends through the composer as a person would: type, then Enter. */
async function typeAndSend(page: Page, text: string) {
  const box = page.locator('#composer-body');
  await box.click();
  const lines = text.split('\n');
  for (const [index, line] of lines.entries()) {
    if (index > 0) await page.keyboard.press('Shift+Enter');
    await page.keyboard.type(line);
  }
  await page.keyboard.press('Enter');
}

/**
 * Makes the page believe its tab is hidden (or visible again), as a tab switch does. (A string:
 * tsx would wrap a function's inner getters in a helper that does not exist in the page.)
 */
function setHidden(page: Page, hidden: boolean) {
  return page.evaluate(`
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => ${hidden} });
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => '${hidden ? 'hidden' : 'visible'}' });
    document.dispatchEvent(new Event('visibilitychange'));
  `);
}

describe('in Chromium', () => {
  let app: TestApp;
  let browser: Browser;
  before(async () => {
    browser = await launchChromium();
    app = await buildTestApp({ listen: true, hub: { typingTimeoutMs: 1_500 } });
    await mkdir(SCREENSHOTS, { recursive: true });
  });
  after(async () => {
    await browser?.close();
    await app?.close();
  });

  it('host and guest chat live both ways, with presence, typing and announcements', async () => {
    const host = await openDevice(browser);
    const guest = await openDevice(browser, { viewport: DESKTOP });
    const { code, name: hostName } = await hostRoom(host.page, app.chatUrl);
    assert.match(await textOf(host.page, '#partner-status'), /Waiting for someone to join/);
    assert.match(await textOf(host.page, '#room-empty'), /Nobody has joined yet\. Share the code/);
    // The notice: stored encrypted, readable by the operator, IPs logged, when it closes.
    const notice = await textOf(host.page, '.privacy-notice');
    assert.match(notice, /stored encrypted/);
    assert.match(notice, /operator .* can decrypt and read them for audit/);
    assert.match(notice, /IP addresses are logged/);
    assert.match(notice, /This chat closes/);

    const { name: guestName } = await joinRoom(guest.page, app.chatUrl, code);
    assert.match(await textOf(guest.page, '.privacy-notice'), /operator .* can decrypt/);
    // The host's page opened before anyone joined: it learns the guest's name and presence live.
    await seesPartnerOnline(host.page, 'host sees the guest online', guestName);
    assert.equal(
      await textOf(host.page, '#room-empty'),
      'No messages yet. Say hello!',
      'no longer asks to share',
    );
    // Said to a screen reader too, and the conversation is named after the partner.
    const announced = await texts(host.page, '#announcer p');
    assert.ok(
      announced.includes(`${guestName} is online`) || announced.includes(`${guestName} joined`),
      'the join is announced',
    );
    assert.equal(
      await host.page.locator('#main').getAttribute('aria-label'),
      `Conversation with ${guestName}`,
    );
    await seesPartnerOnline(guest.page, 'guest sees the host online', hostName);

    // Typing shows on the other side, then the message arrives without a reload.
    await guest.page.locator('#composer-body').click();
    await guest.page.keyboard.type('Hello from the guest');
    await eventually(
      () => textOf(host.page, '#typing'),
      (text) => text === `${guestName} is typing…`,
      'typing indicator',
    );
    await guest.page.keyboard.press('Enter');
    await host.page.locator('#messages li.message-theirs', { hasText: 'Hello from the guest' }).waitFor();
    await guest.page.locator('#messages li.message-mine', { hasText: 'Hello from the guest' }).waitFor();
    assert.equal(await guest.page.locator('#composer-body').inputValue(), '', 'the composer empties');
    await eventually(
      () => textOf(host.page, '#typing'),
      (text) => text === '',
      'typing clears',
    );
    // …and stays clear: no late "is typing" signal follows a message that has left.
    for (let poll = 0; poll < 12; poll++) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      assert.equal(await textOf(host.page, '#typing'), '', 'no "is typing…" after the message');
    }

    // Shift+Enter adds a line; Enter sends both lines as one message.
    await typeAndSend(host.page, 'Hi guest!\nSecond line');
    const received = guest.page.locator('#messages li.message-theirs', { hasText: 'Second line' });
    await received.waitFor();
    assert.equal(await received.locator('.message-text').textContent(), 'Hi guest!\nSecond line');
    // Right-to-left text (Arabic, Hebrew) sets its own direction, in a message and in the box.
    assert.equal(await received.locator('.message-text').getAttribute('dir'), 'auto');
    assert.equal(await guest.page.locator('#composer-body').getAttribute('dir'), 'auto');

    // Each message is in each list once (the send's answer and the socket both bring one's own).
    await new Promise((resolve) => setTimeout(resolve, 300));
    for (const page of [host.page, guest.page]) {
      assert.deepEqual(await messageIds(page), ['msg-1', 'msg-2']);
    }
    // Screen readers hear the partner's messages, each once, and not their own.
    assert.deepEqual(
      (await texts(host.page, '#announcer p')).filter((line) => line.includes(':')),
      [`${guestName}: Hello from the guest`],
    );
    assert.deepEqual(await texts(guest.page, '#announcer p'), [`${hostName}: Hi guest!\nSecond line`]);
    assert.equal(
      await host.page.locator('#messages').evaluate((list) => list.parentElement?.getAttribute('role')),
      'log',
    );

    // The first message carries the day separator; the second (same day) does not. Neither came
    // with one (a send's answer and a push carry none): the page's script puts it where the
    // reader's day begins.
    assert.equal(await guest.page.locator('#msg-1 .day-divider').isVisible(), true);
    assert.equal(await textOf(guest.page, '#msg-1 .day-divider'), 'Today');
    assert.match(
      (await guest.page.locator('#msg-1 .day-divider time').getAttribute('datetime')) ?? '',
      /^\d{4}-\d\d-\d\d$/,
    );
    assert.equal(await guest.page.locator('#msg-2 .day-divider').isVisible(), false);

    // Mine on the right, theirs on the left.
    const mine = await guest.page.locator('#msg-1 .bubble').boundingBox();
    const theirs = await guest.page.locator('#msg-2 .bubble').boundingBox();
    assert.ok(mine && theirs && mine.x > theirs.x + 200, 'mine right, theirs left');

    // The composer stays at the bottom of the viewport, the header at the top.
    const composer = await host.page.locator('#composer-area').boundingBox();
    assert.ok(composer && Math.abs(composer.y + composer.height - PHONE.height) <= 1, 'composer at bottom');

    // No CSP violation or script error anywhere in the flow.
    assert.deepEqual([...host.errors, ...guest.errors], []);

    // Screenshots of the room, phone and desktop, light and dark (the theme switch in the header).
    await typeAndSend(guest.page, 'Shall we meet at the station at 6?');
    await host.page.locator('#msg-3').waitFor();
    await typeAndSend(host.page, 'Yes, see you there.');
    await guest.page.locator('#msg-4').waitFor();
    for (const theme of ['light', 'dark'] as const) {
      for (const [device, size] of [
        [host, PHONE],
        [guest, DESKTOP],
      ] as const) {
        await device.page.getByRole('button', { name: theme === 'light' ? 'Light' : 'Dark' }).click();
        await eventually(
          () => device.page.evaluate(() => document.documentElement.dataset.theme),
          (value) => value === theme,
          'theme applied',
        );
        await device.page.locator('#composer-body').blur();
        await device.page.screenshot({ path: `${SCREENSHOTS}/room-${size.width}-${theme}.png` });
      }
    }
    await host.context.close();
    await guest.context.close();
  });

  it('keeps the theme across a reload, rendered by the server before any script runs', async () => {
    const { page, context, errors } = await openDevice(browser);
    await page.goto(`${app.chatUrl}/join`);
    await page.evaluate(() => {
      (window as unknown as { marker: number }).marker = 1;
    });
    await page.getByRole('button', { name: 'Dark' }).click();
    // Applied at once, without a page load (the marker survives), and remembered by the server.
    await eventually(
      () => page.evaluate(() => document.documentElement.dataset.theme),
      (theme) => theme === 'dark',
      'dark applied',
    );
    assert.equal(await page.evaluate(() => (window as unknown as { marker?: number }).marker), 1);
    assert.equal(await page.getByRole('button', { name: 'Dark' }).getAttribute('aria-pressed'), 'true');
    await eventually(
      async () => (await context.cookies()).find((cookie) => cookie.name === 'theme')?.value,
      (value) => value === 'dark',
      'theme cookie',
    );

    // Reload with every script blocked: the server's HTML and the stylesheet alone are dark.
    await page.route('**/*.js', (route) => route.abort());
    for (const [theme, background] of [
      ['dark', DARK_BG],
      ['light', LIGHT_BG],
    ] as const) {
      if (theme === 'light') {
        await page.unroute('**/*.js');
        await page.goto(`${app.chatUrl}/join`);
        await page.getByRole('button', { name: 'Light' }).click();
        await eventually(
          async () => (await context.cookies()).find((cookie) => cookie.name === 'theme')?.value,
          (value) => value === 'light',
          'theme cookie',
        );
        await page.route('**/*.js', (route) => route.abort());
      }
      const response = await page.reload();
      assert.ok(response);
      assert.match(await response.text(), new RegExp(`<html lang="en" data-theme="${theme}">`));
      const seen = await page.evaluate(() => ({
        scripts: typeof (window as unknown as { htmx?: unknown }).htmx,
        theme: document.documentElement.dataset.theme,
        background: getComputedStyle(document.body).backgroundColor,
        scheme: getComputedStyle(document.documentElement).colorScheme,
      }));
      assert.deepEqual(seen, { scripts: 'undefined', theme, background, scheme: theme });
    }
    await page.unroute('**/*.js');
    assert.deepEqual(errors, []);
    await context.close();
  });

  it('empties the composer as a message leaves: typing on, sending again, a double tap, a failure', async () => {
    const host = await openDevice(browser);
    const { code } = await hostRoom(host.page, app.chatUrl);
    // The first answer is slow; more is typed and sent before it arrives.
    let delayed = false;
    let dropNext = false;
    await host.page.route(`**/rooms/${code}/messages`, async (route) => {
      if (route.request().method() !== 'POST') return route.continue();
      if (dropNext) {
        dropNext = false;
        return route.abort('connectionreset');
      }
      if (!delayed) {
        delayed = true;
        await new Promise((resolve) => setTimeout(resolve, 800));
      }
      return route.continue();
    });
    const box = host.page.locator('#composer-body');
    await box.click();
    await host.page.keyboard.type('first message');
    await host.page.keyboard.press('Enter');
    assert.equal(await box.inputValue(), '', 'the box empties at once, before the answer');
    await host.page.keyboard.type('second message');
    await host.page.keyboard.press('Enter');
    await host.page.keyboard.type('third, still typing');
    await host.page.locator('#messages li', { hasText: 'second message' }).waitFor();
    await host.page.locator('#messages li', { hasText: 'first message' }).waitFor();
    assert.equal(await box.inputValue(), 'third, still typing', 'an answer never wipes newer text');
    // A double tap on Send sends once: the second tap finds the box empty.
    await host.page.locator('#composer button[type="submit"]').dblclick();
    await host.page.locator('#messages li', { hasText: 'third, still typing' }).waitFor();
    // No answer at all: the text comes back, with its id, and is stored once when sent again.
    dropNext = true;
    await box.fill('fourth, through a dropped connection');
    await box.press('Enter');
    await eventually(
      () => box.inputValue(),
      (value) => value === 'fourth, through a dropped connection',
      'the unsent text is back in the box',
    );
    assert.match(await textOf(host.page, '#notice'), /Not sent/);
    await box.press('Enter');
    await host.page.locator('#messages li', { hasText: 'fourth' }).waitFor();
    // Refused by the server (only spaces): the text is back, and the server's notice says why.
    await box.fill('   ');
    await host.page.locator('#composer button[type="submit"]').click();
    await eventually(
      () => textOf(host.page, '#notice'),
      (text) => text !== '' && !/Not sent/.test(text),
      'the refusal is shown',
    );
    assert.equal(await box.inputValue(), '   ', 'the refused text is back in the box');
    // The notice floats over the header; it can be put away.
    await host.page.getByRole('button', { name: 'Dismiss' }).click();
    assert.equal(await host.page.locator('#notice .notice').count(), 0, 'dismissed');

    const stored = await app.resources.db.anyFirst(sql.type(z.object({ text: z.string() }))`
      SELECT m.seq::text AS text FROM messages m JOIN rooms r ON r.id = m.room_id
      WHERE r.code = ${code} AND r.status = 'active' ORDER BY m.seq`);
    assert.equal(stored.length, 4, 'four messages stored: none twice, none glued to another');
    assert.deepEqual(
      await texts(host.page, '#messages .message-text'),
      ['first message', 'second message', 'third, still typing', 'fourth, through a dropped connection'],
      'in the order they were sent',
    );
    await host.context.close();
  });

  it('shows a third device the not-found page, the same as for a code that does not exist', async () => {
    const { code } = await openRoom(app.chat);
    const { page, context } = await openDevice(browser);
    const response = await page.goto(`${app.chatUrl}/rooms/${code}`);
    assert.equal(response?.status(), 404);
    assert.equal(await textOf(page, 'h1'), 'No open room with that code');
    assert.equal(await page.locator('#composer').count(), 0);
    const unknown = await page.goto(`${app.chatUrl}/rooms/ZZZZ`);
    assert.equal(unknown?.status(), 404);
    assert.equal(await textOf(page, 'h1'), 'No open room with that code');
    await context.close();
  });

  it('works with JavaScript disabled: host, join, send, the refreshing frame, theme, end', async () => {
    const host = await openDevice(browser, { javaScriptEnabled: false });
    const guest = await openDevice(browser, { javaScriptEnabled: false, viewport: DESKTOP });
    const { code, name: hostName } = await hostRoom(host.page, app.chatUrl);
    const { name: guestName } = await joinRoom(guest.page, app.chatUrl, code);

    // The live list is hidden; the conversation frame shows the messages instead.
    assert.equal(await guest.page.locator('#messages').isVisible(), false);
    const guestFrame = guest.page.frameLocator('iframe.conversation-frame');
    await guestFrame.locator('text=No messages yet.').waitFor();

    await guest.page.locator('#composer-body').fill('Sent without JavaScript');
    await guest.page.getByRole('button', { name: 'Send', exact: true }).click();
    await guest.page.waitForURL(new RegExp(`/rooms/${code}#msg-1$`));
    await guestFrame.locator('li.message-mine', { hasText: 'Sent without JavaScript' }).waitFor();

    // The host's frame refreshes itself and shows the partner's message.
    const hostFrame = host.page.frameLocator('iframe.conversation-frame');
    await hostFrame.locator('li.message-theirs', { hasText: 'Sent without JavaScript' }).waitFor({
      timeout: 12_000,
    });
    assert.match(await textOf(hostFrame, 'li.message-theirs .message-sender'), new RegExp(guestName));
    // The header cannot update itself without scripts, so what would go stale there is hidden,
    // and the refreshing frame names the partner who joined after the page loaded.
    assert.equal(await host.page.locator('#partner-status').isVisible(), false);
    assert.equal(await host.page.locator('.time-left-remaining').isVisible(), false);
    assert.match(
      await textOf(hostFrame, '.frame-status'),
      new RegExp(`With ${guestName} \\(away\\) · closes in 23 h`),
    );
    await host.page.locator('#composer-body').fill('Reply, also plain HTML');
    await host.page.getByRole('button', { name: 'Send', exact: true }).click();
    await guestFrame.locator('li.message-theirs', { hasText: 'Reply, also plain HTML' }).waitFor({
      timeout: 12_000,
    });
    assert.match(await textOf(guestFrame, 'li.message-theirs .message-sender'), new RegExp(hostName));

    // The theme switch is a plain form: it posts, and the server sends the page back dark.
    await guest.page.getByRole('button', { name: 'Dark' }).click();
    await guest.page.waitForURL(new RegExp(`/rooms/${code}$`));
    assert.equal(await guest.page.locator('html').getAttribute('data-theme'), 'dark');
    assert.equal(await guest.page.getByRole('button', { name: 'Dark' }).getAttribute('aria-pressed'), 'true');

    // Ending asks first, then closes the room for both.
    await guest.page.getByRole('link', { name: 'End chat' }).click();
    await guest.page.waitForURL(new RegExp(`/rooms/${code}/end$`));
    await guest.page.getByRole('button', { name: 'End chat for both' }).click();
    await guest.page.locator('h1', { hasText: 'This chat has ended' }).waitFor();
    const ended = await host.page.reload();
    assert.equal(ended?.status(), 410);

    assert.deepEqual([...host.errors, ...guest.errors], []);
    await host.context.close();
    await guest.context.close();
  });

  it('counts partner messages in the title while the tab is hidden, and resets when back', async () => {
    const host = await openDevice(browser);
    const guest = await openDevice(browser);
    const { code } = await hostRoom(host.page, app.chatUrl);
    await joinRoom(guest.page, app.chatUrl, code);
    const title = `Room ${code} · ChittyChattyChat`;
    await seesPartnerOnline(host.page, 'sees the partner online');
    // The socket stays open while hidden (htmx-config: ws.pauseOnBackground false).
    assert.equal(
      await host.page.evaluate(
        () =>
          (window as unknown as { htmx: { config: { ws: { pauseOnBackground: boolean } } } }).htmx.config.ws
            .pauseOnBackground,
      ),
      false,
    );

    await setHidden(host.page, true);
    await typeAndSend(guest.page, 'one');
    await typeAndSend(guest.page, 'two');
    await eventually(
      () => host.page.title(),
      (t) => t === `(2) ${title}`,
      'two unseen',
    );
    // The host's own message (sent from the hidden tab) does not count.
    await typeAndSend(host.page, 'mine');
    await guest.page.locator('li.message-theirs', { hasText: 'mine' }).waitFor();
    assert.equal(await host.page.title(), `(2) ${title}`);

    await setHidden(host.page, false);
    await eventually(
      () => host.page.title(),
      (t) => t === title,
      'reset when visible',
    );

    await setHidden(host.page, true);
    await typeAndSend(guest.page, 'three');
    await eventually(
      () => host.page.title(),
      (t) => t === `(1) ${title}`,
      'one unseen',
    );
    await host.page.evaluate(`
      Object.defineProperty(document, 'hidden', { configurable: true, get: () => false });
      window.dispatchEvent(new Event('focus'));
    `);
    await eventually(
      () => host.page.title(),
      (t) => t === title,
      'reset on focus',
    );
    await host.context.close();
    await guest.context.close();
  });

  it('reconnects after a dropped socket and catches up from the last seq on the page', async () => {
    const host = await openDevice(browser);
    const guest = await openDevice(browser);
    // Playwright stands between the host's page and the server, so the test can cut the line.
    const sockets: { url: string; page: WebSocketRoute }[] = [];
    await host.page.routeWebSocket(/\/ws\b/, (page) => {
      page.connectToServer();
      sockets.push({ url: page.url(), page });
    });
    const { code } = await hostRoom(host.page, app.chatUrl);
    await joinRoom(guest.page, app.chatUrl, code);
    await typeAndSend(guest.page, 'before the drop');
    await typeAndSend(guest.page, 'still before');
    await host.page.locator('#msg-2').waitFor();
    assert.equal(sockets.length, 1);
    assert.match(sockets[0]?.url ?? '', /\/ws\?after=0&tab=[0-9a-f-]{36}$/);

    // The header says so while the line is down (recorded: the gap lasts half a second).
    assert.equal(await host.page.locator('#connection-status').isHidden(), true);
    await host.page.evaluate(`(() => {
      const status = document.getElementById('connection-status');
      window.statusSeen = [];
      new MutationObserver(() => window.statusSeen.push(status.hidden ? '' : status.textContent))
        .observe(status, { attributes: true, childList: true, characterData: true, subtree: true });
    })()`);
    // The line drops with 1012 (service restart: htmx reconnects); a message is sent meanwhile.
    await sockets[0]?.page.close({ code: 1012, reason: 'restart' });
    await guest.page.locator('#composer-body').fill('sent while the host was away');
    await guest.page.getByRole('button', { name: 'Send', exact: true }).click();
    await host.page.locator('li.message-theirs', { hasText: 'sent while the host was away' }).waitFor();
    assert.equal(sockets.length, 2, 'one reconnect');
    assert.ok(
      ((await host.page.evaluate('window.statusSeen')) as string[]).includes('Reconnecting…'),
      'said "Reconnecting…" while down',
    );
    await eventually(
      () => host.page.locator('#connection-status').isHidden(),
      (hidden) => hidden,
      'the notice goes once connected again',
    );
    // The new socket asked for what came after the last message on the page, not after 0.
    assert.match(sockets[1]?.url ?? '', /\/ws\?after=2&tab=[0-9a-f-]{36}$/);
    // The same page keeps its id across reconnects (its sends name it).
    assert.equal(
      new URL(sockets[1]?.url ?? '').searchParams.get('tab'),
      new URL(sockets[0]?.url ?? '').searchParams.get('tab'),
    );
    assert.deepEqual(await messageIds(host.page), ['msg-1', 'msg-2', 'msg-3']);

    // The room's hx-swap, "upsert key:data-seq sort", as htmx 4.0.1 parses it: fragments go in by
    // numeric seq whatever order they arrive in, and a seq already shown is replaced, not repeated.
    await host.page.evaluate(`(async () => {
      const room = document.getElementById('room');
      const swap = (seq) => htmx.swap({
        sourceElement: room,
        target: document.getElementById('messages'),
        swap: room.getAttribute('hx-swap'),
        text: '<li id="msg-' + seq + '" data-seq="' + seq + '" class="message message-theirs"><p>' + seq + '</p></li>',
      });
      await swap(10);
      await swap(5);
      await swap(10);
    })()`);
    assert.deepEqual(await messageIds(host.page), ['msg-1', 'msg-2', 'msg-3', 'msg-5', 'msg-10']);
    await host.context.close();
    await guest.context.close();
  });

  it('tells the partner when the chat is ended, in a live region, and keeps their focus on the page', async () => {
    const host = await openDevice(browser);
    const guest = await openDevice(browser);
    const { code } = await hostRoom(host.page, app.chatUrl);
    await joinRoom(guest.page, app.chatUrl, code);
    await seesPartnerOnline(guest.page, 'guest sees the host online');
    await guest.page.locator('#composer-body').click();
    await host.page.getByRole('link', { name: 'End chat' }).click();
    await host.page.getByRole('button', { name: 'End chat for both' }).click();
    await eventually(
      () => textOf(guest.page, '#notice'),
      (text) => text.includes('This chat has ended'),
      'the ending is said in the notice area (a live region already on the page)',
    );
    await eventually(
      () => guest.page.evaluate(() => document.activeElement?.textContent ?? ''),
      (text) => text === 'Start a new one',
      'the focus moves to the way on, not to the top of the page',
    );
    assert.equal(await guest.page.locator('#chat-end').textContent(), '', 'End chat is gone');
    await host.context.close();
    await guest.context.close();
  });

  it('finds out after a dropped line that the chat ended meanwhile, and shows the ended page', async () => {
    const host = await openDevice(browser);
    const guest = await openDevice(browser);
    // The host's first line goes deaf: nothing the server sends, not even its close, reaches the
    // page, as when a phone is out of reach while the partner ends the chat.
    let deaf = false;
    const lines: WebSocketRoute[] = [];
    await host.page.routeWebSocket(/\/ws\b/, (page) => {
      const server = page.connectToServer();
      if (lines.length === 0) {
        server.onMessage((message) => {
          if (!deaf) page.send(message);
        });
        server.onClose(() => {});
      }
      lines.push(page);
    });
    const { code } = await hostRoom(host.page, app.chatUrl);
    await joinRoom(guest.page, app.chatUrl, code);
    await seesPartnerOnline(host.page, 'host sees the guest online');
    deaf = true;
    await guest.page.getByRole('link', { name: 'End chat' }).click();
    await guest.page.getByRole('button', { name: 'End chat for both' }).click();
    await guest.page.locator('h1', { hasText: 'This chat has ended' }).waitFor();
    assert.equal(await textOf(host.page, '#time-left').then((text) => text.startsWith('Closes')), true);
    // The line drops; the page reconnects, is refused, and looks at the room itself.
    await lines[0]?.close({ code: 1012, reason: 'restart' });
    await host.page.locator('h1', { hasText: 'This chat has ended' }).waitFor({ timeout: 10_000 });
    await host.context.close();
    await guest.context.close();
  });

  it('reserves the size of an image preview before it loads', async () => {
    const { code, guest } = await openRoom(app.chat);
    const roomId = await roomIdOf(app, code);
    await insertMessage(app, roomId, { slot: 1, text: 'Look at this' });
    await insertImage(app, roomId, { slot: 1, caption: 'the view' });
    await insertMessage(app, roomId, { slot: 1, text: 'Nice, right?' });
    const { page, context } = await openDevice(browser);
    await context.addCookies([...guest.cookies].map(([name, value]) => ({ name, value, url: app.chatUrl })));
    // The thumbnail never arrives: the layout must not wait for it.
    await page.route('**/attachments/**', () => undefined);
    await page.goto(`${app.chatUrl}/rooms/${code}`);
    const image = page.locator('.message-image img');
    assert.equal(await image.getAttribute('width'), '160');
    assert.equal(await image.getAttribute('height'), '120');
    assert.equal(await image.getAttribute('alt'), 'Image: the view');
    const box = await image.boundingBox();
    assert.ok(box && Math.round(box.width) === 160 && Math.round(box.height) === 120, JSON.stringify(box));
    await context.close();
  });

  it('keeps the page itself still on a short screen (a phone with its keyboard up): only the conversation scrolls', async () => {
    const host = await openDevice(browser, { viewport: { width: 390, height: 520 } });
    const { code } = await hostRoom(host.page, app.chatUrl);
    const roomId = await roomIdOf(app, code);
    for (let index = 0; index < 40; index++)
      await insertMessage(app, roomId, { slot: 1, text: `line ${index}` });
    await host.page.goto(`${app.chatUrl}/rooms/${code}`);
    const sizes = await host.page.evaluate(() => ({
      page: document.documentElement.scrollHeight - document.documentElement.clientHeight,
      conversation: (document.querySelector('.chat-main') as HTMLElement).scrollHeight,
    }));
    assert.equal(sizes.page, 0, 'the page does not scroll');
    assert.ok(sizes.conversation > 520, 'the conversation does');
    await host.context.close();
  });

  it('keeps the partner’s online badge in view at 320 px, wrapping the line instead', async () => {
    const host = await openDevice(browser, { viewport: { width: 320, height: 640 } });
    const guest = await openDevice(browser);
    const { code } = await hostRoom(host.page, app.chatUrl);
    await joinRoom(guest.page, app.chatUrl, code);
    await host.page.locator('#partner-status .presence-online').waitFor();
    // The longest names the generator makes are about this long; a long one shows the point.
    await host.page.evaluate(
      `document.querySelector('#partner-status strong').textContent = 'Extraordinarily Magnificent Hippopotamus'`,
    );
    const box = (await host.page.evaluate(`(() => {
      const line = document.getElementById('partner-status').getBoundingClientRect();
      const badge = document.querySelector('#partner-status .presence').getBoundingClientRect();
      return { lineRight: line.right, badgeLeft: badge.left, badgeRight: badge.right, width: innerWidth };
    })()`)) as { lineRight: number; badgeLeft: number; badgeRight: number; width: number };
    assert.ok(box.badgeRight <= box.lineRight + 0.5 && box.badgeRight <= box.width, JSON.stringify(box));
    assert.ok(box.badgeLeft < box.width, 'the badge is on screen');
    await host.context.close();
    await guest.context.close();
  });

  it('reflows at 320 px (400% zoom) and works with the keyboard alone', async () => {
    const host = await openDevice(browser, { viewport: { width: 320, height: 640 } });
    const { code } = await hostRoom(host.page, app.chatUrl);
    const roomId = await roomIdOf(app, code);
    await insertMessage(app, roomId, { slot: 1, text: 'A rather long message '.repeat(12) });
    const admin = await openDevice(browser, { viewport: { width: 320, height: 640 } });
    for (const [page, url] of [
      [host.page, `${app.chatUrl}/`],
      [host.page, `${app.chatUrl}/join?code=${code}`],
      [host.page, `${app.chatUrl}/host`],
      [host.page, `${app.chatUrl}/rooms/${code}`],
      [host.page, `${app.chatUrl}/rooms/${code}/end`],
      [admin.page, `${app.adminUrl}/`],
      [admin.page, `${app.adminUrl}/rooms/${roomId}`],
      [admin.page, `${app.adminUrl}/audit`],
    ] as const) {
      await page.goto(url);
      const overflow = await page.evaluate(
        () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
      );
      assert.equal(overflow, 0, `no sideways scrolling at 320 px: ${url}`);
    }

    // Keyboard alone: the skip link first, then the header, the conversation, the composer.
    const page = host.page;
    await page.goto(`${app.chatUrl}/rooms/${code}`);
    const order: string[] = [];
    for (let step = 0; step < 10; step++) {
      await page.keyboard.press('Tab');
      order.push(
        await page.evaluate(() => {
          const element = document.activeElement as HTMLElement;
          const outline = getComputedStyle(element).outlineStyle;
          const name = element.getAttribute('aria-label') ?? element.textContent?.trim() ?? '';
          return `${element.id || element.tagName.toLowerCase()}:${name.slice(0, 20)}:${outline}`;
        }),
      );
    }
    assert.deepEqual(
      order.map((entry) => entry.split(':').slice(0, 2).join(':')),
      [
        'a:Skip to content',
        'button:Light',
        'button:Dark',
        'button:System',
        'chat-end:End chat',
        'main:Conversation',
        'composer-body:',
        'button:Send',
        'summary:Send an image',
        'a:Download transcript',
      ],
    );
    for (const entry of order) assert.doesNotMatch(entry, /:none$/, `visible focus: ${entry}`);
    // The image form unfolds from the keyboard too.
    await page.keyboard.press('Shift+Tab');
    await page.keyboard.press('Enter');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'upload-file');
    // Type and send with the keyboard only (back past the image form's toggle to the message box).
    for (let step = 0; step < 3; step++) await page.keyboard.press('Shift+Tab');
    await page.keyboard.type('typed with the keyboard');
    await page.keyboard.press('Enter');
    await page.locator('li.message-mine', { hasText: 'typed with the keyboard' }).waitFor();
    await host.context.close();
    await admin.context.close();
  });

  it('passes axe-core (no serious or critical violations) on every kind of page, in both themes', async () => {
    const { code, host, guest } = await openRoom(app.chat);
    const roomId = await roomIdOf(app, code);
    await insertMessage(app, roomId, { slot: 1, text: 'Hello there' });
    await insertMessage(app, roomId, { slot: 2, text: 'Hi! How are you?' });
    const pendingHost = new Client(app.chat);
    const pendingCode = String((await pendingHost.post('/rooms')).headers.location)
      .split('/')
      .pop();
    const { code: joinable } = await openRoom(app.chat, { guest: false });

    const cookies = (client: { cookies: Map<string, string> }) =>
      [...client.cookies].map(([name, value]) => ({ name, value, url: app.chatUrl }));
    const pages: [string, { cookies: Map<string, string> } | null, string][] = [
      ['home', null, `${app.chatUrl}/`],
      ['join', null, `${app.chatUrl}/join`],
      ['join with names', null, `${app.chatUrl}/join?code=${joinable}`],
      ['pending', pendingHost, `${app.chatUrl}/rooms/${pendingCode}`],
      ['room (host)', host, `${app.chatUrl}/rooms/${code}`],
      ['room (guest)', guest, `${app.chatUrl}/rooms/${code}`],
      ['not found', null, `${app.chatUrl}/rooms/ZZZZ`],
      ['admin rooms', null, `${app.adminUrl}/`],
      ['admin room', null, `${app.adminUrl}/rooms/${roomId}`],
      ['admin audit', null, `${app.adminUrl}/audit`],
    ];
    // The two themes side by side, one device each; bypassCSP only lets the axe script in.
    const failures = await Promise.all(
      (['light', 'dark'] as const).map(async (theme) => {
        const found: string[] = [];
        const context = await browser.newContext({ viewport: DESKTOP, bypassCSP: true });
        const page = await context.newPage();
        for (const [label, client, url] of pages) {
          await context.clearCookies();
          await context.addCookies([
            { name: 'theme', value: theme, url: app.chatUrl },
            ...(client ? cookies(client) : []),
          ]);
          await page.goto(url);
          assert.equal(await page.locator('html').getAttribute('data-theme'), theme, label);
          // Honest about encryption: nothing on any page suggests end-to-end encryption.
          assert.doesNotMatch(String(await page.evaluate('document.body.innerText')), /end-to-end/i, label);
          for (const violation of await seriousViolations(page))
            found.push(`${theme} ${label}: ${violation}`);
        }
        await context.close();
        return found;
      }),
    );
    assert.deepEqual(failures.flat(), []);
  });
});
