import { createHash, randomBytes } from 'node:crypto';
import { lstatSync, openSync, readSync, closeSync, readdirSync, readlinkSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile, readdir, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { CACHE_DIRS, CACHEDIR_TAG, UserError, cachePath, cleanableCacheDirs, isOwnerAlive, isTaggedCache, lockCache, registerCleanup, unregisterCleanup, ownerOfName, ownerToken, type CacheDirName, type Logger } from '@mkinitrd-pkg/common';
import type { InstalledPackage } from '@mkinitrd-pkg/resolver';
import type { PruneReport } from '@mkinitrd-pkg/pruner';
import type { FrameCache } from '@mkinitrd-pkg/packer';

/** Bump when what a cached root contains (or how it is made) changes (13, issue 13's number so that concurrent branches' bumps do not share entries in one cache: the emergency shell drop-ins moved out of the cached root, they are per image). */
export const ROOT_CACHE_FORMAT = 13;

export interface RootCacheMeta extends EntryMeta {
  packages: InstalledPackage[];
  sourceDateEpoch: number;
  prune: PruneReport;
  sizeByDirectory: Record<string, number>;
  warnings: string[];
  repositoryDigest: string;
}

export type RootCacheEntry = VerifiedEntry<RootCacheMeta>;

const BUFFER = Buffer.allocUnsafe(1 << 20);

/**
 * A digest of a tree that changes with anything the packer records of an entry
 * (packer/src/scan.ts): path, type, mode, owner, size, mtime (whole seconds, as newc
 * stores them), hard-link groups, device numbers, content and symlink target — computed
 * without following symlinks. It is how a cached tree proves it is complete and
 * untouched before it is used (~0.2 s for a 60 MB root): a file touched in the cache
 * must not give a different image on a "cache: hit".
 */
export function treeDigest(root: string): string {
  const hash = createHash('sha256');
  const firstOfInode = new Map<string, string>();
  walkTree(root, (relPath, path, st) => {
    // A directory's size is the filesystem's business (it changes when a tree is copied
    // or restored from a CI cache): only its entries count.
    hash.update(`${relPath}\0${st.mode}\0${st.uid}\0${st.gid}\0${st.isDirectory() ? 0 : st.size}\0${Math.floor(st.mtimeMs / 1000)}\0`);
    if (st.isDirectory()) return;
    if (st.nlink > 1) {
      // Which earlier path this one is a hard link of (the packer stores one data copy
      // per group): the link count itself changes when the tree is hard-linked elsewhere.
      const inode = `${st.dev}:${st.ino}`;
      const first = firstOfInode.get(inode);
      if (first !== undefined) hash.update(`link\0${first}\0`);
      else firstOfInode.set(inode, relPath);
    }
    if (st.isSymbolicLink()) hash.update(readlinkSync(path));
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
  });
  return hash.digest('hex');
}

/**
 * A digest of the inode metadata only (including ctime and inode number, which no
 * write can keep unchanged): equal means nothing was written since it was taken, so
 * reading the content again is unnecessary (a 400 MB kernel staging root in ~50 ms
 * instead of seconds). Unequal proves nothing: then the content digest decides.
 */
export function statDigest(root: string): string {
  const hash = createHash('sha256');
  walkTree(root, (relPath, _path, st) => {
    hash.update(`${relPath}\0${st.mode}\0${st.uid}\0${st.gid}\0${st.isDirectory() ? 0 : st.size}\0${st.mtimeMs}\0${st.ctimeMs}\0${st.ino}\0${st.nlink}\0${st.rdev}\n`);
  });
  return hash.digest('hex');
}

function walkTree(root: string, visit: (relPath: string, path: string, st: import('node:fs').Stats) => void): void {
  // An explicit stack: deep trees must not exhaust the call stack.
  const stack: Array<[string, string]> = [[root, '']];
  while (stack.length) {
    const [dir, rel] = stack.pop()!;
    const names = readdirSync(dir).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    const subdirs: Array<[string, string]> = [];
    for (const name of names) {
      const path = join(dir, name);
      const relPath = rel ? `${rel}/${name}` : name;
      const st = lstatSync(path);
      visit(relPath, path, st);
      if (st.isDirectory()) subdirs.push([path, relPath]);
    }
    // Depth-first in name order, like the recursive walk it replaces.
    for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]!);
  }
}

