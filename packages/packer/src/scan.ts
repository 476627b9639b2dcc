/**
 * Walk a tree once (lstat only, never following a symlink) into the sorted, validated
 * list of archive members that the writer streams. Everything that makes the output
 * reproducible is decided here: bytewise name order, inode numbers assigned in that
 * order, hard-link groups, directory link counts, owner normalisation and mtime
 * clamping. Nothing here depends on the disk's inode numbers or readdir order.
 */
import { closeSync, fstatSync, lstatSync, openSync, readdirSync, readlinkSync, realpathSync, type Stats } from 'node:fs';
import { UserError, isErrnoException } from '@mkinitrd-pkg/common';
import { DirWalker, O_DIR_NOFOLLOW, at, openRoot } from './dirfd.js';
import { S_IFMT, U32_MAX, memberSize, splitDev, typeOfMode, type EntryType } from './newc.js';

export type OwnerPolicy = 'keep' | 'root';

export interface ScanOptions {
  /** 'keep' (default) stores the files' uid/gid; 'root' stores 0/0 for every member. */
  owner?: OwnerPolicy;
  /** Clamp every mtime to this (seconds since the epoch), as reproducible-builds.org asks. */
  sourceDateEpoch?: number;
  /**
   * Names (relative, no slash at either end) whose entries and subtrees form the late
   * layer: the archive holds every other entry first (the base layer, in name order),
   * then these (in name order). Inode numbers follow that order, so the base layer's
   * bytes depend on the base entries only, and its compressed frames can be reused
   * for another late layer (another kernel's modules). Parents still come before
   * children, which is all the kernel needs (init/initramfs.c creates each entry in a
   * directory that must exist).
   */
  lateNames?: readonly string[];
}

/** One archive member, ready to be written. Names and link targets are binary strings (latin1). */
export interface PackEntry {
  /** Archive name: relative, no leading "./" or "/", bytes as latin1 chars. */
  name: string;
  /** Host path of the member (absolute). */
  path: Buffer;
  type: EntryType;
  /** Full st_mode (type and permission bits). */
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  /** Data bytes stored in the archive (0 for all but the last member of a hard-link group). */
  size: number;
  /** Whether the writer opens the file and copies `size` bytes (checking the size did not change). */
  readData: boolean;
  nlink: number;
  ino: number;
  rdevMajor: number;
  rdevMinor: number;
  /** Symlink target (latin1). */
  linkTarget?: string;
}

/** The lstat fields the packer uses; a plain object in unit tests. */
export interface StatLike {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeMs: number;
  nlink: number;
  rdev: number;
}

/** Longest name the kernel unpacks (PATH_MAX including the NUL, init/initramfs.c). */
export const MAX_NAME_BYTES = 4095;

function limit(message: string, hint: string): UserError {
  return new UserError('ARCHIVE_LIMIT', message, { hint });
}

export function displayName(name: string): string {
  return Buffer.from(name, 'latin1').toString('utf8');
}

/**
 * Turn one lstat result into a member (inode number and link count are filled in later).
 * Throws ARCHIVE_LIMIT for what newc cannot hold: data ≥ 4 GiB, an mtime outside
 * 0…2³²−1 after clamping, a name longer than the kernel accepts.
 */
export function entryFromStat(name: string, path: Buffer, st: StatLike, options: ScanOptions, linkTarget?: string): PackEntry {
  const shown = () => displayName(name);
  const type = typeOfMode(st.mode);
  if (type === undefined) throw new UserError('INPUT', `unsupported file type (mode ${st.mode.toString(8)}): ${shown()}`);
  if (name.length > MAX_NAME_BYTES) {
    throw limit(`name longer than ${MAX_NAME_BYTES} bytes: ${shown().slice(0, 80)}…`, 'the kernel refuses names longer than PATH_MAX in an initramfs');
  }
  let mtime = Math.floor(st.mtimeMs / 1000);
  if (options.sourceDateEpoch !== undefined && mtime > options.sourceDateEpoch) mtime = options.sourceDateEpoch;
  if (!(mtime >= 0 && mtime <= U32_MAX)) {
    throw limit(
      `mtime ${mtime} of ${shown()} does not fit the 32-bit newc field`,
      mtime < 0 ? 'touch the file to a date after 1970' : 'set --source-date-epoch (or SOURCE_DATE_EPOCH) to clamp mtimes',
    );
  }
  let size = 0;
  if (type === 'file') {
    size = st.size;
    if (size > U32_MAX) {
      throw limit(`${shown()} is ${size} bytes; newc cannot store a file of 4 GiB or more`, 'leave the file out of the image (initrds should be small)');
    }
  } else if (type === 'symlink') {
    size = linkTarget?.length ?? 0;
  }
  if (st.uid > U32_MAX || st.gid > U32_MAX) throw limit(`uid/gid of ${shown()} do not fit 32 bits`, 'use --owner root');
  const root = options.owner === 'root';
  const isDev = type === 'char' || type === 'block';
  const rdev = isDev ? splitDev(st.rdev) : { major: 0, minor: 0 };
  const entry: PackEntry = {
    name,
    path,
    type,
    mode: st.mode,
    uid: root ? 0 : st.uid,
    gid: root ? 0 : st.gid,
    mtime,
    size,
    readData: type === 'file',
    nlink: 1,
    ino: 0,
    rdevMajor: rdev.major,
    rdevMinor: rdev.minor,
  };
  if (linkTarget !== undefined) entry.linkTarget = linkTarget;
  return entry;
}

