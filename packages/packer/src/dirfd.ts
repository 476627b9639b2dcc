/**
 * Race-free walking and creating below a root directory, for trees and archives other
 * people control (issue 10 item 2).
 *
 * Node has no openat(2)/mkdirat(2). The equivalent used here: every directory is opened
 * with O_DIRECTORY|O_NOFOLLOW, and its children are reached as
 * `/proc/self/fd/<dirfd>/<one name>`. The kernel resolves the magic link
 * /proc/self/fd/N to the directory already opened (proc(5): "a symbolic link to the
 * actual file"; the lookup does not re-walk any path), so only the single last
 * component is looked up, and that one is never followed (O_NOFOLLOW, lstat, mkdir,
 * symlink, link and unlink do not follow a final symlink). A directory swapped for a
 * symlink after it was opened cannot redirect anything; one swapped before it is opened
 * fails the open (ELOOP/ENOTDIR) instead of being followed.
 */
import { closeSync, constants as fsConstants, fstatSync, lstatSync, mkdirSync, openSync } from 'node:fs';
import { isErrnoException } from '@mkinitrd-pkg/common';

export const O_DIR_NOFOLLOW = fsConstants.O_RDONLY | fsConstants.O_DIRECTORY | fsConstants.O_NOFOLLOW;

/** `name` (one component, a binary string: latin1 chars are the bytes) inside the open directory `dirfd`. */
export function at(dirfd: number, name?: string): Buffer {
  return Buffer.from(name === undefined ? `/proc/self/fd/${dirfd}` : `/proc/self/fd/${dirfd}/${name}`, 'latin1');
}

/** Why `name` in `dirfd` is not a directory we may enter: 'symlink', 'not-dir', or undefined if missing. */
export function whyNotDir(dirfd: number, name: string): 'symlink' | 'not-dir' | undefined {
  try {
    const st = lstatSync(at(dirfd, name));
    return st.isSymbolicLink() ? 'symlink' : 'not-dir';
  } catch {
    return undefined;
  }
}

/**
 * The open directories from a root down to the directory last asked for, reused for the
 * next request with the same prefix (archive members and sorted trees come grouped by
 * directory), so a member costs one open only when its directory changes.
 */
export class DirWalker {
  private chain: { name: string; fd: number }[] = [];

  constructor(readonly rootFd: number) {}

  /**
   * The descriptor of the directory `parts` (components below the root). Missing
   * directories are created with `createMode` when given. Throws the errno error of the
   * failing open (ELOOP/ENOTDIR for a symlink or non-directory) with `component` = the
   * index of the failing component.
   */
  dir(parts: readonly string[], createMode?: number): number {
    let k = 0;
    while (k < this.chain.length && k < parts.length && this.chain[k]!.name === parts[k]) k++;
    this.truncate(k);
    for (; k < parts.length; k++) {
      const parent = k === 0 ? this.rootFd : this.chain[k - 1]!.fd;
      const name = parts[k]!;
      let fd: number;
      try {
        fd = openSync(at(parent, name), O_DIR_NOFOLLOW);
      } catch (error) {
        if (!(createMode !== undefined && isErrnoException(error) && error.code === 'ENOENT')) throw Object.assign(error as Error, { component: k });
        try {
          mkdirSync(at(parent, name), createMode);
          fd = openSync(at(parent, name), O_DIR_NOFOLLOW);
        } catch (again) {
          throw Object.assign(again as Error, { component: k });
        }
      }
      this.chain.push({ name, fd });
    }
    return parts.length === 0 ? this.rootFd : this.chain[parts.length - 1]!.fd;
  }

  /** Close all but the first `keep` open directories. */
  truncate(keep = 0): void {
    while (this.chain.length > keep) closeSync(this.chain.pop()!.fd);
  }

  /** Close everything, the root too. */
  close(): void {
    this.truncate(0);
    try {
      closeSync(this.rootFd);
    } catch {
      /* closed already */
    }
  }
}

/** Open a root directory given by the user (a symlink there is followed once, then pinned). */
export function openRoot(path: string): number {
  const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  if (!fstatSync(fd).isDirectory()) {
    closeSync(fd);
    throw Object.assign(new Error(`${path} is not a directory`), { code: 'ENOTDIR' });
  }
  return fd;
}
