import { constants as fsConstants } from 'node:fs';
import { access, lstat, mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { randomBytes } from 'node:crypto';
import { OUTPUT_ERRNOS, UserError, asEnvironmentError, isErrnoException } from './errors.js';
import { OWNER_TOKEN_SOURCE, isOwnerAlive, ownerToken } from './owner.js';
import { registerCleanup, unregisterCleanup } from './cleanup.js';

/**
 * Split a path that is meant to live inside a root (an archive member name, a glob
 * match, a package file list entry) into safe components. Absolute names are taken
 * relative to the root; `..` that would climb above the root is refused.
 */
export function safeComponents(name: string): string[] {
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (parts.length === 0) {
        throw new UserError('UNSAFE_PATH', `path escapes its root: ${name}`);
      }
      parts.pop();
      continue;
    }
    if (part.includes('\0')) throw new UserError('UNSAFE_PATH', `path contains a NUL byte: ${JSON.stringify(name)}`);
    parts.push(part);
  }
  return parts;
}

/**
 * Resolve `name` inside `root` without following any symlink on the way: every existing
 * intermediate component must be a real directory. The last component is not
 * followed either (the caller lstat()s it). Returns the absolute host path.
 * This is what keeps pruning, extracting and copying from writing outside the root.
 */
export async function resolveInsideRoot(root: string, name: string): Promise<string> {
  const parts = safeComponents(name);
  let current = resolve(root);
  for (let i = 0; i < parts.length - 1; i++) {
    current = join(current, parts[i]!);
    try {
      const st = await lstat(current);
      if (st.isSymbolicLink()) {
        throw new UserError('UNSAFE_PATH', `refusing to follow symlink ${relative(root, current)} inside ${root}`);
      }
      if (!st.isDirectory()) {
        throw new UserError('UNSAFE_PATH', `${relative(root, current)} is not a directory inside ${root}`);
      }
    } catch (error) {
      if (isErrnoException(error) && error.code === 'ENOENT') return join(current, ...parts.slice(i + 1));
      throw error;
    }
  }
  return parts.length === 0 ? current : join(current, parts[parts.length - 1]!);
}

/** True when `child` is `parent` or lies below it (purely lexical). */
export function isPathInside(parent: string, child: string): boolean {
  const rel = relative(resolve(parent), resolve(child));
  return rel === '' || (!rel.startsWith('..' + sep) && rel !== '..' && !isAbsolute(rel));
}

/**
 * An output file that appears under its final name only when complete: written to a
 * temporary file in the same directory (so rename is atomic), fsync'd, then renamed.
 * `abort()` removes the temporary file; nothing half-written is ever left at `path`.
 */
export interface AtomicOutput {
  readonly path: string;
  readonly tempPath: string;
  readonly handle: FileHandle;
  commit(): Promise<void>;
  abort(): Promise<void>;
}

/**
 * Check an output path before any work is done: its directory must exist (or be
 * creatable, with `createDirectory`), and the path must not name a directory or
 * anything but a regular file (or a symlink, which rename replaces, never follows).
 */
export async function checkOutputPath(path: string, options: { what?: string; createDirectory?: boolean } = {}): Promise<string> {
  const what = options.what ?? 'output';
  const full = resolve(path);
  if (path === '' || path.endsWith('/')) throw new UserError('INPUT', `${what} ${JSON.stringify(path)} names a directory, not a file`, { hint: 'name the file to write' });
  const dir = dirname(full);
  const dirStat = await stat(dir).catch((error: NodeJS.ErrnoException) => error);
  if (dirStat instanceof Error) {
    if (!(dirStat.code === 'ENOENT' && options.createDirectory)) {
      throw new UserError('INPUT', `${what} directory ${dirStat.code === 'ENOENT' ? 'does not exist' : `cannot be used (${dirStat.code})`}: ${dir}`, {
        hint: 'create it first, or choose another path',
      });
    }
  } else if (!dirStat.isDirectory()) {
    throw new UserError('INPUT', `${what} directory is not a directory: ${dir}`);
  } else {
    // A read-only file system (or, for non-root, a directory without write permission)
    // is known now; finding out at the rename would waste the whole build.
    try {
      await access(dir, fsConstants.W_OK);
    } catch (error) {
      throw asEnvironmentError(error, dir, 'cannot write to', ['EROFS', 'EACCES', 'EPERM']);
    }
  }
  const st = await lstat(full).catch(() => undefined);
  if (st && !st.isFile() && !st.isSymbolicLink()) {
    throw new UserError('INPUT', `${what} ${full} exists and is ${st.isDirectory() ? 'a directory' : 'not a regular file'}`, {
      hint: st.isDirectory() ? 'name a file inside it, or remove it' : 'remove it, or choose another path',
    });
  }
  return full;
}

