import { mkdir, mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CACHE_DIRS, silentLogger, type Logger } from '@mkinitrd-pkg/common';
import { lookupPresetBase, storePresetBase } from './base.js';

// sysext's preset bases are cache entries like the builder's installroots: one verification.
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sysext-base-cache-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const KEY = '0123456789abcdef0123';
const META = { preset: 'debian', sources: ['/presets/debian.conf'], repositoryDigest: 'feed', packages: [{ name: 'systemd', version: '257', architecture: 'amd64' }] };

async function installedBase(name: string): Promise<string> {
  const root = join(dir, name);
  await mkdir(join(root, 'usr/bin'), { recursive: true });
  await mkdir(join(root, 'var/lib/dpkg'), { recursive: true });
  await writeFile(join(root, 'usr/bin/systemctl'), 'the real systemctl');
  await writeFile(join(root, 'var/lib/dpkg/status'), 'Package: systemd\nStatus: install ok installed\n');
  return root;
}

function recordingLogger(warnings: string[]): Logger {
  return { ...silentLogger(), warn: (o: unknown, msg?: string) => warnings.push(`${msg} ${JSON.stringify(o)}`) } as unknown as Logger;
}

describe('the preset base cache is verified before every use', () => {
  it('a damaged cached base is detected, removed, and stored again', async () => {
    const cache = join(dir, 'cache');
    const stored = await storePresetBase(cache, KEY, await installedBase('build-1'), META);
    expect(stored.root).toBe(join(cache, CACHE_DIRS.sysextBases, KEY, 'root'));
    expect(stored.meta).toMatchObject({ ...META, key: KEY });
    // Warm: a hit, and the same tree.
    const hit = await lookupPresetBase(cache, KEY, silentLogger());
    expect(hit?.root).toBe(stored.root);
    expect(hit?.meta.treeDigest).toBe(stored.meta.treeDigest);

    // Other bytes of the same size (a tampered binary): the tree no longer matches its digest.
    await writeFile(join(stored.root, 'usr/bin/systemctl'), 'a fake systemctl!!');
    const warnings: string[] = [];
    expect(await lookupPresetBase(cache, KEY, recordingLogger(warnings))).toBeUndefined();
    expect(warnings.join('\n')).toMatch(/does not match its digest/);
    // Removed, so the next build installs it again rather than layering over it.
    expect(await readdir(join(cache, CACHE_DIRS.sysextBases))).toEqual([]);

    const again = await storePresetBase(cache, KEY, await installedBase('build-2'), META);
    const repaired = await lookupPresetBase(cache, KEY, silentLogger());
    expect(repaired?.root).toBe(again.root);
    expect(await readFile(join(repaired!.root, 'usr/bin/systemctl'), 'utf8')).toBe('the real systemctl');
  });

  it('a truncated package database or a missing meta.json is a miss too', async () => {
    const cache = join(dir, 'cache-2');
    const stored = await storePresetBase(cache, KEY, await installedBase('build-3'), META);
    await truncate(join(stored.root, 'var/lib/dpkg/status'), 5);
    expect(await lookupPresetBase(cache, KEY, silentLogger())).toBeUndefined();

    const half = await storePresetBase(cache, KEY, await installedBase('build-4'), META);
    await rm(join(half.root, '..', 'meta.json'));
    expect(await lookupPresetBase(cache, KEY, silentLogger())).toBeUndefined();
    expect(await readdir(join(cache, CACHE_DIRS.sysextBases))).toEqual([]);
  });
});
