import { createHash } from 'node:crypto';
import { constants as fsConstants, createReadStream, type Stats } from 'node:fs';
import { chmod, copyFile, link, lstat, mkdir, open, readdir, readlink, rm, rmdir, symlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { allPackageManagerPaths, isErrnoException } from '@mkinitrd-pkg/common';

/**
 * Package-manager, cache, log and runtime state: never extension content, dropped
 * silently (relative to the root; a prefix matches the path and everything below).
 * Each package manager's database and helper state comes from common's PACKAGE_MANAGERS;
 * usr/sbin/policy-rc.d is the resolver's own guard against starting services.
 */
export const STATE_PATHS: readonly string[] = [
  ...allPackageManagerPaths('databasePaths'),
  ...allPackageManagerPaths('helperStatePaths'),
  'var/cache',
  'var/log',
  'var/tmp',
  'var/backups',
  'usr/lib/sysimage',
  'usr/sbin/policy-rc.d',
  'etc/ld.so.cache',
  'tmp',
  'run',
  'dev',
  'proc',
  'sys',
];

export function isUnder(rel: string, prefixes: readonly string[]): boolean {
  return prefixes.some((p) => rel === p || rel.startsWith(p + '/'));
}

async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (error) {
    if (isErrnoException(error) && (error.code === 'ENOENT' || error.code === 'ENOTDIR')) return undefined;
    throw error;
  }
}

/** An overlayfs whiteout: a character device 0/0 in the upper layer marks a deleted lower entry. */
export function isWhiteout(st: Stats): boolean {
  return st.isCharacterDevice() && st.rdev === 0;
}

async function sameContent(a: string, b: string): Promise<boolean> {
  const [fa, fb] = await Promise.all([open(a, 'r'), open(b, 'r')]);
  try {
    const size = 1 << 20;
    const ba = Buffer.alloc(size);
    const bb = Buffer.alloc(size);
    for (;;) {
      const [ra, rb] = await Promise.all([fa.read(ba, 0, size, null), fb.read(bb, 0, size, null)]);
      if (ra.bytesRead !== rb.bytesRead) return false;
      if (ra.bytesRead === 0) return true;
      if (!ba.subarray(0, ra.bytesRead).equals(bb.subarray(0, rb.bytesRead))) return false;
    }
  } finally {
    await Promise.all([fa.close(), fb.close()]);
  }
}

/** Is the upper entry the same as the base's? (type, permission bits, content or link target) */
async function identical(upperPath: string, st: Stats, basePath: string, baseSt: Stats): Promise<boolean> {
  if ((st.mode & fsConstants.S_IFMT) !== (baseSt.mode & fsConstants.S_IFMT)) return false;
  if (st.isSymbolicLink()) return (await readlink(upperPath)) === (await readlink(basePath));
  if ((st.mode & 0o7777) !== (baseSt.mode & 0o7777)) return false;
  if (st.isFile()) return st.size === baseSt.size && (await sameContent(upperPath, basePath));
  if (st.isCharacterDevice() || st.isBlockDevice()) return st.rdev === baseSt.rdev;
  return true;
}

export interface LayerDiffOptions {
  /** What the install wrote: the overlay's upper dir, or (fallback) the whole copy. */
  upper: string;
  /** The untouched base (the overlay's lower dir). */
  base: string;
  /** Created: gets everything in `upper` that is not identical to the base. */
  staging: string;
  /** Dropped without a word (package-manager state). */
  ignore: readonly string[];
}

export interface LayerDiff {
  /** Entries copied into the staging tree. */
  copied: number;
  /** Entries the install wrote that are byte-identical to the base's: not extension content. */
  identical: number;
  /** Symlinks into /etc/alternatives replaced by their final target (/etc is not merged). */
  flattenedAlternatives: string[];
  /** Special files (fifos, sockets, device nodes) that an extension does not carry. */
  skippedSpecial: string[];
  /** New directories that were empty as installed (packaged on purpose): kept by removeEmptyDirs. */
  emptyNewDirs: string[];
}

/**
 * Resolve a symlink through update-alternatives' /etc/alternatives/NAME links as the
 * merged root would (upper layer first, then the base) to the alternative's real
 * target; undefined when it does not resolve.
 */
async function resolveAlternative(upper: string, base: string, target: string): Promise<string | undefined> {
  let current = target;
  for (let hops = 0; hops < 8 && current.startsWith('/etc/alternatives/'); hops++) {
    const name = current.slice('/etc/alternatives/'.length);
    if (!name || name.includes('/')) return undefined;
    let next: string | undefined;
    for (const root of [upper, base]) {
      // Only follow real directories etc/ and etc/alternatives/ inside the root.
      const etc = await lstatOrUndefined(join(root, 'etc'));
      const alt = etc?.isDirectory() ? await lstatOrUndefined(join(root, 'etc/alternatives')) : undefined;
      if (!alt?.isDirectory()) continue;
      const st = await lstatOrUndefined(join(root, 'etc/alternatives', name));
      if (st && isWhiteout(st)) break;
      if (st?.isSymbolicLink()) {
        next = await readlink(join(root, 'etc/alternatives', name));
        break;
      }
    }
    if (next === undefined) return undefined;
    current = next.startsWith('/') ? next : posix.resolve('/etc/alternatives', next);
  }
  return current.startsWith('/etc/alternatives/') ? undefined : current;
}

