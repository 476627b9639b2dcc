import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, readlink, rename, rm, symlink, writeFile, lstat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { UserError, builtinDataPath, pathExists, resolveInsideRoot } from '@mkinitrd-pkg/common';
import type { EmergencyShell, ExtensionImagePolicy } from '@mkinitrd-pkg/config';

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

/**
 * ExtensionImagePolicy= as systemd.image-policy(7) strings for systemd-sysext. Extension
 * images carry a root or a usr data partition (plus its verity and signature partitions,
 * whose policy systemd derives from the data partition's); everything else is ignored.
 */
export const EXTENSION_IMAGE_POLICY_STRINGS: Record<Exclude<ExtensionImagePolicy, 'open'>, string> = {
  verity: 'root=verity+signed+absent:usr=verity+signed+absent',
  signed: 'root=signed+absent:usr=signed+absent',
};

/** The drop-in's path in the image: after 50-mkinitrd-pkg-devices.conf of the initrd tree. */
export const EXTENSION_POLICY_DROPIN = 'usr/lib/systemd/system/systemd-sysext.service.d/60-mkinitrd-pkg-image-policy.conf';
/** The check the drop-in runs first (ExecStartPre=). */
export const EXTENSION_POLICY_CHECK = 'usr/lib/mkinitrd-pkg/extension-policy-check';

/**
 * What systemd's image policy cannot say, checked before systemd-sysext runs:
 * - systemd rates an image's protection by the partitions it has, not by the root hash it
 *   knows (src/shared/dissect-image.c, dissect_image: a verity partition counts as "verity"),
 *   and without a root hash it mounts the data partition without dm-verity. Measured with
 *   257: an unsigned image with a verity partition and no pinned hash passed
 *   `--image-policy=root=verity+…` and was merged without a verity target. So `verity`
 *   also requires the root hash pinned beside each image (NAME.roothash / NAME.usrhash);
 * - directory extensions are bind-mounted with no policy at all (sysext.c, IMAGE_DIRECTORY),
 *   so both policies refuse them.
 * Any finding refuses every extension, as systemd-sysext does for an image its policy
 * refuses: a half-merged /usr is worse than none.
 */
export const EXTENSION_POLICY_CHECK_SCRIPT = `#!/bin/sh
# ExtensionImagePolicy=$1 (mkinitrd-pkg): run by systemd-sysext.service (ExecStartPre=) before
# the merge; see the builder (packages/builder/src/initrd.ts) for why each check exists.
policy="$1"
refused=0
for dir in /etc/extensions /run/extensions /var/lib/extensions /usr/lib/extensions /usr/local/lib/extensions /.extra/sysext; do
  [ -d "$dir" ] || continue
  for f in "$dir"/*; do
    [ -e "$f" ] || continue
    if [ -d "$f" ]; then
      echo "mkinitrd-pkg: $f is a directory extension, which no image policy covers: ExtensionImagePolicy=$policy refuses it" >&2
      refused=1
      continue
    fi
    case "$f" in
      *.raw) ;;
      *) continue ;;
    esac
    if [ "$policy" = verity ]; then
      base="\${f%.raw}"
      if [ ! -s "$base.roothash" ] && [ ! -s "$base.usrhash" ]; then
        echo "mkinitrd-pkg: $f has no pinned root hash ($base.roothash): ExtensionImagePolicy=verity refuses it" >&2
        refused=1
      fi
    fi
  done
done
if [ "$refused" != 0 ]; then
  echo "mkinitrd-pkg: no extension merged (ExtensionImagePolicy=$policy)" >&2
  exit 1
fi
`;

/** systemd's version in an image root, from libsystemd-shared-NNN.so (Debian, Fedora, Ubuntu). */
export async function systemdVersion(root: string): Promise<number | undefined> {
  for (const dir of ['usr/lib/x86_64-linux-gnu/systemd', 'usr/lib/aarch64-linux-gnu/systemd', 'usr/lib64/systemd', 'usr/lib/systemd']) {
    let names: string[];
    try {
      names = await readdir(join(root, dir));
    } catch {
      continue;
    }
    for (const name of names) {
      const m = /^libsystemd-shared-(\d+)(?:[.~-][^/]*)?\.so$/.exec(name);
      if (m) return Number(m[1]);
    }
  }
  return undefined;
}

/**
 * ExtensionImagePolicy=verity|signed: systemd-sysext in the initrd is started with
 * --image-policy= after EXTENSION_POLICY_CHECK_SCRIPT ("open" writes nothing and keeps
 * systemd's defaults). systemd-sysext has no environment variable or config file for the
 * policy (257), only the option, so the drop-in replaces ExecStart= (the unit's own command,
 * `systemd-sysext refresh`, plus the option). An explicit policy also replaces systemd's
 * stricter default for /.extra/sysext (sysext.c, pick_image_policy): `signed` is that
 * default; under `verity` an image there needs a pinned root hash like any other, and
 * systemd-stub hands over images only, so images from beside a UKI are refused (use
 * `signed` for those). Image policies exist since systemd 254: older ones would fail on the
 * unknown option and merge nothing, so such an image is refused at build time.
 */
export async function applyExtensionImagePolicy(root: string, policy: ExtensionImagePolicy): Promise<void> {
  if (policy === 'open') return;
  const version = await systemdVersion(root);
  if (version === undefined || version < 254) {
    throw new UserError('CONFIG', `ExtensionImagePolicy=${policy} needs systemd >= 254 in the image (it has ${version ?? 'no systemd'})`, {
      hint: 'systemd-sysext before 254 has no image policy: use ExtensionImagePolicy=open there, and signed extensions with the certificate in the kernel keyring',
    });
  }
  const value = EXTENSION_IMAGE_POLICY_STRINGS[policy];
  const check = await resolveInsideRoot(root, EXTENSION_POLICY_CHECK);
  await mkdir(dirname(check), { recursive: true });
  await rm(check, { force: true });
  await writeFile(check, EXTENSION_POLICY_CHECK_SCRIPT, { mode: 0o755 });
  const target = await resolveInsideRoot(root, EXTENSION_POLICY_DROPIN);
  await mkdir(dirname(target), { recursive: true });
  await rm(target, { force: true });
  await writeFile(
    target,
    `# ExtensionImagePolicy=${policy} (mkinitrd-pkg): systemd-sysext merges only extension images this
# image policy admits (systemd.image-policy(7)), after ${'/' + EXTENSION_POLICY_CHECK} has checked what
# the policy cannot say; any refused image makes the merge fail, and nothing is merged.
[Service]
ExecStartPre=/bin/sh /${EXTENSION_POLICY_CHECK} ${policy}
ExecStart=
ExecStart=systemd-sysext refresh --image-policy=${value}
ExecReload=
ExecReload=/bin/sh /${EXTENSION_POLICY_CHECK} ${policy}
ExecReload=systemd-sysext refresh --image-policy=${value}
`,
    { mode: 0o644 },
  );
}
