/**
 * The test run: starts one embedded PostgreSQL for the whole run (each test file gets a fresh
 * database cloned from a migrated template), then runs every `test/**\/*.test.ts` file with
 * node's test runner, each in its own process. Redis and the S3 server are started per test
 * file by the helpers, so files never share state.
 *
 *   npm test                      typecheck, lint, then every test
 *   npm run test:only -- FILE...  just these files (no typecheck/lint)
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createDbPool, migrate } from '../src/infra/db.ts';
import { EmbeddedPostgresError, startEmbeddedPostgres } from '../src/infra/embedded-postgres.ts';
import { projectPath } from '../src/paths.ts';

async function findTests(directory: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir(directory, { withFileTypes: true })) {
    const full = path.join(directory, entry.name);
    if (entry.isDirectory()) found.push(...(await findTests(full)));
    else if (entry.name.endsWith('.test.ts')) found.push(full);
  }
  return found.sort();
}

const requested = process.argv.slice(2).filter((arg) => !arg.startsWith('--'));
const files =
  requested.length > 0 ? requested.map((file) => path.resolve(file)) : await findTests(projectPath('test'));
const concurrency = process.env.TEST_CONCURRENCY ?? String(Math.max(2, os.availableParallelism()));

const tempDir = await mkdtemp(path.join(os.tmpdir(), 'ccc-test-pg-'));
// The cluster and, beside it, its password file.
const dataDir = path.join(tempDir, 'pg');
const started = Date.now();
const database = await startEmbeddedPostgres({
  dataDir,
  database: 'ccc_template',
  // Tests need no crash safety; this only speeds up the throwaway cluster.
  settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off', max_connections: '400' },
}).catch(async (error: unknown) => {
  await rm(tempDir, { recursive: true, force: true });
  if (!(error instanceof EmbeddedPostgresError)) throw error;
  process.stderr.write(`test harness: ${error.message}\n`);
  process.exit(1);
});
const template = await createDbPool(database.url, { maxPoolSize: 1 });
await migrate(template, projectPath('migrations'));
await template.end();
process.stdout.write(
  `test harness: PostgreSQL ready in ${Date.now() - started} ms (binaries in ${database.binaries}); ${files.length} test files\n`,
);

let exitCode = 1;
try {
  exitCode = await new Promise<number>((resolve) => {
    const child = spawn(
      process.execPath,
      // --test-force-exit: a failed test that leaves a child process or socket open must fail the
      // file, not hang the run (the helpers kill their child processes on exit).
      [
        '--import',
        'tsx',
        '--test',
        '--test-force-exit',
        `--test-concurrency=${concurrency}`,
        '--test-reporter=spec',
        ...files,
      ],
      {
        stdio: 'inherit',
        env: {
          ...process.env,
          TEST_PG_ADMIN_URL: database.adminUrl,
          TEST_PG_TEMPLATE: 'ccc_template',
        },
      },
    );
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
  });
} finally {
  await database.stop();
  await rm(tempDir, { recursive: true, force: true });
}
process.stdout.write(`test harness: finished in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
process.exit(exitCode);
