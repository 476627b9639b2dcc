import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdtemp, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkinitrdPkg } from './lib/cli.js';
import { DEB_TEST_DIR, baseRootTarball, inChroot, removeRoot, unpackRoot } from './lib/debian-root.js';
import { bootQemu, makeTestRoot, ROOT_MARKER, type BootSession } from '../scripts/lib/qemu.mjs';

/**
 * Issue 17: the Debian package, used the way Debian uses an initramfs generator. In a
 * fresh Debian 13 root (mmdebstrap, cached; chroot in a private mount namespace):
 * `apt install ./mkinitrd-pkg_*.deb`, `apt install linux-image-amd64` → the kernel's
 * postinst hook writes /boot/initrd.img-KVER with mkinitrd-pkg, which boots that kernel
 * in QEMU; with systemd-boot, kernel-install runs our plugin for the entry's initrd;
 * removing the kernel removes the image; purging the package leaves no file behind; it
 * replaces initramfs-tools and is replaced by it.
 *
 * Nesting: systemd-boot's own kernel hook (zz-systemd-boot) runs kernel-install only when
 * `bootctl is-installed` finds an ESP, which a chroot without a mounted vfat ESP has
 * not (and this host's kernel scans no GPT partitions of loop devices), so the test runs
 * `kernel-install add` itself, with BOOT_ROOT set as bootctl would have found it.
 */

const REPO = fileURLToPath(new URL('..', import.meta.url));
/**
 * The root's mkinitrd-pkg cache, kept between runs under /var/tmp (flock-protected like
 * every cache). Its own, not the shared test cache: the hooks run the packaged code, and a
 * cache entry written by another checkout's code at the same time must not be what they
 * read (seen: a keyring removed under a running build).
 */
const ROOT_CACHE = join(DEB_TEST_DIR, 'cache');
const ARCHIVES = join(DEB_TEST_DIR, 'archives');
const MACHINE_ID = '6d6b696e69747264706b677465737432';
const UUID = '3d0c7a52-9b1e-4f7d-a1c3-5e8f2b6d4a90';

const has = (cmd: string) => execa('sh', ['-c', `command -v ${cmd}`], { reject: false }).then((r) => r.exitCode === 0);
const canRun =
  process.getuid?.() === 0 && !process.env.MKINITRD_PKG_FAST && (await has('mmdebstrap')) && (await has('qemu-system-x86_64')) && (await has('unshare'));
const hasLintian = await has('lintian');

/** Fixed, so that a commit made while the test runs does not change the second build's epoch. */
const EPOCH = '1700000000';
const buildDeb = (out: string) =>
  execa('node', [join(REPO, 'scripts/package/deb.mjs'), out], { cwd: REPO, env: { SOURCE_DATE_EPOCH: EPOCH } }).then(
    (r) => /^(\S+\.deb):/m.exec(r.stdout)![1]!,
  );
const sha256 = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');

let work: string;
let deb: string;
let root: string;
let kver: string;
const sessions: BootSession[] = [];

/** In the root, with the host's apt archive cache and mkinitrd-pkg test cache mounted. */
const chroot = (command: string[], reject = true) =>
  inChroot(root, command, {
    binds: { [ARCHIVES]: '/var/cache/apt/archives', [ROOT_CACHE]: '/var/tmp/host-mkinitrd-pkg-cache' },
    // Passed by apt → dpkg → the kernel's postinst → run-parts → our hook → the plugin.
    env: { MKINITRD_PKG_CACHE_DIR: '/var/tmp/host-mkinitrd-pkg-cache' },
    reject,
  });
const apt = (...args: string[]) => chroot(['apt-get', '-q', '-y', ...args]);
/** dpkg's status word of a package; 'not-installed' also when dpkg knows nothing of it (purged). */
async function dpkgStatus(pkg: string): Promise<string> {
  const r = await chroot(['dpkg-query', '-W', '-f', '${db:Status-Status}', pkg], false);
  return r.exitCode === 0 ? r.output.trim() : 'not-installed';
}

/** Every path in the root, without the API file systems (and nothing below the bind mounts: -xdev). */
async function snapshot(): Promise<Set<string>> {
  const { stdout } = await execa('find', ['.', '-xdev', '-path', './proc', '-prune', '-o', '-path', './sys', '-prune', '-o', '-path', './dev', '-prune', '-o', '-path', './run', '-prune', '-o', '-print'], { cwd: root, maxBuffer: 1 << 28 });
  return new Set(stdout.split('\n').map((p) => p.replace(/^\.\/?/, '/')).filter((p) => p !== '/'));
}

