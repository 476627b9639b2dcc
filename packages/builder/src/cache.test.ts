import { spawn } from 'node:child_process';
import { link, mkdir, mkdtemp, readdir, readFile, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CACHE_DIRS, CACHE_LOCK_FILE, CACHEDIR_TAG, PACKAGE_MANAGERS, PACKAGE_MANAGER_NAMES, UserError, createWorkDir, lockCache, packageManagerCachePath, exitedOwnerToken, ownerToken, removeWorkDir, silentLogger } from '@mkinitrd-pkg/common';
import { createHash } from 'node:crypto';
import { packTree } from '@mkinitrd-pkg/packer';
import { cleanCache, frameStore, pruneFrames, removeStaleTemporaries, stageVerified, statDigest, treeDigest } from './cache.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-cache-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const COMMON_DIST = new URL('../../common/dist/index.js', import.meta.url).pathname;


describe('treeDigest covers what the packer records', () => {
  it('changes with an mtime, a hard link and content; not with links made from outside', async () => {
    const root = join(dir, 'digest');
    await mkdir(join(root, 'usr/bin'), { recursive: true });
    await writeFile(join(root, 'usr/bin/a'), 'same');
    await writeFile(join(root, 'usr/bin/b'), 'same');
    const first = treeDigest(root);
    await utimes(join(root, 'usr/bin/a'), new Date(1_000_000_000_000), new Date(1_000_000_000_000));
    const touched = treeDigest(root);
    expect(touched).not.toBe(first);
    // b becomes a hard link of a (same content, same mtime): newc stores it differently.
    await unlink(join(root, 'usr/bin/b'));
    await link(join(root, 'usr/bin/a'), join(root, 'usr/bin/b'));
    const linked = treeDigest(root);
    expect(linked).not.toBe(touched);
    // A link from outside the tree (cp -al of the cache) changes nlink, not the digest.
    await link(join(root, 'usr/bin/a'), join(dir, 'outside-link'));
    expect(treeDigest(root)).toBe(linked);
  });
});

describe('the frame cache: a damaged frame is never copied into an image', () => {
  it('drops a flipped or truncated frame, compresses it again, and the image stays byte-identical', async () => {
    const cacheDir = join(dir, 'frames-cache');
    const tree = join(dir, 'frames-tree');
    for (const d of ['etc', 'usr/bin', 'usr/lib/modules/1.0/kernel']) await mkdir(join(tree, d), { recursive: true });
    // Different bytes per file, so frames differ; each file is a frame of its own.
    for (const [i, f] of ['etc/a', 'usr/bin/b', 'usr/bin/c'].entries()) await writeFile(join(tree, f), Buffer.alloc(80_000, `${f}:${i}`));
    await writeFile(join(tree, 'usr/lib/modules/1.0/kernel/m.ko'), 'module');
    const warnings: string[] = [];
    const logger = { ...silentLogger(), warn: (o: unknown) => warnings.push(JSON.stringify(o)) } as unknown as ReturnType<typeof silentLogger>;
    const pack = (name: string, frames = true) =>
      packTree({ source: tree, output: join(dir, name), logger: silentLogger(), chunkSize: 65_536, sourceDateEpoch: 1_700_000_000, owner: 'root', lateNames: ['usr/lib/modules'], ...(frames && { frameCache: frameStore(cacheDir, logger) }) });
    const plain = await pack('frames-plain.img', false);
    const digest = async (name: string) => createHash('sha256').update(await readFile(join(dir, name))).digest('hex');
    const first = await pack('frames-1.img');
    const stored = first.frameCache!.stored;
    expect(stored).toBeGreaterThanOrEqual(3);
    const files = (await readdir(join(cacheDir, CACHE_DIRS.frames))).sort();
    expect(files).toHaveLength(stored);
    // One byte flipped inside a frame, another frame cut short.
    const flipped = join(cacheDir, CACHE_DIRS.frames, files[0]!);
    const bytes = await readFile(flipped);
    bytes[bytes.length - 5] ^= 0xff;
    await writeFile(flipped, bytes);
    const cut = join(cacheDir, CACHE_DIRS.frames, files[1]!);
    await writeFile(cut, (await readFile(cut)).subarray(0, 40));
    const second = await pack('frames-2.img');
    expect(second.frameCache).toEqual({ hits: stored - 2, stored: 2 });
    expect(warnings.filter((w) => w.includes(files[0]!) || w.includes(files[1]!))).toHaveLength(2);
    expect(await digest('frames-2.img')).toBe(await digest('frames-plain.img'));
    expect(await digest('frames-1.img')).toBe(await digest('frames-plain.img'));
    expect(plain.frameCache).toBeUndefined();
    // Repaired: all hits now.
    expect((await pack('frames-3.img')).frameCache).toEqual({ hits: stored, stored: 0 });
    // Frames unused for weeks are removed; `cache clean` removes them all.
    const old = new Date(Date.now() - 30 * 24 * 3600 * 1000);
    await utimes(join(cacheDir, CACHE_DIRS.frames, files[2]!), old, old);
    expect(await pruneFrames(cacheDir)).toBe(1);
    expect(await readdir(join(cacheDir, CACHE_DIRS.frames))).toHaveLength(stored - 1);
  });
});

