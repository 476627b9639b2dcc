import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from './logger.js';

/** How long a work directory may exist without its pid file before it counts as abandoned. */
const PID_GRACE_MS = 10 * 60 * 1000;

function isAlive(pid: number): boolean {
  if (!(pid > 0)) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * A private work directory under CACHE/work, holding the owner's pid. Directories left
 * by builds that are gone (killed, even with SIGKILL) are removed first; a directory
 * that has no pid file yet belongs to a build that is just starting and is left alone.
 * The caller removes its own directory when done.
 */
export async function createWorkDir(cacheDir: string, prefix: string, logger: Logger): Promise<string> {
  const workBase = join(cacheDir, 'work');
  await mkdir(workBase, { recursive: true });
  for (const name of await readdir(workBase)) {
    const dir = join(workBase, name);
    const pidText = await readFile(join(dir, 'pid'), 'utf8').catch(() => undefined);
    if (pidText === undefined) {
      const st = await stat(dir).catch(() => undefined);
      if (!st || Date.now() - st.mtimeMs < PID_GRACE_MS) continue;
    }
    if (isAlive(Number(pidText ?? 0))) continue;
    logger.info({ dir }, 'removing the work directory of an interrupted build');
    await rm(dir, { recursive: true, force: true });
  }
  const dir = join(workBase, `${prefix}-${randomBytes(6).toString('hex')}`);
  await mkdir(dir);
  await writeFile(join(dir, 'pid'), String(process.pid));
  return dir;
}
