import { access, chmod, mkdir, mkdtemp as makeTemp, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, mkinitrdPkg } from './lib/cli.js';
import { bootQemu, hostKernel, makeTestRoot, ROOT_MARKER, type BootSession } from '../scripts/lib/qemu.mjs';

/**
 * The kernel-install(8) plugin, driven by the real kernel-install (systemd 252 here) with
 * systemd's own 90-loaderentry.install, into a scratch BOOT_ROOT: never the host's /boot,
 * /etc/kernel or Debian's 50-depmod/85-initrd plugins. The policy cases run a recording
 * stand-in for mkinitrd-pkg (milliseconds); one case builds for real and boots the entry.
 */

const PLUGIN = fileURLToPath(new URL('../scripts/kernel-install/50-mkinitrd-pkg.install', import.meta.url));
const KERNEL_INSTALL = '/usr/bin/kernel-install';
const LOADERENTRY = '/usr/lib/kernel/install.d/90-loaderentry.install';
const TEST_CACHE = process.env.MKINITRD_PKG_TEST_CACHE ?? '/var/tmp/mkinitrd-pkg-test-cache';
/** kernel-install 252 takes $MACHINE_ID from the environment (KERNEL_INSTALL_MACHINE_ID only from /etc/machine-info). */
const MACHINE_ID = '6d6b696e69747264706b677465737431';
const UUID = '7c3e1d2a-4b5f-4e6a-8c9d-0a1b2c3d4e5f';

/** Scratch directories, removed after the file's tests. */
const scratchDirs: string[] = [];
const mkdtemp = async (prefix: string) => {
  const dir = await makeTemp(prefix);
  scratchDirs.push(dir);
  return dir;
};
afterAll(async () => {
  for (const dir of scratchDirs) await rm(dir, { recursive: true, force: true });
});

const kernel = await hostKernel();
const KVER = kernel?.version ?? '6.1.0-0-amd64';
const haveKernelInstall = existsSync(KERNEL_INSTALL) && existsSync(LOADERENTRY);

interface Scratch {
  dir: string;
  bootRoot: string;
  confRoot: string;
  log: string;
  env: Record<string, string>;
  entryDir: string;
  loaderEntry: string;
}

/**
 * A stand-in for mkinitrd-pkg that records its arguments (a CALL line, then one ARG line
 * each) and, with `exec`, hands over to the real CLI; otherwise writes a small file to
 * --output (or fails with `fail`).
 */
async function recorder(dir: string, mode: { exec?: boolean; fail?: boolean } = {}): Promise<string> {
  const path = join(dir, mode.exec ? 'mkinitrd-pkg-real' : 'mkinitrd-pkg-fake');
  const record = `{ echo CALL; for a; do printf 'ARG:%s\\n' "$a"; done; } >>"${join(dir, 'calls.log')}"\n`;
  const body = mode.exec
    ? `exec '${process.execPath}' '${CLI}' "$@"\n`
    : mode.fail
      ? `echo "fake mkinitrd-pkg: failing on purpose" >&2\nexit 3\n`
      : `out=\nwhile [ $# -gt 0 ]; do [ "$1" = --output ] && out="$2"; shift; done\nprintf 'FAKE-INITRD\\n' >"$out"\n`;
  await writeFile(path, `#!/bin/sh\n${record}${body}`, { mode: 0o755 });
  return path;
}

async function calls(s: Scratch): Promise<string[][]> {
  const text = await readFile(s.log, 'utf8').catch(() => '');
  return text
    .split('CALL\n')
    .slice(1)
    .map((chunk) => chunk.split('\n').filter((l) => l.startsWith('ARG:')).map((l) => l.slice(4)));
}

