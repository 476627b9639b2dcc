import { copyFile, mkdtemp, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { run } from '@mkinitrd-pkg/common';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkinitrdPkg } from './lib/cli.js';
import { bootQemu, enterEmergencyShell, makeTestRoot, ROOT_MARKER, type BootSession } from '../scripts/lib/qemu.mjs';

/**
 * The spine of the product, proven by the program that consumes it: a real Debian
 * kernel boots an initrd built from Debian packages and switches to a real root — for
 * the current stable release (the default preset) and the previous one, each booting
 * the kernel of its own kernel package (nothing from the host's /boot).
 */
export const TEST_CACHE = process.env.MKINITRD_PKG_TEST_CACHE ?? '/var/tmp/mkinitrd-pkg-test-cache';
const EPOCH = '1700000000';
const UUID = '5b2f5a0e-6a1c-4c1e-9d43-2f1f0a6e7c11';
const LABEL = 'mkpkgroot';

/** preset → the Debian release it must build, and the kernel series it ships. */
const RELEASES = [
  { preset: 'debian', release: 'trixie', kernelSeries: /^6\.12\./ },
  { preset: 'debian-12', release: 'bookworm', kernelSeries: /^6\.1\./ },
];

const sha256 = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');

describe.each(RELEASES)('$preset preset ($release): build and boot its own kernel', ({ preset, release, kernelSeries }) => {
  let dir: string;
  let image: string;
  let vmlinuz: string;
  let kernelVersion: string;
  let rootImage: string;
  const sessions: BootSession[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-boot-'));
    image = join(dir, 'initrd.img');
    vmlinuz = join(dir, 'vmlinuz');
    const result = await mkinitrdPkg(['build', '--preset', preset, '--output', image, '--kernel-output', vmlinuz, '--source-date-epoch', EPOCH, '--cache-dir', TEST_CACHE, '--json']);
    expect(result.stderr).toBe('');
    expect(result.exitCode).toBe(0);
    kernelVersion = JSON.parse(result.stdout).images[0].kernelVersion;
    rootImage = await makeTestRoot({ uuid: UUID, label: LABEL });
  });

  afterAll(() => {
    for (const s of sessions) s.kill();
  });

  it('writes a 0600 image, its manifest, and is at most 36 MB', async () => {
    const st = await stat(image);
    expect(st.mode & 0o777).toBe(0o600);
    // The generic module set covers dracut --no-hostonly's storage/input classes
    // (presets/include/generic-modules.conf); its size against dracut's is measured by
    // test/modules-coverage.test.ts and npm run bench. This only catches a runaway.
    expect(st.size).toBeLessThanOrEqual(36 * 1000 * 1000);
    const manifest = JSON.parse(await readFile(`${image}.manifest.json`, 'utf8'));
    expect(manifest.sha256).toBe(await sha256(image));
    expect(manifest.release).toBe(release);
    expect(manifest.kernelVersion).toBe(kernelVersion);
    expect(manifest.kernelVersion).toMatch(kernelSeries);
    expect(manifest.modulesSource).toBe('package linux-image-amd64');
    // The kernel written beside the image is the one of the same package: its version
    // string (at a fixed place in the bzImage header's kernel_version field) names it.
    expect((await readFile(vmlinuz)).includes(Buffer.from(kernelVersion))).toBe(true);
    expect(manifest.sourceDateEpoch).toBe(Number(EPOCH));
    const names = manifest.packages.map((p: { name: string }) => p.name);
    expect(names).toEqual(expect.arrayContaining(['systemd', 'udev', 'kmod', 'e2fsprogs', 'cryptsetup-bin']));
    // The generic module set named in the issue.
    expect(manifest.modules).toEqual(expect.arrayContaining(['ahci', 'nvme', 'sd_mod', 'sr_mod', 'virtio_blk', 'virtio_scsi', 'usb_storage', 'uas', 'xhci_pci', 'ehci_pci', 'raid1', 'raid456', 'dm_crypt', 'dm_verity', 'dm_snapshot', 'dm_thin_pool', 'ext4', 'xfs', 'btrfs', 'vfat', 'squashfs', 'erofs', 'overlay', 'isofs', 'usbhid', 'hid_generic']));
    // atkbd and i8042 are built into Debian's kernel (modules.builtin), so they are no files.
  });

  it('is reproducible: a second build from scratch (no installroot cache) gives the same bytes', async () => {
    const again = join(dir, 'again.img');
    const result = await mkinitrdPkg(['build', '--preset', preset, '--output', again, '--source-date-epoch', EPOCH, '--cache-dir', TEST_CACHE, '--no-cache']);
    expect(result.exitCode).toBe(0);
    expect(await sha256(again)).toBe(await sha256(image));
  }, 900_000);

  const boot = async (root: string) => {
    const session = bootQemu({ kernel: vmlinuz, initrd: image, rootImage, append: `root=${root} rw` });
    sessions.push(session);
    try {
      const out = await session.waitFor(ROOT_MARKER, 240_000);
      expect(out).toContain(ROOT_MARKER);
      await session.exited;
    } finally {
      session.kill();
    }
  };

  it('boots a real kernel to a real root given as root=/dev/vda', () => boot('/dev/vda'), 300_000);
  it('boots with root=UUID=…', () => boot(`UUID=${UUID}`), 300_000);
  it('boots with root=LABEL=…', () => boot(`LABEL=${LABEL}`), 300_000);

  it('unlocks a LUKS2 root with a passphrase typed on the console and boots it', async () => {
    // The encrypted root: the test root re-encrypted offline (cryptsetup reencrypt needs
    // no device-mapper on the host). pbkdf2 with few iterations keeps TCG unlocking fast.
    const plain = await makeTestRoot({ uuid: '5b2f5a0e-6a1c-4c1e-9d43-2f1f0a6e7c15', label: 'lukspayload' });
    const encrypted = join(dir, 'luks-root.img');
    await copyFile(plain, encrypted);
    await truncate(encrypted, 80 * 1024 * 1024);
    await writeFile(join(dir, 'luks-pass'), 'correct horse');
    await run('cryptsetup', ['reencrypt', '--encrypt', '--type', 'luks2', '--reduce-device-size', '16M', '--key-file', join(dir, 'luks-pass'), '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '-q', encrypted]);
    const luksUuid = (await run('cryptsetup', ['luksUUID', encrypted])).stdout.trim();
    const session = bootQemu({ kernel: vmlinuz, initrd: image, rootImage: encrypted, append: `rd.luks.uuid=${luksUuid} root=/dev/mapper/luks-${luksUuid} rw` });
    sessions.push(session);
    try {
      await session.waitFor(/Please enter passphrase for disk/, 240_000);
      await new Promise((r) => setTimeout(r, 1000));
      session.type('correct horse\r');
      await session.waitFor(ROOT_MARKER, 240_000);
    } finally {
      session.kill();
    }
  }, 600_000);

  it('ends in a working emergency shell when the root never appears', async () => {
    const session = bootQemu({
      kernel: vmlinuz,
      initrd: image,
      rootImage,
      append: 'root=UUID=00000000-dead-beef-0000-000000000000 rootflags=x-systemd.device-timeout=10s',
    });
    sessions.push(session);
    try {
      // sulogin --force (SYSTEMD_SULOGIN_FORCE=1) gives root's shell without a password.
      await enterEmergencyShell(session);
      // A command whose output cannot be an echo of what was typed.
      const mark = session.output().length;
      session.type('echo EMERGENCY-$((6*7))\r');
      await session.waitFor('EMERGENCY-42', 60_000, mark);
    } finally {
      session.kill();
    }
  }, 400_000);
});
