/**
 * extractImage: unpack every segment of an image into a directory, restoring modes,
 * owners (as root), mtimes, symlinks, hard links, devices, fifos and sockets.
 *
 * Safety (the archive is untrusted): names with `..` components or a leading `/` are
 * refused; every parent directory must be a real directory inside the destination (a
 * member never writes through a symlink, even one an earlier member created); files are
 * created with O_EXCL|O_NOFOLLOW after removing what was there; directory metadata is
 * applied at the end through O_NOFOLLOW|O_DIRECTORY descriptors.
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
  rmdirSync,
  symlinkSync,
  unlinkSync,
  utimesSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { UserError, getLogger, isErrnoException, type Logger } from '@mkinitrd-pkg/common';
import { readImage, type CpioEntry } from './reader.js';

export interface ExtractOptions {
  /** Restore uid/gid from the archive; default: when running as root. */
  preserveOwner?: boolean;
  logger?: Logger;
}

export interface ExtractResult {
  destination: string;
  entries: number;
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  devices: number;
  fifos: number;
  sockets: number;
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
  return new UserError('UNSAFE_PATH', `refusing to extract ${JSON.stringify(name)}: ${why}`, {
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
    throw ioError(`inspect ${path.toString('utf8')}`, error);
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

/** Extract the image at `image` into `destination` (created if missing). */
export async function extractImage(image: string, destination: string, options: ExtractOptions = {}): Promise<ExtractResult> {
  const logger = options.logger ?? getLogger();
  const preserveOwner = options.preserveOwner ?? process.getuid?.() === 0;
  let root: string;
  try {
    mkdirSync(destination, { recursive: true });
    root = realpathSync(destination);
    if (!lstatSync(root).isDirectory()) throw new UserError('INPUT', `${destination} is not a directory`);
  } catch (error) {
    throw ioError(`create ${destination}`, error);
  }
  const rootBin = Buffer.from(root, 'utf8').toString('latin1');
  const hostPath = (rel: string) => Buffer.from(rel === '' ? rootBin : `${rootBin}/${rel}`, 'latin1');
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
  /** Relative directories known to be real directories (created or checked by us). */
  const knownDirs = new Set<string>(['']);
  const dirMeta = new Map<string, DirMeta>();
  /** Members of the current archive that later hard links may point to. */
  let linkSources = new Map<string, { rel: string; dev: number; ino: number }>();
  let currentArchive = '';

  const ensureParents = (parts: string[], name: string) => {
    let rel = '';
    for (let i = 0; i < parts.length - 1; i++) {
      rel = rel === '' ? parts[i]! : `${rel}/${parts[i]!}`;
      if (knownDirs.has(rel)) continue;
      const path = hostPath(rel);
      const st = lstatOrUndefined(path);
      if (st === undefined) {
        try {
          mkdirSync(path, 0o755);
        } catch (error) {
          throw ioError(`create directory ${Buffer.from(rel, 'latin1').toString('utf8')}`, error);
        }
      } else if (st.isSymbolicLink()) {
        throw unsafe(name, `${Buffer.from(rel, 'latin1').toString('utf8')} is a symlink`);
      } else if (!st.isDirectory()) {
        throw unsafe(name, `${Buffer.from(rel, 'latin1').toString('utf8')} is not a directory`);
      }
      knownDirs.add(rel);
    }
  };

  /** Remove whatever is at `rel` (never following it) unless both are directories. */
  const clearFor = (rel: string, path: Buffer, wantDir: boolean, name: string): boolean => {
    const st = lstatOrUndefined(path);
    if (st === undefined) return false;
    if (st.isDirectory()) {
      if (wantDir) return true;
      try {
        rmdirSync(path);
      } catch (error) {
        throw ioError(`replace directory ${name} (it is not empty)`, error);
      }
      knownDirs.delete(rel);
      dirMeta.delete(rel);
      return false;
    }
    try {
      unlinkSync(path);
    } catch (error) {
      throw ioError(`replace ${name}`, error);
    }
    return false;
  };

  const writeData = async (fd: number, data: AsyncIterable<Buffer>, name: string) => {
    for await (const piece of data) {
      try {
        let off = 0;
        while (off < piece.length) off += writeSync(fd, piece, off, piece.length - off);
      } catch (error) {
        throw ioError(`write ${name}`, error);
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
    const name = entry.name;
    ensureParents(parts, name);
    const path = hostPath(rel);
    const perm = entry.mode & 0o7777;
    result.entries++;

    if (entry.type === 'dir') {
      const exists = clearFor(rel, path, true, name);
      if (!exists) {
        try {
          mkdirSync(path, 0o700);
        } catch (error) {
          throw ioError(`create directory ${name}`, error);
        }
      }
      knownDirs.add(rel);
      dirMeta.set(rel, { mode: perm, uid: entry.uid, gid: entry.gid, mtime: entry.mtime });
      result.dirs++;
      continue;
    }

    clearFor(rel, path, false, name);

    // A later member of a hard-link group: link to the first one (same archive).
    if (entry.rawHardLinkTo !== undefined) {
      const source = linkSources.get(entry.rawHardLinkTo.toString('latin1'));
      const st = source ? lstatOrUndefined(hostPath(source.rel)) : undefined;
      if (!source || !st || st.dev !== source.dev || st.ino !== source.ino) {
        throw unsafe(name, `its hard-link source ${entry.hardLinkTo} was replaced or is missing`);
      }
      if (typeOfStats(st) !== entry.type) {
        throw unsafe(name, `it is a ${entry.type} but its hard-link source ${entry.hardLinkTo} is not`);
      }
      try {
        linkSync(hostPath(source.rel), path);
      } catch (error) {
        throw ioError(`link ${name}`, error);
      }
      result.hardlinks++;
      if (entry.type === 'file' && entry.size > 0) {
        // GNU convention: the last member of a group carries the data.
        let fd: number;
        try {
          fd = openSync(path, O_REWRITE);
        } catch (error) {
          throw ioError(`write ${name}`, error);
        }
        try {
          if (!fstatSync(fd).isFile()) throw unsafe(name, 'its hard-link source is not a regular file');
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
          throw ioError(`create ${name}`, error);
        }
        try {
          await writeData(fd, member.data, name);
          applyFd(fd, entry, preserveOwner);
          if (entry.nlink > 1) {
            const st = fstatSync(fd);
            linkSources.set(entry.rawName.toString('latin1'), { rel, dev: st.dev, ino: st.ino });
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
          if (preserveOwner) lchownSync(path, entry.uid, entry.gid);
          lutimesSync(path, entry.mtime, entry.mtime);
        } catch (error) {
          throw ioError(`create symlink ${name}`, error);
        }
        result.symlinks++;
        break;
      }
      case 'char':
      case 'block':
      case 'fifo':
      case 'socket': {
        const why = makeNode(rootBin, path, entry);
        if (why !== undefined) {
          result.skipped.push({ name, reason: why });
          logger.warn(`skipped ${entry.type} ${name}: ${why}`);
          continue;
        }
        try {
          if (preserveOwner) lchownSync(path, entry.uid, entry.gid);
          chmodSync(path, perm);
          utimesSync(path, entry.mtime, entry.mtime);
        } catch (error) {
          throw ioError(`set metadata of ${name}`, error);
        }
        if (entry.nlink > 1) {
          const st = lstatSync(path);
          linkSources.set(entry.rawName.toString('latin1'), { rel, dev: st.dev, ino: st.ino });
        }
        if (entry.type === 'fifo') result.fifos++;
        else if (entry.type === 'socket') result.sockets++;
        else result.devices++;
        break;
      }
    }
  }

  // Directory metadata last (children change mtimes; read-only modes would block them),
  // deepest first, through descriptors that cannot follow a symlink.
  const dirs = [...dirMeta.entries()].sort((a, b) => b[0].split('/').length - a[0].split('/').length);
  for (const [rel, meta] of dirs) {
    let fd: number;
    try {
      fd = openSync(hostPath(rel), O_DIR);
    } catch (error) {
      throw ioError(`set metadata of directory ${Buffer.from(rel, 'latin1').toString('utf8')}`, error);
    }
    try {
      if (preserveOwner) fchownSync(fd, meta.uid, meta.gid);
      fchmodSync(fd, meta.mode);
      futimesSync(fd, meta.mtime, meta.mtime);
    } finally {
      closeSync(fd);
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
 * Create a device node, fifo or socket. Node has no mknod(2): coreutils `mknod` makes
 * devices and fifos, python3's os.mknod sockets. The node is made under a temporary
 * ASCII name in the destination root and renamed into place, so names with any bytes
 * work. Returns why it was skipped, or undefined.
 */
function makeNode(rootBin: string, path: Buffer, entry: CpioEntry): string | undefined {
  const temp = `${Buffer.from(rootBin, 'latin1').toString('utf8')}/.mkinitrd-pkg-node.${randomBytes(6).toString('hex')}`;
  let cmd: string;
  let args: string[];
  switch (entry.type) {
    case 'char':
    case 'block':
      cmd = 'mknod';
      args = ['-m', '0600', temp, entry.type === 'char' ? 'c' : 'b', String(entry.rdevMajor), String(entry.rdevMinor)];
      break;
    case 'fifo':
      cmd = 'mknod';
      args = ['-m', '0600', temp, 'p'];
      break;
    default:
      cmd = 'python3';
      args = ['-c', 'import os, stat, sys; os.mknod(sys.argv[1], stat.S_IFSOCK | 0o600)', temp];
  }
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.error || r.status !== 0) {
    if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') return `${cmd} is not installed`;
    const why = (r.stderr ?? '').trim().split('\n').pop() || `${cmd} failed`;
    if (/not permitted|permission denied/i.test(why)) return 'creating device nodes needs root';
    throw new UserError('IO', `cannot create ${entry.type} ${entry.name}: ${why}`);
  }
  try {
    renameSync(temp, path);
  } catch (error) {
    try {
      unlinkSync(temp);
    } catch {
      /* ignore */
    }
    throw ioError(`create ${entry.name}`, error);
  }
  return undefined;
}
