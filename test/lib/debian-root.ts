import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';

/**
 * Fresh Debian roots for the package tests: an mmdebstrap tarball cached by content
 * under /var/tmp (keyed by everything that goes into it), unpacked per test, entered with
 * chroot inside a private mount namespace (unshare -m): /proc, /sys, /dev and the bind
 * mounts vanish with the process, even on SIGKILL, and never show on the host.
 */

export const DEB_TEST_DIR = process.env.MKINITRD_PKG_DEB_TEST_DIR ?? '/var/tmp/mkinitrd-pkg-deb-test';
export const MIRROR = 'http://deb.debian.org/debian';

export interface BaseRootSpec {
  suite: string;
  variant: 'apt' | 'essential' | 'minbase';
  include?: string[];
}

/** The cached tarball of a base root, made once (flock: concurrent runs wait for one mmdebstrap). */
export async function baseRootTarball(spec: BaseRootSpec): Promise<string> {
  const key = createHash('sha256')
    .update(JSON.stringify({ ...spec, include: [...(spec.include ?? [])].sort(), mirror: MIRROR, format: 1 }))
    .digest('hex')
    .slice(0, 16);
  const tarball = join(DEB_TEST_DIR, `${spec.suite}-${spec.variant}-${key}.tar`);
  if (existsSync(tarball)) return tarball;
  await mkdir(DEB_TEST_DIR, { recursive: true });
  const include = spec.include?.length ? `--include=${spec.include.join(',')}` : '';
  // Under the lock: check again, then make it under a temporary name and rename.
  const script = `test -e "$1" && exit 0
rm -f "$2"
mmdebstrap --quiet --mode=root --format=tar --variant="$3" ${include} "$4" "$2" "$5"
mv -f "$2" "$1"`;
  await execa('flock', [join(DEB_TEST_DIR, 'lock'), 'sh', '-ec', script, 'sh', tarball, `${tarball}.tmp`, spec.variant, spec.suite, MIRROR], {
    stdio: 'inherit',
  });
  await stat(tarball);
  return tarball;
}

export interface ChrootOptions {
  /** host path → path inside the root (created if missing) */
  binds?: Record<string, string>;
  env?: Record<string, string>;
  reject?: boolean;
}

/** Run a command inside ROOT (chroot) with /proc, /sys, /dev, a tmpfs /run and the binds. */
export async function inChroot(root: string, command: string[], options: ChrootOptions = {}) {
  const binds = Object.entries(options.binds ?? {});
  // The root bind-mounted onto itself: unshare --propagation inside the chroot (the
  // resolver's private namespaces) needs / to be a mount point, or it fails with EINVAL.
  const script = [
    'set -e',
    'root="$1"; shift',
    'mount --bind "$root" "$root"',
    'mount -t proc proc "$root/proc"',
    'mount --rbind /sys "$root/sys"',
    'mount --rbind /dev "$root/dev"',
    'mount -t tmpfs tmpfs "$root/run"',
    ...binds.map(([from, to]) => `mkdir -p "$root${to}" && mount --bind '${from}' "$root${to}"`),
    'exec chroot "$root" "$@"',
  ].join('\n');
  const env = {
    PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/root',
    LC_ALL: 'C.UTF-8',
    DEBIAN_FRONTEND: 'noninteractive',
    ...options.env,
  };
  const result = await execa(
    'unshare',
    ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', root, 'env', '-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...command],
    { reject: false, all: true },
  );
  const out = { exitCode: result.exitCode ?? -1, output: String(result.all ?? '') };
  if ((options.reject ?? true) && out.exitCode !== 0) {
    throw new Error(`in ${root}: ${command.join(' ')} exited ${out.exitCode}:\n${out.output.slice(-6000)}`);
  }
  return out;
}

/** Unpack a base tarball into a new directory (owners and modes kept: we are root). */
export async function unpackRoot(tarball: string, root: string): Promise<void> {
  await mkdir(root, { recursive: true });
  await execa('tar', ['-xf', tarball, '-C', root, '--numeric-owner']);
  // Name resolution for apt inside the root; no services may start (policy-rc.d → 101).
  await execa('cp', ['/etc/resolv.conf', join(root, 'etc/resolv.conf')]);
  await writeFile(join(root, 'usr/sbin/policy-rc.d'), '#!/bin/sh\nexit 101\n', { mode: 0o755 });
}

/** rm -rf of a test root, refused while anything is mounted below it. */
export async function removeRoot(root: string): Promise<void> {
  const mounts = await readFile('/proc/self/mounts', 'utf8');
  if (mounts.split('\n').some((line) => line.split(' ')[1]?.startsWith(root))) {
    throw new Error(`not removing ${root}: something is mounted below it`);
  }
  const temp = `${root}.removing`;
  await rename(root, temp).catch(() => undefined);
  await rm(existsSync(temp) ? temp : root, { recursive: true, force: true });
}