/** `.NAME.OWNER.RANDOM.tmp`: a cache entry being written; OWNER says whose (common/src/owner.ts). */
function temporaryName(name: string): string {
  return `.${name}.${ownerToken()}.${randomBytes(4).toString('hex')}.tmp`;
}

export interface VerifiedMeta {
  /** Digest of every entry (path, type, mode, owner, size, mtime, hard links, content, link target): treeDigest. */
  treeDigest: string;
  /** Digest of every entry's inode metadata (treeDigest's fast path, see verifyTree). */
  statDigest?: string;
}

/** How cached trees are checked before use: 'quick' (the stat digest first) or 'full' (always the content: --verify-cache). */
export type VerifyMode = 'quick' | 'full';

/**
 * Is the tree at `root` still what `meta` recorded? The stat digest is the fast path;
 * when it differs (a copy, a CI cache restore, hard links made from it), or with 'full'
 * (damage no inode field shows: bit rot, a forged meta.json), the content digest
 * decides, and a match refreshes the stat digest in `metaPath`.
 */
async function verifyTree(root: string, meta: VerifiedMeta, metaPath: string, mode: VerifyMode = 'quick'): Promise<boolean> {
  try {
    const quick = statDigest(root);
    if (mode === 'quick' && meta.statDigest !== undefined && quick === meta.statDigest) return true;
    if (treeDigest(root) !== meta.treeDigest) return false;
    const updated = { ...meta, statDigest: statDigest(root) };
    const temp = join(metaPath, '..', temporaryName('meta.json'));
    await writeFile(temp, JSON.stringify(updated, null, 2) + '\n');
    await rename(temp, metaPath);
    return true;
  } catch {
    return false;
  }
}

/** What every verified entry's meta.json holds besides its own fields. */
export interface EntryMeta extends VerifiedMeta {
  format: number;
  key: string;
  createdAt: string;
}

export interface VerifiedEntry<M extends EntryMeta> {
  root: string;
  meta: M;
}

/**
 * A verified cache entry CACHE/KIND/KEY/{root,meta.json} (installroots, sysext's bases), or
 * undefined. An entry that is incomplete, of another format, or whose tree no longer
 * matches its recorded digest is removed and never used: the caller builds it again.
 */
export async function lookupEntry<M extends EntryMeta>(cacheDir: string, kind: CacheDirName, key: string, format: number, logger: Logger, mode: VerifyMode = 'quick'): Promise<VerifiedEntry<M> | undefined> {
  const dir = cachePath(cacheDir, kind, key);
  const meta = await readEntryMeta<M>(dir, logger);
  if (!meta) return undefined;
  const root = join(dir, 'root');
  const ok = meta.format === format && meta.key === key && (await verifyTree(root, meta, join(dir, 'meta.json'), mode));
  if (!ok) {
    logger.warn({ dir }, 'cache entry does not match its digest; rebuilding it');
    await rm(dir, { recursive: true, force: true });
    return undefined;
  }
  return { root, meta };
}

/**
 * Move a finished tree into the cache as CACHE/KIND/KEY: written under a temporary name, its
 * digests taken, then renamed, so a reader sees a complete entry or none. Returns the
 * cached tree's new path (another build's identical entry if it stored KEY first).
 */
export async function storeEntry<M extends EntryMeta>(cacheDir: string, kind: CacheDirName, key: string, format: number, root: string, meta: Omit<M, keyof EntryMeta | 'statDigest'>): Promise<VerifiedEntry<M>> {
  const parent = cachePath(cacheDir, kind);
  await mkdir(parent, { recursive: true });
  const temp = join(parent, temporaryName(key));
  await mkdir(temp);
  registerCleanup(temp); // removed if a signal stops us (else by the next build: its owner is gone)
  await rename(root, join(temp, 'root'));
  const full = { format, key, createdAt: new Date().toISOString(), ...meta, treeDigest: treeDigest(join(temp, 'root')), statDigest: statDigest(join(temp, 'root')) } as M;
  await writeFile(join(temp, 'meta.json'), JSON.stringify(full, null, 2) + '\n');
  const entry = await publishEntry(temp, join(parent, key), () => lookupEntry<M>(cacheDir, kind, key, format, silent));
  unregisterCleanup(temp);
  return entry ?? { root: join(parent, key, 'root'), meta: full };
}

