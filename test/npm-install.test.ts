import { mkdtemp, readFile, readdir, realpath, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostKernel } from '../scripts/lib/qemu.mjs';

/**
 * Issue 15, "installable like real software": the npm package (npm pack of the bundle)
 * installed globally into a clean prefix finds its presets, sysext definitions and
 * kernel-install plugin without a checkout, and builds an image. Every command runs from
 * a scratch cwd, with the checkout nowhere on its module path.
 */

const REPO = fileURLToPath(new URL('..', import.meta.url));
const TEST_CACHE = process.env.MKINITRD_PKG_TEST_CACHE ?? '/var/tmp/mkinitrd-pkg-test-cache';
/** test/sysext.test.ts's cache: its base installroot is reused. */
const SYSEXT_CACHE = process.env.MKINITRD_PKG_SYSEXT_TEST_CACHE ?? '/var/tmp/mkinitrd-pkg-sysext-test-cache';
const kernel = await hostKernel();
const isRoot = process.getuid?.() === 0;

let work: string;
let prefix: string;
let installed: string;
let bin: string;

async function cli(args: string[], env: Record<string, string> = {}) {
  const r = await execa(bin, args, { cwd: work, reject: false, env: { MKINITRD_PKG_LOG_LEVEL: 'warn', ...env } });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

describe('npm package: npm pack + npm install -g into a clean prefix', () => {
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-npm-'));
    prefix = join(work, 'prefix');
    const packed = await execa('node', [join(REPO, 'scripts/package/npm.mjs'), join(work, 'npm')], { cwd: REPO });
    const tgz = /^(\S+\.tgz):/m.exec(packed.stdout)?.[1];
    expect(tgz, packed.stdout).toBeTruthy();
    // --prefer-offline: the optional zstd binding comes from npm's cache when `npm ci` put it there.
    await execa('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', tgz!], { cwd: work });
    installed = join(prefix, 'lib/node_modules/mkinitrd-pkg');
    bin = join(prefix, 'bin/mkinitrd-pkg');
  }, 300_000);

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('installs a bin that is the package\'s, not the checkout\'s', async () => {
    expect(await realpath(bin)).toBe(join(installed, 'bin/run.js'));
    const r = await cli(['--version']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^mkinitrd-pkg\/\d+\.\d+\.\d+ /);
    // Nothing of the checkout inside: one bundled module, data beside it.
    expect((await readdir(join(installed, 'dist'))).sort()).toEqual(['install-worker.js', 'mkinitrd-pkg.mjs']);
    expect(await readFile(join(installed, 'dist/mkinitrd-pkg.mjs'), 'utf8')).not.toContain(REPO);
  });

  it('lists its own presets (inside the installed package)', async () => {
    const r = await cli(['presets', '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const presets = JSON.parse(r.stdout) as Array<{ name: string; path: string }>;
    expect(presets.map((p) => p.name)).toEqual(expect.arrayContaining(['debian', 'fedora', 'ubuntu']));
    for (const p of presets) {
      // /etc/mkinitrd-pkg/presets and /usr/lib/mkinitrd-pkg/presets may mask a name on a
      // host that has them; on this one neither exists.
      expect(p.path.startsWith(join(installed, 'presets/')) || p.path.startsWith('/etc/') || p.path.startsWith('/usr/lib/'), p.path).toBe(true);
    }
  });

  it('resolves the debian preset (summary)', async () => {
    const r = await cli(['summary', '--preset', 'debian']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(`# read: ${join(installed, 'presets/debian.conf')}`);
    expect(r.stdout).toMatch(/^Distribution=debian$/m);
  });

  it('finds its sysext definitions: an unknown one names the installed ones', async () => {
    const r = await cli(['sysext', 'build', '--definition', 'no-such-extension', '--preset', 'debian', '--output', join(work, 'x.raw')]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/lvm/);
    expect(r.stderr).toMatch(/raid/);
  });

  it('install-plugin writes the shipped plugin, set to run the installed CLI', async () => {
    const dest = join(work, 'install.d');
    const r = await cli(['install-plugin', '--dest', dest]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(`from ${join(installed, 'kernel-install/50-mkinitrd-pkg.install')}`);
    const plugin = join(dest, '50-mkinitrd-pkg.install');
    expect((await stat(plugin)).mode & 0o777).toBe(0o755);
    const text = await readFile(plugin, 'utf8');
    const node = /^MKINITRD_PKG_DEFAULT_NODE=(.*)$/m.exec(text)?.[1];
    const command = /^MKINITRD_PKG_DEFAULT=(.*)$/m.exec(text)?.[1];
    expect(command).toBe(join(installed, 'bin/run.js'));
    // The plugin's own way of running it works.
    const version = await execa(node!, [command!, '--version'], { cwd: work });
    expect(version.stdout).toMatch(/^mkinitrd-pkg\//);
  });

  it.skipIf(!kernel || !isRoot)('builds the debian preset for the host kernel with the installed copy', async () => {
    const output = join(work, 'initrd.img');
    const r = await cli(['build', '--preset', 'debian', '--kernel-version', kernel!.version, '--output', output, '--cache-dir', TEST_CACHE, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const manifest = JSON.parse(await readFile(`${output}.manifest.json`, 'utf8'));
    expect(manifest.kernelVersion).toBe(kernel!.version);
    expect(manifest.modules).toEqual(expect.arrayContaining(['ext4', 'virtio_blk']));
    const inspect = await cli(['inspect', output]);
    expect(inspect.exitCode, inspect.stderr).toBe(0);
    expect(inspect.stdout).toMatch(/ etc\/initrd-release$/m);
  }, 600_000);

  it.skipIf(!isRoot)('builds a sysext with the installed copy (its install worker is bundled beside the CLI)', async () => {
    const output = join(work, 'lvm.raw');
    const r = await cli(['sysext', 'build', '--definition', 'lvm', '--preset', 'debian', '--output', output, '--cache-dir', SYSEXT_CACHE, '--source-date-epoch', '1700000000', '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect((await stat(output)).size).toBeGreaterThan(1 << 20);
    const result = JSON.parse(r.stdout);
    expect(JSON.stringify(result)).toMatch(/lvm2/);
  }, 600_000);
});
