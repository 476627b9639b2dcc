import { spawn } from 'node:child_process';
import { mkdtemp, readFile, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { CLI, expectOneLineError, mkinitrdPkg } from './lib/cli.js';
import { hostKernel } from '../scripts/lib/qemu.mjs';

const TEST_CACHE = process.env.MKINITRD_PKG_TEST_CACHE ?? '/var/tmp/mkinitrd-pkg-test-cache';
const kernel = await hostKernel();
const KVER = kernel?.version ?? '6.1.0-0-amd64';
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-errors-'));
});

/** Command lines of the processes whose arguments mention `text` (other tests' builds never name this test's cache). */
async function processesMentioning(text: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(text)) found.push(cmdline.replace(/\0/g, ' ').trim());
  }
  return found;
}

/** Poll `condition` every 100 ms until it holds or `ms` pass; returns whether it held. */
async function waitUntil(condition: () => Promise<boolean>, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; ) {
    if (await condition()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return condition();
}

/** One clear line (plus an optional hint line), no stack trace, non-zero exit, no image. */
async function expectCleanFailure(args: string[], message: RegExp, exitCode = 1, env: Record<string, string> = {}) {
  const out = join(dir, `out-${Math.random().toString(16).slice(2)}`);
  const { mkdir } = await import('node:fs/promises');
  await mkdir(out);
  const result = await mkinitrdPkg([...args, '--output', join(out, 'initrd.img'), '--cache-dir', TEST_CACHE], env);
  expectOneLineError(result, message, exitCode);
  expect(await readdir(out)).toEqual([]);
}

describe('build: bad input gets one clear line', () => {
  it('unknown preset', () => expectCleanFailure(['build', '--preset', 'nosuch'], /^mkinitrd-pkg: error: unknown preset "nosuch"/));

  it('bad INI and unknown key name file:line', async () => {
    const bad = join(dir, 'bad.conf');
    await writeFile(bad, '[Content]\nthis is not ini\n');
    await expectCleanFailure(['build', '--config', bad], new RegExp(`${bad}:2: expected "Key=Value"`));
    await writeFile(bad, '[Content]\nPackages=kmod\nFrobnicate=yes\n');
    await expectCleanFailure(['build', '--config', bad], new RegExp(`${bad}:3: unknown key Frobnicate=`));
  });

  it('unknown compression is a usage error (exit 2)', () => expectCleanFailure(['build', '--compression', 'rar'], /^mkinitrd-pkg: usage: --compression: unknown compression "rar"/, 2));

  it('unknown flag is a usage error (exit 2)', () => expectCleanFailure(['build', '--frobnicate'], /^mkinitrd-pkg: usage: Nonexistent flag: --frobnicate/, 2));

  it('missing kernel version', () =>
    expectCleanFailure(['build', '--kernel-version', '9.9.9-nosuch', '--kernel-package', ''], /no modules for kernel 9\.9\.9-nosuch/));

  it('unknown package', () =>
    expectCleanFailure(['build', '--kernel-version', KVER, '--kernel-package', '', '--package', 'no-such-package-mkinitrd'], /package not found: no-such-package-mkinitrd/));

  it('mirror unreachable', () =>
    expectCleanFailure(['build', '--kernel-version', KVER, '--kernel-package', '', '--mirror', 'http://127.0.0.1:9/debian'], /repository unreachable/));

  it('not root', async () => {
    // As `sudo -u nobody` would run it: nobody's uid and HOME.
    const result = await execa('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'node', CLI, 'build', '--kernel-version', KVER, '--output', '/tmp/nope.img'], {
      reject: false,
      env: { HOME: '/nonexistent' },
    });
    expect(result.exitCode).toBe(1);
    expect(String(result.stderr).split('\n')[0]).toMatch(/^mkinitrd-pkg: error: building an initrd needs root/);
  });
});

describe.skipIf(!kernel)('build killed with SIGKILL', () => {
  it('leaves no mount and no partial image, and the next build succeeds', async () => {
    const out = join(dir, 'killed');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(out);
    const cache = join(dir, 'kill-cache');
    const args = [CLI, 'build', '--kernel-version', KVER, '--kernel-package', '', '--output', join(out, 'initrd.img'), '--cache-dir', cache];
    const child = spawn('node', args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, MKINITRD_PKG_LOG_LEVEL: 'info' } });
    child.stderr!.resume();
    const exited = new Promise((r) => child.on('exit', r));
    // Kill it while apt-get install runs inside the build's mount namespace (/dev, /proc,
    // /sys bind-mounted into the root): the moment a leaked mount would matter. Polled,
    // not slept: a loaded machine may take long to get there (bounded by the test timeout).
    const installing = async () => child.exitCode !== null || (await processesMentioning(cache)).some((p) => / apt-get .*-y install /.test(p));
    expect(await waitUntil(installing, 300_000), 'apt-get install never ran').toBe(true);
    expect(child.exitCode, 'the build ended before it could be killed').toBeNull();
    child.kill('SIGKILL');
    await exited;
    // The kernel tears the namespace down with its last process: wait for that, bounded.
    expect(await waitUntil(async () => (await processesMentioning(cache)).length === 0, 10_000), 'processes of the killed build are left').toBe(true);
    const mounts = await execa('findmnt', ['-rn', '-o', 'TARGET'], { reject: false });
    expect(String(mounts.stdout).split('\n').filter((m) => m.startsWith(cache))).toEqual([]);
    expect(await readdir(out)).toEqual([]);
    const again = await mkinitrdPkg(['build', '--kernel-version', KVER, '--kernel-package', '', '--output', join(out, 'initrd.img'), '--cache-dir', cache]);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(await readdir(out)).toEqual(['initrd.img', 'initrd.img.manifest.json']);
    expect(await readdir(join(cache, 'work'))).toEqual([]);
  }, 600_000);
});
