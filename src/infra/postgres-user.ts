import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, chown, cp, mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import { EmbeddedPostgresError, type Installation, postgresOf, type RunAs } from './postgres-server.ts';

/**
 * PostgreSQL refuses to run as root, so as root the embedded server runs as the `postgres` user,
 * which must be able to reach its binaries and its cluster. A clone under /root (mode 0700, as in
 * many VMs and containers) is out of its reach: then the binaries are copied, and the cluster
 * kept, under this folder instead, and the log says where.
 */
export const SHARED_HOME = '/var/lib/chittychattychat';

const run = promisify(execFile);

/** The postgres user's ids, creating a system user of that name when there is none. */
export async function postgresUser(log: Logger | undefined): Promise<RunAs> {
  const lookup = async (): Promise<RunAs> => {
    const [uid, gid] = await Promise.all([run('id', ['-u', 'postgres']), run('id', ['-g', 'postgres'])]);
    return { uid: Number.parseInt(uid.stdout, 10), gid: Number.parseInt(gid.stdout, 10) };
  };
  try {
    return await lookup();
  } catch {
    // no such user yet
  }
  try {
    await run('groupadd', ['--system', 'postgres']).catch(() => undefined);
    await run('useradd', [
      '--system',
      '--gid',
      'postgres',
      '--no-create-home',
      '--shell',
      '/usr/sbin/nologin',
      'postgres',
    ]);
    const ids = await lookup();
    log?.info(ids, 'created the system user postgres to run the embedded database as');
    return ids;
  } catch (error) {
    throw new EmbeddedPostgresError(
      `embedded PostgreSQL: running as root, there is no postgres user to run the server as, and creating one failed (${String(error).split('\n')[0]}); create it, run as another user, or set DATABASE_URL`,
    );
  }
}

/** Whether `user` may run the server binary (it runs `postgres --version`, as that user). */
function canRun(installation: Installation, user: RunAs): boolean {
  return spawnSync(postgresOf(installation), ['--version'], { ...user, stdio: 'ignore' }).status === 0;
}

/**
 * The first directory on the way to `directory` (itself included) that `user` may not pass
 * through, or undefined when the way is open. Reads the permission bits (the child runs with no
 * supplementary groups, so only its own uid and gid count).
 */
export async function blockedOnTheWayTo(directory: string, user: RunAs): Promise<string | undefined> {
  const parts = path.resolve(directory).split(path.sep).filter(Boolean);
  for (let index = 0; index <= parts.length; index++) {
    const current = path.join(path.sep, ...parts.slice(0, index));
    const { uid, gid, mode } = await stat(current);
    const bits = uid === user.uid ? mode >> 6 : gid === user.gid ? mode >> 3 : mode;
    if ((bits & 0o1) === 0) return current;
  }
  return undefined;
}

/** The binaries where `user` can run them: where they are, or a copy under `home` (made once per version). */
export async function reachableInstallation(
  installation: Installation,
  user: RunAs,
  home: string,
  log: Logger | undefined,
): Promise<Installation> {
  if (canRun(installation, user)) return installation;
  const copy = {
    directory: path.join(home, `postgresql-${installation.version}`),
    version: installation.version,
  };
  if (!canRun(copy, user)) {
    await mkdir(home, { recursive: true, mode: 0o755 });
    await chmod(home, 0o755);
    const partial = `${copy.directory}.${process.pid}.partial`;
    await rm(partial, { recursive: true, force: true });
    await cp(installation.directory, partial, { recursive: true, verbatimSymlinks: true });
    await rm(copy.directory, { recursive: true, force: true });
    await rename(partial, copy.directory);
    if (!canRun(copy, user)) {
      throw new EmbeddedPostgresError(
        `embedded PostgreSQL: the postgres user can run neither ${postgresOf(installation)} nor its copy in ${copy.directory}`,
      );
    }
    log?.info(
      { from: installation.directory, to: copy.directory },
      'embedded PostgreSQL: the postgres user cannot reach the binaries where npm put them; copied them where it can',
    );
  }
  return copy;
}

/**
 * Where the cluster meant for `dataDir` lives: there when `user` can reach it (its parent gets
 * search permission if it lacks only that), else a folder under `home` named after `dataDir`.
 */
export async function reachableClusterDir(
  dataDir: string,
  user: RunAs,
  home: string,
  log: Logger | undefined,
): Promise<string> {
  const parent = path.dirname(dataDir);
  await mkdir(parent, { recursive: true });
  const blocked = await blockedOnTheWayTo(path.dirname(parent), user);
  if (blocked === undefined) {
    // Only search permission: listing and reading the folder stay closed to other users.
    const { mode } = await stat(parent);
    if ((await blockedOnTheWayTo(parent, user)) !== undefined) {
      await chmod(parent, (mode & 0o7777) | 0o001);
      log?.info({ directory: parent }, 'added search permission so the postgres user can reach its data');
    }
    return dataDir;
  }
  const name = createHash('sha256').update(dataDir).digest('hex').slice(0, 16);
  const relocated = path.join(home, 'clusters', name, path.basename(dataDir));
  await mkdir(path.dirname(relocated), { recursive: true, mode: 0o700 });
  await chmod(home, 0o755);
  await chmod(path.join(home, 'clusters'), 0o711);
  await chmod(path.dirname(relocated), 0o711);
  log?.info(
    { dataDir, blocked, cluster: relocated },
    `embedded PostgreSQL: the postgres user cannot pass through ${blocked}, so the cluster lives in ${relocated}`,
  );
  return relocated;
}

/** Gives a new (empty) cluster folder to the postgres user. */
export async function handOver(directory: string, user: RunAs): Promise<void> {
  await mkdir(directory, { recursive: true, mode: 0o700 });
  await chown(directory, user.uid, user.gid);
}