/** `.NAME.OWNER.RANDOM.tmp`: the owner token lets a later run tell a stale temporary from a live one. */
function temporaryPattern(name: string): RegExp {
  return new RegExp(`^\\.${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.${OWNER_TOKEN_SOURCE}\\.[0-9a-f]{12}\\.tmp$`);
}

/**
 * Remove temporaries of `name` in `dir` left by runs that are gone (killed, power
 * loss). Only regular files named by our own pattern whose owner process no longer
 * exists are touched: a live run's temporary, or any other file, is left alone.
 */
export async function removeStaleOutputTemporaries(dir: string, name: string): Promise<string[]> {
  const pattern = temporaryPattern(name);
  const removed: string[] = [];
  for (const entry of await readdir(dir).catch(() => [] as string[])) {
    const m = pattern.exec(entry);
    if (!m || isOwnerAlive(`${m[1]}-${m[2]}`)) continue;
    const path = join(dir, entry);
    const st = await lstat(path).catch(() => undefined);
    if (!st?.isFile()) continue;
    await rm(path, { force: true });
    removed.push(path);
  }
  return removed;
}

export async function createAtomicOutput(path: string, mode = 0o600): Promise<AtomicOutput> {
  const full = await checkOutputPath(path, { createDirectory: true });
  const dir = dirname(full);
  try {
    await mkdir(dir, { recursive: true });
  } catch (error) {
    throw new UserError('IO', `cannot create output directory ${dir}: ${(error as Error).message}`);
  }
  await removeStaleOutputTemporaries(dir, basename(full));
  const tempPath = join(dir, `.${basename(full)}.${ownerToken()}.${randomBytes(6).toString('hex')}.tmp`);
  let handle: FileHandle;
  try {
    handle = await open(tempPath, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, mode);
  } catch (error) {
    throw asEnvironmentError(error, dir, 'cannot write to');
  }
  registerCleanup(tempPath);
  let state: 'open' | 'committed' | 'aborted' = 'open';
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await handle.close();
  };
  return {
    path,
    tempPath,
    handle,
    async commit() {
      if (state !== 'open') return;
      // Marked done only once the rename happened: a failing sync, close or rename
      // leaves the output open, so the caller's abort() still removes the temporary.
      await handle.sync();
      await handle.chmod(mode);
      await close();
      await rename(tempPath, full);
      state = 'committed';
      unregisterCleanup(tempPath);
    },
    async abort() {
      if (state !== 'open') return;
      state = 'aborted';
      await close().catch(() => undefined);
      await rm(tempPath, { force: true });
      unregisterCleanup(tempPath);
    },
  };
}

/**
 * Run `write` against an atomic output; commit on success, remove the temp file on
 * failure. A full disk, a quota or a read-only file system becomes one line naming
 * the output.
 */
export async function withAtomicOutput<T>(
  path: string,
  write: (output: AtomicOutput) => Promise<T>,
  mode = 0o600,
): Promise<T> {
  const output = await createAtomicOutput(path, mode);
  try {
    const result = await write(output);
    await output.commit();
    return result;
  } catch (error) {
    await output.abort();
    throw asEnvironmentError(error, resolve(path), 'cannot write', OUTPUT_ERRNOS);
  }
}

/**
 * Does a path exist? Inside an image root pass `{ followSymlinks: false }`: an absolute
 * symlink there points into the image, and following it would test the host instead.
 */
export async function pathExists(path: string, options: { followSymlinks?: boolean } = {}): Promise<boolean> {
  try {
    if (options.followSymlinks === false) await lstat(path);
    else await access(path);
    return true;
  } catch {
    return false;
  }
}