describe.skipIf(!canRun)('Debian package in a fresh Debian 13 root', () => {
  beforeAll(async () => {
    work = await mkdtemp(join('/var/tmp', 'mkinitrd-pkg-deb-'));
    deb = await buildDeb(join(work, 'deb'));
    const tarball = await baseRootTarball({ suite: 'trixie', variant: 'apt' });
    root = join(work, 'root');
    await unpackRoot(tarball, root);
    await execa('mkdir', ['-p', ARCHIVES, ROOT_CACHE]);
    await apt('update');
  }, 900_000);

  afterAll(async () => {
    for (const s of sessions) s.kill();
    if (root) await removeRoot(root);
    if (work) await execa('rm', ['-rf', work]);
  });

  it('builds reproducibly: a second build gives the same bytes', async () => {
    const second = await buildDeb(join(work, 'deb-again'));
    expect(second.endsWith('_all.deb')).toBe(true);
    expect(await sha256(second)).toBe(await sha256(deb));
  }, 300_000);

  it.skipIf(!hasLintian)('lintian reports no errors and no warnings', async () => {
    const r = await execa('lintian', ['--pedantic', deb], { reject: false, all: true });
    const tags = String(r.all).split('\n').filter((l) => /^[EWIP]: /.test(l));
    expect(tags.filter((l) => /^[EW]: /.test(l)), String(r.all)).toEqual([]);
    expect(r.exitCode, String(r.all)).toBe(0);
  }, 300_000);

  it('apt install ./mkinitrd-pkg_*.deb: the tool runs from /usr/lib/mkinitrd-pkg with its own presets', async () => {
    await copyFile(deb, join(root, 'root/mkinitrd-pkg.deb'));
    await apt('install', '/root/mkinitrd-pkg.deb');
    expect(await dpkgStatus('mkinitrd-pkg')).toBe('installed');
    const version = await chroot(['mkinitrd-pkg', '--version']);
    expect(version.output).toMatch(/^mkinitrd-pkg\/\d+\.\d+\.\d+ /);
    const presets = await chroot(['mkinitrd-pkg', 'presets']);
    expect(presets.output).toMatch(/^debian .* \/usr\/lib\/mkinitrd-pkg\/presets\/debian\.conf$/m);
    // The conffile parses (the hooks pass it as --config).
    await chroot(['mkinitrd-pkg', 'summary', '--config', '/etc/mkinitrd-pkg/mkinitrd-pkg.conf']);
  }, 600_000);

  it('apt install linux-image-amd64: the kernel\'s postinst hook writes /boot/initrd.img-KVER with mkinitrd-pkg', async () => {
    await apt('install', 'linux-image-amd64');
    const kernels = (await readdir(join(root, 'boot'))).filter((n) => n.startsWith('vmlinuz-'));
    expect(kernels).toHaveLength(1);
    kver = kernels[0]!.slice('vmlinuz-'.length);
    const image = join(root, 'boot', `initrd.img-${kver}`);
    const manifest = JSON.parse(await readFile(join(root, 'var/lib/mkinitrd-pkg', `initrd.img-${kver}.manifest.json`), 'utf8'));
    // Ours: the manifest of our build describes exactly this file, for this kernel.
    expect(manifest.sha256).toBe(await sha256(image));
    expect(manifest.kernelVersion).toBe(kver);
    expect(manifest.modules).toEqual(expect.arrayContaining(['virtio_blk', 'ext4']));
    const inspect = await mkinitrdPkg(['inspect', image]);
    expect(inspect.exitCode, inspect.stderr).toBe(0);
    expect(inspect.stdout).toMatch(/ etc\/initrd-release$/m);
    expect(inspect.stdout).toMatch(new RegExp(` usr/lib/modules/${kver.replaceAll('+', '\\+')}/modules\\.dep$`, 'm'));
    // Nothing half-written or staged is left in /boot.
    expect((await readdir(join(root, 'boot'))).filter((n) => n.startsWith('.'))).toEqual([]);
  }, 900_000);

  it('boots that kernel in QEMU to a test root', async () => {
    const rootImage = await makeTestRoot({ uuid: UUID, label: 'debroot' });
    const session = bootQemu({
      kernel: join(root, 'boot', `vmlinuz-${kver}`),
      initrd: join(root, 'boot', `initrd.img-${kver}`),
      rootImage,
      append: 'root=/dev/vda rw',
    });
    sessions.push(session);
    try {
      expect(await session.waitFor(ROOT_MARKER, 300_000)).toContain(ROOT_MARKER);
      await session.exited;
    } finally {
      session.kill();
      await execa('rm', ['-rf', join(rootImage, '..')]);
    }
  }, 400_000);

  it('with systemd-boot: kernel-install runs our plugin, which builds the entry\'s only initrd', async () => {
    await apt('install', 'systemd-boot');
    await chroot(['sh', '-ec', `echo ${MACHINE_ID} > /etc/machine-id; echo 'root=/dev/vda rw' > /etc/kernel/cmdline; mkdir -p /boot/efi/loader/entries /boot/efi/${MACHINE_ID}`]);
    const r = await chroot(['env', 'BOOT_ROOT=/boot/efi', 'kernel-install', '--verbose', 'add', kver, `/boot/vmlinuz-${kver}`]);
    expect(r.output).toMatch(/50-mkinitrd-pkg\.install succeeded/);
    const entry = await readFile(join(root, 'boot/efi/loader/entries', `${MACHINE_ID}-${kver}.conf`), 'utf8');
    // One initrd: Debian's 55-initrd.install (which would add /boot/initrd.img-KVER) is masked by the package.
    expect(entry.match(/^initrd /gm)).toHaveLength(1);
    const initrd = join(root, 'boot/efi', MACHINE_ID, kver, 'initrd');
    const inspect = await mkinitrdPkg(['inspect', initrd]);
    expect(inspect.exitCode, inspect.stderr).toBe(0);
    expect(inspect.stdout).toMatch(/ etc\/initrd-release$/m);
    await chroot(['env', 'BOOT_ROOT=/boot/efi', 'kernel-install', 'remove', kver]);
    expect(existsSync(initrd)).toBe(false);
    await apt('purge', '--autoremove', 'systemd-boot');
    await chroot(['sh', '-ec', 'rm -rf /boot/efi /etc/kernel/cmdline; rm -f /etc/machine-id']);
  }, 900_000);

  it('apt purge of the kernel removes /boot/initrd.img-KVER and its manifest', async () => {
    await apt('purge', '--autoremove', 'linux-image-amd64', `linux-image-${kver}`);
    expect(existsSync(join(root, 'boot', `initrd.img-${kver}`))).toBe(false);
    expect(existsSync(join(root, 'var/lib/mkinitrd-pkg', `initrd.img-${kver}.manifest.json`))).toBe(false);
  }, 600_000);

  it('dpkg --purge mkinitrd-pkg leaves no file behind', async () => {
    const { stdout: contents } = await execa('sh', ['-c', 'dpkg-deb -c "$1" | awk \'{print $6}\'', 'sh', deb]);
    const before = await snapshot();
    await chroot(['dpkg', '--purge', 'mkinitrd-pkg']);
    expect(await dpkgStatus('mkinitrd-pkg')).toBe('not-installed');
    const after = await snapshot();
    // Nothing appeared but dpkg's own bookkeeping.
    const dpkgState = /^\/(var\/lib\/dpkg|var\/log|var\/cache\/ldconfig|etc\/ld\.so\.cache)/;
    expect([...after].filter((p) => !before.has(p) && !dpkgState.test(p))).toEqual([]);
    // Every file of the package, and what the tool wrote at run time (images, manifests,
    // caches, staging directories, the conffile's directory), is gone: no path in the
    // root names mkinitrd anymore but the .deb the test copied in and the test cache's mount point.
    const ours = contents.split('\n').map((p) => p.replace(/^\.\/?/, '/').replace(/\/$/, '')).filter((p) => p.includes('mkinitrd-pkg'));
    expect(ours.length).toBeGreaterThan(10);
    for (const path of [...ours, '/etc/kernel/install.d/55-initrd.install', '/etc/kernel/install.d/85-initrd.install']) {
      expect(existsSync(join(root, path)), path).toBe(false);
    }
    const left = [...after].filter((p) => /mkinitrd/.test(p) && p !== '/root/mkinitrd-pkg.deb' && p !== '/var/tmp/host-mkinitrd-pkg-cache');
    expect(left).toEqual([]);
  }, 600_000);

  it('replaces initramfs-tools (Conflicts/Provides linux-initramfs-tool), and initramfs-tools replaces it', async () => {
    await apt('install', 'initramfs-tools');
    expect(await dpkgStatus('initramfs-tools')).toBe('installed');
    await apt('install', '/root/mkinitrd-pkg.deb');
    expect(await dpkgStatus('mkinitrd-pkg')).toBe('installed');
    expect(await dpkgStatus('initramfs-tools')).not.toBe('installed');
    await apt('install', 'initramfs-tools');
    expect(await dpkgStatus('initramfs-tools')).toBe('installed');
    expect(await dpkgStatus('mkinitrd-pkg')).not.toBe('installed');
  }, 600_000);
});
