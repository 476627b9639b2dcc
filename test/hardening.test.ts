import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, expectOneLineError, mkinitrdPkg } from './lib/cli.js';
import { hostKernel } from '../scripts/lib/qemu.mjs';

/**
 * Issue 10 items 1, 6–9, 12 and issue 15's error contract, through the real CLI: hostile
 * inputs and situations built here (a full tmpfs, a directory where the output goes,
 * a FIFO as config, signals while writing, a build holding the cache, an image whose
 * os-release names a host file).
 */
const TEST_CACHE = process.env.MKINITRD_PKG_TEST_CACHE ?? '/var/tmp/mkinitrd-pkg-test-cache';
const isRoot = process.getuid?.() === 0;
const kernel = await hostKernel();
let dir: string;
let tree: string;
let small: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-harden-'));
  // A tree that takes a moment to pack (random data does not compress): 48 MiB in 6 files.
  tree = join(dir, 'tree');
  await mkdir(join(tree, 'usr/lib'), { recursive: true });
  for (let i = 0; i < 6; i++) await writeFile(join(tree, 'usr/lib', `blob${i}`), randomBytes(8 << 20));
  // Enough to fill the 4 MiB tmpfs, little enough that xz gets there quickly.
  small = join(dir, 'small-tree');
  await mkdir(small);
  await writeFile(join(small, 'blob'), randomBytes(6 << 20));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const temporaries = async (d: string) => (await readdir(d)).filter((n) => n.endsWith('.tmp'));

describe.skipIf(!isRoot)('a full file system: one line naming the output, no temporary left', () => {
  let fs: string;
  beforeAll(async () => {
    fs = join(dir, 'small-fs');
    await mkdir(fs);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', fs]);
  });
  afterAll(() => {
    execFileSync('umount', [fs]);
  });

  it.each([['gzip'], ['zstd'], ['xz'], ['none']])('%s', async (compression) => {
    const out = join(fs, 'initrd.img');
    // gzip on the big tree: its archives are streamed through zlib, the path that threw
    // ENOSPC from an event handler (uncaught, with a stack).
    const result = await mkinitrdPkg(['pack', compression === 'gzip' ? tree : small, '--output', out, '--compression', compression]);
    expectOneLineError(result, new RegExp(`^mkinitrd-pkg: error: cannot write ${out}: no space left on device$`));
    expect(result.stderr).not.toMatch(/bug|internal error/);
    expect(await readdir(fs)).toEqual([]);
  });
});

describe.skipIf(!isRoot)('a read-only file system is known before any work', () => {
  it('build and pack say so in one line, naming the directory', async () => {
    const ro = join(dir, 'ro-fs');
    await mkdir(ro);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', ro]);
    try {
      const cache = join(dir, 'ro-unused-cache');
      const build = await mkinitrdPkg(['build', '--kernel-package', '', '--kernel-version', kernel?.version ?? '6.1.0-1-amd64', '--output', join(ro, 'x.img'), '--cache-dir', cache]);
      expectOneLineError(build, new RegExp(`^mkinitrd-pkg: error: cannot write to ${ro}: read-only file system$`));
      expect(await readdir(cache).catch(() => [])).not.toContain('roots');
      const pack = await mkinitrdPkg(['pack', tree, '--output', join(ro, 'x.img')]);
      expectOneLineError(pack, new RegExp(`^mkinitrd-pkg: error: cannot write to ${ro}: read-only file system$`));
    } finally {
      execFileSync('umount', [ro]);
    }
  });
});

describe('output paths are checked before any work', () => {
  it('pack --output naming a directory', async () => {
    const target = join(dir, 'is-a-dir');
    await mkdir(target);
    const result = await mkinitrdPkg(['pack', tree, '--output', target]);
    expectOneLineError(result, /^mkinitrd-pkg: error: output .*is-a-dir exists and is a directory$/);
    expect(await temporaries(dir)).toEqual([]);
  });

  it('build --output or --manifest naming a directory, or a manifest in a missing directory, fails before installing anything', async () => {
    const cache = join(dir, 'unused-cache');
    const target = join(dir, 'is-a-dir');
    for (const [args, message] of [
      [['--output', target], /output .*is-a-dir exists and is a directory/],
      [['--output', join(dir, 'x.img'), '--manifest', target], /manifest .*is-a-dir exists and is a directory/],
      [['--output', join(dir, 'x.img'), '--manifest', join(dir, 'missing', 'm.json')], /manifest directory does not exist: .*missing/],
      [['--output', join(dir, 'missing', 'x.img')], /output directory does not exist: .*missing/],
    ] as const) {
      const result = await mkinitrdPkg(['build', '--kernel-package', '', '--kernel-version', kernel?.version ?? '6.1.0-1-amd64', ...args, '--cache-dir', cache]);
      expectOneLineError(result, message);
      // Nothing was installed or cached: the check came first.
      expect(await readdir(cache).catch(() => [])).not.toContain('roots');
    }
  });
});

