// Storage-stack disk fixtures for the boot matrix (test/storage-*.test.ts) and the bench:
// LVM, md RAID1, LVM on RAID1 and LUKS2 → LVM, each holding the same ext4 test root.
//
// The host kernel has no md and no device-mapper (design.md §4), so the disks are made
// inside a helper QEMU guest, as dracut's test suite does with its "makeroot" initrd: our
// own generic initrd plus the lvm and raid extensions, told to start makeroot.target
// instead of looking for a root (rd.systemd.unit=), which runs pvcreate, mdadm, cryptsetup
// and dd on virtio disks and powers off. The result is cached by content (this script's
// text: layout, sizes, UUIDs, passphrase) under /var/tmp, written to a temporary directory
// and renamed, so CI and parallel runs prepare it once.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bootQemu, makeTestRoot } from './qemu.mjs';

const CLI = fileURLToPath(new URL('../../packages/cli/bin/run.js', import.meta.url));
export const STORAGE_CACHE = process.env.MKINITRD_PKG_STORAGE_CACHE ?? '/var/tmp/mkinitrd-pkg-storage-disks';

/** One ext4 test root, dd'ed into every layout (the UUID is what root=UUID= names). */
export const ROOT_UUID = '6d1e4b8c-3f5a-4e2b-9c7d-0a1b2c3d4e5f';
export const LUKS_UUID = '2a9c6e1f-7b3d-4c8a-9e5f-1d2c3b4a5f60';
export const LUKS_PASSPHRASE = 'storage matrix';
/** Installers write their host name into the md superblock; the initrd never has it. */
export const MD_HOMEHOST = 'installed-host';

/** Disk files of each layout, in the order they are attached (virtio: vda, vdb, …). */
export const LAYOUTS = {
  lvm: ['lvm.img'],
  raid: ['raid-a.img', 'raid-b.img'],
  lvmRaid: ['lvmraid-a.img', 'lvmraid-b.img'],
  luksLvm: ['lukslvm.img'],
};

/** What the layouts hold; device paths as the booted initrd names them. */
export const DEVICES = {
  lvmRoot: '/dev/vgroot/root',
  lvmRaidRoot: '/dev/vgraid/root',
  luksRoot: '/dev/vgluks/root',
};

const DISK_MB = 112;

// vda lvm | vdb vdc raid | vdd vde lvm-on-raid | vdf luks+lvm | vdg the ext4 root to copy
const MAKEROOT = `#!/bin/sh
set -eux
exec >/dev/console 2>&1
# lvm and dmsetup create the /dev nodes themselves: nothing waits for udev cookies.
export DM_DISABLE_UDEV=1
modprobe -a md_mod raid1 dm_mod dm_crypt
lvm_new() { # PV VG
  lvm pvcreate -ff -y "$1"
  lvm vgcreate -y "$2" "$1"
  lvm lvcreate -y -Wn -Zn -n root -L 72M "$2"
  dd if=/dev/vdg of=/dev/"$2"/root bs=1M conv=fsync status=none
  lvm vgchange -an "$2"
}
md_new() { # NAME A B
  mdadm --create /dev/md/"$1" --run --assume-clean --level=1 --raid-devices=2 --metadata=1.2 \\
    --homehost=${MD_HOMEHOST} --name="$1" "$2" "$3" </dev/null
}
lvm_new /dev/vda vgroot
md_new mdroot /dev/vdb /dev/vdc
dd if=/dev/vdg of=/dev/md/mdroot bs=1M conv=fsync status=none
mdadm --stop /dev/md/mdroot
md_new mdpv /dev/vdd /dev/vde
lvm_new /dev/md/mdpv vgraid
mdadm --stop /dev/md/mdpv
printf '%s' '${LUKS_PASSPHRASE}' >/run/pass
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --uuid ${LUKS_UUID} --key-file /run/pass /dev/vdf
cryptsetup open --key-file /run/pass /dev/vdf makeroot-luks
lvm_new /dev/mapper/makeroot-luks vgluks
cryptsetup close makeroot-luks
sync
mdadm --examine /dev/vdb | grep -E 'Name|Array UUID'
echo MAKEROOT-DONE-$((20+22))
systemctl poweroff --force --force
`;

