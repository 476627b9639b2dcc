import { mkdir, mkdtemp, rename, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { hasCommand } from '@mkinitrd-pkg/common';
import { formatVerity, makeFilesystem, signaturePartition } from './image.js';
import { writeDdi, partitionName } from './ddi.js';
import { rootHashUuids, derivedUuid } from './uuid.js';
import { checkInitrdExtension, formatExtension, listImageExtensions, readExtensionImage } from './read.js';
import { packTree } from '@mkinitrd-pkg/packer';
import { copyFile } from 'node:fs/promises';

/** Real images (mksquashfs, veritysetup, sfdisk), read back without mounting. */
const tools = (await hasCommand('mksquashfs')) && (await hasCommand('sfdisk')) && (await hasCommand('veritysetup')) && (await hasCommand('unsquashfs'));
let dir: string;

async function image(name: string, o: { scope?: string; verity?: boolean; fakeSig?: boolean }): Promise<string> {
  const tree = join(dir, `${name}-${o.scope ?? 'none'}-${o.verity ? 'v' : 'p'}`);
  await mkdir(join(tree, 'usr/lib/extension-release.d'), { recursive: true });
  await writeFile(join(tree, 'usr/lib/extension-release.d', `extension-release.${name}`), `ID=debian\nVERSION_ID=12\n${o.scope ? `SYSEXT_SCOPE=${o.scope}\n` : ''}`);
  const fs = `${tree}.squashfs`;
  await makeFilesystem({ format: 'squashfs', source: tree, output: fs, sourceDateEpoch: 1700000000, contentDigest: name });
  const parts = [];
  if (o.verity) {
    const v = await formatVerity(fs, `${tree}.verity`);
    const u = rootHashUuids(v.roothash);
    parts.push({ role: 'root' as const, name, uuid: u.data, content: fs, bytes: (await import('node:fs')).statSync(fs).size });
    parts.push({ role: 'root-verity' as const, name: partitionName(name, '-verity'), uuid: u.verity, content: v.hashPath, bytes: v.hashBytes });
    if (o.fakeSig) {
      const sig = signaturePartition(v.roothash, 'ab'.repeat(32), Buffer.from('not a real signature'));
      parts.push({ role: 'root-verity-sig' as const, name: partitionName(name, '-verity-sig'), uuid: derivedUuid('t', v.roothash), content: sig, bytes: sig.length });
    }
  } else {
    parts.push({ role: 'root' as const, name, uuid: derivedUuid('t', name), content: fs, bytes: (await import('node:fs')).statSync(fs).size });
  }
  const out = join(dir, `${tree.split('/').pop()}.raw`);
  await writeDdi(out, derivedUuid('disk', name), parts);
  return out;
}

describe.skipIf(!tools)('reading extension images', () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sysext-read-'));
  });

  it('reads name, scope, file system, verity and the signature partition of a DDI', async () => {
    const plain = await image('lvm', { scope: 'initrd' });
    const info = await readExtensionImage(plain);
    expect(info).toMatchObject({ name: 'lvm', scope: ['initrd'], filesystem: 'squashfs', verity: false, signed: false });
    const signed = await readExtensionImage(await image('raid', { scope: 'initrd system', verity: true, fakeSig: true }));
    expect(signed).toMatchObject({ name: 'raid', scope: ['initrd', 'system'], verity: true, signed: true, certificateFingerprint: 'ab'.repeat(32) });
    expect(signed.roothash).toMatch(/^[0-9a-f]{64}$/);
    expect(formatExtension(signed)).toMatch(/extension "raid" scope initrd,system, squashfs, verity, signed/);
  });

  it('refuses for an initrd: a file name other than NAME.raw, a scope without initrd, a non-DDI', async () => {
    const good = await image('nfs', { scope: 'initrd', verity: true });
    const renamed = join(dir, 'other.raw');
    await rename(good, renamed);
    await expect(checkInitrdExtension(renamed)).rejects.toThrow(/file name is not nfs\.raw/);
    const system = await image('tpm2', { scope: 'system' });
    const named = join(dir, 'tpm2.raw');
    await rename(system, named);
    await expect(checkInitrdExtension(named)).rejects.toThrow(/SYSEXT_SCOPE=system does not include initrd/);
    const junk = join(dir, 'junk.raw');
    await writeFile(junk, Buffer.alloc(8192));
    await expect(readExtensionImage(junk)).rejects.toThrow(/not a disk image with a GPT/);
    await expect(readExtensionImage(join(dir, 'missing.raw'))).rejects.toThrow(/not found/);
  });

  it('an initrd that pins an unsigned image\'s root hash (NAME.roothash, as build --extension writes it) is listed as pinned; a wrong hash is not', async () => {
    const raw = await image('lvm', { scope: 'initrd', verity: true });
    const info = await readExtensionImage(raw);
    const tree = join(dir, 'initrd-tree');
    await mkdir(join(tree, 'var/lib/extensions'), { recursive: true });
    await copyFile(raw, join(tree, 'var/lib/extensions/lvm.raw'));
    await writeFile(join(tree, 'var/lib/extensions/lvm.roothash'), `${info.roothash}\n`);
    const img = join(dir, 'pinned.cpio');
    await packTree({ source: tree, output: img, compression: 'none', owner: 'root', sourceDateEpoch: 1700000000 });
    const [listed] = await listImageExtensions(img);
    expect(listed).toMatchObject({ name: 'lvm', where: '/var/lib/extensions/lvm.raw', pinned: true });
    expect(formatExtension(listed!)).toMatch(/extension "lvm" scope initrd, squashfs, verity, unsigned, root hash pinned/);
    await writeFile(join(tree, 'var/lib/extensions/lvm.roothash'), `${'0'.repeat(64)}\n`);
    await packTree({ source: tree, output: img, compression: 'none', owner: 'root', sourceDateEpoch: 1700000000 });
    const [wrong] = await listImageExtensions(img);
    expect(wrong!.pinned).toBeUndefined();
    expect(formatExtension(wrong!)).toMatch(/verity, unsigned, \d+ bytes$/);
  });
});