/**
 * Copy what the install added or changed from `upper` into `staging`, comparing each
 * entry with the base's at the same path (walked in step, never following a symlink
 * of either tree). Whiteouts are skipped here: deletions are reported separately, since
 * an extension cannot delete base files.
 */
export async function diffLayer(options: LayerDiffOptions): Promise<LayerDiff> {
  const result: LayerDiff = { copied: 0, identical: 0, flattenedAlternatives: [], skippedSpecial: [], emptyNewDirs: [] };
  const made = new Set<string>(['']);
  const links = new Map<string, string>();
  await mkdir(options.staging, { recursive: true });

  async function ensureDir(rel: string): Promise<void> {
    if (made.has(rel)) return;
    const parent = posix.dirname(rel);
    await ensureDir(parent === '.' ? '' : parent);
    const st = await lstat(join(options.upper, rel));
    await mkdir(join(options.staging, rel));
    await chmod(join(options.staging, rel), st.mode & 0o7777);
    made.add(rel);
  }

  async function walk(rel: string, baseIsDir: boolean): Promise<void> {
    const names = (await readdir(join(options.upper, rel))).sort();
    for (const name of names) {
      const childRel = rel ? `${rel}/${name}` : name;
      if (isUnder(childRel, options.ignore)) continue;
      const upperPath = join(options.upper, childRel);
      const basePath = join(options.base, childRel);
      const st = await lstat(upperPath);
      if (isWhiteout(st)) continue;
      const baseSt = baseIsDir ? await lstatOrUndefined(basePath) : undefined;
      if (st.isDirectory()) {
        const baseDir = baseSt?.isDirectory() ?? false;
        // A new directory is content even when empty; a base directory only as a parent.
        if (!baseDir) {
          await ensureDir(childRel);
          result.copied++;
          if ((await readdir(upperPath)).length === 0) result.emptyNewDirs.push(childRel);
        }
        await walk(childRel, baseDir);
        continue;
      }
      if (baseSt && (await identical(upperPath, st, basePath, baseSt))) {
        result.identical++;
        continue;
      }
      const parent = posix.dirname(childRel);
      const dest = join(options.staging, childRel);
      if (st.isSymbolicLink()) {
        await ensureDir(parent === '.' ? '' : parent);
        let target = await readlink(upperPath);
        if (target.startsWith('/etc/alternatives/')) {
          const resolved = await resolveAlternative(options.upper, options.base, target);
          if (resolved) {
            target = resolved;
            result.flattenedAlternatives.push(childRel);
          }
        }
        await symlink(target, dest);
      } else if (st.isFile()) {
        await ensureDir(parent === '.' ? '' : parent);
        const key = `${st.dev}:${st.ino}`;
        const first = st.nlink > 1 ? links.get(key) : undefined;
        if (first) {
          await link(first, dest);
        } else {
          await copyFile(upperPath, dest);
          await chmod(dest, st.mode & 0o7777);
          if (st.nlink > 1) links.set(key, dest);
        }
      } else {
        result.skippedSpecial.push(childRel);
        continue;
      }
      result.copied++;
    }
  }

  const baseRoot = await lstatOrUndefined(options.base);
  await walk('', baseRoot?.isDirectory() ?? false);
  return result;
}

/**
 * Base entries the install deleted (whiteouts, opaque directories, or — in a copy —
 * simply missing): for every directory the install touched (present in `upper`) that
 * is a real directory in the base, names in the base that `merged` no longer has.
 * Run where `merged` is visible (inside the overlay's namespace, or on the copy).
 */
export async function findDeletions(upper: string, base: string, merged: string, ignore: readonly string[]): Promise<string[]> {
  const deleted: string[] = [];
  async function walk(rel: string): Promise<void> {
    const baseDir = await lstatOrUndefined(join(base, rel));
    const mergedDir = await lstatOrUndefined(join(merged, rel));
    if (!baseDir?.isDirectory() || !mergedDir?.isDirectory()) return;
    const present = new Set(await readdir(join(merged, rel)));
    for (const name of (await readdir(join(base, rel))).sort()) {
      const childRel = rel ? `${rel}/${name}` : name;
      if (!present.has(name) && !isUnder(childRel, ignore)) deleted.push(childRel);
    }
    for (const name of (await readdir(join(upper, rel))).sort()) {
      const childRel = rel ? `${rel}/${name}` : name;
      if (isUnder(childRel, ignore)) continue;
      const st = await lstat(join(upper, childRel));
      if (st.isDirectory()) await walk(childRel);
    }
  }
  await walk('');
  return deleted;
}