/** A cached installroot (CACHE/roots/KEY), or undefined: see lookupEntry. */
export function lookupRoot(cacheDir: string, key: string, logger: Logger, mode: VerifyMode = 'quick'): Promise<RootCacheEntry | undefined> {
  return lookupEntry<RootCacheMeta>(cacheDir, 'roots', key, ROOT_CACHE_FORMAT, logger, mode);
}

/** meta.json of a cache entry; an entry directory without one is half-written and removed. */
async function readEntryMeta<T>(dir: string, logger: Logger): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')) as T;
  } catch {
    if (await stat(dir).catch(() => undefined)) {
      logger.warn({ dir }, 'removing an incomplete cache entry');
      await rm(dir, { recursive: true, force: true });
    }
    return undefined;
  }
}

/** Move a finished installroot into the cache (CACHE/roots/KEY): see storeEntry. */
export function storeRoot(cacheDir: string, key: string, root: string, meta: Omit<RootCacheMeta, keyof EntryMeta | 'statDigest'>): Promise<RootCacheEntry> {
  return storeEntry<RootCacheMeta>(cacheDir, 'roots', key, ROOT_CACHE_FORMAT, root, meta);
}

/**
 * Rename a finished temporary entry into place. If another build stored the same name
 * meanwhile, its entry may be in use right now, so it is kept (same content) and ours
 * dropped — replacing it could pull a tree from under a build that is copying it.
 * Returns the other build's entry when that happened.
 */
async function publishEntry<T>(temp: string, dir: string, existing: () => Promise<T | undefined>): Promise<T | undefined> {
  try {
    await rename(temp, dir);
    return undefined;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error;
    const other = await existing();
    if (other) {
      await rm(temp, { recursive: true, force: true });
      return other;
    }
    await rename(temp, dir);
    return undefined;
  }
}

const silent = { warn() {}, info() {} } as unknown as Logger;

export const KERNEL_CACHE_FORMAT = 1;

/** A frame not used for this long is removed by the next build (frames of old installroots). */
const FRAME_MAX_AGE_MS = 14 * 24 * 60 * 60 * 1000;

const FRAME_DIGEST_BYTES = 32;

/**
 * The packer's frame store under CACHE/frames/KEY (KEY: the digest of the frame's
 * uncompressed bytes, compressor and level, pack.ts frameKey). Each file is the sha256
 * of the compressed frame, then the frame; every read checks it (≈10 ms for the 20 MB of
 * a generic image's base), so a damaged or truncated frame is removed and compressed
 * again, never copied into an image. Written under a temporary name, then renamed. A
 * failure to store (a full disk) costs the next build time, not this build: a warning.
 */
export function frameStore(cacheDir: string, logger: Logger): FrameCache {
  const dir = cachePath(cacheDir, 'frames');
  let made = false;
  return {
    async get(key) {
      if (!/^[0-9a-f]{64}$/.test(key)) return undefined;
      const path = join(dir, key);
      let data: Buffer;
      try {
        data = await readFile(path);
      } catch {
        return undefined;
      }
      const frame = data.subarray(FRAME_DIGEST_BYTES);
      if (data.length <= FRAME_DIGEST_BYTES || !createHash('sha256').update(frame).digest().equals(data.subarray(0, FRAME_DIGEST_BYTES))) {
        logger.warn({ path }, 'cached frame does not match its digest; compressing it again');
        await rm(path, { force: true });
        return undefined;
      }
      // Its mtime says when it was last used (pruneFrames).
      const now = new Date();
      await utimes(path, now, now).catch(() => undefined);
      return frame;
    },
    async put(key, frame) {
      if (!/^[0-9a-f]{64}$/.test(key)) return;
      const temp = join(dir, temporaryName(key));
      try {
        if (!made) await mkdir(dir, { recursive: true });
        made = true;
        await writeFile(temp, Buffer.concat([createHash('sha256').update(frame).digest(), frame]));
        await rename(temp, join(dir, key));
      } catch (error) {
        await rm(temp, { force: true }).catch(() => undefined);
        logger.warn({ path: join(dir, key) }, `cannot store a compressed frame: ${(error as Error).message}`);
      }
    },
  };
}

