import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { z } from 'zod';
import { sql } from '../src/infra/db.ts';
import { buildTestApp, type TestApp } from './helpers/app.ts';

describe('views', () => {
  let app: TestApp;
  before(async () => {
    app = await buildTestApp();
  });
  after(() => app.close());

  it('renders the home page with the two ways in', async () => {
    const response = await app.chat.inject({ url: '/' });
    assert.equal(response.statusCode, 200);
    assert.match(response.headers['content-type'] as string, /text\/html; charset=utf-8/);
    assert.match(response.body, /<a [^>]*href="\/host"[^>]*>Host chat<\/a>/);
    assert.match(response.body, /<a [^>]*href="\/join"[^>]*>Join chat<\/a>/);
    assert.match(response.body, /src="\/static\/js\/vendor\/htmx\.min\.js"/);
    assert.match(response.body, /src="\/static\/js\/vendor\/hx-ws\.js"/);
  });

  it('serves htmx, its ws extension and the stylesheet from our own origin', async () => {
    for (const url of [
      '/static/js/vendor/htmx.min.js',
      '/static/js/vendor/hx-ws.js',
      '/static/css/app.css',
    ]) {
      const response = await app.chat.inject({ url });
      assert.equal(response.statusCode, 200, url);
      assert.ok(response.body.length > 1000, url);
    }
  });

  it('escapes data by default', () => {
    const html = app.services.views.render('partials/notice', {
      title: '<script>alert(1)</script>',
      message: `"'& <img src=x onerror=alert(1)> hx-get="/x"`,
    });
    assert.ok(!html.includes('<script>'));
    assert.ok(!html.includes('<img'));
    assert.match(html, /&lt;script&gt;alert\(1\)&lt;\/script&gt;/);
    assert.match(html, /&quot;&#39;&amp; &lt;img src=x onerror=alert\(1\)&gt; hx-get=&quot;\/x&quot;/);
  });

  it('merges include and layout data with Object.assign, not spread (a slow path on Node 20)', () => {
    const code = app.services.views.compileToString(
      "<% layout('/layout', { title: 'x' }) %><%~ include('/partials/typing', { typing: false }) %>",
      { async: false },
    );
    assert.doesNotMatch(code, /\{\.\.\.it/);
    assert.match(code, /Object\.assign\(\{\}, it, __eta_d\)/);
    assert.match(code, /Object\.assign\(\{\}, it, \{ body: __eta\.res \}, __eta\.layoutData/);
    // Same data as spreading: the include's own data wins, the parent's fills in, nothing leaks back.
    app.services.views.loadTemplate('@child', '<%= it.a %> <%= it.b %>');
    const parent = { a: 1, b: 2 };
    const html = app.services.views.renderString("<%~ include('@child', { b: 3 }) %>|<%= it.b %>", parent);
    assert.equal(html, '1 3|2');
  });

  it('answers a page for a normal request and a fragment for htmx, from the same URL', async () => {
    const page = await app.chat.inject({ url: '/no-such-page' });
    assert.equal(page.statusCode, 404);
    assert.match(page.body, /^<!doctype html>/);
    const fragment = await app.chat.inject({ url: '/no-such-page', headers: { 'hx-request': 'true' } });
    assert.equal(fragment.statusCode, 404);
    assert.doesNotMatch(fragment.body, /<html/);
    assert.match(fragment.body, /There is nothing at this address/);
    assert.equal(fragment.headers['hx-retarget'], '#notice');
    assert.match(String(page.headers.vary), /HX-Request/);
  });

  it('remembers the theme in a cookie and renders it on <html>', async () => {
    const response = await app.chat.inject({
      method: 'POST',
      url: '/theme',
      payload: 'theme=dark&return_to=%2Fjoin',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    assert.equal(response.statusCode, 303);
    assert.equal(response.headers.location, '/join');
    const cookie = response.cookies.find((c) => c.name === 'theme');
    assert.equal(cookie?.value, 'dark');
    const page = await app.chat.inject({ url: '/', cookies: { theme: 'dark' } });
    assert.match(page.body, /<html lang="en" data-theme="dark">/);
    const bogus = await app.chat.inject({ url: '/', cookies: { theme: '"><script>' } });
    assert.match(bogus.body, /<html lang="en" data-theme="system">/);
  });

  it('answers a scripted theme change with 204 (the page applied it), and puts a switch on every page', async () => {
    const scripted = await app.chat.inject({
      method: 'POST',
      url: '/theme',
      payload: 'theme=light&return_to=%2F',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'hx-request': 'true' },
    });
    assert.equal(scripted.statusCode, 204);
    assert.equal(scripted.cookies.find((c) => c.name === 'theme')?.value, 'light');
    for (const url of ['/', '/host', '/join', '/join?code=ABCD', '/no-such-page']) {
      const page = await app.chat.inject({ url, cookies: { theme: 'light' } });
      assert.match(page.body, /<form class="theme-switch[^"]*" method="post" action="\/theme"/, url);
      assert.match(page.body, /<button type="submit" name="theme" value="light" aria-pressed="true"/, url);
      // Back to the page itself (the join form also when its code names no room: 404); an error
      // page (which must not echo its URL) goes back home.
      const back = /name="return_to" value="([^"]*)"/.exec(page.body)?.[1];
      assert.equal(back, url === '/no-such-page' ? '/' : url, url);
    }
  });

  it('lets the read-only admin panel switch the theme with a GET form, unaudited', async () => {
    const dashboard = await app.admin.inject({ url: '/', remoteAddress: '127.0.0.1' });
    assert.match(dashboard.body, /<form class="theme-switch[^"]*" method="get" action="\/theme"/);
    const switched = await app.admin.inject({
      url: '/theme?theme=dark&return_to=%2Faudit',
      remoteAddress: '127.0.0.1',
    });
    assert.equal(switched.statusCode, 303);
    assert.equal(switched.headers.location, '/audit');
    assert.equal(switched.cookies.find((c) => c.name === 'theme')?.value, 'dark');
    const scripted = await app.admin.inject({
      url: '/theme?theme=system',
      remoteAddress: '127.0.0.1',
      headers: { 'hx-request': 'true' },
    });
    assert.equal(scripted.statusCode, 204);
    const posted = await app.admin.inject({ method: 'POST', url: '/theme', remoteAddress: '127.0.0.1' });
    assert.equal(posted.statusCode, 405, 'still read-only');
    const themeViews = await app.resources.db.oneFirst(sql.type(z.object({ count: z.number() }))`
      SELECT count(*)::int AS count FROM audit_events WHERE detail->>'path' = '/theme'`);
    assert.equal(themeViews, 0, 'a theme preference is not a view of anything');
  });

  it('refuses a theme that is not offered, and an off-site return path', async () => {
    const bad = await app.chat.inject({
      method: 'POST',
      url: '/theme',
      payload: 'theme=neon',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    assert.equal(bad.statusCode, 400);
    const offsite = await app.chat.inject({
      method: 'POST',
      url: '/theme',
      payload: 'theme=light&return_to=%2F%2Fevil.example',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    assert.equal(offsite.headers.location, '/');
  });

  it('sends the security headers', async () => {
    const response = await app.chat.inject({ url: '/' });
    const csp = String(response.headers['content-security-policy']);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.doesNotMatch(csp, /unsafe-eval|unsafe-inline/);
    assert.equal(response.headers['referrer-policy'], 'no-referrer');
    assert.equal(response.headers['x-content-type-options'], 'nosniff');
  });
});
