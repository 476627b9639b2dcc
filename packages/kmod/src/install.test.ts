import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { copyFile, lstat, mkdir, mkdtemp, readFile, readdir, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { UserError, silentLogger } from '@mkinitrd-pkg/common';
import { findKernelVersions, installKernelModules } from './index.js';

/**
 * A real kernel's modules on this machine: whichever installed kernel has a modules.dep and
 * uncompressed modules (as Debian 12's have; the tests copy named .ko files), newest first.
 * Never a pinned version: the machine's kernel package moves on (issue 9).
 */
function installedKernel(): string | undefined {
  const versions = (() => {
    try {
      return readdirSync('/usr/lib/modules');
    } catch {
      return [];
    }
  })();
  const usable = versions.filter((v) => existsSync(join('/usr/lib/modules', v, 'modules.dep')) && existsSync(join('/usr/lib/modules', v, 'kernel/fs/ext4/ext4.ko')));
  return usable.sort((a, b) => b.localeCompare(a, 'en', { numeric: true }))[0];
}
const KVER = installedKernel() ?? 'none';
const HOST_MODULES = `/usr/lib/modules/${KVER}`;
const SKIP_REASON = KVER === 'none' ? 'no installed kernel with uncompressed modules (/usr/lib/modules/*/kernel/fs/ext4/ext4.ko + modules.dep)' : undefined;
const logger = silentLogger();

/**
 * A realistic module list for a generic (not host-only) initrd. The preset author can
 * copy it into KernelModules=.
 */
const GENERIC_PATTERNS = [
  // storage: controllers, disks, virtual machines, removable media
  'kernel/drivers/ata/',
  'nvme',
  'sd_mod',
  'sr_mod',
  'virtio_blk',
  'virtio_scsi',
  'virtio_pci',
  'vmw_pvscsi',
  'hv_storvsc',
  'xen-blkfront',
  'megaraid_sas',
  'mpt3sas',
  'smartpqi',
  'hpsa',
  'aacraid',
  'qla2xxx',
  'mmc_block',
  'sdhci_pci',
  'sdhci_acpi',
  'usb-storage',
  'uas',
  'xhci_pci',
  'xhci_hcd',
  'ehci_pci',
  'ehci_hcd',
  'ohci_pci',
  'uhci_hcd',
  'loop',
  // md and device mapper
  'md-mod',
  'raid0',
  'raid1',
  'raid456',
  'raid10',
  'dm-crypt',
  'dm-verity',
  'dm-snapshot',
  'dm-thin-pool',
  'dm-mirror',
  'dm-integrity',
  // file systems (+ the code pages vfat mounts with by default)
  'ext4',
  'xfs',
  'btrfs',
  'vfat',
  'nls_cp437',
  'nls_iso8859_1',
  'nls_utf8',
  'squashfs',
  'erofs',
  'overlay',
  'isofs',
  // crypto (cryptsetup, dm-verity, fs checksums)
  'kernel/crypto/**',
  'kernel/arch/*/crypto/**',
  // keyboard for a passphrase prompt or emergency shell
  'hid',
  'usbhid',
  'hid-generic',
  'atkbd',
  'i8042',
];

let work: string;
beforeAll(async () => {
  work = await realpath(await mkdtemp(join(tmpdir(), 'kmod-install-')));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function imageWithMergedUsr(name: string): Promise<string> {
  const image = join(work, name);
  await mkdir(join(image, 'usr/lib'), { recursive: true });
  await symlink('usr/lib', join(image, 'lib'));
  return image;
}

function showDepends(image: string, module: string): string[] {
  return execFileSync('modprobe', ['-d', image, '-S', KVER, '--show-depends', module], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.trim() !== '');
}

async function walkFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await walkFiles(path)));
    else out.push(path);
  }
  return out;
}

