/**
 * extractImage: unpack every segment of an image into a directory, restoring modes,
 * owners (as root), mtimes, symlinks, hard links, devices, fifos and sockets.
 *
 * Safety (the archive is untrusted, the destination may be changed by others while we
 * run): names with `..` components or a leading `/` are refused; every directory is
 * opened relative to its parent with O_NOFOLLOW|O_DIRECTORY and everything is created
 * relative to an open directory (dirfd.ts), so neither a symlink an earlier member made
 * nor one swapped in mid-run is ever written through; files are created with
 * O_EXCL|O_NOFOLLOW after removing what was there; directory metadata is applied at the
 * end through the directories' own descriptors.
 */
import {
  chmodSync,
  closeSync,
  constants as fsConstants,
  fchmodSync,
  fchownSync,
  fstatSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  realpathSync,
  renameSync,
  rmSync,
  rmdirSync,
  symlinkSync,
  unlinkSync,
  utimesSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { UserError, childEnvironment, getLogger, isErrnoException, resolveToolSync, type Logger } from '@mkinitrd-pkg/common';
import { readImage, type CpioEntry, type EntryCounts } from './reader.js';
import { DirWalker, at, openRoot, whyNotDir } from './dirfd.js';

export interface ExtractOptions {
  /** Restore uid/gid from the archive; default: when running as root. */
  preserveOwner?: boolean;
  logger?: Logger;
}

export interface ExtractResult extends EntryCounts {
  destination: string;
  /** Data bytes written. */
  bytes: number;
  /** Members that could not be created (device nodes when not root), with why. */
  skipped: { name: string; reason: string }[];
}

const O_CREATE = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;
const O_REWRITE = fsConstants.O_WRONLY | fsConstants.O_TRUNC | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK;
const O_DIR = fsConstants.O_RDONLY | fsConstants.O_DIRECTORY | fsConstants.O_NOFOLLOW;

interface DirMeta {
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
}

function unsafe(name: string, why: string): UserError {
  return new UserError('UNSAFE_PATH', `refusing to extract ${JSON.stringify(shortName(name))}: ${why}`, {
    hint: 'the archive tries to write outside the destination; it is damaged or hostile',
  });
}

function ioError(what: string, error: unknown): UserError {
  if (error instanceof UserError) return error;
  return new UserError('IO', `cannot ${what}: ${(error as Error).message}`);
}

function lstatOrUndefined(path: Buffer): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (error) {
    if (isErrnoException(error) && (error.code === 'ENOENT' || error.code === 'ENOTDIR')) return undefined;
    throw nodeError(`inspect ${shortName(path.toString('utf8'))}`, error);
  }
}

/** Relative name → safe components (binary strings); [] for the root entry ".". */
export function memberComponents(entry: Pick<CpioEntry, 'name' | 'rawName'>): string[] {
  const raw = entry.rawName.toString('latin1');
  if (raw.startsWith('/')) throw unsafe(entry.name, 'absolute name');
  const parts: string[] = [];
  for (const part of raw.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw unsafe(entry.name, 'name contains ".."');
    parts.push(part);
  }
  return parts;
}

/** A name short enough for one line of an error message (names may be 64 KiB long). */
export function shortName(name: string): string {
  return name.length <= 160 ? name : `${name.slice(0, 80)}…${name.slice(-60)} (${Buffer.byteLength(name)} bytes)`;
}

function nodeError(what: string, error: unknown): UserError {
  if (error instanceof UserError) return error;
  const code = isErrnoException(error) ? error.code : undefined;
  if (code === 'ENAMETOOLONG') return new UserError('ARCHIVE_LIMIT', `cannot ${what}: a name component is longer than the filesystem allows (255 bytes)`);
  return new UserError('IO', `cannot ${what}: ${code ?? (error as Error).message}`);
}

/**
 * Extract the image at `image` into `destination` (created if missing).
 *
 * Race-free against a tree changed while we write (issue 10 item 2): the destination is
 * opened once, every directory is opened relative to its parent with O_NOFOLLOW and
 * everything is created relative to an open directory (dirfd.ts) — a parent swapped for
 * a symlink at any moment is never written through.
 */