async function scratch(options: { installConf?: string; fake?: { exec?: boolean; fail?: boolean }; env?: Record<string, string> } = {}): Promise<Scratch> {
  const dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-ki-'));
  const bootRoot = join(dir, 'boot');
  const confRoot = join(dir, 'kernel');
  const mkinitrdConf = join(dir, 'mkinitrd-pkg');
  await mkdir(bootRoot);
  await mkdir(confRoot);
  await mkdir(mkinitrdConf);
  await writeFile(join(confRoot, 'install.conf'), options.installConf ?? 'layout=bls\ninitrd_generator=mkinitrd-pkg\n');
  // 90-loaderentry reads the command line from KERNEL_INSTALL_CONF_ROOT/cmdline.
  await writeFile(join(confRoot, 'cmdline'), 'root=/dev/vda rw\n');
  const env: Record<string, string> = {
    BOOT_ROOT: bootRoot,
    MACHINE_ID,
    KERNEL_INSTALL_CONF_ROOT: confRoot,
    KERNEL_INSTALL_PLUGINS: `${PLUGIN} ${LOADERENTRY}`,
    MKINITRD_PKG: await recorder(dir, options.fake),
    MKINITRD_PKG_PRESET: 'debian',
    MKINITRD_PKG_CACHE_DIR: TEST_CACHE,
    MKINITRD_PKG_CONF_DIR: mkinitrdConf,
    ...options.env,
  };
  return {
    dir,
    bootRoot,
    confRoot,
    log: join(dir, 'calls.log'),
    env,
    entryDir: join(bootRoot, MACHINE_ID, KVER),
    loaderEntry: join(bootRoot, 'loader/entries', `${MACHINE_ID}-${KVER}.conf`),
  };
}

async function kernelInstall(s: Scratch, args: string[]) {
  const started = performance.now();
  const r = await execa(KERNEL_INSTALL, args, { env: s.env, reject: false });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr), seconds: (performance.now() - started) / 1000 };
}