describe(`installKernelModules with the real ${KVER} modules`, () => {
  beforeEach((ctx) => {
    if (SKIP_REASON) ctx.skip(SKIP_REASON);
  });
  it('finds the kernel', async () => {
    expect(await findKernelVersions('/')).toContain(KVER);
  });

  it('installs the generic set with its closure, and modprobe can use the tree', async () => {
    const image = await imageWithMergedUsr('generic');
    const started = performance.now();
    const result = await installKernelModules({ imageRoot: image, kernelVersion: KVER, sourceRoot: '/', patterns: GENERIC_PATTERNS, logger });
    const ms = performance.now() - started;
    console.log(
      `generic set: ${result.modules.length} modules, ${result.files.length} files, ${(result.bytes / 1048576).toFixed(1)} MiB, ` +
        `${result.missingFirmware.length} firmware missing, ${ms.toFixed(0)} ms`,
    );

    expect(result.kernelVersion).toBe(KVER);
    expect(result.modules).toEqual([...result.modules].sort());
    for (const m of ['ext4', 'jbd2', 'mbcache', 'crc16', 'dm_crypt', 'dm_mod', 'dm_verity', 'ahci', 'libata', 'nvme', 'nvme_core',
      'raid456', 'md_mod', 'btrfs', 'xfs', 'usb_storage', 'hid_generic', 'crc32c_intel', 'crc32c_generic', 'qla2xxx']) {
      expect(result.modules).toContain(m);
    }
    // atkbd and i8042 are built into Debian's kernel: requested, fine, nothing installed.
    expect(result.modules).not.toContain('i8042');
    expect(result.files).toContain(`usr/lib/modules/${KVER}/kernel/fs/ext4/ext4.ko`);
    expect(result.files).toContain(`usr/lib/modules/${KVER}/modules.builtin`);
    expect(result.files).toContain(`usr/lib/modules/${KVER}/modules.dep.bin`);
    // qla2xxx declares firmware that this host does not have: recorded, not fatal.
    expect(result.missingFirmware).toEqual(expect.arrayContaining(['ql2400_fw.bin', 'ql2500_fw.bin']));
    expect(result.firmware).toEqual([]);

    // Everything written is a regular file inside the image, and bytes add up.
    const files = await walkFiles(join(image, 'usr/lib/modules', KVER));
    let bytes = 0;
    for (const f of files) {
      const st = await lstat(f);
      expect(st.isFile()).toBe(true);
      bytes += st.size;
    }
    expect(files.length).toBe(result.files.length);
    expect(bytes).toBe(result.bytes);

    // depmod ran on the image: one modules.dep line per installed module.
    const dep = await readFile(join(image, 'usr/lib/modules', KVER, 'modules.dep'), 'utf8');
    expect(dep.trim().split('\n')).toHaveLength(result.modules.length);

    // modprobe resolves against the image (one module per call: a second name would be a parameter).
    const ext4 = showDepends(image, 'ext4');
    expect(ext4.at(-1)).toBe(`insmod ${image}/lib/modules/${KVER}/kernel/fs/ext4/ext4.ko `);
    for (const dep of ['kernel/fs/jbd2/jbd2.ko', 'kernel/fs/mbcache.ko', 'kernel/lib/crc16.ko']) {
      expect(ext4).toContain(`insmod ${image}/lib/modules/${KVER}/${dep} `);
    }
    expect(showDepends(image, 'dm-crypt')).toContain(`insmod ${image}/lib/modules/${KVER}/kernel/drivers/md/dm-mod.ko `);
    expect(showDepends(image, 'raid456').length).toBeGreaterThan(3);
    expect(showDepends(image, 'usb-storage').at(-1)).toContain('usb-storage.ko');
  });

  it('copies firmware from given roots (compressed variants too), records the rest, and replaces an earlier install', async () => {
    const image = await imageWithMergedUsr('firmware');
    const fw = join(work, 'firmware-src');
    await mkdir(fw, { recursive: true });
    await writeFile(join(fw, 'ql2400_fw.bin.xz'), 'xz-compressed');
    await writeFile(join(fw, 'ql2500_fw.bin'), 'plain');
    await installKernelModules({ imageRoot: image, kernelVersion: KVER, sourceRoot: '/', patterns: ['ext4'], logger });
    const result = await installKernelModules({
      imageRoot: image,
      kernelVersion: KVER,
      sourceRoot: '/',
      patterns: ['qla2xxx'],
      firmwareRoots: [join(work, 'does-not-exist'), fw],
      logger,
    });
    expect(result.firmware).toEqual(['usr/lib/firmware/ql2400_fw.bin.xz', 'usr/lib/firmware/ql2500_fw.bin']);
    expect(result.missingFirmware).toEqual(['ql2100_fw.bin', 'ql2200_fw.bin', 'ql2300_fw.bin', 'ql2322_fw.bin']);
    expect(await readFile(join(image, 'usr/lib/firmware/ql2500_fw.bin'), 'utf8')).toBe('plain');
    expect(result.modules).toContain('scsi_transport_fc');
    expect(result.modules).not.toContain('ext4');
    expect(existsSync(join(image, 'usr/lib/modules', KVER, 'kernel/fs/ext4/ext4.ko'))).toBe(false);
  });

  it('adds soft dependencies through aliases (ext4 → pre: crypto-crc32c) unless excluded', async () => {
    const a = await installKernelModules({ imageRoot: join(work, 'soft-a'), kernelVersion: KVER, sourceRoot: '/', patterns: ['ext4'], logger });
    expect(a.modules).toEqual(['crc16', 'crc32c_generic', 'crc32c_intel', 'ext4', 'jbd2', 'mbcache']);
    const b = await installKernelModules({ imageRoot: join(work, 'soft-b'), kernelVersion: KVER, sourceRoot: '/', patterns: ['ext4', '-crc32c*'], logger });
    expect(b.modules).toEqual(['crc16', 'ext4', 'jbd2', 'mbcache']);
  });

  it('fails clearly for an unknown module and an unknown kernel', async () => {
    const missing = await installKernelModules({
      imageRoot: join(work, 'err'),
      kernelVersion: KVER,
      sourceRoot: '/',
      patterns: ['ext4', 'ext5'],
      logger,
    }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(UserError);
    expect((missing as UserError).code).toBe('MODULE_NOT_FOUND');
    expect((missing as UserError).message).toContain('ext5');

    const kernel = await installKernelModules({
      imageRoot: join(work, 'err'),
      kernelVersion: '9.9.9-nope',
      sourceRoot: '/',
      patterns: ['ext4'],
      logger,
    }).catch((e: unknown) => e);
    expect((kernel as UserError).code).toBe('KERNEL_NOT_FOUND');
    expect((kernel as UserError).message).toBe('no modules for kernel 9.9.9-nope in /');
    expect((kernel as UserError).hint).toContain(KVER);
  });

  it('refuses to write through a symlink in the image', async () => {
    const image = join(work, 'hostile-image');
    const victim = join(work, 'victim');
    await mkdir(join(image, 'usr/lib'), { recursive: true });
    await mkdir(join(victim, KVER), { recursive: true });
    await writeFile(join(victim, KVER, 'keep'), 'x');
    await symlink(victim, join(image, 'usr/lib/modules'));
    const error = await installKernelModules({ imageRoot: image, kernelVersion: KVER, sourceRoot: '/', patterns: ['ext4'], logger }).catch((e: unknown) => e);
    expect((error as UserError).code).toBe('UNSAFE_PATH');
    expect(await readFile(join(victim, KVER, 'keep'), 'utf8')).toBe('x');
  });

  describe('from an unpacked kernel package (lib/modules, no modules.dep, compressed modules)', () => {
    let staging: string;
    let outside: string;
    beforeAll(async () => {
      if (SKIP_REASON) return;
      staging = join(work, 'staging');
      outside = join(work, 'outside');
      const mod = join(staging, 'lib/modules', KVER);
      await mkdir(outside, { recursive: true });
      await writeFile(join(outside, 'secret.bin'), 'outside');
      await writeFile(join(outside, 'victim'), 'victim');
      const take = async (rel: string, compress?: 'xz' | 'zstd') => {
        const to = join(mod, rel);
        await mkdir(dirname(to), { recursive: true });
        await copyFile(join(HOST_MODULES, rel), to);
        if (compress === 'xz') execFileSync('xz', ['--check=crc32', to]);
        if (compress === 'zstd') execFileSync('zstd', ['-q', '--rm', to]);
      };
      await take('kernel/drivers/net/ethernet/intel/e100.ko');
      await take('kernel/drivers/net/mii.ko', 'xz');
      await take('kernel/fs/ext4/ext4.ko');
      await take('kernel/fs/jbd2/jbd2.ko', 'zstd');
      await take('kernel/fs/mbcache.ko');
      await take('kernel/lib/crc16.ko');
      await take('kernel/crypto/crc32c_generic.ko');
      for (const f of ['modules.order', 'modules.builtin', 'modules.builtin.modinfo']) await take(f);

      const fw = join(staging, 'usr/lib/firmware');
      await mkdir(join(fw, 'e100'), { recursive: true });
      await mkdir(join(fw, 'vendor'), { recursive: true });
      await writeFile(join(fw, 'vendor/d101m.bin'), 'm');
      await symlink('../vendor/d101m.bin', join(fw, 'e100/d101m_ucode.bin')); // inside: followed
      await writeFile(join(fw, 'e100/d101s_ucode.bin.xz'), 's'); // compressed variant
      await symlink(join(outside, 'secret.bin'), join(fw, 'e100/d102e_ucode.bin')); // escapes: not followed
    });

    it('finds the version by its kernel/ directory', async () => {
      expect(await findKernelVersions(staging)).toEqual([KVER]);
    });

    it('computes modules.dep with depmod -n, copies safe firmware, and runs depmod without a lib symlink', async () => {
      const image = join(work, 'staging-image');
      // A pre-existing firmware symlink in the image must be replaced, not written through.
      await mkdir(join(image, 'usr/lib/firmware/e100'), { recursive: true });
      await symlink(join(outside, 'victim'), join(image, 'usr/lib/firmware/e100/d101m_ucode.bin'));

      const result = await installKernelModules({ imageRoot: image, kernelVersion: KVER, sourceRoot: staging, patterns: ['e100', 'ext4'], logger });
      expect(result.modules).toEqual(['crc16', 'crc32c_generic', 'e100', 'ext4', 'jbd2', 'mbcache', 'mii']);
      expect(result.firmware).toEqual(['usr/lib/firmware/e100/d101m_ucode.bin', 'usr/lib/firmware/e100/d101s_ucode.bin.xz']);
      expect(result.missingFirmware).toEqual(['e100/d102e_ucode.bin']);

      const copied = join(image, 'usr/lib/firmware/e100/d101m_ucode.bin');
      expect((await lstat(copied)).isFile()).toBe(true);
      expect(await readFile(copied, 'utf8')).toBe('m');
      expect(await readFile(join(outside, 'victim'), 'utf8')).toBe('victim');
      expect(existsSync(join(image, 'usr/lib/firmware/e100/d102e_ucode.bin'))).toBe(false);

      // The source root was only read: depmod -n wrote nothing there.
      expect(existsSync(join(staging, 'lib/modules', KVER, 'modules.dep'))).toBe(false);
      // No merged-/usr symlink was invented, yet depmod ran on usr/lib/modules.
      expect(existsSync(join(image, 'lib'))).toBe(false);
      const dep = await readFile(join(image, 'usr/lib/modules', KVER, 'modules.dep'), 'utf8');
      expect(dep).toContain('kernel/drivers/net/ethernet/intel/e100.ko: kernel/drivers/net/mii.ko.xz');
      expect(dep).toContain('kernel/fs/jbd2/jbd2.ko.zst:');
      expect(result.files).toContain(`usr/lib/modules/${KVER}/kernel/fs/jbd2/jbd2.ko.zst`);
    });

    it('KernelModulesCompression=none stores .ko.xz and .ko.zst decompressed, byte for byte, and modules.dep names them', async () => {
      const image = join(work, 'staging-image-decompressed');
      const result = await installKernelModules({ imageRoot: image, kernelVersion: KVER, sourceRoot: staging, patterns: ['e100', 'ext4'], compression: 'none', logger });
      expect(result.modules).toEqual(['crc16', 'crc32c_generic', 'e100', 'ext4', 'jbd2', 'mbcache', 'mii']);
      const mod = join(image, 'usr/lib/modules', KVER);
      const moduleFiles = (await walkFiles(join(mod, 'kernel'))).map((f) => f.slice(mod.length + 1)).sort();
      expect(moduleFiles.every((f) => f.endsWith('.ko'))).toBe(true);
      // The same bytes as the kernel's own uncompressed files (the fixture compressed those).
      for (const rel of ['kernel/drivers/net/mii.ko', 'kernel/fs/jbd2/jbd2.ko', 'kernel/fs/ext4/ext4.ko']) {
        expect((await readFile(join(mod, rel))).equals(await readFile(join(HOST_MODULES, rel)))).toBe(true);
      }
      const dep = await readFile(join(mod, 'modules.dep'), 'utf8');
      expect(dep).toContain('kernel/drivers/net/ethernet/intel/e100.ko: kernel/drivers/net/mii.ko\n');
      expect(dep).toContain('kernel/fs/jbd2/jbd2.ko:');
      expect(dep).not.toMatch(/\.ko\.(xz|zst)/);
      expect(result.files).toContain(`usr/lib/modules/${KVER}/kernel/fs/jbd2/jbd2.ko`);
      expect(result.files.filter((f) => /\.ko\.(xz|zst)$/.test(f))).toEqual([]);
      // Sizes in the result are the decompressed ones.
      const onDisk = (await Promise.all(result.files.map(async (f) => (await lstat(join(image, f))).size))).reduce((a, b) => a + b, 0);
      const firmware = (await Promise.all(result.firmware.map(async (f) => (await lstat(join(image, f))).size))).reduce((a, b) => a + b, 0);
      expect(result.bytes).toBe(onDisk + firmware);
    });

    it('refuses a module file that is a symlink out of the source root', async () => {
      const evil = join(work, 'evil-staging');
      const mod = join(evil, 'usr/lib/modules', KVER);
      await mkdir(join(mod, 'kernel/lib'), { recursive: true });
      await writeFile(join(mod, 'modules.dep'), 'kernel/lib/crc16.ko:\n');
      await symlink(join(HOST_MODULES, 'kernel/lib/crc16.ko'), join(mod, 'kernel/lib/crc16.ko'));
      const error = await installKernelModules({ imageRoot: join(work, 'evil-image'), kernelVersion: KVER, sourceRoot: evil, patterns: ['crc16'], logger }).catch(
        (e: unknown) => e,
      );
      expect((error as UserError).code).toBe('IO');
      expect(existsSync(join(work, 'evil-image/usr/lib/modules', KVER, 'kernel/lib/crc16.ko'))).toBe(false);
    });
  });
});

describe('installKernelModules input checks', () => {
  it('rejects kernel versions that are not a directory name', async () => {
    const error = await installKernelModules({ imageRoot: '/nonexistent-x', kernelVersion: '../etc', sourceRoot: '/', patterns: [] }).catch((e: unknown) => e);
    expect((error as UserError).code).toBe('INPUT');
  });

  it('explains a root without any kernel', async () => {
    const empty = await mkdtemp(join(tmpdir(), 'kmod-empty-'));
    try {
      expect(await findKernelVersions(empty)).toEqual([]);
      const error = await installKernelModules({ imageRoot: join(empty, 'img'), kernelVersion: '6.1.0-1-amd64', sourceRoot: empty, patterns: ['ext4'], logger }).catch(
        (e: unknown) => e,
      );
      expect((error as UserError).code).toBe('KERNEL_NOT_FOUND');
      expect((error as UserError).hint).toContain('KernelPackage=');
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });
});
