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

  it('reads [Build] ToolsTree= (default, host or a preset name, never a path) and ToolsTreePackages=', async () => {
    const plain = await loadConfig({ preset: 'mini', ...opts() });
    expect(plain.toolsTree).toBe('default');
    expect(plain.toolsTreePackages).toEqual([]);
    const tools = join(dir, 'tools.conf');
    await writeFile(tools, '[Build]\nToolsTree=debian-12\nToolsTreePackages=kmod squashfs-tools\n');
    const named = await loadConfig({ preset: 'mini', ...opts(), configFiles: [tools] });
    expect(named.toolsTree).toBe('debian-12');
    expect(named.toolsTreePackages).toEqual(['kmod', 'squashfs-tools']);
    expect((await loadConfig({ preset: 'mini', ...opts(), configFiles: [tools], overrides: { toolsTree: 'host' } })).toolsTree).toBe('host');
    await writeFile(tools, '[Build]\nToolsTree=/etc/shadow\n');
    await expect(loadConfig({ preset: 'mini', ...opts(), configFiles: [tools] })).rejects.toThrow(/tools.conf:2: Build.ToolsTree: invalid tools tree "\/etc\/shadow"/);
    await expect(loadConfig({ preset: 'mini', ...opts(), overrides: { toolsTree: '../x.conf' } })).rejects.toThrow(/invalid tools tree/);
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
