/** Prints a new random MASTER_KEY (32 bytes, base64): `npm run gen-master-key`. */
import { randomBytes } from 'node:crypto';

process.stdout.write(`${randomBytes(32).toString('base64')}\n`);
