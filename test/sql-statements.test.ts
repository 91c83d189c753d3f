import assert from 'node:assert/strict';
import { it } from 'node:test';
import { splitSqlStatements } from '../src/infra/sql-statements.ts';

it('splits SQL at top-level semicolons only', () => {
  const text = `
    -- a comment; with a semicolon
    CREATE TABLE a (x text DEFAULT 'semi;colon', "we;ird" int);
    /* block; comment */
    CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;
    INSERT INTO a VALUES ('it''s; fine', 1)
  `;
  const statements = splitSqlStatements(text);
  assert.equal(statements.length, 3);
  assert.match(statements[0] as string, /DEFAULT 'semi;colon', "we;ird" int\)$/);
  assert.match(statements[1] as string, /\$body\$ SELECT 1; \$body\$ LANGUAGE sql$/);
  assert.equal(statements[2], "INSERT INTO a VALUES ('it''s; fine', 1)");
});
