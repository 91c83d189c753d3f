import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { projectPath } from '../src/paths.ts';
import { hasRedisServer } from './helpers/servers.ts';

type Json = Record<string, unknown>;
const at = (value: unknown, ...keys: string[]): unknown =>
  keys.reduce<unknown>((current, key) => (current as Json | undefined)?.[key], value);

/** Runs the benchmark in its smoke mode; no timing is asserted, only the shape of its report. */
describe('the benchmark (npm run bench)', {
  skip: !hasRedisServer() && 'redis-server is not installed',
}, () => {
  it('runs every step in smoke mode and writes a JSON report with the expected fields', async () => {
    const out = await mkdtemp(path.join(os.tmpdir(), 'ccc-bench-test-'));
    try {
      const output: string[] = [];
      const code = await new Promise<number | null>((resolve) => {
        const child = spawn(
          process.execPath,
          ['--import', 'tsx', projectPath('scripts', 'bench.ts'), '--smoke', '--out', out],
          {
            cwd: projectPath(),
            stdio: ['ignore', 'pipe', 'pipe'],
          },
        );
        child.stdout.on('data', (chunk: Buffer) => output.push(chunk.toString()));
        child.stderr.on('data', (chunk: Buffer) => output.push(chunk.toString()));
        const timer = setTimeout(() => child.kill('SIGKILL'), 170_000);
        child.on('exit', (exitCode) => {
          clearTimeout(timer);
          resolve(exitCode);
        });
      });
      assert.equal(code, 0, output.join(''));
      const files = (await readdir(out)).filter((name) => name.endsWith('.json'));
      assert.equal(files.length, 1, `one report expected in ${out}`);
      const report = JSON.parse(await readFile(path.join(out, files[0] as string), 'utf8')) as Json;

      for (const key of ['cpuModel', 'cores', 'memoryGiB', 'node', 'postgres']) {
        assert.ok(at(report, 'machine', key) !== undefined, `machine.${key}`);
      }
      for (const target of ['app', 'relay']) {
        for (const key of ['p50Ms', 'p99Ms', 'p999Ms']) {
          assert.equal(
            typeof at(report, 'steps', 'latency', target, 'delivery', key),
            'number',
            `${target} ${key}`,
          );
        }
        assert.ok(
          'eventLoopP99Ms' in (at(report, 'steps', 'latency', target) as Json),
          `${target} event loop`,
        );
        const windows = at(report, 'steps', 'latency', target, 'slowestWindows') as {
          atS: number;
          maxMs: number;
          count: number;
        }[];
        assert.ok(windows.length > 0, `${target} slowest windows`);
        assert.ok(
          windows.every((window) => window.count > 0 && window.maxMs > 0 && window.atS >= 0),
          `${target} slowest windows: ${JSON.stringify(windows)}`,
        );
        assert.ok(
          windows.every((window, index) => index === 0 || (windows[index - 1]?.maxMs ?? 0) >= window.maxMs),
          `${target} slowest first`,
        );
        assert.ok('bestRate' in (at(report, 'steps', 'throughput', target) as Json), `${target} bestRate`);
        assert.ok(Array.isArray(at(report, 'steps', 'throughput', target, 'tried')), `${target} rates tried`);
        assert.equal(
          typeof at(report, 'steps', 'sockets', target, 'openAfterHold'),
          'number',
          `${target} sockets`,
        );
        assert.equal(typeof at(report, 'steps', 'sockets', target, 'rssAfterMB'), 'number', `${target} RSS`);
        assert.equal(
          typeof at(report, 'steps', 'page', target, 'requestsPerSecond'),
          'number',
          `${target} page`,
        );
        assert.equal(
          typeof at(report, 'steps', 'health', target, 'requestsPerSecond'),
          'number',
          `${target} health`,
        );
      }
      // The upload route comes from another branch: until then the step says it is not available.
      const upload = at(report, 'steps', 'upload', 'app') as Json;
      assert.equal(typeof upload.available, 'boolean');
      if (upload.available) assert.equal(typeof upload.uploadsPerSecond, 'number');
      else assert.match(String(upload.reason), /\d{3}/);

      assert.equal(at(report, 'steps', 'page', 'app', 'messagesOnPage'), 50);
      assert.ok(Array.isArray(report.targets) && report.targets.length > 0);
      assert.ok(Array.isArray(report.table) && report.table.length > 0);
      assert.equal(typeof report.ratios, 'object');
      assert.match(output.join(''), /\| figure/);
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });
});
