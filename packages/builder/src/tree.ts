import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

/** The summary's bucket for a path: its top-level dir, or usr/X where most of an image lives. */
function bucketOf(rel: string): string {
  const [first, second] = rel.split('/');
  if (first === 'usr' && second !== undefined) return `usr/${second}`;
  return first ?? '/';
}

/** Bytes of regular files per bucket, each inode counted once; never follows symlinks. */
export async function sizeByDirectory(root: string): Promise<Record<string, number>> {
  const sizes: Record<string, number> = {};
  const seen = new Set<string>();
  async function walk(dir: string, rel: string): Promise<void> {
    const entries = await readdir(dir, { withFileTypes: true });
    await Promise.all(
      entries.map(async (entry) => {
        const childRel = rel ? `${rel}/${entry.name}` : entry.name;
        if (entry.isDirectory()) return walk(join(dir, entry.name), childRel);
        if (!entry.isFile()) return;
        const st = await lstat(join(dir, entry.name));
        if (st.nlink > 1) {
          const key = `${st.dev}:${st.ino}`;
          if (seen.has(key)) return;
          seen.add(key);
        }
        const bucket = rel === '' ? '/' : bucketOf(childRel);
        sizes[bucket] = (sizes[bucket] ?? 0) + st.size;
      }),
    );
  }
  await walk(root, '');
  return Object.fromEntries(Object.entries(sizes).sort(([, a], [, b]) => b - a));
}
