import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { UserError } from './errors.js';
import { join } from 'node:path';
import type { Logger } from './logger.js';
import { OWNER_TOKEN_SOURCE, isOwnerAlive, lockFile, ownerToken, type FileLock } from './owner.js';
import { registerCleanup, unregisterCleanup } from './cleanup.js';
import { CACHEDIR_TAG, CACHE_LOCK_FILE, cachePath } from './cache-layout.js';

/** Directories of older versions (a pid file inside, no owner token in the name) count as abandoned after this. */
const LEGACY_GRACE_MS = 24 * 60 * 60 * 1000;

const WORK_DIR_NAME = new RegExp(`^[a-z]+-${OWNER_TOKEN_SOURCE}-[0-9a-f]{12}$`);

/** Which process owns a cache entry or work dir named with an owner token (see owner.ts). */
export function ownerOfName(name: string): string | undefined {
  const m = new RegExp(OWNER_TOKEN_SOURCE).exec(name);
  return m ? `${m[1]}-${m[2]}` : undefined;
}

/**
 * The lock every user of a cache directory holds while it works: shared for builds
 * (they coexist), exclusive for `cache clean` (which must not pull an entry from under
 * a build). Stale temporaries are judged under it.
 */
export function cacheLockPath(cacheDir: string): string {
  return join(cacheDir, CACHE_LOCK_FILE);
}

export async function lockCache(cacheDir: string, options: { exclusive?: boolean; wait?: boolean } = {}): Promise<FileLock | undefined> {
  try {
    await mkdir(cacheDir, { recursive: true });
  } catch (error) {
    throw new UserError('CACHE', `cannot use ${cacheDir} as the cache directory: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {
      hint: 'pass --cache-dir naming a directory',
    });
  }
  const lock = await lockFile(cacheLockPath(cacheDir), { shared: !options.exclusive, ...(options.wait !== undefined && { wait: options.wait }) });
  // Cache Directory Tagging Specification (https://bford.info/cachedir/): backup tools skip
  // it, and `cache clean` removes only from a directory that carries it.
  await writeFile(join(cacheDir, CACHEDIR_TAG), CACHEDIR_TAG_TEXT, { flag: 'wx' }).catch(() => undefined);
  return lock;
}

const CACHEDIR_TAG_TEXT = 'Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by mkinitrd-pkg.\n';

/** Does `dir` carry the cache directory tag (so removing its parts cannot hit anything else)? */
export async function isTaggedCache(dir: string): Promise<boolean> {
  const text = await readFile(join(dir, CACHEDIR_TAG), 'utf8').catch(() => '');
  return text.startsWith('Signature: 8a477f597d28d172789f06886806bc55');
}

const held = new Map<string, FileLock>();

/**
 * A private work directory under CACHE/work, named with its owner's token (pid + start
 * time), created in one mkdir: there is no moment at which it exists without saying who
 * owns it. Directories whose owner is gone (killed, even with SIGKILL) are removed first,
 * under the shared cache lock. Release it with removeWorkDir().
 */
export async function createWorkDir(cacheDir: string, prefix: string, logger: Logger): Promise<string> {
  const lock = await lockCache(cacheDir);
  try {
    const workBase = cachePath(cacheDir, 'work');
    await mkdir(workBase, { recursive: true });
    for (const name of await readdir(workBase)) {
      const dir = join(workBase, name);
      if (!(await isStaleWorkDir(dir, name))) continue;
      logger.info({ dir }, 'removing the work directory of an interrupted build');
      await rm(dir, { recursive: true, force: true });
    }
    const dir = join(workBase, `${prefix}-${ownerToken()}-${randomBytes(6).toString('hex')}`);
    await mkdir(dir);
    registerCleanup(dir);
    held.set(dir, lock!);
    return dir;
  } catch (error) {
    await lock!.release();
    throw error;
  }
}

async function isStaleWorkDir(dir: string, name: string): Promise<boolean> {
  const st = await lstat(dir).catch(() => undefined);
  if (!st?.isDirectory()) return false;
  if (WORK_DIR_NAME.test(name)) return !isOwnerAlive(ownerOfName(name)!);
  // An older version's directory: a pid file, or none yet while it starts.
  const pid = Number((await readFile(join(dir, 'pid'), 'utf8').catch(() => '0')).trim());
  if (pid > 0) {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  }
  const s = await stat(dir).catch(() => undefined);
  return Boolean(s && Date.now() - s.mtimeMs > LEGACY_GRACE_MS);
}

/** Remove a work directory made by createWorkDir and release its cache lock. */
export async function removeWorkDir(dir: string): Promise<void> {
  try {
    await rm(dir, { recursive: true, force: true });
    unregisterCleanup(dir);
  } finally {
    const lock = held.get(dir);
    held.delete(dir);
    await lock?.release();
  }
}
