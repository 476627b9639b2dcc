import { mkdir, readFile, readdir, readlink, rm, symlink, writeFile, lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError, pathExists, resolveInsideRoot } from '@mkinitrd-pkg/common';

/**
 * Files every image gets, whatever the preset (data: presets/initrd-tree/, copied into
 * the image root with the same layout, symlinks kept): the activation of merged system
 * extensions (usr/lib/systemd/system/mkinitrd-pkg-sysext-activate.service) and the
 * degraded-array rule (usr/lib/udev/rules.d/65-mkinitrd-pkg-md-last-resort.rules); each
 * file says why.
 */
export const INITRD_TREE_DIR = fileURLToPath(new URL('../../../presets/initrd-tree/', import.meta.url));

interface TreeFile {
  path: string;
  content?: Buffer;
  link?: string;
}

async function listTreeFiles(dir = INITRD_TREE_DIR, prefix = ''): Promise<TreeFile[]> {
  const out: TreeFile[] = [];
  for (const entry of (await readdir(join(dir, prefix), { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const rel = join(prefix, entry.name);
    if (entry.isDirectory()) out.push(...(await listTreeFiles(dir, rel)));
    else if (entry.isSymbolicLink()) out.push({ path: rel, link: await readlink(join(dir, rel)) });
    else if (entry.isFile()) out.push({ path: rel, content: await readFile(join(dir, rel)) });
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
    else await writeFile(target, f.content!, { mode: 0o644 });
  }
}

/**
 * Turn an installroot into an initrd root (systemd's "initrd mode"):
 * - /etc/initrd-release makes systemd run initrd.target and switch-root later
 *   (os-release(5): "initrd-release … in the initrd");
 * - /init is what the kernel executes from an initramfs;
 * - an empty /etc/machine-id so every boot gets its own id and the image stays reproducible;
 * - emergency/rescue shells that work although Debian/Fedora lock root's password:
 *   systemd-sulogin-shell passes --force to sulogin when SYSTEMD_SULOGIN_FORCE=1, which
 *   gives a root shell on the console without a password. That is a deliberate choice,
 *   the one dracut makes: whoever has the console in the initrd already owns the machine.
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

  for (const unit of ['emergency.service', 'rescue.service']) {
    const dir = join(root, 'usr/lib/systemd/system', `${unit}.d`);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, '50-mkinitrd-pkg-sulogin-force.conf'), '[Service]\nEnvironment=SYSTEMD_SULOGIN_FORCE=1\n', { mode: 0o644 });
  }
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
