// Benchmark: the generic Debian initrd of each release (debian = 13 trixie, debian-12 =
// bookworm) against dracut --no-hostonly --zstd on the same kernel (the release's own
// kernel package), same machine, same run. Prints warm build time, image size, module
// count, QEMU time-to-root and unpacked size (RAM while the initrd runs), each as a ratio
// ours/dracut, for the default image and for the size-first variant
// (presets/include/small-image.conf).
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bootQemu, hostKernel, makeTestRoot, ROOT_MARKER } from '../lib/qemu.mjs';
import { dracutNoHostonly, stagedKernelModules } from '../lib/dracut.mjs';

const CLI = fileURLToPath(new URL('../../packages/cli/bin/run.js', import.meta.url));
// The size-first variant (decompressed modules, one xz stream): measured beside the default.
const SMALL = fileURLToPath(new URL('../../presets/include/small-image.conf', import.meta.url));
/** Bytes the image unpacks to (what rootfs holds in RAM while the initrd runs). */
function unpackedBytes(image) {
  const r = spawnSync('node', [CLI, 'inspect', image, '--json'], { encoding: 'utf8', maxBuffer: 1 << 28 });
  if (r.status !== 0) return undefined;
  return JSON.parse(r.stdout).totals.dataBytes;
}
// The N-kernels rows use the host's installed kernel modules (kernel-install's case).
const kernel = await hostKernel();
if (!kernel) {
  console.log('build bench: no kernel in /boot (apt-get install linux-image-amd64); skipped');
  process.exit(0);
}
const hasDracut = spawnSync('sh', ['-c', 'command -v dracut']).status === 0;
const dir = mkdtempSync(join(tmpdir(), 'mkinitrd-pkg-bench-'));
const cache = process.env.MKINITRD_PKG_BENCH_CACHE ?? '/var/tmp/mkinitrd-pkg-bench-cache';

function timed(label, file, args) {
  const start = performance.now();
  const r = spawnSync(file, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, MKINITRD_PKG_LOG_LEVEL: 'warn' } });
  const seconds = (performance.now() - start) / 1000;
  if (r.status !== 0) throw new Error(`${label} failed: ${r.stderr}`);
  return seconds;
}

const mb = (b) => (b / 1e6).toFixed(1) + ' MB';
const ratio = (a, b) => (b ? (a / b).toFixed(2) + '×' : 'n/a');
const rootImage = await makeTestRoot({ uuid: '5b2f5a0e-6a1c-4c1e-9d43-2f1f0a6e7c12', label: 'benchroot' });
// no_timer_check: a loaded host once made TCG too slow for the kernel's IO-APIC timer
// check, a panic before anything of the image ran.
async function timeToRoot(vmlinuz, initrd) {
  const session = bootQemu({ kernel: vmlinuz, initrd, rootImage, append: 'root=/dev/vda rw quiet no_timer_check' });
  try {
    await session.waitFor(ROOT_MARKER, 300_000);
    return (performance.now() - session.started) / 1000;
  } finally {
    session.kill();
  }
}

