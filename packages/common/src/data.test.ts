import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { builtinDataDir, dataSearchPath, findDataFile, findDataRoot } from './data.js';

const REPO_ROOT = resolve(fileURLToPath(new URL('../../..', import.meta.url)));

describe('data search path', () => {
  const scratch: string[] = [];
  afterAll(async () => {
    for (const dir of scratch) await rm(dir, { recursive: true, force: true });
  });

  it('finds the checkout root from the compiled module', () => {
    expect(builtinDataDir()).toBe(REPO_ROOT);
  });

  it('walks up to the first directory holding presets/ (the layout of the npm package and /usr/lib/mkinitrd-pkg)', async () => {
    const root = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-data-'));
    scratch.push(root);
    await mkdir(join(root, 'presets'));
    await mkdir(join(root, 'lib', 'deep'), { recursive: true });
    expect(findDataRoot(join(root, 'lib', 'deep'))).toBe(root);
    expect(findDataRoot(root)).toBe(root);
    // A file named presets is not the data directory.
    const other = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-data-'));
    scratch.push(other);
    await writeFile(join(other, 'presets'), '');
    expect(findDataRoot(other)).not.toBe(other);
  });

  it('orders /etc before /usr/lib before the shipped data, without duplicates', () => {
    expect(dataSearchPath('presets')).toEqual(['/etc/mkinitrd-pkg/presets', '/usr/lib/mkinitrd-pkg/presets', join(REPO_ROOT, 'presets')]);
    expect(dataSearchPath('sysext')).toEqual(['/etc/mkinitrd-pkg/sysext', '/usr/lib/mkinitrd-pkg/sysext', join(REPO_ROOT, 'sysext')]);
    // A checkout keeps the plugin with the other scripts.
    expect(dataSearchPath('kernel-install').at(-1)).toBe(join(REPO_ROOT, 'scripts', 'kernel-install'));
    expect(dataSearchPath('extensions')).toEqual(['/etc/mkinitrd-pkg/extensions']);
  });

  it('finds shipped files by name, and nothing for an unknown name', () => {
    expect(findDataFile('kernel-install', '50-mkinitrd-pkg.install')).toMatch(/50-mkinitrd-pkg\.install$/);
    expect(findDataFile('presets', 'no-such-preset.conf')).toBeUndefined();
  });
});
