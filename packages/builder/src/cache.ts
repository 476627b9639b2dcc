import { createHash, randomBytes } from 'node:crypto';
import { lstatSync, openSync, readSync, closeSync, readdirSync, readlinkSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '@mkinitrd-pkg/common';
import type { InstalledPackage } from '@mkinitrd-pkg/resolver';
import type { PruneReport } from '@mkinitrd-pkg/pruner';

/** Bump when what a cached root contains (or how it is made) changes. */
export const ROOT_CACHE_FORMAT = 3;

export interface RootCacheMeta {
  format: number;
  key: string;
  createdAt: string;
  packages: InstalledPackage[];
  sourceDateEpoch: number;
  prune: PruneReport;
  sizeByDirectory: Record<string, number>;
  warnings: string[];
  repositoryDigest: string;
  /** Digest of every entry (path, type, mode, owner, size, content, link target). */
  treeDigest: string;
}

export interface RootCacheEntry {
  root: string;
  meta: RootCacheMeta;
}

const BUFFER = Buffer.allocUnsafe(1 << 20);

/**
 * A digest of a tree that changes with any path, type, mode, owner, size, content or
 * symlink target, computed without following symlinks. It is how a cached installroot
 * proves it is complete and untouched before it is used (~0.2 s for a 60 MB root).
 */
export function treeDigest(root: string): string {
  const hash = createHash('sha256');
  const walk = (dir: string, rel: string) => {
    const names = readdirSync(dir).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    for (const name of names) {
      const path = join(dir, name);
      const relPath = rel ? `${rel}/${name}` : name;
      const st = lstatSync(path);
      // A directory's size is the filesystem's business (it changes when a tree is copied
      // or restored from a CI cache): only its entries count.
      hash.update(`${relPath}\0${st.mode}\0${st.uid}\0${st.gid}\0${st.isDirectory() ? 0 : st.size}\0`);
      if (st.isDirectory()) walk(path, relPath);
      else if (st.isSymbolicLink()) hash.update(readlinkSync(path));
      else if (st.isFile()) {
        const fd = openSync(path, 'r');
        try {
          let n: number;
          while ((n = readSync(fd, BUFFER, 0, BUFFER.length, null)) > 0) hash.update(BUFFER.subarray(0, n));
        } finally {
          closeSync(fd);
        }
      } else hash.update(`${st.rdev}`);
      hash.update('\n');
    }
  };
  walk(root, '');
  return hash.digest('hex');
}

function entryDir(cacheDir: string, key: string): string {
  return join(cacheDir, 'roots', key);
}

/**
 * A cached installroot, or undefined. An entry that is incomplete, of another format,
 * or whose tree no longer matches its recorded digest is removed and never used.
 */
export async function lookupRoot(cacheDir: string, key: string, logger: Logger): Promise<RootCacheEntry | undefined> {
  const dir = entryDir(cacheDir, key);
  let meta: RootCacheMeta;
  try {
    meta = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')) as RootCacheMeta;
  } catch {
    // No entry — or a directory without its meta.json: a half-written one.
    if (await stat(dir).catch(() => undefined)) {
      logger.warn({ dir }, 'removing an incomplete cache entry');
      await rm(dir, { recursive: true, force: true });
    }
    return undefined;
  }
  const root = join(dir, 'root');
  let ok = meta.format === ROOT_CACHE_FORMAT && meta.key === key;
  if (ok) {
    try {
      ok = treeDigest(root) === meta.treeDigest;
    } catch {
      ok = false;
    }
  }
  if (!ok) {
    logger.warn({ dir }, 'cache entry does not match its digest; rebuilding it');
    await rm(dir, { recursive: true, force: true });
    return undefined;
  }
  return { root, meta };
}

/**
 * Move a finished root into the cache: written under a temporary name, then renamed,
 * so a reader sees a complete entry or none. Returns the cached root's new path.
 */
export async function storeRoot(cacheDir: string, key: string, root: string, meta: Omit<RootCacheMeta, 'treeDigest' | 'format' | 'key' | 'createdAt'>): Promise<RootCacheEntry> {
  const roots = join(cacheDir, 'roots');
  await mkdir(roots, { recursive: true });
  const temp = join(roots, `.${key}.${randomBytes(4).toString('hex')}.tmp`);
  await mkdir(temp);
  await rename(root, join(temp, 'root'));
  const full: RootCacheMeta = { format: ROOT_CACHE_FORMAT, key, createdAt: new Date().toISOString(), ...meta, treeDigest: treeDigest(join(temp, 'root')) };
  await writeFile(join(temp, 'meta.json'), JSON.stringify(full, null, 2) + '\n');
  const dir = entryDir(cacheDir, key);
  try {
    await rename(temp, dir);
  } catch (error) {
    // Another build stored the same key meanwhile: its entry may be in use right now,
    // so keep it (it has the same content) and drop ours — replacing it could pull a
    // root from under a build that is copying it.
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error;
    const existing = await lookupRoot(cacheDir, key, silent);
    if (existing) {
      await rm(temp, { recursive: true, force: true });
      return existing;
    }
    await rename(temp, dir);
  }
  return { root: join(dir, 'root'), meta: full };
}

const silent = { warn() {} } as unknown as Logger;

/** Remove temporary cache entries left by killed builds. */
export async function removeStaleTemporaries(cacheDir: string): Promise<void> {
  const roots = join(cacheDir, 'roots');
  for (const name of await readdir(roots).catch(() => [] as string[])) {
    if (name.startsWith('.') && name.endsWith('.tmp')) await rm(join(roots, name), { recursive: true, force: true });
  }
}

export interface MetadataState {
  digest: string;
  refreshedAt: number;
}

/** When repository metadata was last fetched, per repository set (lets a warm build skip the network). */
export async function readMetadataState(cacheDir: string, repoKey: string): Promise<MetadataState | undefined> {
  try {
    return JSON.parse(await readFile(join(cacheDir, 'metadata', `${repoKey}.json`), 'utf8')) as MetadataState;
  } catch {
    return undefined;
  }
}

export async function writeMetadataState(cacheDir: string, repoKey: string, state: MetadataState): Promise<void> {
  await mkdir(join(cacheDir, 'metadata'), { recursive: true });
  const temp = join(cacheDir, 'metadata', `.${repoKey}.${randomBytes(4).toString('hex')}.tmp`);
  await writeFile(temp, JSON.stringify(state) + '\n');
  await rename(temp, join(cacheDir, 'metadata', `${repoKey}.json`));
}

export interface CleanResult {
  removed: string[];
  bytes: number;
}

/** `cache clean`: installroots, unpacked kernels and tools roots, work dirs; with `all`, downloads too. */
export async function cleanCache(cacheDir: string, all: boolean): Promise<CleanResult> {
  const parts = ['roots', 'kernels', 'tools', 'work', 'metadata', 'sysext'];
  if (all) parts.push('apt', 'dnf');
  const removed: string[] = [];
  let bytes = 0;
  for (const part of parts) {
    const path = join(cacheDir, part);
    if (!(await stat(path).catch(() => undefined))) continue;
    bytes += duBytes(path);
    await rm(path, { recursive: true, force: true });
    removed.push(path);
  }
  return { removed, bytes };
}

function duBytes(dir: string): number {
  let total = 0;
  const seen = new Set<string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const st = lstatSync(p);
      if (st.isDirectory()) walk(p);
      else if (!seen.has(`${st.dev}:${st.ino}`)) {
        seen.add(`${st.dev}:${st.ino}`);
        total += st.size;
      }
    }
  };
  walk(dir);
  return total;
}