/** The plugin alone, with the environment a kernel-install would give it. */
async function plugin(s: Scratch, args: string[], env: Record<string, string>) {
  const r = await execa(PLUGIN, args, { env: { ...s.env, ...env }, extendEnv: true, reject: false });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

const entryPath = (name: string) => new RegExp(`/${MACHINE_ID}/${KVER.replaceAll('.', '\\.')}/${name.replaceAll('.', '\\.')}$`);
const exists = (path: string) => access(path).then(() => true, () => false);
/** The values of one key of a loader entry (paths there are relative to BOOT_ROOT's mount point). */
const entryLines = async (path: string, key: string) =>
  (await readFile(path, 'utf8')).split('\n').filter((l) => l.startsWith(`${key} `)).map((l) => l.slice(key.length).trim());

describe.skipIf(!haveKernelInstall || !kernel)('kernel-install plugin: policy (real kernel-install, recording stand-in)', () => {
  it('add with layout=bls builds into the staging area with the flags the plugin promises', async () => {
    const s = await scratch();
    const r = await kernelInstall(s, ['add', KVER, kernel!.vmlinuz]);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    const [call, ...more] = await calls(s);
    expect(more).toEqual([]);
    expect(call).toEqual([
      'build', '--preset', 'debian', '--kernel-version', KVER, '--kernel-package', '',
      '--output', expect.stringMatching(/\/kernel-install\.staging\.[^/]+\/initrd$/),
      '--manifest', '', '--cache-dir', TEST_CACHE,
    ]);
    expect((await readdir(s.entryDir)).sort()).toEqual(['initrd', 'linux']);
    expect(await readFile(join(s.entryDir, 'initrd'), 'utf8')).toBe('FAKE-INITRD\n');
    expect(await entryLines(s.loaderEntry, 'initrd')).toEqual([expect.stringMatching(entryPath('initrd'))]);
  });

  it('takes the preset from MKINITRD_PKG_CONF_DIR/preset and passes mkinitrd-pkg.conf as --config', async () => {
    const s = await scratch();
    delete s.env.MKINITRD_PKG_PRESET;
    delete s.env.MKINITRD_PKG_CACHE_DIR;
    await writeFile(join(s.env.MKINITRD_PKG_CONF_DIR!, 'preset'), '# the preset\n  ubuntu  \n');
    await writeFile(join(s.env.MKINITRD_PKG_CONF_DIR!, 'mkinitrd-pkg.conf'), '[Output]\nCompressOutput=xz\n');
    expect((await kernelInstall(s, ['add', KVER, kernel!.vmlinuz])).exitCode).toBe(0);
    const [call] = await calls(s);
    expect(call!.slice(0, 3)).toEqual(['build', '--preset', 'ubuntu']);
    expect(call).not.toContain('--cache-dir');
    expect(call!.slice(-2)).toEqual(['--config', join(s.env.MKINITRD_PKG_CONF_DIR!, 'mkinitrd-pkg.conf')]);
  });

  it('stages /etc/mkinitrd-pkg/extensions/*.raw as a second initrd, after the generic one', async () => {
    const s = await scratch();
    const extDir = join(s.env.MKINITRD_PKG_CONF_DIR!, 'extensions');
    await mkdir(extDir);
    await writeFile(join(extDir, 'lvm.raw'), 'x');
    await writeFile(join(extDir, 'raid.raw'), 'x');
    await writeFile(join(extDir, 'notes.txt'), 'not an image');
    const r = await kernelInstall(s, ['add', KVER, kernel!.vmlinuz]);
    expect(r.exitCode, r.stderr).toBe(0);
    const [build, pack, ...more] = await calls(s);
    expect(more).toEqual([]);
    expect(build![0]).toBe('build');
    expect(pack).toEqual([
      'sysext', 'pack', join(extDir, 'lvm.raw'), join(extDir, 'raid.raw'),
      '--output', expect.stringMatching(/\/kernel-install\.staging\.[^/]+\/initrd-extensions$/),
    ]);
    expect((await readdir(s.entryDir)).sort()).toEqual(['initrd', 'initrd-extensions', 'linux']);
    expect(await entryLines(s.loaderEntry, 'initrd')).toEqual([expect.stringMatching(entryPath('initrd')), expect.stringMatching(entryPath('initrd-extensions'))]);
  });

  it("puts the extensions into the image itself where the loader takes one initrd (Debian's kernel hook)", async () => {
    const s = await scratch({ env: { MKINITRD_PKG_EXTENSIONS_IN_IMAGE: '1' } });
    const extDir = join(s.env.MKINITRD_PKG_CONF_DIR!, 'extensions');
    await mkdir(extDir);
    await writeFile(join(extDir, 'lvm.raw'), 'x');
    await writeFile(join(extDir, 'notes.txt'), 'not an image');
    const r = await kernelInstall(s, ['add', KVER, kernel!.vmlinuz]);
    expect(r.exitCode, r.stderr).toBe(0);
    const [build, ...more] = await calls(s);
    expect(more).toEqual([]);
    expect(build!.slice(-2)).toEqual(['--extension', join(extDir, 'lvm.raw')]);
    expect((await readdir(s.entryDir)).sort()).toEqual(['initrd', 'linux']);
  });

  it('generates nothing when initrds are passed on the command line', async () => {
    const s = await scratch();
    const given = join(s.dir, 'initrd-given.img');
    await writeFile(given, 'GIVEN\n');
    const r = await kernelInstall(s, ['add', KVER, kernel!.vmlinuz, given]);
    expect(r.exitCode).toBe(0);
    expect(await calls(s)).toEqual([]);
    expect((await readdir(s.entryDir)).sort()).toEqual(['initrd-given.img', 'linux']);
    expect(await entryLines(s.loaderEntry, 'initrd')).toEqual([expect.stringMatching(entryPath('initrd-given.img'))]);
  });

  it('skips when install.conf names another initrd_generator', async () => {
    const s = await scratch({ installConf: 'layout=bls\ninitrd_generator=other\n' });
    const r = await kernelInstall(s, ['add', KVER, kernel!.vmlinuz]);
    expect(r.exitCode).toBe(0);
    expect(await calls(s)).toEqual([]);
    expect(await readdir(s.entryDir)).toEqual(['linux']);
    expect(await entryLines(s.loaderEntry, 'initrd')).toEqual([]);
  });

  it('builds for layout=bls when install.conf names no generator', async () => {
    const s = await scratch({ installConf: 'layout=bls\n' });
    expect((await kernelInstall(s, ['add', KVER, kernel!.vmlinuz])).exitCode).toBe(0);
    expect(await calls(s)).toHaveLength(1);
  });

  it('skips layout=uki', async () => {
    const s = await scratch({ installConf: 'layout=uki\ninitrd_generator=mkinitrd-pkg\n' });
    const r = await kernelInstall(s, ['add', KVER, kernel!.vmlinuz]);
    expect(r.exitCode).toBe(0);
    expect(await calls(s)).toEqual([]);
  });

  it('skips layout=other unless initrd_generator=mkinitrd-pkg asks for it', async () => {
    const plain = await scratch({ installConf: 'layout=other\n' });
    expect((await kernelInstall(plain, ['add', KVER, kernel!.vmlinuz])).exitCode).toBe(0);
    expect(await calls(plain)).toEqual([]);
    const asked = await scratch({ installConf: 'layout=other\ninitrd_generator=mkinitrd-pkg\n' });
    expect((await kernelInstall(asked, ['add', KVER, kernel!.vmlinuz])).exitCode).toBe(0);
    expect(await calls(asked)).toHaveLength(1);
  });

  it('remove exits 0 and builds nothing; kernel-install removes the entry', async () => {
    const s = await scratch();
    expect((await kernelInstall(s, ['add', KVER, kernel!.vmlinuz])).exitCode).toBe(0);
    expect(await calls(s)).toHaveLength(1);
    const r = await kernelInstall(s, ['remove', KVER]);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expect(await calls(s)).toHaveLength(1);
    expect(await exists(s.entryDir)).toBe(false);
    expect(await exists(s.loaderEntry)).toBe(false);
  });

  it('a failed build fails kernel-install before any loader entry is written', async () => {
    const s = await scratch({ fake: { fail: true } });
    const r = await kernelInstall(s, ['add', KVER, kernel!.vmlinuz]);
    expect(r.exitCode).toBe(3);
    expect(r.stderr).toContain('failing on purpose');
    expect(await exists(s.loaderEntry)).toBe(false);
  });

  it('-v shows the exact command line, shell-quoted', async () => {
    const s = await scratch();
    const r = await kernelInstall(s, ['-v', 'add', KVER, kernel!.vmlinuz]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^\\+ \\S+mkinitrd-pkg-fake build --preset debian --kernel-version ${KVER} --kernel-package '' --output \\S+/initrd --manifest '' --cache-dir ${TEST_CACHE}$`, 'm'));
  });

  describe('the plugin alone, as kernel-install would call it', () => {
    const args = (s: Scratch) => ['add', KVER, join(s.bootRoot, MACHINE_ID, KVER), kernel!.vmlinuz];
    const base = (s: Scratch) => ({ KERNEL_INSTALL_LAYOUT: 'bls', KERNEL_INSTALL_STAGING_AREA: join(s.dir, 'staging'), KERNEL_INSTALL_VERBOSE: '0' });

    it('KERNEL_INSTALL_INITRD_GENERATOR=dracut: skips', async () => {
      const s = await scratch();
      const r = await plugin(s, args(s), { ...base(s), KERNEL_INSTALL_INITRD_GENERATOR: 'dracut' });
      expect(r.exitCode).toBe(0);
      expect(await calls(s)).toEqual([]);
    });

    it('KERNEL_INSTALL_INITRD_GENERATOR=mkinitrd-pkg: builds into the staging area', async () => {
      const s = await scratch();
      const r = await plugin(s, args(s), { ...base(s), KERNEL_INSTALL_INITRD_GENERATOR: 'mkinitrd-pkg' });
      expect(r.exitCode).toBe(0);
      expect(await readFile(join(s.dir, 'staging/initrd'), 'utf8')).toBe('FAKE-INITRD\n');
    });

    it('an older kernel-install (no KERNEL_INSTALL_INITRD_GENERATOR): reads install.conf itself', async () => {
      const s = await scratch({ installConf: 'layout=bls\ninitrd_generator="dracut" # quoted, as a shell would take it\n' });
      const r = await plugin(s, args(s), base(s));
      expect(r.exitCode).toBe(0);
      expect(await calls(s)).toEqual([]);
    });

    it('no staging area (kernel-install < 251): writes ENTRY_DIR_ABS/initrd', async () => {
      const s = await scratch();
      const r = await plugin(s, args(s), { KERNEL_INSTALL_LAYOUT: 'bls' });
      expect(r.exitCode).toBe(0);
      expect(await readFile(join(s.bootRoot, MACHINE_ID, KVER, 'initrd'), 'utf8')).toBe('FAKE-INITRD\n');
    });

    it('layout=uki + KERNEL_INSTALL_UKI_GENERATOR=mkinitrd-pkg: builds staging/uki.efi from KERNEL_IMAGE and /etc/kernel/cmdline', async () => {
      const s = await scratch();
      const r = await plugin(s, args(s), { ...base(s), KERNEL_INSTALL_LAYOUT: 'uki', KERNEL_INSTALL_UKI_GENERATOR: 'mkinitrd-pkg' });
      expect(r.exitCode, r.stderr).toBe(0);
      const [call, ...more] = await calls(s);
      expect(more).toEqual([]);
      expect(call).toEqual([
        'build', '--preset', 'debian', '--kernel-version', KVER, '--kernel-package', '',
        '--output', join(s.dir, 'staging/uki.efi'), '--manifest', '',
        '--format', 'uki', '--kernel-image', kernel!.vmlinuz, '--kernel-command-line', 'root=/dev/vda rw',
        '--cache-dir', TEST_CACHE,
      ]);
      // 90-uki-copy.install installs exactly this name.
      expect(await readFile(join(s.dir, 'staging/uki.efi'), 'utf8')).toBe('FAKE-INITRD\n');
    });

    it('layout=uki: an older kernel-install (no KERNEL_INSTALL_UKI_GENERATOR) reads uki_generator= from install.conf; ukify there skips', async () => {
      const ours = await scratch({ installConf: 'layout=uki\nuki_generator="mkinitrd-pkg"\n' });
      expect((await plugin(ours, args(ours), { ...base(ours), KERNEL_INSTALL_LAYOUT: 'uki' })).exitCode).toBe(0);
      expect((await calls(ours))[0]).toContain('uki');
      const theirs = await scratch({ installConf: 'layout=uki\nuki_generator=ukify\n' });
      expect((await plugin(theirs, args(theirs), { ...base(theirs), KERNEL_INSTALL_LAYOUT: 'uki' })).exitCode).toBe(0);
      const named = await scratch();
      expect((await plugin(named, args(named), { ...base(named), KERNEL_INSTALL_LAYOUT: 'uki', KERNEL_INSTALL_UKI_GENERATOR: 'ukify' })).exitCode).toBe(0);
      expect([...(await calls(theirs)), ...(await calls(named))]).toEqual([]);
    });

    it('layout=uki, initrds given, remove: exit 0 and nothing built', async () => {
      const s = await scratch();
      expect((await plugin(s, args(s), { ...base(s), KERNEL_INSTALL_LAYOUT: 'uki' })).exitCode).toBe(0);
      expect((await plugin(s, [...args(s), join(s.dir, 'some-initrd')], base(s))).exitCode).toBe(0);
      expect((await plugin(s, ['remove', KVER, join(s.bootRoot, MACHINE_ID, KVER)], base(s))).exitCode).toBe(0);
      expect(await calls(s)).toEqual([]);
    });
  });
});

describe.skipIf(!haveKernelInstall || !kernel || process.getuid?.() !== 0)('kernel-install plugin: real build, inspect and boot', () => {
  let s: Scratch;
  let added: Awaited<ReturnType<typeof kernelInstall>>;
  const sessions: BootSession[] = [];

  beforeAll(async () => {
    s = await scratch({ fake: { exec: true } });
    added = await kernelInstall(s, ['add', KVER, kernel!.vmlinuz]);
    console.log(`kernel-install add (real mkinitrd-pkg build): ${added.seconds.toFixed(1)} s`);
  });

  afterAll(() => {
    for (const session of sessions) session.kill();
  });

  it('kernel-install add succeeds quietly and installs linux + initrd (no manifest) into the entry', async () => {
    expect(added.stderr).toBe('');
    expect(added.stdout).toBe('');
    expect(added.exitCode).toBe(0);
    expect((await readdir(s.entryDir)).sort()).toEqual(['initrd', 'linux']);
    const [call, ...more] = await calls(s);
    expect(more).toEqual([]);
    expect(call).toContain('--cache-dir');
    expect(call!.slice(call!.indexOf('--manifest'), call!.indexOf('--manifest') + 2)).toEqual(['--manifest', '']);
    expect((await stat(join(s.entryDir, 'initrd'))).size).toBeGreaterThan(1_000_000);
  });

  it('the loader entry names the linux and the initrd', async () => {
    expect(await entryLines(s.loaderEntry, 'linux')).toEqual([expect.stringMatching(entryPath('linux'))]);
    expect(await entryLines(s.loaderEntry, 'initrd')).toEqual([expect.stringMatching(entryPath('initrd'))]);
    expect(await entryLines(s.loaderEntry, 'version')).toEqual([KVER]);
    expect((await entryLines(s.loaderEntry, 'options'))[0]).toContain('root=/dev/vda rw');
  });

  it('mkinitrd-pkg inspect reads the installed initrd', async () => {
    const r = await mkinitrdPkg(['inspect', join(s.entryDir, 'initrd')]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(`usr/lib/modules/${KVER}`);
  });

  it('boots: the entry\'s linux + initrd + options reach the real root', async () => {
    const rootImage = await makeTestRoot({ uuid: UUID, label: 'kiroot' });
    scratchDirs.push(dirname(rootImage));
    const [options] = await entryLines(s.loaderEntry, 'options');
    const session = bootQemu({ kernel: join(s.entryDir, 'linux'), initrd: join(s.entryDir, 'initrd'), rootImage, append: options! });
    sessions.push(session);
    try {
      await session.waitFor(ROOT_MARKER, 240_000);
      console.log(`boot to the real root: ${((performance.now() - session.started) / 1000).toFixed(1)} s`);
      await session.exited;
    } finally {
      session.kill();
    }
  }, 300_000);

  it('kernel-install remove: exit 0, nothing built, entry and loader entry gone', async () => {
    const r = await kernelInstall(s, ['remove', KVER]);
    expect(r.exitCode).toBe(0);
    expect(await calls(s)).toHaveLength(1);
    expect(await exists(s.entryDir)).toBe(false);
    expect(await exists(s.loaderEntry)).toBe(false);
  });
});

/**
 * The installed plugin as kernel-install finds it (no KERNEL_INSTALL_PLUGINS): a scratch
 * directory bind-mounted over /etc/kernel/install.d in a private mount namespace, so
 * the host's /etc stays untouched. Debian's 50-depmod.install (it would run depmod on the
 * host's modules) is masked there as well; 85-initrd.install only reads /boot.
 */
async function kernelInstallDiscovering(s: Scratch, etcPlugins: string, args: string[]) {
  const env = { ...s.env };
  delete env.KERNEL_INSTALL_PLUGINS;
  const r = await execa('unshare', ['-m', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" /etc/kernel/install.d && exec /usr/bin/kernel-install "$@"', etcPlugins, ...args], { env, reject: false });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

const canUnshare = process.getuid?.() === 0 && existsSync('/usr/bin/unshare') && existsSync('/etc/kernel/install.d');
const distroInitrd = existsSync('/usr/lib/kernel/install.d/85-initrd.install') && existsSync(`/boot/initrd.img-${KVER}`);

describe.skipIf(!haveKernelInstall || !kernel || !canUnshare)('kernel-install plugin: installed by install-plugin, found in /etc/kernel/install.d', () => {
  const setUp = async (mask: boolean) => {
    const s = await scratch();
    const etc = join(s.dir, 'etc-kernel-install.d');
    const r = await mkinitrdPkg(['install-plugin', '--dest', etc, ...(mask ? ['--mask-85-initrd'] : [])]);
    expect(r.exitCode).toBe(0);
    await symlink('/dev/null', join(etc, '50-depmod.install'));
    return { s, etc };
  };

  it('with 85-initrd.install masked: the entry holds our initrd only, no warning', async () => {
    const { s, etc } = await setUp(true);
    const r = await kernelInstallDiscovering(s, etc, ['-v', 'add', KVER, kernel!.vmlinuz]);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(`Plugin files:\n${join('/etc/kernel/install.d', '50-mkinitrd-pkg.install')}\n${LOADERENTRY}\n`);
    expect(await calls(s)).toHaveLength(1);
    expect((await readdir(s.entryDir)).sort()).toEqual(['initrd', 'linux']);
    expect(await entryLines(s.loaderEntry, 'initrd')).toEqual([expect.stringMatching(entryPath('initrd'))]);
  });

  it.skipIf(!distroInitrd)('without the mask: Debian\'s 85-initrd.install adds a second initrd, and the plugin warns', async () => {
    const { s, etc } = await setUp(false);
    const r = await kernelInstallDiscovering(s, etc, ['add', KVER, kernel!.vmlinuz]);
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toContain('85-initrd.install will add');
    expect(await entryLines(s.loaderEntry, 'initrd')).toEqual([expect.stringMatching(entryPath('initrd')), expect.stringMatching(entryPath(`initrd.img-${KVER}`))]);
  });
});

describe('mkinitrd-pkg install-plugin', () => {
  it('installs the plugin with mode 0755 and this checkout\'s absolute paths, atomically', async () => {
    const dest = join(await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-ip-')), 'install.d');
    const target = join(dest, '50-mkinitrd-pkg.install');
    const r = await mkinitrdPkg(['install-plugin', '--dest', dest]);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(`installed ${target} (mode 0755)`);
    expect((await stat(target)).mode & 0o7777).toBe(0o755);
    expect(await readdir(dest)).toEqual(['50-mkinitrd-pkg.install']);
    const text = await readFile(target, 'utf8');
    expect(text).toMatch(/^MKINITRD_PKG_DEFAULT_NODE=\/\S*node$/m);
    expect(text).toContain(`\nMKINITRD_PKG_DEFAULT=${CLI}\n`);
    // Everything else is the plugin as shipped.
    const shipped = await readFile(PLUGIN, 'utf8');
    const strip = (t: string) => t.replace(/^MKINITRD_PKG_DEFAULT(_NODE)?=.*$/gm, '');
    expect(strip(text)).toBe(strip(shipped));
    expect((await execa('sh', ['-n', target], { reject: false })).exitCode).toBe(0);

    // Again over an older copy: replaced, still 0755, no temporary left behind.
    await writeFile(target, 'old\n');
    await chmod(target, 0o644);
    expect((await mkinitrdPkg(['install-plugin', '--dest', dest])).exitCode).toBe(0);
    expect(await readFile(target, 'utf8')).toBe(text);
    expect((await stat(target)).mode & 0o7777).toBe(0o755);
    expect(await readdir(dest)).toEqual(['50-mkinitrd-pkg.install']);
  });

  it('the installed copy runs this checkout\'s CLI with no mkinitrd-pkg or node in PATH', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-ip-'));
    expect((await mkinitrdPkg(['install-plugin', '--dest', dir])).exitCode).toBe(0);
    // A PATH with only what the plugin itself uses.
    const bin = join(dir, 'bin');
    await mkdir(bin);
    for (const tool of ['sh', 'mkdir', 'sed', 'tail', 'head']) await symlink(existsSync(`/usr/bin/${tool}`) ? `/usr/bin/${tool}` : `/bin/${tool}`, join(bin, tool));
    const r = await execa(join(dir, '50-mkinitrd-pkg.install'), ['add', KVER, join(dir, 'entry'), '/boot/vmlinuz'], {
      env: { PATH: bin, KERNEL_INSTALL_LAYOUT: 'bls', KERNEL_INSTALL_STAGING_AREA: join(dir, 'staging'), MKINITRD_PKG_PRESET: 'no-such-preset', MKINITRD_PKG_CONF_DIR: join(dir, 'conf') },
      extendEnv: false,
      reject: false,
    });
    // The CLI ran (and refused the preset): found through the substituted absolute paths.
    expect(r.stderr).toContain('mkinitrd-pkg: error: unknown preset "no-such-preset"');
    expect(r.exitCode).toBe(1);
  });

  it('--mask-85-initrd: a /dev/null symlink, idempotent, never over a real file', async () => {
    const dest = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-ip-'));
    const mask = join(dest, '85-initrd.install');
    const first = await mkinitrdPkg(['install-plugin', '--dest', dest, '--mask-85-initrd']);
    expect(first.exitCode).toBe(0);
    expect(first.stdout).toContain(`masked ${mask} (-> /dev/null)`);
    expect(await readlink(mask)).toBe('/dev/null');
    const again = await mkinitrdPkg(['install-plugin', '--dest', dest, '--mask-85-initrd']);
    expect(again.exitCode).toBe(0);
    expect(again.stdout).toContain('already masked');
    const other = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-ip-'));
    await writeFile(join(other, '85-initrd.install'), '#!/bin/sh\n', { mode: 0o755 });
    const refused = await mkinitrdPkg(['install-plugin', '--dest', other, '--mask-85-initrd']);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain('is not a /dev/null symlink; not replacing it');
    expect(await readFile(join(other, '85-initrd.install'), 'utf8')).toBe('#!/bin/sh\n');
  });

  it('--from-path leaves the PATH lookup in place', async () => {
    const dest = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-ip-'));
    const r = await mkinitrdPkg(['install-plugin', '--dest', dest, '--from-path']);
    expect(r.exitCode).toBe(0);
    expect(await readFile(join(dest, '50-mkinitrd-pkg.install'), 'utf8')).toBe(await readFile(PLUGIN, 'utf8'));
  });
});
