/**
 * Master key rotation: `npm run rotate-master-key`.
 *
 *   1. Set MASTER_KEY to the new key and MASTER_KEY_PREVIOUS to the old one(s); restart the app
 *      (new rooms are wrapped under the new key, old ones still open).
 *   2. Run this script with the same environment: it rewraps every room key still under an old
 *      master key, one room per transaction (stop it any time; running it again continues).
 *   3. When it reports nothing left, remove the old key from MASTER_KEY_PREVIOUS.
 */
import { ConfigError, loadConfig } from '../src/config.ts';
import { Keyring } from '../src/crypto/keyring.ts';
import { RoomKeys } from '../src/crypto/room-keys.ts';
import { systemClock } from '../src/infra/clock.ts';
import { createLogger } from '../src/infra/logger.ts';
import { loadOrCreateMasterKeyFile } from '../src/infra/master-key.ts';
import { openScriptDatabase } from './open-script-database.ts';

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig(process.env);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`rotate-master-key: ${error.message}\n`);
  process.exit(1);
}
const logger = createLogger(config.logLevel);
const { db, close } = await openScriptDatabase(config, logger, 'rotate-master-key');
try {
  const masterKey = config.masterKey ?? (await loadOrCreateMasterKeyFile(config.dataDir, logger));
  const keyring = new Keyring(masterKey, config.masterKeyPrevious);
  const roomKeys = new RoomKeys(db, keyring, systemClock);
  const result = await roomKeys.rewrapAll((done) => {
    if (done % 1000 === 0) logger.info({ done }, 'rewrapping room keys');
  });
  logger.info(
    { rewrapped: result.rewrapped, failed: result.failed.length, currentKeyId: keyring.currentKeyId },
    result.failed.length === 0
      ? 'every room key is wrapped under the current MASTER_KEY'
      : 'some room keys could not be opened: is their old key in MASTER_KEY_PREVIOUS?',
  );
  process.exitCode = result.failed.length === 0 ? 0 : 2;
} finally {
  await close();
}
