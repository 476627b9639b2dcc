import { copyFile, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { mkinitrdPkg } from './cli.js';
import { bootQemu, enterEmergencyShell, ROOT_MARKER, type BootSession, type Drive } from '../../scripts/lib/qemu.mjs';
import { storageDisks, type StorageDisks } from '../../scripts/lib/storage.mjs';

/**
 * Shared pieces of the storage boot matrix (test/storage-boot.test.ts): one generic base
 * per preset, the lvm and raid extensions built on it (plain and with dm-verity), the
 * disks prepared in a helper VM (scripts/lib/storage.mjs, cached under /var/tmp), and a
 * boot that measures the time to the real root.
 */
export const TEST_CACHE = process.env.MKINITRD_PKG_TEST_CACHE ?? '/var/tmp/mkinitrd-pkg-test-cache';
export const EPOCH = '1700000000';

export interface Stack {
  dir: string;
  preset: string;
  kernel: string;
  kernelArgs: string[];
  base: string;
  lvm: string;
  raid: string;
  /** Extra initrds (cpio) that are appended to the base. */
  cpio: { lvm: string; raid: string; lvmRaid: string; show: string };
  disks: StorageDisks;
}

async function cli(args: string[]): Promise<string> {
  const r = await mkinitrdPkg(args);
  expect(r.exitCode, `mkinitrd-pkg ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

/**
 * A unit that prints, on the console of the booted initrd, what systemd-sysext merged and
 * the dm-verity devices under it, before sysinit.target: evidence from inside the boot.
 * Test data only, delivered as one more cpio.
 */
export async function showUnitCpio(dir: string): Promise<string> {
  const tree = join(dir, 'show-tree');
  await mkdir(join(tree, 'etc/systemd/system/sysinit.target.wants'), { recursive: true });
  await writeFile(
    join(tree, 'etc/systemd/system/storage-show.service'),
    `[Unit]
DefaultDependencies=no
After=systemd-sysext.service mkinitrd-pkg-sysext-activate.service
Before=sysinit.target
[Service]
Type=oneshot
StandardOutput=tty
StandardError=tty
TTYPath=/dev/console
Environment=SYSTEMD_COLORS=0
ExecStart=/bin/sh -c 'echo STORAGE-SHOW-BEGIN; systemd-sysext list --no-pager; echo merged: $(ls /usr/lib/extension-release.d); dmsetup table --target verity; echo STORAGE-SHOW-END'
`,
  );
  await symlink('../storage-show.service', join(tree, 'etc/systemd/system/sysinit.target.wants/storage-show.service'));
  const out = join(dir, 'show.cpio');
  await cli(['pack', tree, '--output', out, '--owner', 'root']);
  return out;
}

/**
 * Concatenate initrds as a boot loader loading several does: each starts 4-byte aligned
 * (GRUB and systemd-boot align them; the kernel skips the zero padding), and the kernel
 * unpacks each over the last.
 */
export async function concatInitrds(out: string, parts: string[]): Promise<string> {
  const buffers: Buffer[] = [];
  for (const p of parts) {
    const b = await readFile(p);
    buffers.push(b, Buffer.alloc((4 - (b.length % 4)) % 4));
  }
  await writeFile(out, Buffer.concat(buffers));
  return out;
}

/**
 * Build the base for `preset` and the extensions on it. `kernelArgs` selects the kernel
 * (e.g. --kernel-output DIR/vmlinuz for the preset's own kernel package).
 */
export async function buildStack(o: { dir: string; preset: string; config?: string[]; kernelArgs: string[]; kernel: string; helperDisks?: StorageDisks }): Promise<Stack> {
  const { dir, preset } = o;
  const conf = (o.config ?? []).flatMap((c) => ['--config', c]);
  const base = join(dir, 'base.img');
  await cli(['build', '--preset', preset, ...conf, ...o.kernelArgs, '--output', base, '--source-date-epoch', EPOCH, '--cache-dir', TEST_CACHE]);
  const ext = async (definition: string, verity: boolean) => {
    const sub = join(dir, verity ? 'verity' : 'plain');
    await mkdir(sub, { recursive: true });
    const out = join(sub, `${definition}.raw`);
    await cli(['sysext', 'build', '--definition', definition, '--base', base, '--preset', preset, ...conf, '--output', out, '--cache-dir', TEST_CACHE, '--source-date-epoch', EPOCH, ...(verity ? ['--verity'] : [])]);
    return out;
  };
  // Every case uses the dm-verity images (what a distribution would ship; the plain
  // variant is booted by test/sysext-boot.test.ts): one package install per extension,
  // which is most of the matrix's set-up time on a busy machine.
  const lvm = await ext('lvm', true);
  const raid = await ext('raid', true);
  const pack = async (name: string, raws: string[]) => {
    const out = join(dir, `${name}.cpio`);
    await cli(['sysext', 'pack', ...raws, '--output', out]);
    return out;
  };
  const cpio = {
    lvm: await pack('lvm', [lvm]),
    raid: await pack('raid', [raid]),
    lvmRaid: await pack('lvm-raid', [lvm, raid]),
    show: await showUnitCpio(dir),
  };
  const disks = o.helperDisks ?? (await storageDisks({ kernel: o.kernel, initrd: await concatInitrds(join(dir, 'helper.img'), [base]), lvmRaw: lvm, raidRaw: raid }, { log: console.log }));
  return { dir, preset, kernel: o.kernel, kernelArgs: o.kernelArgs, base, lvm, raid, cpio, disks };
}

export interface BootResult {
  seconds: number;
  output: string;
  session: BootSession;
}

/**
 * Boot until the real root's init prints its marker; the disks are attached with
 * snapshot=on (the cached images are never written). `during` may type on the console.
 */
export async function bootToRoot(o: { kernel: string; initrd: string; drives: string[]; append: string; during?: (s: BootSession) => Promise<void>; timeoutMs?: number }): Promise<BootResult> {
  const drives: Drive[] = o.drives.map((file) => ({ file, snapshot: true }));
  // The root device wait (90 s by default) starts with the boot: on a machine shared by
  // several TCG guests the initrd alone took 3-4 minutes, so give it room (a cap, not a
  // measurement). no_timer_check: a starved TCG guest failed the kernel's IO-APIC timer
  // check ("IO-APIC + timer doesn't work!" panic), measured here under load.
  const session = bootQemu({ kernel: o.kernel, initrd: o.initrd, drives, append: `rw no_timer_check rootflags=x-systemd.device-timeout=480s ${o.append}` });
  try {
    if (o.during) await o.during(session);
    await session.waitFor(ROOT_MARKER, o.timeoutMs ?? 600_000);
    const seconds = (performance.now() - session.started) / 1000;
    await session.exited;
    return { seconds, output: session.output(), session };
  } finally {
    session.kill();
  }
}

/**
 * A boot that must not reach the root: waits for `why` on the console (the journal is
 * forwarded there), then for the emergency shell; `inShell` may type there. Returns the
 * console line that says why.
 */
export async function bootRefused(o: { kernel: string; initrd: string; drives: string[]; append: string; why: RegExp; inShell?: (s: BootSession) => Promise<void> }): Promise<string> {
  const session = bootQemu({
    kernel: o.kernel,
    initrd: o.initrd,
    drives: o.drives.map((file) => ({ file, snapshot: true })),
    append: `rw no_timer_check rootflags=x-systemd.device-timeout=60s systemd.journald.forward_to_console=1 ${o.append}`,
  });
  try {
    const out = await session.waitFor(o.why, 600_000);
    const line = out.split('\n').find((l) => o.why.test(l)) ?? '';
    await enterEmergencyShell(session, 600_000);
    if (o.inShell) await o.inShell(session);
    expect(session.output()).not.toContain(ROOT_MARKER);
    return line.trim();
  } finally {
    session.kill();
  }
}

/** The lines storage-show.service printed. */
export function shown(output: string): string {
  const m = /STORAGE-SHOW-BEGIN([\s\S]*?)STORAGE-SHOW-END/.exec(output);
  return m ? m[1]! : '';
}

export async function copy(src: string, dest: string): Promise<string> {
  await copyFile(src, dest);
  return dest;
}
