import type { Stats } from 'node:fs';
import { lstat, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { isErrnoException } from '@mkinitrd-pkg/common';

const MAX_SYMLINK_HOPS = 40; // as the kernel's ELOOP limit

/**
 * Looks up paths inside a root the way a process chrooted there would see them:
 * symlinks are followed, but an absolute target starts again at the root and `..`
 * never climbs above it. So `lib -> usr/lib` or a firmware symlink inside
 * linux-firmware works, and `x -> /etc/shadow` or `x -> ../../../../etc` can only ever
 * reach files below the root. Nothing outside the root is read.
 *
 * lstat results are cached: the resolver is meant for one pass over a tree that does
 * not change underneath it.
 */
export class RootResolver {
  readonly root: string;
  private readonly cache = new Map<string, Promise<Stats | undefined>>();

  constructor(root: string) {
    this.root = root;
  }

  private stat(hostPath: string): Promise<Stats | undefined> {
    let result = this.cache.get(hostPath);
    if (!result) {
      result = lstat(hostPath).catch((error: unknown) => {
        if (isErrnoException(error) && (error.code === 'ENOENT' || error.code === 'ENOTDIR')) return undefined;
        throw error;
      });
      this.cache.set(hostPath, result);
    }
    return result;
  }

  /**
   * Resolve `name` (relative to the root; a leading `/` is allowed). Returns the host
   * path and lstat of the final object (never a symlink), or undefined when it does not
   * exist, a symlink loops, or an intermediate component is not a directory.
   */
  async resolve(name: string): Promise<{ path: string; rel: string; stats: Stats } | undefined> {
    const done: string[] = [];
    const todo = name.split('/').reverse();
    let hops = 0;
    let stats: Stats | undefined;
    while (todo.length > 0) {
      const part = todo.pop()!;
      if (part === '' || part === '.') continue;
      if (part === '..') {
        done.pop();
        stats = undefined;
        continue;
      }
      const hostPath = join(this.root, ...done, part);
      const st = await this.stat(hostPath);
      if (!st) return undefined;
      if (st.isSymbolicLink()) {
        if (++hops > MAX_SYMLINK_HOPS) return undefined;
        const target = await readlink(hostPath);
        if (target.startsWith('/')) done.length = 0;
        for (const t of target.split('/').reverse()) todo.push(t);
        stats = undefined;
        continue;
      }
      if (todo.some((t) => t !== '' && t !== '.') && !st.isDirectory()) return undefined;
      done.push(part);
      stats = st;
    }
    stats ??= await this.stat(join(this.root, ...done));
    if (!stats) return undefined;
    return { path: join(this.root, ...done), rel: done.join('/'), stats };
  }
}
