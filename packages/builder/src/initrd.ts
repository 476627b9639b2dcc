import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, readlink, rename, rm, symlink, writeFile, lstat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { UserError, builtinDataPath, pathExists, resolveInsideRoot } from '@mkinitrd-pkg/common';
import type { EmergencyShell } from '@mkinitrd-pkg/config';

/**
 * Files every image gets, whatever the preset (data: presets/initrd-tree/, copied into
 * the image root with the same layout, symlinks kept): the activation of merged system
 * extensions (usr/lib/systemd/system/mkinitrd-pkg-sysext-activate.service) and the
 * degraded-array rule (usr/lib/udev/rules.d/65-mkinitrd-pkg-md-last-resort.rules); each
 * file says why. Found through the shipped data (checkout, npm package or
 * /usr/lib/mkinitrd-pkg: packages/common/src/data.ts), not relative to this module: the
 * bundled CLI lives elsewhere.
 */
export const INITRD_TREE_DIR = join(builtinDataPath('presets') ?? '', 'initrd-tree');

interface TreeFile {
  path: string;
  content?: Buffer;
  link?: string;
  /** An executable in the tree (a generator, a helper script) stays one: 0755, else 0644. */
  executable?: boolean;
}

async function listTreeFiles(dir = INITRD_TREE_DIR, prefix = ''): Promise<TreeFile[]> {
  const out: TreeFile[] = [];
  for (const entry of (await readdir(join(dir, prefix), { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const rel = join(prefix, entry.name);
    if (entry.isDirectory()) out.push(...(await listTreeFiles(dir, rel)));
    else if (entry.isSymbolicLink()) out.push({ path: rel, link: await readlink(join(dir, rel)) });
    else if (entry.isFile()) out.push({ path: rel, content: await readFile(join(dir, rel)), executable: ((await lstat(join(dir, rel))).mode & 0o111) !== 0 });
  }
  return out;
}

/**
 * Copy presets/initrd-tree/ into an image root, through no symlink of the root (parents
 * are created as directories). Done per image, like the kernel modules, not in the cached
 * installroot: a change of these files never costs a package install.
 */
export async function installInitrdTree(root: string): Promise<void> {
  for (const f of await listTreeFiles()) {
    const target = await resolveInsideRoot(root, f.path);
    await mkdir(join(target, '..'), { recursive: true });
    await rm(target, { force: true });
    if (f.link !== undefined) await symlink(f.link, target);
    else await writeFile(target, f.content!, { mode: f.executable ? 0o755 : 0o644 });
  }
}

/**
 * Turn an installroot into an initrd root (systemd's "initrd mode"):
 * - /etc/initrd-release makes systemd run initrd.target and switch-root later
 *   (os-release(5): "initrd-release … in the initrd");
 * - /init is what the kernel executes from an initramfs;
 * - an empty /etc/machine-id so every boot gets its own id and the image stays reproducible.
 * The emergency shell is a per-image policy (applyEmergencyShell), not part of the cached root.
 */
export async function makeInitrdRoot(root: string): Promise<void> {
  const osRelease = await readOsRelease(root);
  const initrdRelease = osRelease
    .split('\n')
    .filter((line) => line && !/^(VARIANT|VARIANT_ID)=/.test(line))
    .concat(['VARIANT="initrd (mkinitrd-pkg)"', 'VARIANT_ID=mkinitrd-pkg'])
    .join('\n');
  await rm(join(root, 'etc/initrd-release'), { force: true });
  await writeFile(join(root, 'etc/initrd-release'), initrdRelease + '\n', { mode: 0o644 });

  const systemd = 'usr/lib/systemd/systemd';
  if (!(await pathExistsInRoot(join(root, systemd)))) {
    throw new UserError('INPUT', 'the installroot has no usr/lib/systemd/systemd', { hint: 'add systemd to Packages=' });
  }
  await rm(join(root, 'init'), { force: true });
  await symlink(systemd, join(root, 'init'));

  await rm(join(root, 'etc/machine-id'), { force: true });
  await writeFile(join(root, 'etc/machine-id'), '', { mode: 0o444 });

  // Extensions found in the initrd (/usr/lib/extensions, /var/lib/extensions, e.g. from
  // an extra cpio the boot loader appends) are merged before sysinit.target.
  if (await pathExistsInRoot(join(root, 'usr/lib/systemd/system/systemd-sysext.service'))) {
    const wants = join(root, 'usr/lib/systemd/system/sysinit.target.wants');
    await mkdir(wants, { recursive: true });
    await rm(join(wants, 'systemd-sysext.service'), { force: true });
    await symlink('../systemd-sysext.service', join(wants, 'systemd-sysext.service'));
  }
  // Nothing in an initrd mounts from fstab; an empty one keeps generators quiet.
  await rm(join(root, 'etc/fstab'), { force: true });
  await writeFile(join(root, 'etc/fstab'), '', { mode: 0o644 });
}

const POLICY_DROPIN = '50-mkinitrd-pkg-emergency-shell.conf';

/** The message EmergencyShell=no prints on the console before rebooting (tests look for it). */
export const EMERGENCY_SHELL_DISABLED = 'mkinitrd-pkg: emergency shell disabled (EmergencyShell=no); rebooting';

/**
 * What emergency.target gives whoever is at the console (systemd's emergency.service and
 * rescue.service run systemd-sulogin-shell, which runs sulogin(8)):
 * - yes: SYSTEMD_SULOGIN_FORCE=1 makes systemd-sulogin-shell pass --force, so sulogin
 *   opens a root shell although Debian/Fedora lock root's password (dracut's choice:
 *   whoever has the console of an unsigned initrd can replace the initrd anyway);
 * - password: root gets the configured crypt(3) hash in /etc/shadow and sulogin asks for it
 *   (only the hash is in the image);
 * - no: no shell at all: a message, then reboot (the firmware may boot another entry).
 * With password and no, debug-shell.service (an unauthenticated shell on tty9 that
 * systemd.debug_shell starts) is removed too: under Secure Boot the UKI's .cmdline can not
 * be edited, but a signed image should not rely on that alone.
 * The image root may share inodes with the cache (cp -al): files are replaced, never
 * rewritten in place.
 */
export async function applyEmergencyShell(root: string, policy: EmergencyShell, passwordHash?: string): Promise<void> {
  const units = join(root, 'usr/lib/systemd/system');
  for (const unit of ['emergency.service', 'rescue.service']) {
    const dir = join(units, `${unit}.d`);
    await mkdir(dir, { recursive: true });
    const body =
      policy === 'yes'
        ? '[Service]\nEnvironment=SYSTEMD_SULOGIN_FORCE=1\n'
        : policy === 'password'
          ? '[Service]\nEnvironment=SYSTEMD_SULOGIN_FORCE=0\n'
          : // One ExecStart=: emergency.service is Type=idle, which allows only one.
            `[Service]\nExecStartPre=\nExecStart=\nExecStart=-/bin/sh -c 'echo "${EMERGENCY_SHELL_DISABLED}"; sleep 5; exec systemctl --force --force reboot'\n`;
    await replaceFile(join(dir, POLICY_DROPIN), body);
  }
  if (policy !== 'yes') {
    await rm(join(units, 'debug-shell.service'), { force: true });
    await rm(join(root, 'etc/systemd/system/debug-shell.service'), { force: true });
  }
  if (policy === 'password') {
    if (!passwordHash) throw new UserError('CONFIG', 'EmergencyShell=password needs EmergencyShellPassword=', { hint: 'make the hash with: openssl passwd -6' });
    // sulogin reads root's entry with getspnam() when passwd says "x" (shadow(5)).
    const passwd = await readFile(join(root, 'etc/passwd'), 'utf8').catch(() => '');
    const passwdLines = passwd.split('\n').filter(Boolean);
    if (!passwdLines.some((l) => l.startsWith('root:'))) passwdLines.unshift('root:x:0:0:root:/root:/bin/sh');
    await replaceFile(join(root, 'etc/passwd'), passwdLines.map((l) => (l.startsWith('root:') ? l.replace(/^root:[^:]*:/, 'root:x:') : l)).join('\n') + '\n', 0o644);
    const shadow = (await readFile(join(root, 'etc/shadow'), 'utf8').catch(() => '')).split('\n').filter((l) => l && !l.startsWith('root:'));
    await replaceFile(join(root, 'etc/shadow'), [`root:${passwordHash}:0:0:99999:7:::`, ...shadow].join('\n') + '\n', 0o600);
  }
}

async function replaceFile(path: string, content: string, mode = 0o644): Promise<void> {
  const temp = join(dirname(path), `.${randomBytes(4).toString('hex')}.tmp`);
  await writeFile(temp, content, { mode });
  await rename(temp, path);
}

/** Inside the image root symlinks are not followed (they point into the image). */
function pathExistsInRoot(path: string): Promise<boolean> {
  return pathExists(path, { followSymlinks: false });
}

async function readOsRelease(root: string): Promise<string> {
  for (const path of ['etc/os-release', 'usr/lib/os-release']) {
    try {
      const st = await lstat(join(root, path));
      if (st.isFile()) return (await readFile(join(root, path), 'utf8')).trim();
      if (st.isSymbolicLink()) return (await readFile(join(root, 'usr/lib/os-release'), 'utf8')).trim();
    } catch {
      /* try the next one */
    }
  }
  throw new UserError('INPUT', 'the installroot has no os-release', { hint: 'the distribution base package (base-files, fedora-release) must be installed' });
}