const TARGET = `[Unit]
Description=Make the storage test disks
Requires=sysinit.target makeroot.service
After=sysinit.target makeroot.service
`;
const SERVICE = `[Unit]
Description=Make the storage test disks
After=sysinit.target
[Service]
Type=oneshot
ExecStart=/bin/sh -c '/bin/sh /makeroot.sh || { echo MAKEROOT-FAILED >/dev/console; systemctl poweroff --force --force; }'
`;

export function storageDisksKey() {
  return createHash('sha256').update(JSON.stringify({ MAKEROOT, TARGET, SERVICE, LAYOUTS, DISK_MB, ROOT_UUID, v: 1 })).digest('hex').slice(0, 20);
}

/**
 * The prepared disks (cached). `helper` = { kernel, initrd, lvmRaw, raidRaw }: a kernel
 * with md and dm, our initrd, and the two extensions that bring the tools.
 */
export async function storageDisks(helper, { log = () => {} } = {}) {
  const dir = join(STORAGE_CACHE, storageDisksKey());
  if (await exists(join(dir, '.complete'))) return describe(dir);
  await mkdir(STORAGE_CACHE, { recursive: true });
  const temp = await mkdtemp(join(STORAGE_CACHE, '.tmp-'));
  try {
    const rootImage = await makeTestRoot({ uuid: ROOT_UUID, label: 'storageroot' });
    const disks = Object.values(LAYOUTS).flat();
    for (const d of disks) execFileSync('truncate', ['-s', `${DISK_MB}M`, join(temp, d)]);
    // The extra initrd: extensions where systemd-sysext reads them, the unit and the script.
    const tree = join(temp, 'extra');
    await mkdir(join(tree, 'var/lib/extensions'), { recursive: true });
    await mkdir(join(tree, 'etc/systemd/system'), { recursive: true });
    await copyFile(helper.lvmRaw, join(tree, 'var/lib/extensions/lvm.raw'));
    await copyFile(helper.raidRaw, join(tree, 'var/lib/extensions/raid.raw'));
    await writeFile(join(tree, 'etc/systemd/system/makeroot.target'), TARGET);
    await writeFile(join(tree, 'etc/systemd/system/makeroot.service'), SERVICE);
    await writeFile(join(tree, 'makeroot.sh'), MAKEROOT, { mode: 0o755 });
    const extra = join(temp, 'extra.cpio');
    execFileSync('node', [CLI, 'pack', tree, '--output', extra, '--owner', 'root', '--log-level', 'warn']);
    const initrd = join(temp, 'helper.img');
    await writeFile(initrd, Buffer.concat([await readFile(helper.initrd), await readFile(extra)]));
    const session = bootQemu({
      kernel: helper.kernel,
      initrd,
      drives: [...disks.map((d) => join(temp, d)), rootImage],
      append: 'no_timer_check rd.systemd.unit=makeroot.target systemd.journald.forward_to_console=1',
    });
    try {
      const out = await session.waitFor(/MAKEROOT-DONE-42|MAKEROOT-FAILED|Press Enter for (system )?maintenance/, 900_000);
      if (!out.includes('MAKEROOT-DONE-42')) throw new Error(`the helper VM did not prepare the disks; console:\n${session.output().slice(-6000)}`);
      await session.exited;
    } catch (error) {
      session.kill();
      await writeFile(join(STORAGE_CACHE, 'last-failure.log'), session.output());
      throw error;
    }
    log(`storage disks prepared in a helper VM in ${((performance.now() - session.started) / 1000).toFixed(1)} s`);
    await rm(tree, { recursive: true, force: true });
    await rm(dirname(rootImage), { recursive: true, force: true });
    for (const f of ['extra.cpio', 'helper.img']) await rm(join(temp, f), { force: true });
    await writeFile(join(temp, 'console.log'), session.output());
    await writeFile(join(temp, '.complete'), '');
    await rename(temp, dir).catch(async (error) => {
      // Someone else finished first: theirs is as good.
      if (!(await exists(join(dir, '.complete')))) throw error;
      await rm(temp, { recursive: true, force: true });
    });
  } catch (error) {
    await rm(temp, { recursive: true, force: true });
    throw error;
  }
  return describe(dir);
}

function describe(dir) {
  const files = Object.fromEntries(Object.entries(LAYOUTS).map(([k, names]) => [k, names.map((n) => join(dir, n))]));
  return { dir, ...files, rootUuid: ROOT_UUID, luksUuid: LUKS_UUID, passphrase: LUKS_PASSPHRASE, devices: DEVICES };
}

async function exists(path) {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
