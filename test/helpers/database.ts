import { randomBytes } from 'node:crypto';
import pg from 'pg';

/** The harness (scripts/test.ts) tells test processes where its PostgreSQL is. */
export function harnessDatabase(): { adminUrl: string; template: string } {
  const adminUrl = process.env.TEST_PG_ADMIN_URL;
  const template = process.env.TEST_PG_TEMPLATE;
  if (!adminUrl || !template) {
    throw new Error('run tests through the harness: npm test, or npm run test:only -- test/file.test.ts');
  }
  return { adminUrl, template };
}

export type TestDatabase = { url: string; name: string; drop(): Promise<void> };

/** A fresh database for one test file: a copy of the migrated template, or empty. */
export async function createTestDatabase(options: { migrated?: boolean } = {}): Promise<TestDatabase> {
  const { adminUrl, template } = harnessDatabase();
  const name = `t_${randomBytes(6).toString('hex')}`;
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await client.query(
          options.migrated === false
            ? `CREATE DATABASE ${name}`
            : `CREATE DATABASE ${name} TEMPLATE ${template}`,
        );
        break;
      } catch (error) {
        // Two files cloning the template at the same instant: PostgreSQL asks one to wait.
        if (attempt >= 20 || !/being accessed by other users/.test(String(error))) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100 + Math.random() * 200));
      }
    }
  } finally {
    await client.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    async drop() {
      const dropper = new pg.Client({ connectionString: adminUrl });
      await dropper.connect();
      try {
        await dropper.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await dropper.end();
      }
    },
  };
}