/** Start the CLI and wait until its temporary output exists (it is writing), bounded. */
async function startWriting(args: string[], outDir: string): Promise<ChildProcess & { stderrText: () => string }> {
  const child = spawn('node', [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, MKINITRD_PKG_LOG_LEVEL: 'warn' } });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const deadline = Date.now() + 300_000;
  while ((await temporaries(outDir)).length === 0) {
    if (child.exitCode !== null) throw new Error(`exited early (${child.exitCode}): ${stderr}`);
    if (Date.now() > deadline) throw new Error('no temporary output appeared');
    await new Promise((r) => setTimeout(r, 20));
  }
  return Object.assign(child, { stderrText: () => stderr });
}

describe('signals: cleaned up, one line, 128 + signal', () => {
  it.each([['SIGTERM', 143], ['SIGINT', 130]] as const)('pack interrupted by %s', async (signal, status) => {
    const out = join(dir, `sig-${signal}`);
    await mkdir(out);
    const child = await startWriting(['pack', tree, '--output', join(out, 'initrd.img'), '--compression', 'xz'], out);
    child.kill(signal);
    const code = await new Promise((r) => child.once('exit', (c) => r(c)));
    expect(code).toBe(status);
    expect(child.stderrText().trim()).toMatch(new RegExp(`^mkinitrd-pkg: interrupted by ${signal}; removed 1 temporary`));
    expect(await readdir(out)).toEqual([]);
  });

  it('a temporary left by a SIGKILLed run is removed by the next run; a live run\'s is not', async () => {
    const out = join(dir, 'sigkill');
    await mkdir(out);
    const child = await startWriting(['pack', tree, '--output', join(out, 'initrd.img'), '--compression', 'xz'], out);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const [left] = await temporaries(out);
    expect(left).toMatch(/^\.initrd\.img\.\d+-\d+\.[0-9a-f]{12}\.tmp$/);
    // A live writer's temporary (this test process is its owner).
    const { ownerToken } = await import('@mkinitrd-pkg/common');
    const live = `.initrd.img.${ownerToken()}.0123456789ab.tmp`;
    await writeFile(join(out, live), 'in progress');
    const again = await mkinitrdPkg(['pack', join(tree, 'usr'), '--output', join(out, 'initrd.img'), '--compression', 'none']);
    expect(again.exitCode, again.stderr).toBe(0);
    expect((await readdir(out)).sort()).toEqual([live, 'initrd.img'].sort());
  });

  describe.skipIf(!kernel || !isRoot)('a build', () => {
    it('interrupted while packing removes its temporary image and its work directory', async () => {
      const out = join(dir, 'sig-build');
      await mkdir(out);
      const child = await startWriting(['build', '--kernel-version', kernel!.version, '--kernel-package', '', '--compression', 'xz', '--output', join(out, 'initrd.img'), '--cache-dir', TEST_CACHE], out);
      child.kill('SIGTERM');
      const code = await new Promise((r) => child.once('exit', (c) => r(c)));
      expect(code, child.stderrText()).toBe(143);
      expect(child.stderrText().split('\n').filter((l) => l && !l.startsWith('{'))).toEqual([expect.stringMatching(/^mkinitrd-pkg: interrupted by SIGTERM; removed 2 temporary/)]);
      expect(await readdir(out)).toEqual([]);
      expect((await readdir(join(TEST_CACHE, 'work'))).filter((n) => n.includes(`-${child.pid}-`))).toEqual([]);
    }, 600_000);
  });
});