describe('the kernel staging cache is verified before every use', () => {
  const fill = (files: Record<string, string>, calls: string[]) => async (f: (name: string) => Promise<string | undefined>) => {
    const target = await f('0123456789abcdef0123');
    calls.push(target === undefined ? 'hit' : 'unpack');
    if (target === undefined) return;
    for (const [name, content] of Object.entries(files)) {
      await mkdir(join(target, name, '..'), { recursive: true });
      await writeFile(join(target, name), content);
    }
  };

  it('a removed or modified module is never used: the entry is unpacked again', async () => {
    const cache = join(dir, 'kcache');
    const files = { 'usr/lib/modules/6.1.0-1/kernel/fs/ext4.ko': 'ext4 module', 'usr/lib/modules/6.1.0-1/kernel/md/raid1.ko': 'raid1 module' };
    const calls: string[] = [];
    const root = await stageVerified(cache, 'stagedKernels', 'idx', silentLogger(), fill(files, calls));
    expect(calls).toEqual(['unpack']);
    // Warm: the index names the entry, verified, no unpack.
    expect(await stageVerified(cache, 'stagedKernels', 'idx', silentLogger(), fill(files, calls))).toBe(root);
    expect(calls).toEqual(['unpack']);

    // Same size, mtime put back: only the content (or ctime) gives it away.
    const ext4 = join(root, 'usr/lib/modules/6.1.0-1/kernel/fs/ext4.ko');
    const before = await stat(ext4);
    await writeFile(ext4, 'EXT4 MODULE');
    await utimes(ext4, before.atime, before.mtime);
    expect(await stageVerified(cache, 'stagedKernels', 'idx', silentLogger(), fill(files, calls))).toBe(root);
    expect(calls).toEqual(['unpack', 'unpack']);
    expect(await readFile(ext4, 'utf8')).toBe('ext4 module');

    await rm(join(root, 'usr/lib/modules/6.1.0-1/kernel/md/raid1.ko'));
    await stageVerified(cache, 'stagedKernels', 'idx', silentLogger(), fill(files, calls));
    expect(calls).toEqual(['unpack', 'unpack', 'unpack']);
    expect(await readFile(join(root, 'usr/lib/modules/6.1.0-1/kernel/md/raid1.ko'), 'utf8')).toBe('raid1 module');

    // Without an index (metadata not fresh): the named entry is verified and reused.
    await stageVerified(cache, 'stagedKernels', undefined, silentLogger(), fill(files, calls));
    expect(calls).toEqual(['unpack', 'unpack', 'unpack', 'hit']);
    expect((await readdir(join(cache, CACHE_DIRS.stagedKernels))).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('--verify-cache (full) catches damage that no inode field shows; the quick check cannot', async () => {
    const cache = join(dir, 'kcache-full');
    const files = { 'usr/lib/modules/6.1.0-1/kernel/fs/xfs.ko': 'xfs module' };
    const calls: string[] = [];
    const root = await stageVerified(cache, 'stagedKernels', 'idx', silentLogger(), fill(files, calls));
    // Bit rot (or a meta.json written by someone else): the content changes, and the
    // recorded stat digest is the tree's current one.
    const xfs = join(root, 'usr/lib/modules/6.1.0-1/kernel/fs/xfs.ko');
    await writeFile(xfs, 'XFS MODULE');
    const metaPath = join(root, '..', 'meta.json');
    const meta = JSON.parse(await readFile(metaPath, 'utf8'));
    await writeFile(metaPath, JSON.stringify({ ...meta, statDigest: statDigest(root) }));
    await stageVerified(cache, 'stagedKernels', 'idx', silentLogger(), fill(files, calls));
    expect(calls).toEqual(['unpack']); // the quick check trusts the inode metadata
    expect(await readFile(xfs, 'utf8')).toBe('XFS MODULE');
    const warnings: string[] = [];
    const logger = { ...silentLogger(), warn: (o: unknown, m?: string) => warnings.push(`${JSON.stringify(o)} ${m}`) } as unknown as ReturnType<typeof silentLogger>;
    await stageVerified(cache, 'stagedKernels', 'idx', logger, fill(files, calls), 'full');
    expect(calls).toEqual(['unpack', 'unpack']);
    expect(warnings.join('\n')).toMatch(/does not match its digest/);
    expect(await readFile(xfs, 'utf8')).toBe('xfs module');
    // And a sound entry passes the full check without being unpacked again.
    await stageVerified(cache, 'stagedKernels', 'idx', silentLogger(), fill(files, calls), 'full');
    expect(calls).toEqual(['unpack', 'unpack']);
  });
});

describe('concurrency: stale means the owner is gone', () => {
  it('a starting build never deletes another live build in-progress cache entry (race, bounded in time)', async () => {
    const cache = join(dir, 'race');
    await mkdir(join(cache, 'roots'), { recursive: true });
    // Another process fills entries under temporary names in a loop and checks each survives.
    const script = `
      import { mkdir, writeFile, readFile, rm } from 'node:fs/promises';
      import { ownerToken } from ${JSON.stringify(COMMON_DIST)};
      let lost = 0, made = 0;
      const end = Date.now() + 2000;
      while (Date.now() < end) {
        const d = ${JSON.stringify(join(cache, 'roots'))} + '/.k' + made + '.' + ownerToken() + '.abcd1234.tmp';
        await mkdir(d); await writeFile(d + '/f', 'x'); made++;
        await new Promise((r) => setTimeout(r, 5));
        try { await readFile(d + '/f'); } catch { lost++; }
        await rm(d, { recursive: true, force: true });
      }
      console.log(JSON.stringify({ made, lost }));`;
    const child = spawn('node', ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise((r) => child.once('exit', r));
    // Meanwhile: builds starting, each removing stale temporaries — and one really stale entry.
    const stale = join(cache, 'roots', `.dead.${await exitedOwnerToken()}.abcd1234.tmp`);
    await mkdir(stale);
    let sweeps = 0;
    while (child.exitCode === null) {
      await removeStaleTemporaries(cache);
      sweeps++;
    }
    await exited;
    const { made, lost } = JSON.parse(out) as { made: number; lost: number };
    expect(made).toBeGreaterThan(0);
    expect(sweeps).toBeGreaterThan(0);
    expect(lost).toBe(0);
    await expect(stat(stale)).rejects.toThrow(/ENOENT/);
  });

  it('a work dir of a live build is kept, one of a dead build removed', async () => {
    const cache = join(dir, 'work');
    const deadDir = join(cache, 'work', `build-${await exitedOwnerToken()}-0123456789ab`);
    await mkdir(deadDir, { recursive: true });
    const mine = await createWorkDir(cache, 'build', silentLogger());
    const second = await createWorkDir(cache, 'build', silentLogger());
    expect((await readdir(join(cache, 'work'))).sort()).toEqual([mine, second].map((d) => d.split('/').pop()).sort());
    expect(mine).toContain(ownerToken());
    await removeWorkDir(second);
    await removeWorkDir(mine);
  });

  it('cache clean refuses while a build holds the cache, removes nothing, and works after', async () => {
    const cache = join(dir, 'clean');
    await mkdir(join(cache, 'roots', 'entry', 'root'), { recursive: true });
    await writeFile(join(cache, 'roots', 'entry', 'root', 'file'), 'x');
    const work = await createWorkDir(cache, 'build', silentLogger());
    const error = await cleanCache(cache, false).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).code).toBe('CACHE');
    expect((error as UserError).message).toMatch(/in use by a running build/);
    await stat(work);
    await stat(join(cache, 'roots', 'entry', 'root', 'file'));
    await removeWorkDir(work);
    const result = await cleanCache(cache, false);
    expect(result.removed).toEqual(expect.arrayContaining([join(cache, 'roots'), join(cache, 'work')]));
    await expect(stat(join(cache, 'roots'))).rejects.toThrow(/ENOENT/);
  });

  it('cache clean removes every directory of the cache layout; downloads only with --all', async () => {
    const cache = join(dir, 'clean-layout');
    await lockCache(cache).then((lock) => lock!.release()); // tags it, as a build does
    for (const sub of Object.values(CACHE_DIRS)) await mkdir(join(cache, sub, 'entry'), { recursive: true });
    for (const name of PACKAGE_MANAGER_NAMES) await mkdir(packageManagerCachePath(cache, name, 'lists'), { recursive: true });
    await cleanCache(cache, false);
    expect((await readdir(cache)).sort()).toEqual([CACHEDIR_TAG, CACHE_LOCK_FILE, ...PACKAGE_MANAGER_NAMES.map((n) => PACKAGE_MANAGERS[n].cacheDir)].sort());
    await cleanCache(cache, true);
    expect((await readdir(cache)).sort()).toEqual([CACHEDIR_TAG, CACHE_LOCK_FILE].sort());
  });

  it('cache clean --cache-dir naming a directory that is not a cache removes nothing', async () => {
    // As `cache clean --cache-dir /` would: / has work/ and sysext/ that are not ours.
    const notCache = join(dir, 'not-a-cache');
    await mkdir(join(notCache, 'work', 'precious'), { recursive: true });
    await mkdir(join(notCache, 'sysext'), { recursive: true });
    await expect(cleanCache(notCache, true)).rejects.toThrow(/is not a mkinitrd-pkg cache \(no CACHEDIR\.TAG in it\): nothing removed/);
    expect((await readdir(notCache)).sort()).toEqual(['sysext', 'work']);
  });
});
