import { mkdir, mkdtemp, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RootResolver } from './rootfs.js';

describe('RootResolver', () => {
  let base: string;
  let root: string;
  beforeAll(async () => {
    base = await realpath(await mkdtemp(join(tmpdir(), 'kmod-rootfs-')));
    root = join(base, 'root');
    await mkdir(join(root, 'usr/lib/firmware/vendor'), { recursive: true });
    await mkdir(join(base, 'outside'), { recursive: true });
    await writeFile(join(base, 'outside/secret'), 'secret');
    await writeFile(join(root, 'usr/lib/firmware/vendor/real.bin'), 'fw');
    await symlink('usr/lib', join(root, 'lib'));
    await symlink('vendor/real.bin', join(root, 'usr/lib/firmware/rel.bin'));
    await symlink('/usr/lib/firmware/vendor/real.bin', join(root, 'usr/lib/firmware/abs.bin'));
    await symlink(join(base, 'outside/secret'), join(root, 'usr/lib/firmware/escape-abs.bin'));
    await symlink('../../../../../../outside/secret', join(root, 'usr/lib/firmware/escape-rel.bin'));
    await symlink(join(base, 'outside'), join(root, 'usr/lib/firmware/outdir'));
    await symlink('loop2', join(root, 'loop1'));
    await symlink('loop1', join(root, 'loop2'));
  });
  afterAll(async () => {
    await rm(base, { recursive: true, force: true });
  });

  it('follows symlinks that stay inside the root, absolute ones taken relative to it', async () => {
    const r = new RootResolver(root);
    expect((await r.resolve('lib/firmware/vendor/real.bin'))?.rel).toBe('usr/lib/firmware/vendor/real.bin');
    expect((await r.resolve('/lib/firmware/rel.bin'))?.path).toBe(join(root, 'usr/lib/firmware/vendor/real.bin'));
    expect((await r.resolve('usr/lib/firmware/abs.bin'))?.stats.isFile()).toBe(true);
    expect((await r.resolve('lib'))?.stats.isDirectory()).toBe(true);
  });

  it('never reaches outside the root', async () => {
    const r = new RootResolver(root);
    expect(await r.resolve('usr/lib/firmware/escape-abs.bin')).toBeUndefined();
    expect(await r.resolve('usr/lib/firmware/escape-rel.bin')).toBeUndefined();
    expect(await r.resolve('usr/lib/firmware/outdir/secret')).toBeUndefined();
    expect(await r.resolve('../outside/secret')).toBeUndefined();
    expect((await r.resolve('../../..'))?.path).toBe(root);
  });

  it('gives up on symlink loops and files used as directories', async () => {
    const r = new RootResolver(root);
    expect(await r.resolve('loop1')).toBeUndefined();
    expect(await r.resolve('usr/lib/firmware/vendor/real.bin/x')).toBeUndefined();
  });
});
