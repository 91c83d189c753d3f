import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { type Browser, type BrowserContextOptions, chromium, type Page } from 'playwright-core';

const require = createRequire(import.meta.url);

/** Debian's Chromium (`apt-get install -y chromium`; `.ci/run` installs it). */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/**
 * Starts headless Chromium with a fresh temporary profile. A missing browser is an error, not
 * a skip: the interface is only proven when these tests run.
 */
export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(
      `Chromium is not installed at ${CHROMIUM_PATH}: the browser tests cannot run. ` +
        'Install it with `apt-get install -y chromium` (.ci/run does), or set CHROMIUM_PATH.',
    );
  }
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}

export const PHONE = { width: 390, height: 844 };
export const DESKTOP = { width: 1280, height: 800 };

/**
 * A new browser context (one device), recording script errors and console errors such as CSP
 * violations (not failed loads: the tests check the statuses they expect).
 */
export async function openDevice(browser: Browser, options: BrowserContextOptions = {}) {
  const context = await browser.newContext({ viewport: PHONE, reducedMotion: 'reduce', ...options });
  const errors: string[] = [];
  context.on('console', (message) => {
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      errors.push(message.text());
    }
  });
  context.on('weberror', (error) => errors.push(String(error.error())));
  const page = await context.newPage();
  return { context, page, errors };
}

/** Host: create a room, pick the first offered name, activate. Returns the code and the name. */
export async function hostRoom(page: Page, baseUrl: string): Promise<{ code: string; name: string }> {
  await page.goto(`${baseUrl}/host`);
  await page.getByRole('button', { name: 'Create room' }).click();
  await page.waitForURL(/\/rooms\/[A-Z0-9]{4}$/);
  const code = (await page.locator('.room-code').textContent())?.trim() ?? '';
  const name = (await page.locator('#activate-form input[name="name"]:checked').getAttribute('value')) ?? '';
  await page.getByRole('button', { name: 'Accept & Activate' }).click();
  await page.locator('#composer-body').waitFor();
  return { code, name };
}

/** Guest: enter the code on /join, keep the first offered name, join. */
export async function joinRoom(page: Page, baseUrl: string, code: string): Promise<{ name: string }> {
  await page.goto(`${baseUrl}/join`);
  await page.getByLabel('Room code').fill(code.toLowerCase());
  await page.getByRole('button', { name: 'Continue' }).click();
  const name = (await page.locator('input[name="name"]:checked').getAttribute('value')) ?? '';
  await page.getByRole('button', { name: 'Join chat' }).click();
  await page.locator('#composer-body').waitFor();
  return { name };
}

/** Waits until `read()` returns something `accept` likes; fails with the last value seen. */
export async function eventually<T>(
  read: () => Promise<T>,
  accept: (value: T) => boolean,
  what: string,
  timeoutMs = 5_000,
): Promise<T> {
  const started = Date.now();
  let last: T = await read();
  while (!accept(last)) {
    if (Date.now() - started > timeoutMs)
      throw new Error(`${what}: not reached within ${timeoutMs} ms; last value: ${JSON.stringify(last)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
    last = await read();
  }
  return last;
}

type AxeViolation = { id: string; impact: string | null; help: string; nodes: { target: string[] }[] };

/**
 * Runs axe-core on the page; returns the serious and critical violations, one line each. The
 * context must bypass CSP only so this one test script can be injected.
 */
export async function seriousViolations(page: Page): Promise<string[]> {
  await page.addScriptTag({ path: require.resolve('axe-core/axe.min.js') });
  const violations = await page.evaluate(async () => {
    type Axe = { run(context: Document, options: object): Promise<{ violations: AxeViolation[] }> };
    const { axe } = window as unknown as { axe: Axe };
    // Only violations are of interest: passes and incomplete results are not built in detail.
    const result = await axe.run(document, { resultTypes: ['violations'] });
    return result.violations.map((violation) => ({
      id: violation.id,
      impact: violation.impact,
      help: violation.help,
      nodes: violation.nodes.map((node) => ({ target: node.target })),
    }));
  });
  return violations
    .filter((violation) => violation.impact === 'serious' || violation.impact === 'critical')
    .map(
      (violation) =>
        `${violation.impact} ${violation.id} (${violation.help}): ${violation.nodes
          .slice(0, 5)
          .map((node) => node.target.join(' '))
          .join(', ')}`,
    );
}