/** Remove frames unused for FRAME_MAX_AGE_MS (a new installroot leaves the old one's behind). */
export async function pruneFrames(cacheDir: string, now = Date.now()): Promise<number> {
  const dir = cachePath(cacheDir, 'frames');
  let removed = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!/^[0-9a-f]{64}$/.test(name)) continue;
    const st = await stat(join(dir, name)).catch(() => undefined);
    if (st && now - st.mtimeMs > FRAME_MAX_AGE_MS) {
      await rm(join(dir, name), { force: true });
      removed++;
    }
  }
  return removed;
}

interface StagedMeta extends VerifiedMeta {
  format: number;
  name: string;
}

/**
 * A cached staging tree under CACHE/KIND/NAME/root (kernel packages, tools roots), made and
 * checked like the installroot cache: filled under a temporary name, digested, renamed;
 * verified before every use, and unpacked again when it does not match. `produce` calls
 * `fill(NAME)` once it knows the entry's name: undefined means a verified entry exists
 * (skip the work), else the directory to fill. `indexKey` remembers NAME for the next
 * run (KIND/index/KEY), so a warm build does not even need to ask which files it takes.
 */
export async function stageVerified(
  cacheDir: string,
  kind: CacheDirName,
  indexKey: string | undefined,
  logger: Logger,
  produce: (fill: (name: string) => Promise<string | undefined>) => Promise<void>,
  mode: VerifyMode = 'quick',
): Promise<string> {
  const base = cachePath(cacheDir, kind);
  const indexPath = indexKey ? join(base, 'index', indexKey) : undefined;
  const verified = async (name: string): Promise<boolean> => {
    if (!/^[0-9a-f]{8,64}$/.test(name)) return false;
    const dir = join(base, name);
    const meta = await readEntryMeta<StagedMeta>(dir, logger);
    if (!meta) return false;
    if (meta.format === KERNEL_CACHE_FORMAT && meta.name === name && (await verifyTree(join(dir, 'root'), meta, join(dir, 'meta.json'), mode))) return true;
    logger.warn({ dir }, 'cached staging tree does not match its digest; unpacking it again');
    await rm(dir, { recursive: true, force: true });
    return false;
  };
  if (indexPath) {
    const name = (await readFile(indexPath, 'utf8').catch(() => '')).trim();
    if (name && (await verified(name))) return join(base, name, 'root');
  }
  let entryName: string | undefined;
  let temp: string | undefined;
  await produce(async (name) => {
    entryName = name;
    if (await verified(name)) return undefined;
    await mkdir(base, { recursive: true });
    temp = join(base, temporaryName(name));
    await mkdir(temp);
    registerCleanup(temp);
    return join(temp, 'root');
  });
  if (entryName === undefined) throw new Error('stageVerified: produce() never named its entry');
  if (temp !== undefined) {
    const root = join(temp, 'root');
    await mkdir(root, { recursive: true });
    const meta: StagedMeta = { format: KERNEL_CACHE_FORMAT, name: entryName, treeDigest: treeDigest(root), statDigest: statDigest(root) };
    await writeFile(join(temp, 'meta.json'), JSON.stringify(meta, null, 2) + '\n');
    const name = entryName;
    await publishEntry(temp, join(base, name), async () => ((await verified(name)) ? true : undefined));
    unregisterCleanup(temp);
  }
  if (indexPath) {
    await mkdir(join(base, 'index'), { recursive: true });
    const tempIndex = join(base, 'index', temporaryName(indexKey!));
    await writeFile(tempIndex, entryName + '\n');
    await rename(tempIndex, indexPath);
  }
  return join(base, entryName, 'root');
}

/**
 * Remove temporary cache entries whose owner is gone (killed builds). A temporary of
 * a live build — another process filling an entry right now — is left alone. Runs
 * under the shared cache lock that every writer holds (common/src/workdir.ts), so
 * `cache clean` (exclusive) never races it.
 */
