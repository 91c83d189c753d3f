import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { MASTER_KEY_HINT } from '../config.ts';

/**
 * The zero-setup master key: read from `DATA_DIR/master.key`, or created there once (mode 0600).
 * Production sets MASTER_KEY instead; losing this file makes every stored message unreadable.
 */
export async function loadOrCreateMasterKeyFile(dataDir: string, logger: Logger): Promise<Buffer> {
  const file = path.join(dataDir, 'master.key');
  let text: string | undefined;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  if (text !== undefined) {
    const key = Buffer.from(text.trim(), 'base64');
    if (key.length !== 32) {
      throw new Error(
        `${file} does not hold a base64 32-byte key; restore it from a backup, or set MASTER_KEY`,
      );
    }
    const mode = (await stat(file)).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      await chmod(file, 0o600);
      logger.warn({ file }, 'master key file was readable by others; permissions reset to 0600');
    }
    return key;
  }
  await mkdir(dataDir, { recursive: true });
  const key = randomBytes(32);
  // 'wx' fails if another process created the file meanwhile; then use theirs.
  try {
    await writeFile(file, `${key.toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return loadOrCreateMasterKeyFile(dataDir, logger);
    throw error;
  }
  logger.warn(
    { file },
    `no MASTER_KEY set: created a new master key in ${file} (keep it safe and back it up; for production set MASTER_KEY, ${MASTER_KEY_HINT})`,
  );
  return key;
}