export async function extractImage(image: string, destination: string, options: ExtractOptions = {}): Promise<ExtractResult> {
  const logger = options.logger ?? getLogger();
  const preserveOwner = options.preserveOwner ?? process.getuid?.() === 0;
  let root: string;
  let rootFd: number;
  try {
    mkdirSync(destination, { recursive: true });
    root = realpathSync(destination);
    rootFd = openRoot(root);
  } catch (error) {
    if (isErrnoException(error) && error.code === 'ENOTDIR') throw new UserError('INPUT', `${destination} is not a directory`);
    throw ioError(`create ${destination}`, error);
  }
  const walker = new DirWalker(rootFd);
  /** For hard-link sources: a second chain, so that the member's own stays open. */
  const sourceWalker = new DirWalker(rootFd);
  let nodes: NodeMaker | undefined;
  try {
    return await extractInto(image, root, walker, sourceWalker, () => (nodes ??= new NodeMaker(rootFd)), preserveOwner, logger);
  } finally {
    nodes?.close();
    sourceWalker.truncate();
    walker.close();
  }
}

async function extractInto(
  image: string,
  root: string,
  walker: DirWalker,
  sourceWalker: DirWalker,
  nodeMaker: () => NodeMaker,
  preserveOwner: boolean,
  logger: Logger,
): Promise<ExtractResult> {
  const result: ExtractResult = {
    destination: root,
    entries: 0,
    files: 0,
    dirs: 0,
    symlinks: 0,
    hardlinks: 0,
    devices: 0,
    fifos: 0,
    sockets: 0,
    bytes: 0,
    skipped: [],
  };
  const show = (rel: string) => shortName(Buffer.from(rel, 'latin1').toString('utf8'));
  const dirMeta = new Map<string, DirMeta>();
  /** Members of the current archive that later hard links may point to. */
  let linkSources = new Map<string, { parts: string[]; dev: number; ino: number }>();
  let currentArchive = '';

  /** The open parent directory of `parts`, created as needed, never through a symlink. */
  const parentOf = (parts: string[], name: string): number => {
    const dirParts = parts.slice(0, -1);
    try {
      return walker.dir(dirParts, 0o755);
    } catch (error) {
      const k = (error as { component?: number }).component;
      if (k !== undefined && isErrnoException(error) && (error.code === 'ELOOP' || error.code === 'ENOTDIR')) {
        const parent = k === 0 ? walker.rootFd : walker.dir(dirParts.slice(0, k));
        const why = whyNotDir(parent, dirParts[k]!);
        throw unsafe(shortName(name), `${show(dirParts.slice(0, k + 1).join('/'))} is ${why === 'symlink' ? 'a symlink' : 'not a directory'}`);
      }
      throw nodeError(`create the directories of ${shortName(name)}`, error);
    }
  };

  /** Remove whatever is at `leaf` in `dirFd` (never following it) unless both are directories. */
  const clearFor = (dirFd: number, leaf: string, rel: string, wantDir: boolean, name: string): boolean => {
    const path = at(dirFd, leaf);
    const st = lstatOrUndefined(path);
    if (st === undefined) return false;
    if (st.isDirectory()) {
      if (wantDir) return true;
      try {
        rmdirSync(path);
      } catch (error) {
        throw nodeError(`replace directory ${shortName(name)} (it is not empty)`, error);
      }
      for (const key of dirMeta.keys()) if (key === rel || key.startsWith(`${rel}/`)) dirMeta.delete(key);
      return false;
    }
    try {
      unlinkSync(path);
    } catch (error) {
      throw nodeError(`replace ${shortName(name)}`, error);
    }
    return false;
  };

  const writeData = async (fd: number, data: AsyncIterable<Buffer>, name: string) => {
    for await (const piece of data) {
      try {
        let off = 0;
        while (off < piece.length) off += writeSync(fd, piece, off, piece.length - off);
      } catch (error) {
        throw nodeError(`write ${shortName(name)}`, error);
      }
      result.bytes += piece.length;
    }
  };

  for await (const member of readImage(image)) {
    const { entry } = member;
    const archiveKey = `${member.segment.index}:${member.archive}`;
    if (archiveKey !== currentArchive) {
      currentArchive = archiveKey;
      linkSources = new Map();
    }
    const parts = memberComponents(entry);
    if (parts.length === 0) continue; // the "." entry: the destination itself
    const rel = parts.join('/');
    const leaf = parts[parts.length - 1]!;
    const name = entry.name;
    const dirFd = parentOf(parts, name);
    const path = at(dirFd, leaf);
    const perm = entry.mode & 0o7777;
    result.entries++;

    if (entry.type === 'dir') {
      const exists = clearFor(dirFd, leaf, rel, true, name);
      if (!exists) {
        try {
          mkdirSync(path, 0o700);
        } catch (error) {
          throw nodeError(`create directory ${shortName(name)}`, error);
        }
      }
      dirMeta.set(rel, { mode: perm, uid: entry.uid, gid: entry.gid, mtime: entry.mtime });
      result.dirs++;
      continue;
    }

    clearFor(dirFd, leaf, rel, false, name);

    // A later member of a hard-link group: link to the first one (same archive).
    if (entry.rawHardLinkTo !== undefined) {
      const source = linkSources.get(entry.rawHardLinkTo.toString('latin1'));
      let sourcePath: Buffer | undefined;
      if (source) {
        try {
          sourcePath = at(sourceWalker.dir(source.parts.slice(0, -1)), source.parts[source.parts.length - 1]!);
        } catch {
          sourcePath = undefined;
        }
      }
      const st = sourcePath ? lstatOrUndefined(sourcePath) : undefined;
      if (!source || !sourcePath || !st || st.dev !== source.dev || st.ino !== source.ino) {
        throw unsafe(shortName(name), `its hard-link source ${shortName(entry.hardLinkTo ?? '')} was replaced or is missing`);
      }
      if (typeOfStats(st) !== entry.type) {
        throw unsafe(shortName(name), `it is a ${entry.type} but its hard-link source ${shortName(entry.hardLinkTo ?? '')} is not`);
      }
      try {
        linkSync(sourcePath, path);
      } catch (error) {
        throw nodeError(`link ${shortName(name)}`, error);
      }
      result.hardlinks++;
      if (entry.type === 'file' && entry.size > 0) {
        // GNU convention: the last member of a group carries the data.
        let fd: number;
        try {
          fd = openSync(path, O_REWRITE);
        } catch (error) {
          throw nodeError(`write ${shortName(name)}`, error);
        }
        try {
          const now = fstatSync(fd);
          if (!now.isFile() || now.ino !== source.ino || now.dev !== source.dev) throw unsafe(shortName(name), 'its hard-link source is not a regular file');
          await writeData(fd, member.data, name);
          applyFd(fd, entry, preserveOwner);
        } finally {
          closeSync(fd);
        }
      }
      continue;
    }

    switch (entry.type) {
      case 'file': {
        let fd: number;
        try {
          fd = openSync(path, O_CREATE, 0o600);
        } catch (error) {
          throw nodeError(`create ${shortName(name)}`, error);
        }
        try {
          await writeData(fd, member.data, name);
          applyFd(fd, entry, preserveOwner);
          if (entry.nlink > 1) {
            const st = fstatSync(fd);
            linkSources.set(entry.rawName.toString('latin1'), { parts, dev: st.dev, ino: st.ino });
          }
        } finally {
          closeSync(fd);
        }
        result.files++;
        break;
      }
      case 'symlink': {
        try {
          symlinkSync(entry.rawLinkTarget ?? Buffer.alloc(0), path);
          // Both act on the link itself (lchown(2), utimensat(AT_SYMLINK_NOFOLLOW)).
          if (preserveOwner) lchownSync(path, entry.uid, entry.gid);
          lutimesSync(path, entry.mtime, entry.mtime);
        } catch (error) {
          throw nodeError(`create symlink ${shortName(name)}`, error);
        }
        result.symlinks++;
        break;
      }
      case 'char':
      case 'block':
      case 'fifo':
      case 'socket': {
        const made = nodeMaker().make(entry, preserveOwner);
        if (typeof made === 'string') {
          result.skipped.push({ name, reason: made });
          logger.warn(`skipped ${entry.type} ${shortName(name)}: ${made}`);
          continue;
        }
        try {
          renameSync(made.path, path);
        } catch (error) {
          throw nodeError(`create ${shortName(name)}`, error);
        }
        if (entry.nlink > 1) linkSources.set(entry.rawName.toString('latin1'), { parts, dev: made.dev, ino: made.ino });
        if (entry.type === 'fifo') result.fifos++;
        else if (entry.type === 'socket') result.sockets++;
        else result.devices++;
        break;
      }
    }
  }

  // Directory metadata last (children change mtimes; read-only modes would block them),
  // deepest first, on the descriptors of the directories themselves.
  const dirs = [...dirMeta.entries()].sort((a, b) => b[0].split('/').length - a[0].split('/').length || (a[0] < b[0] ? -1 : 1));
  for (const [rel, meta] of dirs) {
    let fd: number;
    try {
      fd = walker.dir(rel.split('/'));
    } catch (error) {
      throw nodeError(`set metadata of directory ${show(rel)}`, error);
    }
    try {
      if (preserveOwner) fchownSync(fd, meta.uid, meta.gid);
      fchmodSync(fd, meta.mode);
      futimesSync(fd, meta.mtime, meta.mtime);
    } catch (error) {
      throw nodeError(`set metadata of directory ${show(rel)}`, error);
    }
  }
  return result;
}

