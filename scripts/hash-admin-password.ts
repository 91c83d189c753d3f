/**
 * Prints an ADMIN_PASSWORD_HASH for a password: `npm run hash-admin-password` (asks, or reads a
 * piped stdin) or `npm run hash-admin-password -- 'the password'` (visible in shell history).
 */
import { createInterface } from 'node:readline/promises';
import { Writable } from 'node:stream';
import { hashPassword } from '../src/admin/password.ts';

async function readPassword(): Promise<string> {
  const fromArgv = process.argv[2];
  if (fromArgv !== undefined) return fromArgv;
  if (process.stdin.isTTY) {
    // The terminal's echo goes to a stream that drops it: the password is not shown as typed.
    const silent = new Writable({ write: (_chunk, _encoding, done) => done() });
    const prompt = createInterface({ input: process.stdin, output: silent, terminal: true });
    process.stderr.write('Admin password (not shown): ');
    try {
      return await prompt.question('');
    } finally {
      prompt.close();
      process.stderr.write('\n');
    }
  }
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  // `echo secret | …` adds one newline that is not part of the password.
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}

const password = await readPassword();
if (password === '') {
  process.stderr.write('hash-admin-password: the password is empty\n');
  process.exit(2);
}
process.stdout.write(`${await hashPassword(password)}\n`);
