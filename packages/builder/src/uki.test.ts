import { mkdtemp as makeTemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { STUB_PATH, isPeImage, placeUkiExtensions, stubPath } from './uki.js';

const dirs: string[] = [];
const mkdtemp = async (prefix: string) => {
  const dir = await makeTemp(prefix);
  dirs.push(dir);
  return dir;
};
afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

describe('UKI extensions and detection', () => {
  it('places extensions in NAME.efi.extra.d/ (where systemd-stub looks), leaving no temporary files', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-uki-unit-'));
    const ext = join(dir, 'lvm.raw');
    await writeFile(ext, Buffer.alloc(200_000, 7));
    const uki = join(dir, 'debian-6.12.efi');
    const placed = await placeUkiExtensions(uki, [ext]);
    expect(placed).toEqual([join(`${uki}.extra.d`, 'lvm.raw')]);
    expect(await readdir(`${uki}.extra.d`)).toEqual(['lvm.raw']);
    expect((await readFile(placed[0]!)).equals(await readFile(ext))).toBe(true);
  });

  it('rejects an extension that is not *.raw or does not exist', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-uki-unit-'));
    await writeFile(join(dir, 'x.img'), 'x');
    await expect(placeUkiExtensions(join(dir, 'a.efi'), [join(dir, 'x.img')])).rejects.toThrow(/must be a \.raw image/);
    await expect(placeUkiExtensions(join(dir, 'a.efi'), [join(dir, 'none.raw')])).rejects.toThrow(/extension not found/);
  });

  it('tells a PE image from a cpio by its first bytes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-uki-unit-'));
    await writeFile(join(dir, 'pe'), Buffer.from('MZ\x90\x00'));
    await writeFile(join(dir, 'cpio'), '070701');
    expect(await isPeImage(join(dir, 'pe'))).toBe(true);
    expect(await isPeImage(join(dir, 'cpio'))).toBe(false);
  });
});

describe('stubPath', () => {
  it("is systemd-boot's stub of the image architecture (common's ARCHITECTURES)", () => {
    expect(stubPath('x86-64')).toBe(STUB_PATH);
    expect(stubPath('arm64')).toBe('usr/lib/systemd/boot/efi/linuxaa64.efi.stub');
    expect(() => stubPath('s390x')).toThrow('Format=uki: no UEFI stub for architecture s390x');
  });
});
