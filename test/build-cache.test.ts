import { cp, mkdir, mkdtemp, readdir, readFile, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { mkinitrdPkg } from './lib/cli.js';
import { hostKernel } from '../scripts/lib/qemu.mjs';

/**
 * The incremental cache (issue 6): the pruned installroot is reused when nothing that
 * determines it changed, verified before use, and rebuilt when damaged.
 */
const kernel = await hostKernel();
let dir: string;
let cache: string;
const sha256 = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');

describe.skipIf(!kernel)('installroot cache and several kernels', () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-cache-'));
    cache = join(dir, 'cache');
    // Share downloads with the other tests: only the installroot cache is private here.
    const shared = process.env.MKINITRD_PKG_TEST_CACHE ?? '/var/tmp/mkinitrd-pkg-test-cache';
    await mkdir(cache, { recursive: true });
    for (const part of ['apt', 'kernels', 'staged-kernels']) await cp(join(shared, part), join(cache, part), { recursive: true }).catch(() => undefined);
  });

  const build = (out: string, extra: string[] = []) =>
    mkinitrdPkg(['build', '--kernel-version', kernel!.version, '--kernel-package', '', '--output', out, '--cache-dir', cache, '--source-date-epoch', '1700000000', '--json', ...extra]);

  it('fills the cache, then reuses it for the same bytes; damage is detected and rebuilt', async () => {
    const first = await build(join(dir, 'a.img'));
    expect(first.exitCode, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout).cache).toBe('miss');

    const second = await build(join(dir, 'b.img'));
    expect(second.exitCode, second.stderr).toBe(0);
    const result = JSON.parse(second.stdout);
    expect(result.cache).toBe('hit');
    expect(result.phases.map((p: { phase: string }) => p.phase)).not.toContain('install');
    expect(await sha256(join(dir, 'b.img'))).toBe(await sha256(join(dir, 'a.img')));
    // Every compressed frame came from the frame cache (the first build stored them).
    const firstFrames = JSON.parse(first.stdout).images[0].frames;
    expect(firstFrames.stored).toBeGreaterThan(0);
    expect(result.images[0].frames).toEqual({ hits: firstFrames.hits + firstFrames.stored, stored: 0 });

    // Only compression changed: still a hit.
    const xz = await build(join(dir, 'c.img'), ['--compression', 'gzip']);
    expect(JSON.parse(xz.stdout).cache).toBe('hit');

    // A file changed behind our back: the entry fails its digest and is rebuilt.
    const [entry] = await readdir(join(cache, 'roots'));
    await appendFile(join(cache, 'roots', entry!, 'root', 'etc/os-release'), '# tampered\n');
    const third = await build(join(dir, 'd.img'));
    expect(third.exitCode, third.stderr).toBe(0);
    expect(JSON.parse(third.stdout).cache).toBe('miss');
    expect(await sha256(join(dir, 'd.img'))).toBe(await sha256(join(dir, 'a.img')));

    // A half-written entry (no meta.json, as after a crash mid-store) is never used.
    const [again] = await readdir(join(cache, 'roots'));
    await writeFile(join(cache, 'roots', again!, 'meta.json.partial'), '');
    const { rm } = await import('node:fs/promises');
    await rm(join(cache, 'roots', again!, 'meta.json'));
    const fourth = await build(join(dir, 'e.img'));
    expect(JSON.parse(fourth.stdout).cache).toBe('miss');
    expect(await sha256(join(dir, 'e.img'))).toBe(await sha256(join(dir, 'a.img')));

    const noCache = await build(join(dir, 'f.img'), ['--no-cache']);
    expect(JSON.parse(noCache.stdout).cache).toBe('disabled');
    expect(await sha256(join(dir, 'f.img'))).toBe(await sha256(join(dir, 'a.img')));
  }, 600_000);

  it('builds one image per kernel from one install, each with its own modules', async () => {
    // A second "kernel": the same modules under another version name, in a modules root of our own.
    const modulesRoot = join(dir, 'modroot');
    await mkdir(join(modulesRoot, 'usr/lib/modules'), { recursive: true });
    const other = `${kernel!.version}-second`;
    await cp(`/usr/lib/modules/${kernel!.version}`, join(modulesRoot, 'usr/lib/modules', kernel!.version), { recursive: true, verbatimSymlinks: true });
    await cp(`/usr/lib/modules/${kernel!.version}`, join(modulesRoot, 'usr/lib/modules', other), { recursive: true, verbatimSymlinks: true });
    const conf = join(dir, 'modroot.conf');
    await writeFile(conf, `[Content]\nKernelModulesRoot=${modulesRoot}\n`);
    const result = await mkinitrdPkg(['build', '--config', conf, '--kernel-package', '', '--all-kernels', '--output', join(dir, 'multi-{kver}.img'), '--cache-dir', cache, '--source-date-epoch', '1700000000', '--json']);
    expect(result.exitCode, result.stderr).toBe(0);
    const built = JSON.parse(result.stdout);
    expect(built.images.map((i: { kernelVersion: string }) => i.kernelVersion)).toEqual([kernel!.version, other]);
    expect(built.phases.filter((p: { phase: string }) => p.phase === 'install').length).toBeLessThanOrEqual(1);
    const inspect = await mkinitrdPkg(['inspect', join(dir, `multi-${other}.img`), '--json']);
    const names: string[] = JSON.parse(inspect.stdout).entries.map((e: { name: string }) => e.name);
    expect(names).toContain(`usr/lib/modules/${other}/modules.dep`);
    expect(names.some((n) => n.startsWith(`usr/lib/modules/${kernel!.version}/`))).toBe(false);
    // The kernel part is last, so the other kernel's image reused the base frames and
    // compressed only its own modules.
    const firstLate = names.findIndex((n) => n.startsWith('usr/lib/modules/'));
    expect(names.slice(firstLate).every((n) => /^usr\/lib\/(modules|firmware)\//.test(n) || n === 'TRAILER!!!')).toBe(true);
    const frames = built.images.map((i: { frames: { hits: number; stored: number } }) => i.frames);
    expect(frames[1].hits).toBeGreaterThan(0);
    expect(frames[1].stored).toBeGreaterThan(0);
    expect(frames[1].stored).toBeLessThan(frames[1].hits + frames[1].stored);
  }, 600_000);

  it('cache clean removes installroots', async () => {
    const result = await mkinitrdPkg(['cache', 'clean', '--cache-dir', cache]);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^removed .*roots/);
    expect(await readdir(cache)).not.toContain('roots');
    expect(await readdir(cache)).not.toContain('frames');
  });
});
