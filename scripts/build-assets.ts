/**
 * Builds what the browser loads: copies htmx 4 and its extensions from node_modules into
 * public/js/vendor (served by us, never from a CDN) and compiles Tailwind into public/css/app.css.
 */
import { spawnSync } from 'node:child_process';
import { copyFile, mkdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { projectPath } from '../src/paths.ts';

const require = createRequire(import.meta.url);
const htmxDist = path.dirname(require.resolve('htmx.org/dist/htmx.min.js'));
const vendor = projectPath('public', 'js', 'vendor');
await mkdir(vendor, { recursive: true });
for (const [from, to] of [
  ['htmx.min.js', 'htmx.min.js'],
  ['ext/hx-ws.js', 'hx-ws.js'],
  ['ext/hx-upsert.js', 'hx-upsert.js'],
]) {
  await copyFile(path.join(htmxDist, from as string), path.join(vendor, to as string));
}

const tailwind = spawnSync(
  process.execPath,
  [
    path.join(path.dirname(require.resolve('@tailwindcss/cli/package.json')), 'dist', 'index.mjs'),
    '--input',
    projectPath('src', 'web', 'styles.css'),
    '--output',
    projectPath('public', 'css', 'app.css'),
    '--minify',
  ],
  { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' },
);
if (tailwind.status !== 0) {
  process.stderr.write(tailwind.stderr);
  process.exit(tailwind.status ?? 1);
}
process.stdout.write('assets built: public/js/vendor, public/css/app.css\n');