// Each Debian release with the kernel of its own kernel package; dracut gets the same
// kernel's module tree (--kmoddir into the staged package), so both pick from one tree.
// MKINITRD_PKG_BENCH_PRESETS="debian" measures one release only.
for (const preset of (process.env.MKINITRD_PKG_BENCH_PRESETS ?? 'debian debian-12').split(/\s+/).filter(Boolean)) {
  const ours = join(dir, `${preset}.img`);
  const vmlinuz = join(dir, `${preset}.vmlinuz`);
  const oursArgs = [CLI, 'build', '--preset', preset, '--output', ours, '--kernel-output', vmlinuz, '--cache-dir', cache, '--json'];
  const cold = spawnSync('node', oursArgs, { encoding: 'utf8', env: { ...process.env, MKINITRD_PKG_LOG_LEVEL: 'warn' } });
  if (cold.status !== 0) throw new Error(`mkinitrd-pkg --preset ${preset} failed: ${cold.stderr}`);
  const built = JSON.parse(cold.stdout);
  // Cold: an empty cache (downloads, kernel package, tools root, install): reported, no target.
  let coldSeconds;
  if (process.env.MKINITRD_PKG_BENCH_COLD !== '0' && preset === 'debian') {
    const empty = mkdtempSync(join(tmpdir(), 'mkinitrd-pkg-bench-cold-'));
    try {
      coldSeconds = timed('cold build', 'node', oursArgs.map((a) => (a === cache ? empty : a)));
    } finally {
      execFileSync('rm', ['-rf', empty]);
    }
  }
  const kver = built.images[0].kernelVersion;
  // Warm: downloads cached, packages installed again (no installroot cache).
  const oursNoCache = Math.min(timed('mkinitrd-pkg', 'node', [...oursArgs, '--no-cache']), timed('mkinitrd-pkg', 'node', [...oursArgs, '--no-cache']));
  // Incremental: the pruned installroot comes from the cache; modules and packing run.
  const oursBuild = Math.min(timed('mkinitrd-pkg', 'node', oursArgs), timed('mkinitrd-pkg', 'node', oursArgs));
  const oursSize = statSync(ours).size;
  // The unpacked kernel package has no modules.dep: the helper runs dracut on a
  // depmod'ed hard-linked copy of it (scripts/lib/dracut.mjs), fresh in this run.
  const kmoddir = stagedKernelModules(cache, kver);
  let dracutBuild, dracutSize, dracutBoot, dracutModules;
  let theirs;
  if (hasDracut && kmoddir) {
    const runs = [1, 2].map(() => dracutNoHostonly({ modulesDir: kmoddir, kver, cacheDir: cache, fresh: true }));
    dracutBuild = Math.min(...runs.map((r) => r.seconds));
    dracutSize = runs[1].bytes;
    dracutModules = runs[1].modules.length;
    theirs = runs[1].image;
  }
  // Size-first variant, same cache and kernel: one build (its pack phase dominates).
  const small = join(dir, `${preset}-small.img`);
  const smallBuild = timed('mkinitrd-pkg small', 'node', [CLI, 'build', '--preset', preset, '--config', SMALL, '--output', small, '--cache-dir', cache]);
  const smallSize = statSync(small).size;
  const oursBoot = await timeToRoot(vmlinuz, ours);
  const smallBoot = await timeToRoot(vmlinuz, small);
  if (dracutSize) dracutBoot = await timeToRoot(vmlinuz, theirs);
  const unpacked = [ours, small, theirs].map((i) => (i ? unpackedBytes(i) : undefined));
  console.log(`\nbuild bench: --preset ${preset}, kernel ${kver} from its package`);
  console.log(`                 mkinitrd-pkg      dracut   ratio`);
  if (coldSeconds) console.log(`cold, empty cache ${coldSeconds.toFixed(1).padStart(8)} s ${dracutBuild?.toFixed(1).padStart(9) ?? '      n/a'} s   ${ratio(coldSeconds, dracutBuild)}  (report: downloads, kernel package, tools root, install)`);
  console.log(`warm, no cache   ${oursNoCache.toFixed(1).padStart(9)} s ${dracutBuild?.toFixed(1).padStart(9) ?? '      n/a'} s   ${ratio(oursNoCache, dracutBuild)}  (packages installed again; target ≤ 1.0×)`);
  console.log(`warm, cached     ${oursBuild.toFixed(1).padStart(9)} s ${dracutBuild?.toFixed(1).padStart(9) ?? '      n/a'} s   ${ratio(oursBuild, dracutBuild)}  (target ≤ 0.25×)`);
  console.log(`image size       ${mb(oursSize).padStart(11)} ${dracutSize ? mb(dracutSize).padStart(11) : '        n/a'}   ${ratio(oursSize, dracutSize)}  (target ≤ 0.65×)`);
  console.log(`modules          ${String(built.images[0].modules.length).padStart(9)}   ${dracutModules ? String(dracutModules).padStart(9) : '      n/a'}     ${ratio(built.images[0].modules.length, dracutModules)}  (generic set ⊇ dracut's storage/md/fs/keyboard classes)`);
  console.log(`time to root     ${oursBoot.toFixed(1).padStart(9)} s ${dracutBoot?.toFixed(1).padStart(9) ?? '      n/a'} s   ${ratio(oursBoot, dracutBoot)}  (target ≤ 0.8×)`);
  console.log(`unpacked (RAM)   ${mb(unpacked[0] ?? 0).padStart(11)} ${unpacked[2] ? mb(unpacked[2]).padStart(11) : '        n/a'}   ${ratio(unpacked[0], unpacked[2])}`);
  console.log(`size-first variant (--config presets/include/small-image.conf: modules decompressed, xz):`);
  console.log(`image size       ${mb(smallSize).padStart(11)} ${dracutSize ? mb(dracutSize).padStart(11) : '        n/a'}   ${ratio(smallSize, dracutSize)}  (target ≤ 0.65×)`);
  console.log(`build, cached    ${smallBuild.toFixed(1).padStart(9)} s ${dracutBuild?.toFixed(1).padStart(9) ?? '      n/a'} s   ${ratio(smallBuild, dracutBuild)}`);
  console.log(`time to root     ${smallBoot.toFixed(1).padStart(9)} s ${dracutBoot?.toFixed(1).padStart(9) ?? '      n/a'} s   ${ratio(smallBoot, dracutBoot)}`);
  console.log(`unpacked (RAM)   ${mb(unpacked[1] ?? 0).padStart(11)} ${unpacked[2] ? mb(unpacked[2]).padStart(11) : '        n/a'}   ${ratio(unpacked[1], unpacked[2])}`);
}

