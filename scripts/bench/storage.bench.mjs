// Benchmark (issue 11): time to the real root for the storage cases 1 (root on LVM),
// 3 (degraded RAID1) and 4 (LVM on RAID1): the generic initrd + the lvm/raid extensions
// (one sysext pack cpio) beside Debian's own initramfs-tools image (mkinitramfs with lvm2
// and mdadm installed, so its hooks include them), same kernel, same disks, same run.
// Target: no slower than initramfs-tools.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bootQemu, hostKernel, ROOT_MARKER } from '../lib/qemu.mjs';
import { storageDisks } from '../lib/storage.mjs';

const CLI = fileURLToPath(new URL('../../packages/cli/bin/run.js', import.meta.url));
const CACHE = process.env.MKINITRD_PKG_TEST_CACHE ?? '/var/tmp/mkinitrd-pkg-test-cache';
const kernel = await hostKernel();
if (!kernel) {
  console.log('no kernel in /boot: skipped');
  process.exit(0);
}
const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const dir = mkdtempSync(join(tmpdir(), 'mkinitrd-pkg-storage-bench-'));
const cli = (...args) => execFileSync('node', [CLI, ...args, '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'inherit'] });

try {
  // The host kernel for both images, so the comparison is about the initrds alone.
  const base = join(dir, 'base.img');
  cli('build', '--preset', 'debian', '--kernel-version', kernel.version, '--output', base, '--source-date-epoch', '1700000000', '--cache-dir', CACHE);
  for (const d of ['lvm', 'raid']) cli('sysext', 'build', '--definition', d, '--base', base, '--preset', 'debian', '--output', join(dir, `${d}.raw`), '--cache-dir', CACHE, '--source-date-epoch', '1700000000');
  const extra = join(dir, 'ext.cpio');
  cli('sysext', 'pack', join(dir, 'lvm.raw'), join(dir, 'raid.raw'), '--output', extra);
  const ours = join(dir, 'ours.img');
  writeFileSync(ours, Buffer.concat([readFileSync(base), readFileSync(extra)]));
  const disks = await storageDisks({ kernel: kernel.vmlinuz, initrd: base, lvmRaw: join(dir, 'lvm.raw'), raidRaw: join(dir, 'raid.raw') }, { log: console.log });

  let theirs;
  if (has('mkinitramfs') && has('lvm') && has('mdadm')) {
    theirs = join(dir, 'initramfs-tools.img');
    execFileSync('mkinitramfs', ['-o', theirs, kernel.version], { stdio: 'inherit' });
  } else {
    console.log('initramfs-tools, lvm2 or mdadm missing (scripts/ci/install-deps.sh installs them): no comparison');
  }

  const cases = [
    ['1 root on LVM', disks.lvm, `root=${disks.devices.lvmRoot}`],
    ['3 RAID1 degraded', disks.raid.slice(0, 1), `root=UUID=${disks.rootUuid}`],
    ['4 LVM on RAID1', disks.lvmRaid, `root=${disks.devices.lvmRaidRoot}`],
  ];
  // A boot that never reaches the root says why (the end of its console), instead of a bare
  // "never": the only earlier run printed no row at all.
  // Each image gets its own way to wait long for the root under TCG load: systemd reads
  // x-systemd.device-timeout= from rootflags=, but initramfs-tools hands rootflags= to
  // mount(8), which fails on it ("mounting /dev/vgroot/root on /root failed: Invalid
  // argument", measured): that is why the first runs never saw initramfs-tools boot.
  const OURS_WAIT = 'rootflags=x-systemd.device-timeout=300s';
  const THEIRS_WAIT = 'rootdelay=300';
  const timeToRoot = async (initrd, drives, append, wait) => {
    const session = bootQemu({ kernel: kernel.vmlinuz, initrd, drives: drives.map((file) => ({ file, snapshot: true })), append: `${append} rw no_timer_check ${wait}` });
    try {
      await session.waitFor(ROOT_MARKER, 420_000);
      return { seconds: (performance.now() - session.started) / 1000 };
    } catch {
      const tail = session.output().split('\n').map((l) => l.trimEnd()).filter(Boolean).slice(-6).join('\n    ');
      return { why: tail };
    } finally {
      session.kill();
    }
  };
  console.log('time to root (TCG)         mkinitrd-pkg + lvm/raid   initramfs-tools   ratio');
  for (const [name, drives, append] of cases) {
    // One at a time: two TCG guests on 2 cores would measure each other.
    const a = await timeToRoot(ours, drives, append, OURS_WAIT);
    const b = theirs ? await timeToRoot(theirs, drives, append, THEIRS_WAIT) : undefined;
    const f = (r) => (r?.seconds === undefined ? 'never'.padStart(8) : `${r.seconds.toFixed(1).padStart(6)} s`);
    const row = `${name.padEnd(26)} ${f(a).padStart(24)} ${f(b).padStart(17)}   ${a.seconds && b?.seconds ? (a.seconds / b.seconds).toFixed(2) + '×' : '-'}  (target ≤ 1×)`;
    console.log(row);
    if (a.why) console.log(`  mkinitrd-pkg never reached the root; console ended:\n    ${a.why}`);
    if (b?.why) console.log(`  initramfs-tools never reached the root; console ended:\n    ${b.why}`);
  }
  console.log(`extension sizes: lvm.raw ${readFileSync(join(dir, 'lvm.raw')).length} B, raid.raw ${readFileSync(join(dir, 'raid.raw')).length} B; extension cpio ${readFileSync(extra).length} B`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
