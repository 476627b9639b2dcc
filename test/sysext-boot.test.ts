import { copyFile, mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { mkinitrdPkg } from './lib/cli.js';
import { bootQemu, enterEmergencyShell } from '../scripts/lib/qemu.mjs';

/**
 * The sysext proven by the program that consumes it: a real kernel boots the generic
 * initrd plus an extra cpio carrying lvm.raw, and systemd-sysext inside the initrd
 * merges it into /usr before sysinit.target.
 */
const TEST_CACHE = process.env.MKINITRD_PKG_TEST_CACHE ?? '/var/tmp/mkinitrd-pkg-test-cache';
let dir: string;
let combined: string;
let vmlinuz: string;

describe('sysext merged inside the booted initrd (default preset, its own kernel)', () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-sysext-boot-'));
    const image = join(dir, 'initrd.img');
    vmlinuz = join(dir, 'vmlinuz');
    const built = await mkinitrdPkg(['build', '--preset', 'debian', '--output', image, '--kernel-output', vmlinuz, '--source-date-epoch', '1700000000', '--cache-dir', TEST_CACHE]);
    expect(built.exitCode, built.stderr).toBe(0);
    const raw = join(dir, 'lvm.raw');
    const sysext = await mkinitrdPkg(['sysext', 'build', '--definition', 'lvm', '--base', image, '--output', raw, '--cache-dir', TEST_CACHE]);
    expect(sysext.exitCode, sysext.stderr).toBe(0);
    // What a boot loader appends as a second initrd: var/lib/extensions/lvm.raw.
    const tree = join(dir, 'extra');
    await mkdir(join(tree, 'var/lib/extensions'), { recursive: true });
    await copyFile(raw, join(tree, 'var/lib/extensions/lvm.raw'));
    const extra = join(dir, 'extra.cpio');
    const packed = await mkinitrdPkg(['pack', tree, '--output', extra, '--owner', 'root']);
    expect(packed.exitCode, packed.stderr).toBe(0);
    combined = join(dir, 'combined.img');
    await writeFile(combined, Buffer.concat([await readFile(image), await readFile(extra)]));
  }, 900_000);

  it('systemd-sysext reports the lvm extension and lvm is on /usr', async () => {
    const session = bootQemu({
      kernel: vmlinuz,
      initrd: combined,
      append: 'root=UUID=00000000-dead-beef-0000-000000000000 rootflags=x-systemd.device-timeout=10s',
    });
    try {
      // sulogin --force (SYSTEMD_SULOGIN_FORCE=1) gives root's shell without a password.
      await enterEmergencyShell(session);
      const mark = session.output().length;
      // Under load the root's device timeout can put the shell up while systemd-sysext is
      // still merging (emergency.target is not ordered after it): starting the unit joins
      // its running job, so the status below sees the finished merge.
      session.type('systemctl start systemd-sysext.service; systemd-sysext status --no-pager; test -x /usr/sbin/lvm && echo LVM-ON-USR-$((40+2))\r');
      const out = await session.waitFor('LVM-ON-USR-42', 60_000, mark);
      expect(out).toMatch(/\/usr\s+(\x1b\[[0-9;]*m)*lvm/);
    } finally {
      session.kill();
    }
  }, 400_000);
});