describe('the cache lock', () => {
  it('cache clean refuses while a build holds the cache, and removes nothing', async () => {
    const cache = join(dir, 'locked-cache');
    await mkdir(join(cache, 'roots', 'entry'), { recursive: true });
    await writeFile(join(cache, 'CACHEDIR.TAG'), 'Signature: 8a477f597d28d172789f06886806bc55\n');
    // A build holds the cache lock shared for its whole run (common/src/workdir.ts).
    const holder = spawn('flock', ['-s', join(cache, 'lock'), 'sleep', '60'], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 100 && (await execa('flock', ['-n', '-x', join(cache, 'lock'), 'true'], { reject: false })).exitCode === 0; i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      const result = await mkinitrdPkg(['cache', 'clean', '--cache-dir', cache]);
      expectOneLineError(result, /^mkinitrd-pkg: error: the cache .* is in use by a running build$/);
      expect(await readdir(join(cache, 'roots'))).toEqual(['entry']);
    } finally {
      holder.kill('SIGKILL');
    }
  });
});

describe('hostile inputs get one line and touch nothing', () => {
  it('sysext build --base whose os-release ID names a host file', async () => {
    const base = join(dir, 'hostile-base');
    await mkdir(join(base, 'etc'), { recursive: true });
    await mkdir(join(base, 'usr'), { recursive: true });
    // Before: ID=/x/evil was read as a preset path; this preset trusts any repository.
    const evil = join(dir, 'evil');
    await writeFile(`${evil}.conf`, '[Distribution]\nDistribution=debian\nRelease=bookworm\nMirror=http://127.0.0.1:9/debian\nRepositoryKeyCheck=no\n[Content]\nPackages=base-files\n');
    for (const id of [evil, `${evil}.conf`, '/etc/shadow']) {
      await writeFile(join(base, 'etc/os-release'), `ID=${id}\n`);
      const result = await mkinitrdPkg(['sysext', 'build', '--definition', 'lvm', '--base', base, '--output', join(dir, 'lvm.raw'), '--cache-dir', join(dir, 'sysext-cache')]);
      expectOneLineError(result, /^mkinitrd-pkg: error: the base's \/etc\/os-release: ID= is not a valid os-release value/);
      expect(result.stderr).not.toMatch(/root:/);
    }
  });

  it('--config naming a FIFO is refused instead of hanging', async () => {
    const fifo = join(dir, 'config.fifo');
    execFileSync('mkfifo', [fifo]);
    const result = await execa('node', [CLI, 'summary', '--config', fifo], { reject: false, timeout: 60_000 });
    expect(result.timedOut).toBe(false);
    expectOneLineError({ exitCode: result.exitCode ?? -1, stderr: String(result.stderr) }, /is a FIFO$/);
  });

  it('SOURCE_DATE_EPOCH=abc names the environment, for build and pack', async () => {
    for (const args of [['pack', tree, '--output', join(dir, 'sde.img')], ['build', '--output', join(dir, 'sde.img'), '--cache-dir', join(dir, 'sde-cache')]]) {
      const result = await mkinitrdPkg(args, { SOURCE_DATE_EPOCH: 'abc' });
      expectOneLineError(result, /^mkinitrd-pkg: error: the environment variable SOURCE_DATE_EPOCH must be a whole number/);
    }
  });

  it('a newline in --mirror and an option as a package are refused before apt sees them', async () => {
    const mirror = await mkinitrdPkg(['summary', '--mirror', 'http://deb.debian.org/debian\ndeb [trusted=yes] http://127.0.0.1:9/ ./']);
    expectOneLineError(mirror, /^mkinitrd-pkg: usage: --mirror: must be one line/, 2);
    // (oclif already refuses a flag value starting with "-"; a config file did not.)
    const conf = join(dir, 'option.conf');
    await writeFile(conf, '[Content]\nPackages=-oDPkg::Pre-Invoke::=touch/tmp/pwned\n');
    const option = await mkinitrdPkg(['summary', '--config', conf]);
    expectOneLineError(option, /option\.conf:2: Content\.Packages: invalid package name "-oDPkg/);
  });

  it('a usage error exits 2', async () => {
    const result = await mkinitrdPkg(['build', '--compression', 'rar', '--output', join(dir, 'u.img')]);
    expectOneLineError(result, /^mkinitrd-pkg: usage: --compression: unknown compression "rar"/, 2);
  });
});
