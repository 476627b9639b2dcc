import { chmod, lstat, mkdir, symlink } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * The start of every installroot: merged /usr (bin, sbin, lib, lib64 → usr/…; the
 * symlinks must exist before the first package is unpacked, design.md §4), the usual
 * mount points, and world-writable sticky temporary directories.
 */
export async function createRootSkeleton(root: string, extraDirs: readonly string[] = []): Promise<void> {
  for (const dir of ['bin', 'sbin', 'lib', 'lib64']) {
    await mkdir(join(root, 'usr', dir), { recursive: true });
    try {
      await lstat(join(root, dir));
    } catch {
      await symlink(`usr/${dir}`, join(root, dir));
    }
  }
  for (const dir of ['etc', 'dev', 'proc', 'sys', 'run', 'tmp', 'var/tmp', ...extraDirs]) {
    await mkdir(join(root, dir), { recursive: true });
  }
  await chmod(join(root, 'tmp'), 0o1777);
  await chmod(join(root, 'var/tmp'), 0o1777);
}