export async function removeStaleTemporaries(cacheDir: string, logger: Logger = silent): Promise<string[]> {
  const removed: string[] = [];
  const { roots, stagedKernels, tools, metadata, frames, sysextBases } = CACHE_DIRS;
  for (const part of [roots, stagedKernels, join(stagedKernels, 'index'), tools, join(tools, 'index'), metadata, frames, sysextBases]) {
    const dir = join(cacheDir, part);
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      if (!(name.startsWith('.') && name.endsWith('.tmp'))) continue;
      const owner = ownerOfName(name);
      if (owner === undefined) {
        // An older version's temporary (no owner in its name): only when clearly abandoned.
        const st = await stat(join(dir, name)).catch(() => undefined);
        if (!st || Date.now() - st.mtimeMs < LEGACY_GRACE_MS) continue;
      } else if (isOwnerAlive(owner)) continue;
      logger.info({ path: join(dir, name) }, 'removing a cache entry left by an interrupted build');
      await rm(join(dir, name), { recursive: true, force: true });
      removed.push(join(dir, name));
    }
  }
  return removed;
}

const LEGACY_GRACE_MS = 24 * 60 * 60 * 1000;

export interface MetadataState {
  digest: string;
  refreshedAt: number;
}

/** When repository metadata was last fetched, per repository set (lets a warm build skip the network). */
export async function readMetadataState(cacheDir: string, repoKey: string): Promise<MetadataState | undefined> {
  try {
    return JSON.parse(await readFile(cachePath(cacheDir, 'metadata', `${repoKey}.json`), 'utf8')) as MetadataState;
  } catch {
    return undefined;
  }
}

export async function writeMetadataState(cacheDir: string, repoKey: string, state: MetadataState): Promise<void> {
  await mkdir(cachePath(cacheDir, 'metadata'), { recursive: true });
  const temp = cachePath(cacheDir, 'metadata', temporaryName(repoKey));
  await writeFile(temp, JSON.stringify(state) + '\n');
  await rename(temp, cachePath(cacheDir, 'metadata', `${repoKey}.json`));
}

export interface CleanResult {
  removed: string[];
  bytes: number;
}

/**
 * `cache clean`: installroots, unpacked kernels and tools roots, work dirs; with `all`, downloads too.
 * Takes the cache lock exclusively: builds hold it shared for their whole run, so
 * nothing is removed from under a running build; with one running this fails at once.
 */
export async function cleanCache(cacheDir: string, all: boolean): Promise<CleanResult> {
  const st = await stat(cacheDir).catch(() => undefined);
  if (!st) return { removed: [], bytes: 0 };
  // `--cache-dir /` must not remove /work or /sysext: only a directory this program tagged.
  if (!st.isDirectory() || !(await isTaggedCache(cacheDir))) {
    throw new UserError('CACHE', `${cacheDir} is not a mkinitrd-pkg cache (no ${CACHEDIR_TAG} in it): nothing removed`, {
      hint: 'name the directory given to build --cache-dir (a build tags it); an older cache can be removed by hand',
    });
  }
  const lock = await lockCache(cacheDir, { exclusive: true, wait: false });
  if (!lock) {
    throw new UserError('CACHE', `the cache ${cacheDir} is in use by a running build`, { hint: 'wait for it to finish, then run cache clean again' });
  }
  try {
    const removed: string[] = [];
    let bytes = 0;
    for (const part of cleanableCacheDirs(all)) {
      const path = join(cacheDir, part);
      if (!(await stat(path).catch(() => undefined))) continue;
      bytes += duBytes(path);
      await rm(path, { recursive: true, force: true, maxRetries: 3 });
      removed.push(path);
    }
    return { removed, bytes };
  } finally {
    await lock.release();
  }
}

function duBytes(dir: string): number {
  let total = 0;
  const seen = new Set<string>();
  walkTree(dir, (_rel, _path, st) => {
    if (st.isDirectory() || seen.has(`${st.dev}:${st.ino}`)) return;
    seen.add(`${st.dev}:${st.ino}`);
    total += st.size;
  });
  return total;
}