export interface ScanResult {
  root: string;
  /**
   * The root, opened: the writer reads every file relative to it (dirfd.ts), never
   * through a path that could be swapped. Close it when done (packTree does).
   */
  walker: DirWalker;
  entries: PackEntry[];
  /** Sum of member sizes plus one trailer: the size of the tree as one newc archive. */
  archiveBytes: number;
  /** Data bytes (regular files and symlink targets). */
  dataBytes: number;
  /** Entries [0, baseCount) are the base layer, the rest the late layer (ScanOptions.lateNames). */
  baseCount: number;
}

function ioError(what: string, error: unknown): UserError {
  if (error instanceof UserError) return error;
  const code = isErrnoException(error) ? error.code : undefined;
  if (code === 'ENOENT') return new UserError('FILE_CHANGED', `${what} vanished while the tree was being read`, { hint: 'do not modify the tree while packing it' });
  if (code === 'ELOOP' || code === 'ENOTDIR') {
    return new UserError('FILE_CHANGED', `${what} was replaced by a symlink or a file while the tree was being read`, { hint: 'do not modify the tree while packing it' });
  }
  if (code === 'EMFILE') return new UserError('IO', `cannot read ${what}: the tree is nested too deeply (${(error as Error).message})`);
  return new UserError('IO', `cannot read ${what}: ${(error as Error).message}`);
}

/**
 * lstat the whole tree below `root` (which must be a directory; a symlink given as the
 * root is resolved once) and return the members in bytewise name order, parents before
 * children, with inode numbers 1, 2, 3… in that order and hard links grouped
 * (the GNU cpio convention: all but the last member of a group carry no data).
 */
export function scanTree(root: string, options: ScanOptions = {}): ScanResult {
  let realRoot: string;
  let rootFd: number;
  try {
    realRoot = realpathSync(root);
    rootFd = openRoot(realRoot);
  } catch (error) {
    if (isErrnoException(error) && error.code === 'ENOENT') throw new UserError('INPUT', `${root} does not exist`);
    if (isErrnoException(error) && error.code === 'ENOTDIR') throw new UserError('INPUT', `${root} is not a directory`);
    throw new UserError('IO', `cannot read ${root}: ${(error as Error).message}`);
  }
  const walker = new DirWalker(rootFd);
  try {
    return scanFrom(walker, realRoot, options);
  } catch (error) {
    walker.close();
    throw error;
  }
}

/**
 * The walk: each directory is opened (O_NOFOLLOW) relative to its parent's descriptor
 * and must be the directory lstat saw; its entries are read and lstat'ed through that
 * descriptor (dirfd.ts), so a directory swapped for a symlink mid-scan is never followed.
 * Open descriptors: one per level of the current path. The stack is explicit (no
 * recursion), so any depth is O(1) in call stack.
 */