function typeOfStats(st: Stats): CpioEntry['type'] | undefined {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  return undefined;
}

function applyFd(fd: number, entry: CpioEntry, preserveOwner: boolean): void {
  try {
    // chown before chmod: chown clears setuid/setgid bits.
    if (preserveOwner) fchownSync(fd, entry.uid, entry.gid);
    fchmodSync(fd, entry.mode & 0o7777);
    futimesSync(fd, entry.mtime, entry.mtime);
  } catch (error) {
    throw ioError(`set metadata of ${entry.name}`, error);
  }
}

/**
 * Device nodes, fifos and sockets. Node has no mknod(2): coreutils `mknod` makes devices
 * and fifos, python3's os.mknod sockets. A node is made in a private directory (0700,
 * created in the destination root for this run), given its owner, mode and mtime there
 * (chmod(2) would follow a symlink swapped in elsewhere), and then renamed into place
 * relative to its open parent directory. The child process reaches the private
 * directory as /proc/<our pid>/fd/<fd>, so names with any bytes work.
 */
class NodeMaker {
  private readonly dirFd: number;
  private readonly dirName: string;
  private count = 0;

  constructor(private readonly rootFd: number) {
    this.dirName = `.mkinitrd-pkg-nodes.${randomBytes(6).toString('hex')}`;
    mkdirSync(at(rootFd, this.dirName), 0o700);
    this.dirFd = openSync(at(rootFd, this.dirName), O_DIR);
  }

