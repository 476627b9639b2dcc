import { constants as fsConstants, createReadStream } from 'node:fs';
import { access, lstat, mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { randomBytes } from 'node:crypto';
import { UserError, isErrnoException } from './errors.js';

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

export async function createAtomicOutput(path: string, mode = 0o600): Promise<AtomicOutput> {
  const dir = dirname(resolve(path));
  try {
    await mkdir(dir, { recursive: true });
  } catch (error) {
    throw new UserError('IO', `cannot create output directory ${dir}: ${(error as Error).message}`);
  }
  const tempPath = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  let handle: FileHandle;
  try {
    handle = await open(tempPath, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, mode);
  } catch (error) {
    throw new UserError('IO', `cannot write to ${dir}: ${(error as Error).message}`);
  }
  let done = false;
  return {
    path,
    tempPath,
    handle,
    async commit() {
      if (done) return;
      done = true;
      await handle.sync();
      await handle.chmod(mode);
      await handle.close();
      await rename(tempPath, path);
    },
    async abort() {
      if (done) return;
      done = true;
      await handle.close().catch(() => undefined);
      await rm(tempPath, { force: true });
    },
  };
}

/** Run `write` against an atomic output; commit on success, remove the temp file on failure. */
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
    throw error;
  }
}

/** Copy a file to `path` through an atomic output (streamed: kernels and extension images are large). */
export async function copyFileAtomically(source: string, path: string, mode = 0o600): Promise<void> {
  await withAtomicOutput(
    path,
    async (out) => {
      for await (const chunk of createReadStream(source)) await out.handle.write(chunk as Buffer);
    },
    mode,
  );
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
