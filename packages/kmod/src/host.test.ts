import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UserError, silentLogger } from '@mkinitrd-pkg/common';
import { installKernelModules, readHostModules } from './index.js';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'kmod-host-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** /proc/modules as the kernel writes it (name size refcount users state address). */
const PROC_MODULES = `ext4 1007616 1 - Live 0x0000000000000000
virtio_blk 24576 2 - Live 0x0000000000000000
crc16 16384 1 ext4, Live 0x0000000000000000
not_in_that_kernel 16384 0 - Live 0x0000000000000000
`;

async function files(o: { crypttab?: string; rootType?: string }) {
  const dir = await mkdtemp(join(work, 'host-'));
  await writeFile(join(dir, 'modules'), PROC_MODULES);
  await writeFile(join(dir, 'mounts'), `sysfs /sys sysfs rw 0 0\n/dev/vda1 / ${o.rootType ?? 'ext4'} rw,relatime 0 0\n`);
  await writeFile(join(dir, 'crypttab'), o.crypttab ?? '# <target name> <source device> <key file> <options>\n');
  return { modulesFile: join(dir, 'modules'), mountsFile: join(dir, 'mounts'), crypttabFile: join(dir, 'crypttab') };
}

describe('readHostModules', () => {
  it('takes the loaded modules, the root filesystem and dm-crypt when crypttab names a volume', async () => {
    const plain = await readHostModules(await files({}));
    expect(plain).toEqual({ names: ['ext4', 'virtio_blk', 'crc16', 'not_in_that_kernel'], loaded: 4, rootFilesystem: 'ext4', crypttab: false });
    const crypt = await readHostModules(await files({ rootType: 'xfs', crypttab: 'root UUID=1234 none luks,discard\n' }));
    expect(crypt.names).toEqual(['ext4', 'virtio_blk', 'crc16', 'not_in_that_kernel', 'xfs', 'dm_crypt']);
  });

  it('explains a missing module list (no /proc/modules on a build host) with the way out', async () => {
    const error = await readHostModules({ modulesFile: join(work, 'nope') }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).message).toContain('KernelModules=host');
    expect((error as UserError).hint).toContain('MKINITRD_PKG_HOST_MODULES');
  });
});

const kver = existsSync('/usr/lib/modules') ? readdirSync('/usr/lib/modules').filter((k) => existsSync(`/usr/lib/modules/${k}/modules.dep`)).sort().at(-1) : undefined;

describe.skipIf(!kver)(`KernelModules=host with the real ${kver} modules`, () => {
  it('installs the host list with its dependencies, plus a later explicit pattern, and not the rest', async () => {
    const image = join(work, 'image');
    await mkdir(join(image, 'usr/lib'), { recursive: true });
    await symlink('usr/lib', join(image, 'lib'));
    const host = await files({ rootType: 'xfs', crypttab: 'root UUID=1234 none luks\n' });
    const result = await installKernelModules({ imageRoot: image, kernelVersion: kver!, sourceRoot: '/', patterns: ['host', 'nvme', '-crc16'], host, logger: silentLogger() });
    for (const m of ['ext4', 'jbd2', 'mbcache', 'virtio_blk', 'xfs', 'dm_crypt', 'dm_mod', 'nvme', 'nvme_core']) expect(result.modules, m).toContain(m);
    // crc16 is excluded by a pattern but ext4 needs it: hard dependencies win.
    expect(result.modules).toContain('crc16');
    for (const m of ['btrfs', 'ahci', 'usb_storage', 'not_in_that_kernel']) expect(result.modules).not.toContain(m);
    expect(result.modules.length).toBeLessThan(60);
  });
});