  /** The made node (to rename into place), or why it was skipped. */
  make(entry: CpioEntry, preserveOwner: boolean): { path: Buffer; dev: number; ino: number } | string {
    const leaf = `n${this.count++}`;
    const forChild = `/proc/${process.pid}/fd/${this.dirFd}/${leaf}`;
    let cmd: string;
    let args: string[];
    switch (entry.type) {
      case 'char':
      case 'block':
        cmd = 'mknod';
        args = ['-m', '0600', forChild, entry.type === 'char' ? 'c' : 'b', String(entry.rdevMajor), String(entry.rdevMinor)];
        break;
      case 'fifo':
        cmd = 'mknod';
        args = ['-m', '0600', forChild, 'p'];
        break;
      default:
        cmd = 'python3';
        args = ['-c', 'import os, stat, sys; os.mknod(sys.argv[1], stat.S_IFSOCK | 0o600)', forChild];
    }
    // By absolute path, never the caller's PATH (packages/common/src/tools.ts).
    let tool;
    try {
      tool = resolveToolSync(cmd);
    } catch {
      return `${cmd} is not installed`;
    }
    const r = spawnSync(tool.file, [...tool.prefixArgs, ...args], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...childEnvironment(tool, undefined) } });
    if (r.error || r.status !== 0) {
      if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') return `${cmd} is not installed`;
      const why = (r.stderr ?? '').trim().split('\n').pop() || `${cmd} failed`;
      if (/not permitted|permission denied/i.test(why)) return 'creating device nodes needs root';
      throw new UserError('IO', `cannot create ${entry.type} ${shortName(entry.name)}: ${why}`);
    }
    const path = at(this.dirFd, leaf);
    try {
      if (preserveOwner) lchownSync(path, entry.uid, entry.gid);
      chmodSync(path, entry.mode & 0o7777);
      utimesSync(path, entry.mtime, entry.mtime);
      const st = lstatSync(path);
      return { path, dev: st.dev, ino: st.ino };
    } catch (error) {
      throw nodeError(`set metadata of ${shortName(entry.name)}`, error);
    }
  }

  close(): void {
    closeSync(this.dirFd);
    try {
      rmSync(at(this.rootFd, this.dirName), { recursive: true, force: true });
    } catch {
      /* best effort: only our own nodes that failed to move can be left */
    }
  }
}