function scanFrom(walker: DirWalker, realRoot: string, options: ScanOptions): ScanResult {
  const rootBin = Buffer.from(realRoot, 'utf8').toString('latin1');
  const entries: PackEntry[] = [];
  /** Hard-link candidates: key dev:ino → members (in walk order, sorted later). */
  const links = new Map<string, PackEntry[]>();
  const readNames = (fd: number, rel: string) => {
    try {
      return readdirSync(at(fd), { encoding: 'latin1' });
    } catch (error) {
      throw ioError(`directory ${displayName(rel === '' ? rootBin : `${rootBin}/${rel}`)}`, error);
    }
  };
  const stack: { rel: string; fd: number; names: string[]; i: number }[] = [{ rel: '', fd: walker.rootFd, names: readNames(walker.rootFd, ''), i: 0 }];
  try {
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      if (top.i >= top.names.length) {
        if (top.fd !== walker.rootFd) closeSync(top.fd);
        stack.pop();
        continue;
      }
      const n = top.names[top.i++]!;
      const rel = top.rel;
      const name = rel === '' ? n : `${rel}/${n}`;
      const path = Buffer.from(`${rootBin}/${name}`, 'latin1');
      const child = at(top.fd, n);
      let st: Stats;
      let target: string | undefined;
      try {
        st = lstatSync(child);
        if ((st.mode & S_IFMT) === 0o120000) target = readlinkSync(child, { encoding: 'latin1' });
      } catch (error) {
        throw ioError(displayName(`${rootBin}/${name}`), error);
      }
      const entry = entryFromStat(name, path, st, options, target);
      entries.push(entry);
      if (entry.type === 'dir') {
        let fd: number;
        try {
          fd = openSync(child, O_DIR_NOFOLLOW);
        } catch (error) {
          throw ioError(displayName(`${rootBin}/${name}`), error);
        }
        const now = fstatSync(fd);
        if (now.ino !== st.ino || now.dev !== st.dev) {
          closeSync(fd);
          throw ioError(displayName(`${rootBin}/${name}`), Object.assign(new Error('replaced'), { code: 'ENOTDIR' }));
        }
        stack.push({ rel: name, fd, names: [], i: 0 });
        stack[stack.length - 1]!.names = readNames(fd, name);
      } else if (st.nlink > 1 && entry.type !== 'symlink') {
        let key: string;
        if (Number.isSafeInteger(st.ino) && Number.isSafeInteger(st.dev)) key = `${st.dev}:${st.ino}`;
        else {
          const big = lstatSync(child, { bigint: true });
          key = `${big.dev}:${big.ino}`;
        }
        const group = links.get(key);
        if (group) group.push(entry);
        else links.set(key, [entry]);
      }
    }
  } finally {
    for (const level of stack) if (level.fd !== walker.rootFd) closeSync(level.fd);
  }
  entries.sort(compareNames);
  const baseCount = layerEntries(entries, options.lateNames ?? []);
  finishEntries(entries, [...links.values()]);
  let archiveBytes = 0;
  let dataBytes = 0;
  for (const e of entries) {
    archiveBytes += memberSize(e.name.length, e.size);
    dataBytes += e.size;
  }
  return { root: realRoot, walker, entries, archiveBytes: archiveBytes + memberSize(10, 0), dataBytes, baseCount };
}

/**
 * Reorder name-sorted `entries` in place into the base layer, then the late layer
 * (entries named in `lateNames` or below them), each still in name order; returns the
 * base layer's length. A late name's parents stay in the base layer (or are late
 * themselves), so parents still precede children.
 */
export function layerEntries(entries: PackEntry[], lateNames: readonly string[]): number {
  if (lateNames.length === 0) return entries.length;
  const names = lateNames.map((n) => Buffer.from(n.replace(/^\/+|\/+$/g, ''), 'utf8').toString('latin1')).filter((n) => n !== '');
  const isLate = (name: string) => names.some((n) => name === n || (name.length > n.length && name.startsWith(n) && name[n.length] === '/'));
  const base: PackEntry[] = [];
  const late: PackEntry[] = [];
  for (const e of entries) (isLate(e.name) ? late : base).push(e);
  entries.length = 0;
  entries.push(...base, ...late);
  return base.length;
}

/** Bytewise order of binary-string names (latin1 code units are the bytes). */
export function compareNames(a: { name: string }, b: { name: string }): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/**
 * Given members in archive order (name order, or layered: layerEntries) and the hard-link
 * groups among them: assign inode numbers in archive order (a group shares the number of
 * its first member), set nlink to the group size (2 + subdirectories for directories),
 * and move a group's data onto its last member.
 */
export function finishEntries(entries: PackEntry[], groups: PackEntry[][]): void {
  const groupOf = new Map<PackEntry, PackEntry[]>();
  const position = new Map<PackEntry, number>();
  if (groups.some((g) => g.length > 1)) entries.forEach((e, i) => position.set(e, i));
  for (const g of groups) {
    if (g.length < 2) continue;
    g.sort((a, b) => position.get(a)! - position.get(b)!);
    for (const e of g) groupOf.set(e, g);
  }
  const subdirs = new Map<string, number>();
  for (const e of entries) {
    if (e.type !== 'dir') continue;
    const slash = e.name.lastIndexOf('/');
    if (slash > 0) {
      const parent = e.name.slice(0, slash);
      subdirs.set(parent, (subdirs.get(parent) ?? 0) + 1);
    }
  }
  let ino = 0;
  for (const e of entries) {
    const g = groupOf.get(e);
    if (e.type === 'dir') e.nlink = 2 + (subdirs.get(e.name) ?? 0);
    if (!g) {
      e.ino = ++ino;
      continue;
    }
    const first = g[0]!;
    const last = g[g.length - 1]!;
    e.ino = e === first ? ++ino : first.ino;
    e.nlink = g.length;
    // The last member carries the data; the others are size 0 (GNU cpio convention).
    if (e !== last) {
      e.size = 0;
      e.readData = false;
    }
  }
}
