import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasCommand } from '@mkinitrd-pkg/common';
import { derivedUuid, makeFilesystem, writeDdi } from '@mkinitrd-pkg/sysext';
import { expectOneLineError, mkinitrdPkg } from './lib/cli.js';

/**
 * `sysext pack` and `inspect` on a real DDI (mksquashfs + sfdisk), and the bad-input
 * contract of the extension delivery (`sysext pack`, `build --extension`): one line, exit 1,
 * nothing written. Seconds; the boots are in storage-boot.test.ts.
 */
const tools = (await hasCommand('mksquashfs')) && (await hasCommand('sfdisk')) && (await hasCommand('unsquashfs'));
let dir: string;
let lvm: string;

describe.skipIf(!tools)('sysext pack, inspect and bad extensions', () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-sysext-pack-'));
    const tree = join(dir, 'tree');
    await mkdir(join(tree, 'usr/lib/extension-release.d'), { recursive: true });
    await mkdir(join(tree, 'usr/sbin'), { recursive: true });
    await writeFile(join(tree, 'usr/lib/extension-release.d/extension-release.lvm'), 'ID=debian\nVERSION_ID=13\nSYSEXT_SCOPE=initrd\n');
    await writeFile(join(tree, 'usr/sbin/lvm'), '#!/bin/sh\n', { mode: 0o755 });
    await makeFilesystem({ format: 'squashfs', source: tree, output: join(dir, 'fs'), sourceDateEpoch: 1700000000, contentDigest: 'lvm' });
    lvm = join(dir, 'lvm.raw');
    await writeDdi(lvm, derivedUuid('disk', 'lvm'), [{ role: 'root', name: 'lvm', uuid: derivedUuid('part', 'lvm'), content: join(dir, 'fs'), bytes: (await stat(join(dir, 'fs'))).size }]);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('packs an extension initrd that inspect reads back, at var/lib/extensions or .extra/sysext', async () => {
    const out = join(dir, 'ext.cpio');
    const r = await mkinitrdPkg(['sysext', 'pack', lvm, '--output', out]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/\/var\/lib\/extensions\/lvm\.raw: extension "lvm" scope initrd, squashfs, no verity, unsigned/);
    const inspected = await mkinitrdPkg(['inspect', out]);
    expect(inspected.exitCode, inspected.stderr).toBe(0);
    expect(inspected.stdout).toMatch(/var\/lib\/extensions\/lvm\.raw/);
    expect(inspected.stdout).toMatch(/\/var\/lib\/extensions\/lvm\.raw: extension "lvm" scope initrd/);
    const json = JSON.parse((await mkinitrdPkg(['inspect', out, '--json', '--no-entries'])).stdout) as { extensions: { name: string; verity: boolean; signed: boolean }[] };
    expect(json.extensions).toEqual([expect.objectContaining({ name: 'lvm', verity: false, signed: false })]);
    const stub = join(dir, 'stub.cpio');
    const s = await mkinitrdPkg(['sysext', 'pack', lvm, '--target', '.extra/sysext', '--output', stub]);
    expect(s.stdout).toMatch(/\/\.extra\/sysext\/lvm\.raw/);
    // Reproducible: the same image packs to the same bytes.
    const again = join(dir, 'again.cpio');
    await mkinitrdPkg(['sysext', 'pack', lvm, '--output', again]);
    const { readFile } = await import('node:fs/promises');
    expect((await readFile(again)).equals(await readFile(out))).toBe(true);
  });

  it('refuses a file that is not an extension, a misnamed one, and the same name twice; writes nothing', async () => {
    const junk = join(dir, 'junk.raw');
    await writeFile(junk, Buffer.alloc(4096));
    const out = join(dir, 'bad.cpio');
    expectOneLineError(await mkinitrdPkg(['sysext', 'pack', junk, '--output', out]), /junk\.raw is not a disk image with a GPT/);
    const renamed = join(dir, 'other.raw');
    await writeFile(renamed, await (await import('node:fs/promises')).readFile(lvm));
    expectOneLineError(await mkinitrdPkg(['sysext', 'pack', renamed, '--output', out]), /other\.raw: systemd-sysext ignores an extension whose file name is not lvm\.raw/);
    expectOneLineError(await mkinitrdPkg(['sysext', 'pack', lvm, lvm, '--output', out]), /extension "lvm" given twice/);
    expectOneLineError(await mkinitrdPkg(['build', '--preset', 'debian', '--extension', junk, '--output', out]), /junk\.raw is not a disk image with a GPT/);
    await expect(stat(out)).rejects.toThrow();
  });
});