// N kernels from one install (the host's installed kernel's modules under other names,
// hard-linked: kernel-install's case). The image's kernel part (usr/lib/modules/KVER,
// firmware) comes after the base part, whose compressed frames are cached by content
// (packer frameCache): a kernel never built before compresses only its kernel part; the
// same kernel built again finds every frame cached. "New" kernels get a name never used
// before in this cache, so their kernel part is really compressed in every timed run.
let fresh = 0;
const modroot = (names) => {
  const root = join(dir, `modroot-${++fresh}`);
  execFileSync('mkdir', ['-p', join(root, 'usr/lib/modules')]);
  for (const name of names) execFileSync('cp', ['-al', `/usr/lib/modules/${kernel.version}`, join(root, 'usr/lib/modules', name)]);
  const conf = join(dir, `modroot-${fresh}.conf`);
  writeFileSync(conf, `[Content]\nKernelModulesRoot=${root}\n`);
  return conf;
};
const stamp = `${process.pid}-${Date.now().toString(36)}`;
const newNames = (n) => Array.from({ length: n }, (_, i) => `${kernel.version}-n${stamp}-${fresh}-${i}`);
const nArgs = (conf, extra) => [CLI, 'build', '--preset', 'debian', '--config', conf, '--kernel-package', '', '--output', join(dir, 'n-{kver}.img'), '--cache-dir', cache, ...extra];
const sameConf = modroot([kernel.version]);
timed('N kernels warm-up', 'node', nArgs(sameConf, ['--kernel-version', kernel.version]));
const same = Math.min(timed('same kernel', 'node', nArgs(sameConf, ['--kernel-version', kernel.version])), timed('same kernel', 'node', nArgs(sameConf, ['--kernel-version', kernel.version])));
const newOne = () => {
  const [name] = newNames(1);
  return timed('1 new kernel', 'node', nArgs(modroot([name]), ['--kernel-version', name]));
};
const one = Math.min(newOne(), newOne());
const threeNew = () => timed('3 new kernels', 'node', nArgs(modroot(newNames(3)), ['--all-kernels']));
const three = Math.min(threeNew(), threeNew());
const threeConf = modroot(newNames(3));
timed('3 kernels warm-up', 'node', nArgs(threeConf, ['--all-kernels']));
const threeSame = timed('3 kernels again', 'node', nArgs(threeConf, ['--all-kernels']));
const threeNoCache = timed('3 kernels, no cache', 'node', nArgs(modroot(newNames(3)), ['--all-kernels', '--no-cache']));
const oneNoCache = timed('1 kernel, no cache', 'node', nArgs(sameConf, ['--kernel-version', kernel.version, '--no-cache']));
let hostDracut;
if (hasDracut) hostDracut = Math.min(...[1, 2].map(() => dracutNoHostonly({ modulesDir: `/usr/lib/modules/${kernel.version}`, kver: kernel.version, cacheDir: cache, fresh: true }).seconds));

console.log(`\nwarm rebuild, host kernel ${kernel.version} (installroot cached)   mkinitrd-pkg   dracut   ratio`);
console.log(`new kernel (kernel part compressed)  ${one.toFixed(1).padStart(8)} s ${hostDracut?.toFixed(1).padStart(8) ?? '     n/a'} s   ${ratio(one, hostDracut)}  (target ≤ 2.0 s and ≤ 0.25×)`);
console.log(`same kernel again (frames cached)    ${same.toFixed(1).padStart(8)} s ${hostDracut?.toFixed(1).padStart(8) ?? '     n/a'} s   ${ratio(same, hostDracut)}`);
console.log(`N kernels (cache warm): 1 new kernel ${one.toFixed(1)} s, 3 new kernels ${three.toFixed(1)} s → ${(three / one).toFixed(2)}× one build (target ≤ 1.3×); the same 3 again ${threeSame.toFixed(1)} s → ${(threeSame / one).toFixed(2)}×`);
console.log(`N kernels (no cache):   1 kernel ${oneNoCache.toFixed(1)} s, 3 kernels ${threeNoCache.toFixed(1)} s → ${(threeNoCache / oneNoCache).toFixed(2)}× one build`);
execFileSync('rm', ['-rf', dir]);
