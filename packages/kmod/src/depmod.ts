import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, type Logger } from '@mkinitrd-pkg/common';

export interface DepmodOptions {
  /**
   * Host path of the directory that holds KVER (…/usr/lib/modules). depmod looks for
   * modules under BASE/lib/modules (kmod ≤ 32, Debian 12) or BASE/usr/lib/modules (newer
   * kmod built with MODULE_DIRECTORY=/usr/lib/modules).
   */
  modulesDir: string;
  kernelVersion: string;
  /**
   * A root whose lib/modules and usr/lib/modules both lead to `modulesDir` (a merged-/usr
   * image): depmod then runs with `-b root` and reads that root's depmod.d. Without one,
   * depmod runs against a private base directory whose lib/modules and usr/lib/modules
   * are symlinks to `modulesDir`, so either kmod layout works and nothing is added to
   * the image.
   */
  baseRoot?: string;
  /** `depmod -n`: print the files instead of writing them. */
  dryRun?: boolean;
  logger: Logger;
}

/** Run depmod for one kernel; returns its stdout (the databases, with dryRun). */
export async function runDepmod(o: DepmodOptions): Promise<string> {
  const args = (base: string) => [...(o.dryRun ? ['-n'] : []), '-b', base, o.kernelVersion];
  if (o.baseRoot !== undefined) {
    const result = await run('depmod', args(o.baseRoot));
    if (result.stderr.trim()) o.logger.debug({ stderr: result.stderr.trim() }, 'depmod');
    return result.stdout;
  }
  const base = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-depmod-'));
  try {
    await mkdir(join(base, 'lib'));
    await mkdir(join(base, 'usr', 'lib'), { recursive: true });
    await symlink(o.modulesDir, join(base, 'lib', 'modules'));
    await symlink(o.modulesDir, join(base, 'usr', 'lib', 'modules'));
    const result = await run('depmod', args(base));
    if (result.stderr.trim()) o.logger.debug({ stderr: result.stderr.trim() }, 'depmod');
    return result.stdout;
  } finally {
    // Removes the two symlinks, never what they point to.
    await rm(base, { recursive: true, force: true });
  }
}
