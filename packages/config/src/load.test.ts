import { mkdtemp, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, beforeAll } from 'vitest';
import { UserError } from '@mkinitrd-pkg/common';
import { loadConfig, listPresets } from './load.js';
import { parseIniAssignments } from './ini-lines.js';

let dir: string;
const base = `[Distribution]
Distribution=debian
Release=bookworm
Mirror=http://deb.debian.org/debian
[Content]
Packages=systemd udev
KernelModules=ext4
 -ext4
[Output]
CompressOutput=zstd
`;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-config-'));
  await mkdir(join(dir, 'presets'));
  await mkdir(join(dir, 'usr.d'));
  await mkdir(join(dir, 'etc.d'));
  await writeFile(join(dir, 'presets', 'mini.conf'), base);
  await writeFile(join(dir, 'usr.d', '10-extra.conf'), '[Content]\nPackages=lvm2\n[Output]\nCompressOutput=xz\n');
  await writeFile(join(dir, 'etc.d', '10-extra.conf'), '[Content]\nPackages=mdadm\n');
  await writeFile(join(dir, 'etc.d', '20-more.conf'), '[Output]\nCompressOutput=gzip\n');
});

const opts = () => ({ presetDirs: [join(dir, 'presets')], dropInDirs: [join(dir, 'usr.d'), join(dir, 'etc.d')] });

describe('loadConfig', () => {
  it('layers preset < /usr/lib < /etc (same name masks) < --config < flags', async () => {
    const cfgFile = join(dir, 'cli.conf');
    await writeFile(cfgFile, '[Content]\nPackages=\nPackages=busybox\n[Output]\nCompressOutput=lz4\n');
    const withEtc = await loadConfig({ preset: 'mini', ...opts() });
    // /etc's 10-extra.conf masks /usr/lib's: mdadm, not lvm2; 20-more sets gzip.
    expect(withEtc.packages).toEqual(['systemd', 'udev', 'mdadm']);
    expect(withEtc.compression).toBe('gzip');
    expect(withEtc.kernelModules).toEqual(['ext4', '-ext4']);
    const all = await loadConfig({ preset: 'mini', ...opts(), configFiles: [cfgFile], overrides: { compression: 'none', packages: ['kmod'] } });
    expect(all.packages).toEqual(['busybox', 'kmod']);
    expect(all.compression).toBe('none');
  });

  it('names file and line of an unknown key or section', async () => {
    const bad = join(dir, 'bad.conf');
    await writeFile(bad, '[Content]\nPackages=a\nPackagez=b\n');
    await expect(loadConfig({ preset: 'mini', ...opts(), configFiles: [bad] })).rejects.toThrow(`${bad}:3: unknown key Packagez= in [Content]`);
    await writeFile(bad, '\n[Contents]\nPackages=a\n');
    await expect(loadConfig({ preset: 'mini', ...opts(), configFiles: [bad] })).rejects.toThrow(`${bad}:3: unknown section [Contents]`);
    await writeFile(bad, '[Output]\nCompressOutput=brotli\n');
    await expect(loadConfig({ preset: 'mini', ...opts(), configFiles: [bad] })).rejects.toThrow(/bad.conf:2: Output.CompressOutput: unknown compression "brotli"/);
  });

  it('rejects an unknown preset with the list of known ones', async () => {
    const error = await loadConfig({ preset: 'nope', ...opts() }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).code).toBe('PRESET_NOT_FOUND');
    expect((error as UserError).hint).toContain('mini');
  });

  it('rejects an unknown compression flag', async () => {
    await expect(loadConfig({ preset: 'mini', ...opts(), overrides: { compression: 'rar' } })).rejects.toThrow('unknown compression "rar"');
  });

  it('lists presets', async () => {
    expect((await listPresets([join(dir, 'presets')])).map((p) => p.name)).toEqual(['mini']);
  });

  it('[Config] Include= reads a file relative to the includer in place, and refuses a cycle', async () => {
    await mkdir(join(dir, 'presets', 'include'), { recursive: true });
    await writeFile(join(dir, 'presets', 'include', 'mods.conf'), '[Content]\nKernelModules=kernel/drivers/ata/ -pata_legacy\n');
    await writeFile(join(dir, 'presets', 'inc.conf'), base.replace('[Content]', '[Config]\nInclude=include/mods.conf\n[Content]'));
    const config = await loadConfig({ preset: 'inc', ...opts() });
    // The included lines come where Include= stands: the preset's own lines follow them.
    expect(config.kernelModules).toEqual(['kernel/drivers/ata/', '-pata_legacy', 'ext4', '-ext4']);
    expect(config.packages).toEqual(['systemd', 'udev', 'mdadm']);

    const loop = join(dir, 'loop.conf');
    await writeFile(loop, '[Config]\nInclude=loop.conf\n');
    await expect(loadConfig({ preset: 'mini', ...opts(), configFiles: [loop] })).rejects.toThrow(`${loop}:2: Include=loop.conf includes itself (loop.conf → loop.conf)`);
    const missing = join(dir, 'missing.conf');
    await writeFile(missing, '[Config]\nInclude=nowhere.conf\n');
    await expect(loadConfig({ preset: 'mini', ...opts(), configFiles: [missing] })).rejects.toThrow(`config file not found: ${join(dir, 'nowhere.conf')} (included from ${missing})`);
    await writeFile(missing, '[Config]\nIncludes=x.conf\n');
    await expect(loadConfig({ preset: 'mini', ...opts(), configFiles: [missing] })).rejects.toThrow(`${missing}:2: unknown key Includes= in [Config]`);
  });

  it('every shipped preset takes its kernel modules from the one shared set', async () => {
    const shared = await loadConfig({ preset: 'debian', dropInDirs: [] });
    expect(shared.kernelModules).toEqual(expect.arrayContaining(['kernel/drivers/scsi/', 'kernel/drivers/md/', 'i2c_hid_acpi', 'tpm_tis']));
    for (const p of await listPresets()) {
      const config = await loadConfig({ preset: p.name, dropInDirs: [] });
      expect(config.sources.some((s) => s.endsWith('include/generic-modules.conf')), p.name).toBe(true);
    }
  });

  it('resolves the shipped presets without network', async () => {
    const presets = await listPresets();
    for (const p of presets) {
      const config = await loadConfig({ preset: p.name, dropInDirs: [] });
      expect(config.packages.length).toBeGreaterThan(0);
    }
    expect(presets.map((p) => p.name)).toContain('debian');
  });
});

describe('parseIniAssignments', () => {
  it('rejects garbage lines with file:line', () => {
    expect(() => parseIniAssignments('[A]\njunk\n', 'f.conf')).toThrow('f.conf:2: expected "Key=Value"');
    expect(() => parseIniAssignments('K=v\n', 'f.conf')).toThrow('f.conf:1: assignment outside of a [Section]');
  });
});
