// dracut as the reference for the generic module set, shared by the coverage test
// (test/modules-coverage.test.ts) and the build bench (scripts/bench/build.bench.mjs).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cachePath } from '@mkinitrd-pkg/common';

/**
 * The module tree of a kernel the build unpacked from the preset's kernel package
 * (cacheDir/staged-kernels/NAME/root/{usr/,}lib/modules/KVER, common's CACHE_DIRS, sealed by meta.json:
 * packages/builder/src/cache.ts stageVerified), or undefined when the cache holds none.
 */
export function stagedKernelModules(cacheDir, kver) {
  const kernels = cachePath(cacheDir, 'stagedKernels');
  for (const entry of existsSync(kernels) ? readdirSync(kernels) : []) {
    if (!existsSync(join(kernels, entry, 'meta.json'))) continue;
    for (const base of ['usr/lib/modules', 'lib/modules']) {
      const dir = join(kernels, entry, 'root', base, kver);
      if (existsSync(join(dir, 'modules.order'))) return dir;
    }
  }
  return undefined;
}

const sha = (...parts) => createHash('sha256').update(parts.join('\0')).digest('hex');

/**
 * `dracut --no-hostonly --zstd` for the kernel whose modules are in `modulesDir`, run
 * against a hard-linked copy with its own depmod (the unpacked package has no
 * modules.dep, and the staging root stays untouched). dracut copies tools from the host,
 * so its result is cached under cacheDir/dracut by what determines it: the kernel's
 * module list, dracut's version and the host's package database.
 * Returns { image, bytes, seconds (of the dracut run that made it), modules (paths below
 * the kernel's module dir, e.g. kernel/drivers/ata/ahci.ko.xz), cached }.
 */
export function dracutNoHostonly({ modulesDir, kver, cacheDir, fresh = false }) {
  const version = execFileSync('dpkg-query', ['-W', '-f', '${Version}', 'dracut-core'], { encoding: 'utf8' });
  const key = sha(kver, readFileSync(join(modulesDir, 'modules.order'), 'utf8'), version, readFileSync('/var/lib/dpkg/status', 'utf8')).slice(0, 24);
  const dir = join(cacheDir, 'dracut', key);
  if (!fresh && existsSync(join(dir, 'result.json'))) {
    return { ...JSON.parse(readFileSync(join(dir, 'result.json'), 'utf8')), image: join(dir, 'dracut.img'), cached: true };
  }
  mkdirSync(join(cacheDir, 'dracut'), { recursive: true });
  const work = mkdtempSync(join(cacheDir, 'dracut', 'work-'));
  try {
    // depmod of Debian 12 looks in BASE/lib/modules: give it the merged-/usr link.
    mkdirSync(join(work, 'root/usr/lib/modules'), { recursive: true });
    symlinkSync('usr/lib', join(work, 'root/lib'));
    execFileSync('cp', ['-al', modulesDir, join(work, 'root/usr/lib/modules', kver)]);
    execFileSync('depmod', ['-b', join(work, 'root'), kver]);
    const image = join(work, 'out/dracut.img');
    mkdirSync(join(work, 'out'));
    const started = performance.now();
    execFileSync('dracut', ['--no-hostonly', '--zstd', '--force', '--quiet', '--kmoddir', join(work, 'root/usr/lib/modules', kver), image, kver], { stdio: ['ignore', 'ignore', 'pipe'] });
    const seconds = (performance.now() - started) / 1000;
    const listing = execFileSync('lsinitrd', [image], { encoding: 'utf8', maxBuffer: 64 << 20 });
    const modules = [...new Set([...listing.matchAll(/lib\/modules\/[^/\s]+\/(\S+\.ko(?:\.\w+)?)/g)].map((m) => m[1]))].sort();
    const result = { bytes: statSync(image).size, seconds, modules, dracutVersion: version, kver };
    writeFileSync(join(work, 'out/result.json'), JSON.stringify(result, null, 1));
    rmSync(dir, { recursive: true, force: true });
    try {
      renameSync(join(work, 'out'), dir);
    } catch (error) {
      // Another run stored the same key first: its result is as good as ours.
      if (!existsSync(join(dir, 'result.json'))) throw error;
      return { ...JSON.parse(readFileSync(join(dir, 'result.json'), 'utf8')), image: join(dir, 'dracut.img'), cached: true };
    }
    return { ...result, image: join(dir, 'dracut.img'), cached: false };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
