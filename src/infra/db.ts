import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import {
  createPool,
  createTypeParserPreset,
  type DatabasePool,
  type Interceptor,
  type QueryResultRow,
  SchemaValidationError,
  sql,
} from 'slonik';
import { z } from 'zod';
import { splitSqlStatements } from './sql-statements.ts';

export type { DatabasePool, DatabaseTransactionConnection } from 'slonik';
export { sql };

/**
 * Validates every row of a `sql.type(schema)` query through the schema's Standard Schema
 * interface, as Slonik's documentation recommends. Synchronously (`transformRow`, not the
 * documented `transformRowAsync`): every schema here is synchronous, and a promise per row would
 * only add work to each query.
 */
const resultParserInterceptor: Interceptor = {
  name: 'result-parser',
  transformRow: (context, query, row) => {
    const { resultParser } = context;
    if (!resultParser) return row;
    const result = resultParser['~standard'].validate(row);
    if (result instanceof Promise) throw new TypeError('a sql.type schema must validate synchronously');
    if (result.issues) throw new SchemaValidationError(query, row, result.issues);
    return result.value as QueryResultRow;
  },
};

// int8 (counts, sequence numbers) as plain numbers: every value we store fits in 2^53.
const typeParsers = [
  ...createTypeParserPreset().filter((parser) => parser.name !== 'int8'),
  { name: 'int8', parse: (value: string) => Number.parseInt(value, 10) },
];

export type DbOptions = { maxPoolSize?: number; statementTimeout?: number };

export async function createDbPool(connectionUri: string, options: DbOptions = {}): Promise<DatabasePool> {
  return createPool(connectionUri, {
    interceptors: [resultParserInterceptor],
    typeParsers,
    maxPoolSize: options.maxPoolSize ?? 10,
    statementTimeout: options.statementTimeout ?? 15_000,
    connectionTimeout: 5_000,
    idleTimeout: 30_000,
    // The app sets no session state, so the default per-release `DISCARD ALL` round trip buys
    // nothing (leaving the option unset means that default, so it is a function doing nothing).
    resetConnection: async () => {},
    // A failed statement is reported to the caller, who decides; blind retries could double-apply writes.
    queryRetryLimit: 0,
  });
}

/** A constant key for `pg_advisory_lock`, so that concurrent starts migrate one at a time. */
const MIGRATION_LOCK_KEY = 0x43434301;

export type MigrationResult = { applied: string[]; alreadyApplied: string[] };

/**
 * Applies `NNN_name.sql` files from `dir` in order, each in its own transaction, and records
 * them in `schema_migrations`. Safe to run twice and from two processes at once.
 */
export async function migrate(pool: DatabasePool, dir: string): Promise<MigrationResult> {
  const files = (await readdir(dir)).filter((name) => /^\d{3}_[a-z0-9_]+\.sql$/.test(name)).sort();
  return pool.connect(async (connection) => {
    await connection.query(sql.unsafe`SELECT pg_advisory_lock(${MIGRATION_LOCK_KEY})`);
    try {
      await connection.query(sql.unsafe`
        CREATE TABLE IF NOT EXISTS schema_migrations (
          name text PRIMARY KEY,
          applied_at timestamptz NOT NULL DEFAULT now()
        )`);
      const done = new Set(
        await connection.anyFirst(
          sql.type(z.object({ name: z.string() }))`SELECT name FROM schema_migrations`,
        ),
      );
      const result: MigrationResult = { applied: [], alreadyApplied: [] };
      for (const file of files) {
        if (done.has(file)) {
          result.alreadyApplied.push(file);
          continue;
        }
        const text = await readFile(path.join(dir, file), 'utf8');
        await connection.transaction(async (tx) => {
          for (const statement of splitSqlStatements(text))
            await tx.query(sql.unsafe(trustedSqlText(statement)));
          await tx.query(sql.unsafe`INSERT INTO schema_migrations (name) VALUES (${file})`);
        });
        result.applied.push(file);
      }
      return result;
    } finally {
      await connection.query(sql.unsafe`SELECT pg_advisory_unlock(${MIGRATION_LOCK_KEY})`);
    }
  });
}

/**
 * Wraps one statement of a migration file as a template-literal strings array for `sql.unsafe`. Only for
 * migration files: trusted, versioned SQL from this repository, never input.
 */
function trustedSqlText(text: string): TemplateStringsArray {
  return Object.freeze(
    Object.assign([text], { raw: Object.freeze([text]) }),
  ) as unknown as TemplateStringsArray;
}

/** A cheap liveness probe for /health. */
export async function pingDb(pool: DatabasePool): Promise<void> {
  await pool.oneFirst(sql.type(z.object({ ok: z.number() }))`SELECT 1 AS ok`);
}