/**
 * Remove directories left empty in the staging tree — parents of entries that pruning
 * or the scope check removed — bottom-up, except directories packages ship empty.
 * Returns how many were removed.
 */
export async function removeEmptyDirs(root: string, keep: readonly string[]): Promise<number> {
  const keepSet = new Set(keep);
  let removed = 0;
  async function walk(rel: string): Promise<boolean> {
    const path = rel ? join(root, rel) : root;
    let empty = true;
    for (const name of await readdir(path)) {
      const childRel = rel ? `${rel}/${name}` : name;
      const st = await lstat(join(root, childRel));
      if (st.isDirectory() && (await walk(childRel))) {
        await rmdir(join(root, childRel));
        removed++;
        continue;
      }
      empty = false;
    }
    return empty && rel !== '' && !keepSet.has(rel);
  }
  await walk('');
  return removed;
}

export interface ScopeCheck {
  /** Files under /etc, /var and /root (configuration, state, root's dotfiles): dropped with a warning. */
  droppedConfig: string[];
  /** Content anywhere else outside /usr and /opt: an error. */
  outside: string[];
}

/**
 * systemd-sysext merges only /usr and /opt. Policy for the rest of what packages wrote:
 * - package-manager/cache/log/runtime state: dropped silently (STATE_PATHS, before this);
 * - /etc (configuration, e.g. lvm2's /etc/lvm/lvm.conf), /var (state that
 *   maintainer scripts or tmpfiles.d create, e.g. /var/lib/nfs) and /root (base-files'
 *   dotfiles, reinstalled over a base without a package database): dropped with a
 *   warning naming the files — the programs fall back to built-in defaults, and a
 *   confext or the base carries configuration;
 * - anything else (/boot, /root, a non-merged /bin or /lib …): an error naming the path;
 *   RemoveFiles= in the definition is the explicit way to drop such files.
 * Empty directories outside /usr and /opt are dropped silently.
 * Removes the dropped entries from `staging`; returns what it found.
 */
export async function enforceSysextScope(staging: string): Promise<ScopeCheck> {
  const check: ScopeCheck = { droppedConfig: [], outside: [] };
  async function collect(rel: string, into: string[]): Promise<void> {
    const st = await lstat(join(staging, rel));
    if (!st.isDirectory()) {
      into.push(rel);
      return;
    }
    for (const name of (await readdir(join(staging, rel))).sort()) await collect(`${rel}/${name}`, into);
  }
  for (const name of (await readdir(staging)).sort()) {
    const st = await lstat(join(staging, name));
    if ((name === 'usr' || name === 'opt') && st.isDirectory()) continue;
    if (name === 'etc' || name === 'var' || name === 'root') {
      await collect(name, check.droppedConfig);
      await rm(join(staging, name), { recursive: true, force: true });
      continue;
    }
    const found: string[] = [];
    await collect(name, found);
    if (found.length === 0) await rm(join(staging, name), { recursive: true, force: true });
    check.outside.push(...found);
  }
  return check;
}

export interface TreeSummary {
  /** Non-directory entries. */
  files: number;
  /** Bytes of regular files (each inode once). */
  bytes: number;
  /** A digest of paths, types, modes, link targets and contents: the content identity. */
  digest: string;
}

/** Walk a tree in sorted order and fingerprint it (for counts and content-derived UUIDs). */
export async function summarizeTree(root: string): Promise<TreeSummary> {
  const hash = createHash('sha256');
  const seen = new Set<string>();
  let files = 0;
  let bytes = 0;
  async function walk(rel: string): Promise<void> {
    for (const name of (await readdir(join(root, rel))).sort()) {
      const childRel = rel ? `${rel}/${name}` : name;
      const path = join(root, childRel);
      const st = await lstat(path);
      hash.update(`${childRel}\0${st.mode.toString(8)}\0`);
      if (st.isDirectory()) {
        await walk(childRel);
        continue;
      }
      files++;
      if (st.isSymbolicLink()) hash.update(await readlink(path));
      else if (st.isFile()) {
        const key = `${st.dev}:${st.ino}`;
        if (!seen.has(key)) {
          seen.add(key);
          bytes += st.size;
        }
        const fileHash = createHash('sha256');
        for await (const chunk of createReadStream(path)) fileHash.update(chunk as Buffer);
        hash.update(fileHash.digest('hex'));
      }
      hash.update('\n');
    }
  }
  await walk('');
  return { files, bytes, digest: hash.digest('hex') };
}
