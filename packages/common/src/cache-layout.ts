import { join } from 'node:path';
import { PACKAGE_MANAGERS, PACKAGE_MANAGER_NAMES, type PackageManagerName } from './package-managers.js';

/**
 * The layout of the cache directory (--cache-dir, default ~/.cache/mkinitrd-pkg): every
 * subdirectory any part of the program writes, named here once. `cache clean` removes what
 * this table lists (cleanableCacheDirs), so a directory added here is also cleaned; a
 * directory written but not listed here would be left behind by it. Each package manager's
 * directory comes from its PACKAGE_MANAGERS entry (packageManagerCachePath).
 */
export const CACHE_DIRS = {
  /** Pruned installroots, ROOT_KEY/{root,meta.json}: verified by their tree digest before every use (builder). */
  roots: 'roots',
  /**
   * Unpacked kernel (and UKI stub, firmware) packages, NAME/{root,meta.json} plus index/KEY
   * naming the entry a warm build takes: verified like roots. Not `kernels`: see legacyKernels.
   */
  stagedKernels: 'staged-kernels',
  /**
   * Older versions' unverified kernel trees (a `.complete` marker, index files holding paths).
   * Nothing writes it any more; kept separate because an older version may run against the
   * same cache and would remove verified entries as "incomplete". `cache clean` removes it.
   */
  legacyKernels: 'kernels',
  /** Build tools roots unpacked from packages (ToolsTree=), laid out like stagedKernels. */
  tools: 'tools',
  /** Compressed frames of images, content-addressed (the packer's FrameCache; unused ones expire). */
  frames: 'frames',
  /** When each repository set's metadata was last fetched, REPOSITORY_IDENTITY.json (skips the network while fresh). */
  metadata: 'metadata',
  /** Private work directories of running builds, named with their owner (removed when the owner is gone). */
  work: 'work',
  /** sysext's base installroots of presets (unpruned, package database kept), KEY/{root,meta.json}: verified like roots. */
  sysextBases: join('sysext', 'bases'),
} as const;

export type CacheDirName = keyof typeof CACHE_DIRS;

/** The lock every user of the cache holds (workdir.ts lockCache): a file at the top, never removed. */
export const CACHE_LOCK_FILE = 'lock';

/** Cache Directory Tagging Specification's file: `cache clean` removes only from a directory that carries it. */
export const CACHEDIR_TAG = 'CACHEDIR.TAG';

/** CACHE/<the named directory>/…rest. */
export function cachePath(cacheDir: string, name: CacheDirName, ...rest: string[]): string {
  return join(cacheDir, CACHE_DIRS[name], ...rest);
}

/** Where a package manager keeps repository metadata and downloaded packages: CACHE/<its cacheDir>/…rest. */
export function packageManagerCachePath(cacheDir: string, packageManager: PackageManagerName, ...rest: string[]): string {
  return join(cacheDir, PACKAGE_MANAGERS[packageManager].cacheDir, ...rest);
}

/**
 * The top-level directories `cache clean` removes, relative to the cache: every CACHE_DIRS
 * entry (by its first component: sysext/bases removes sysext/); with `downloads`, each
 * package manager's too (repository metadata and packages: fetched again by the next build).
 */
export function cleanableCacheDirs(downloads: boolean): string[] {
  const tops = Object.values(CACHE_DIRS).map((dir) => dir.split('/')[0]!);
  if (downloads) tops.push(...PACKAGE_MANAGER_NAMES.map((name) => PACKAGE_MANAGERS[name].cacheDir));
  return [...new Set(tops)];
}
