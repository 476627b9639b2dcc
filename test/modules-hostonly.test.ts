import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { expectOneLineError, mkinitrdPkg } from './lib/cli.js';
import { bootQemu, makeTestRoot, ROOT_MARKER, type BootSession } from '../scripts/lib/qemu.mjs';

/**
 * KernelModules=host (issue 12 §2): a host-only image from the module list of the
 * machine it is for. This build machine has no /proc/modules, so the "host" is the QEMU
 * guest itself: the generic image boots a root that prints its /proc/modules, and that
 * list (MKINITRD_PKG_HOST_MODULES) makes the host-only image, which must boot the same
 * root with the same kernel.
 */
const TEST_CACHE = process.env.MKINITRD_PKG_TEST_CACHE ?? '/var/tmp/mkinitrd-pkg-test-cache';
const EPOCH = '1700000000';
const sessions: BootSession[] = [];
afterAll(() => {
  for (const s of sessions) s.kill();
});

async function bootToRoot(kernel: string, initrd: string, rootImage: string): Promise<string> {
  // A generous device timeout: on a host shared with other TCG guests, udev's loading of
  // the generic set's modules has taken 160 s before virtio_blk probed.
  // no_timer_check: on a loaded host TCG can be too slow for the kernel's IO-APIC timer
  // check ("IO-APIC + timer doesn't work!" panic), which says nothing about the image.
  const session = bootQemu({ kernel, initrd, rootImage, append: 'root=/dev/vda rw rootflags=x-systemd.device-timeout=400s no_timer_check' });
  sessions.push(session);
  try {
    return await session.waitFor(ROOT_MARKER, 480_000);
  } finally {
    session.kill();
  }
}

describe('KernelModules=host', () => {
  it('builds from the module list of the machine it boots, and boots it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-hostonly-'));
    const generic = join(dir, 'generic.img');
    const vmlinuz = join(dir, 'vmlinuz');
    const built = await mkinitrdPkg(['build', '--preset', 'debian', '--output', generic, '--kernel-output', vmlinuz, '--source-date-epoch', EPOCH, '--cache-dir', TEST_CACHE, '--json']);
    expect(built.exitCode, built.stderr).toBe(0);

    // The guest's own /proc/modules, between markers on its console.
    const rootImage = await makeTestRoot({
      uuid: '5b2f5a0e-6a1c-4c1e-9d43-2f1f0a6e7c31',
      label: 'hostonly',
      before: 'echo PROC-MODULES-BEGIN; /bin/busybox cat /proc/modules; echo PROC-MODULES-END',
    });
    const console1 = await bootToRoot(vmlinuz, generic, rootImage);
    const list = /PROC-MODULES-BEGIN\r?\n([\s\S]*?)PROC-MODULES-END/.exec(console1)?.[1] ?? '';
    const guestModules = list.split(/\r?\n/).map((l) => l.split(' ')[0]).filter(Boolean);
    expect(guestModules).toEqual(expect.arrayContaining(['virtio_blk', 'ext4']));
    const procModules = join(dir, 'proc-modules');
    await writeFile(procModules, list.replace(/\r/g, ''));

    const conf = join(dir, 'host.conf');
    await writeFile(conf, '[Content]\nKernelModules=\nKernelModules=host\n');
    const hostImage = join(dir, 'host.img');
    const hostBuild = await mkinitrdPkg(
      ['build', '--preset', 'debian', '--config', conf, '--output', hostImage, '--source-date-epoch', EPOCH, '--cache-dir', TEST_CACHE, '--json'],
      { MKINITRD_PKG_HOST_MODULES: procModules },
    );
    expect(hostBuild.exitCode, hostBuild.stderr).toBe(0);
    const hostManifest = JSON.parse(await readFile(`${hostImage}.manifest.json`, 'utf8'));
    const genericManifest = JSON.parse(await readFile(`${generic}.manifest.json`, 'utf8'));
    // Every module the guest had loaded is in the image (with its dependencies), and
    // little else: the generic set's hundreds of HBA, card reader and HID drivers are not.
    for (const m of guestModules) expect(hostManifest.modules, m).toContain(m);
    expect(hostManifest.modules.length).toBeLessThan(genericManifest.modules.length / 4);
    expect(hostManifest.bytes).toBeLessThan(genericManifest.bytes);
    console.log(
      `host-only: ${guestModules.length} guest modules → ${hostManifest.modules.length} modules, ${(hostManifest.bytes / 1e6).toFixed(1)} MB; ` +
        `generic: ${genericManifest.modules.length} modules, ${(genericManifest.bytes / 1e6).toFixed(1)} MB`,
    );

    const console2 = await bootToRoot(vmlinuz, hostImage, rootImage);
    expect(console2).toContain(ROOT_MARKER);
  }, 1_200_000);

  it('without a module list, stops with one line that says how to give one', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-hostonly-'));
    const conf = join(dir, 'host.conf');
    await writeFile(conf, '[Content]\nKernelModules=\nKernelModules=host\n');
    const result = await mkinitrdPkg(['build', '--preset', 'debian', '--config', conf, '--output', join(dir, 'x.img'), '--cache-dir', TEST_CACHE], {
      MKINITRD_PKG_HOST_MODULES: join(dir, 'no-such-file'),
    });
    expectOneLineError(result, /KernelModules=host needs the running system's module list/);
    expect(result.stderr).toMatch(/MKINITRD_PKG_HOST_MODULES/);
  }, 600_000);
});
