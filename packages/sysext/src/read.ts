import { mkdir, mkdtemp, open, readFile, readdir, rm, stat, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { UserError, requireCommands, run } from '@mkinitrd-pkg/common';
import { readImage } from '@mkinitrd-pkg/packer';
import { parseOsRelease } from './os-release.js';
import { formatUuid, rootHashUuids } from './uuid.js';

/**
 * Reading an extension image (DDI) back: what `inspect`, `build --extension` and
 * `sysext pack` need to know before they hand an image to systemd-sysext — its name,
 * scope, whether it has dm-verity and a signature. Pure reading: nothing is mounted.
 */

/** Discoverable Partitions Specification, x86-64 (design.md §5): the types a sysext may use. */
const DATA_TYPES: Record<string, string> = {
  '4f68bce3-e8cd-4db1-96e7-fbcaf984b709': 'root',
  '8484680c-9521-48c6-9c11-b0720656f69e': 'usr',
};
const VERITY_TYPES: Record<string, string> = {
  '2c7357ed-ebd2-46d9-aec1-23d437ec2bf5': 'root-verity',
  '77ff5f63-e7b6-4633-acf4-1565b864c0e6': 'usr-verity',
};
const SIGNATURE_TYPES: Record<string, string> = {
  '41092b05-9fc8-4523-994f-2def0408b176': 'root-verity-sig',
  'e7bb33fb-06cf-4e81-8273-e543b413e2e2': 'usr-verity-sig',
};

export interface GptPartition {
  number: number;
  type: string;
  uuid: string;
  name: string;
  offset: number;
  size: number;
}

export interface ExtensionInfo {
  path: string;
  /** NAME of usr/lib/extension-release.d/extension-release.NAME (must equal the file name). */
  name: string;
  /** SYSEXT_SCOPE= (systemd-sysext: absent means "system portable"). */
  scope: string[];
  release: Record<string, string>;
  filesystem: 'squashfs' | 'erofs';
  bytes: number;
  verity: boolean;
  roothash?: string;
  signed: boolean;
  /** sha256 of the signing certificate (DER), from the signature partition. */
  certificateFingerprint?: string;
  partitions: (GptPartition & { role: string })[];
}

/** GPT UUIDs are stored mixed-endian: the first three fields little-endian. */
function gptUuid(b: Buffer): string {
  const swapped = Buffer.concat([Buffer.from(b.subarray(0, 4)).reverse(), Buffer.from(b.subarray(4, 6)).reverse(), Buffer.from(b.subarray(6, 8)).reverse(), b.subarray(8, 16)]);
  return formatUuid(swapped);
}

async function readAt(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  const { bytesRead } = await fh.read(buf, 0, length, offset);
  return buf.subarray(0, bytesRead);
}

/** The partitions of a GPT disk image (UEFI spec §5.3: header at LBA 1, 512-byte sectors). */
export async function readGpt(path: string): Promise<GptPartition[]> {
  const fh = await open(path, 'r');
  try {
    const header = await readAt(fh, 512, 92);
    if (header.length < 92 || header.subarray(0, 8).toString('latin1') !== 'EFI PART') {
      throw new UserError('INPUT', `${path} is not a disk image with a GPT (not an extension image)`, { hint: 'build one with mkinitrd-pkg sysext build' });
    }
    const entriesLba = Number(header.readBigUInt64LE(72));
    const count = header.readUInt32LE(80);
    const entrySize = header.readUInt32LE(84);
    if (count > 1024 || entrySize < 128 || entrySize > 4096) throw new UserError('INPUT', `${path}: implausible GPT (${count} entries of ${entrySize} bytes)`);
    const table = await readAt(fh, entriesLba * 512, count * entrySize);
    const parts: GptPartition[] = [];
    for (let i = 0; i < count; i++) {
      const e = table.subarray(i * entrySize, (i + 1) * entrySize);
      if (e.length < 128 || e.subarray(0, 16).every((x) => x === 0)) continue;
      const first = Number(e.readBigUInt64LE(32));
      const last = Number(e.readBigUInt64LE(40));
      const name = e.subarray(56, 128).toString('utf16le').replace(/\0.*$/s, '');
      parts.push({ number: i + 1, type: gptUuid(e.subarray(0, 16)), uuid: gptUuid(e.subarray(16, 32)), name, offset: first * 512, size: (last - first + 1) * 512 });
    }
    return parts;
  } finally {
    await fh.close();
  }
}

async function copyRange(path: string, offset: number, size: number, out: string): Promise<void> {
  const fh = await open(path, 'r');
  const dst = await open(out, 'w', 0o600);
  try {
    const buf = Buffer.alloc(1 << 20);
    for (let pos = 0; pos < size; ) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - pos), offset + pos);
      if (bytesRead === 0) break;
      await dst.write(buf, 0, bytesRead);
      pos += bytesRead;
    }
  } finally {
    await dst.close();
    await fh.close();
  }
}

/** Read the extension-release file out of a squashfs or erofs file system image, without mounting it. */
async function readExtensionRelease(fsImage: string, filesystem: 'squashfs' | 'erofs', work: string): Promise<{ name: string; text: string }> {
  const releaseDir = 'usr/lib/extension-release.d';
  if (filesystem === 'squashfs') {
    await requireCommands(['unsquashfs'], 'install squashfs-tools');
    const list = await run('unsquashfs', ['-lc', '-no-progress', fsImage, releaseDir]);
    const file = list.stdout.split('\n').map((l) => l.trim()).find((l) => l.includes(`${releaseDir}/extension-release.`));
    if (!file) throw new UserError('INPUT', `${basename(fsImage)}: no ${releaseDir}/extension-release.NAME in the extension`);
    const rel = file.replace(/^squashfs-root\//, '');
    const text = (await run('unsquashfs', ['-cat', fsImage, rel])).stdout;
    return { name: basename(rel).slice('extension-release.'.length), text };
  }
  await requireCommands(['fsck.erofs'], 'install erofs-utils');
  const dir = join(work, 'erofs');
  await run('fsck.erofs', [`--extract=${dir}`, '--no-preserve', fsImage]);
  const names = (await readdir(join(dir, releaseDir)).catch(() => [] as string[])).filter((n) => n.startsWith('extension-release.'));
  if (names.length === 0) throw new UserError('INPUT', `${basename(fsImage)}: no ${releaseDir}/extension-release.NAME in the extension`);
  return { name: names[0]!.slice('extension-release.'.length), text: await readFile(join(dir, releaseDir, names[0]!), 'utf8') };
}

/**
 * What an extension image is: name and scope from its extension-release file, verity
 * and signature from its partitions. Checks what systemd-sysext would check before
 * merging (systemd-sysext(8)): the image's file name is NAME.raw.
 */
export async function readExtensionImage(path: string): Promise<ExtensionInfo> {
  let parts: GptPartition[];
  try {
    parts = await readGpt(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new UserError('INPUT', `extension image not found: ${path}`);
    throw error;
  }
  const roles = parts.map((p) => ({ ...p, role: DATA_TYPES[p.type] ?? VERITY_TYPES[p.type] ?? SIGNATURE_TYPES[p.type] ?? 'other' }));
  const data = roles.find((p) => DATA_TYPES[p.type]);
  if (!data) throw new UserError('INPUT', `${path} has no root or usr data partition: not an extension image`, { hint: 'build one with mkinitrd-pkg sysext build' });
  const verity = roles.find((p) => VERITY_TYPES[p.type]);
  const sig = roles.find((p) => SIGNATURE_TYPES[p.type]);
  const work = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-ddi-'));
  try {
    const fsImage = join(work, 'data');
    await copyRange(path, data.offset, data.size, fsImage);
    const fsHandle = await open(fsImage, 'r');
    const magic = await readAt(fsHandle, 0, 4096).finally(() => fsHandle.close());
    const filesystem = magic.subarray(0, 4).toString('latin1') === 'hsqs' ? 'squashfs' : magic.length >= 1028 && magic.readUInt32LE(1024) === 0xe0f5e1e2 ? 'erofs' : undefined;
    if (!filesystem) throw new UserError('INPUT', `${path}: the data partition is neither squashfs nor erofs`);
    const { name, text } = await readExtensionRelease(fsImage, filesystem, work);
    const release = parseOsRelease(text);
    let roothash: string | undefined;
    let certificateFingerprint: string | undefined;
    if (sig) {
      const fh = await open(path, 'r');
      const raw = await readAt(fh, sig.offset, Math.min(sig.size, 1 << 20)).finally(() => fh.close());
      try {
        const json = JSON.parse(raw.toString('utf8').replace(/\0+$/, '')) as { rootHash?: string; certificateFingerprint?: string };
        roothash = json.rootHash;
        certificateFingerprint = json.certificateFingerprint;
      } catch {
        throw new UserError('INPUT', `${path}: the signature partition does not hold the JSON the specification asks for`);
      }
    }
    if (verity && roothash) {
      const uuids = rootHashUuids(roothash);
      if (uuids.data !== data.uuid || uuids.verity !== verity.uuid) throw new UserError('INPUT', `${path}: the signed root hash does not match the partition UUIDs`);
    } else if (verity) {
      // Unsigned: the root hash is the data partition's UUID + the verity partition's.
      roothash = (data.uuid + verity.uuid).replaceAll('-', '');
    }
    return {
      path,
      name,
      scope: (release.SYSEXT_SCOPE ?? '').split(/\s+/).filter(Boolean),
      release,
      filesystem,
      bytes: (await stat(path)).size,
      verity: verity !== undefined,
      ...(roothash !== undefined && { roothash }),
      signed: sig !== undefined,
      ...(certificateFingerprint !== undefined && { certificateFingerprint }),
      partitions: roles,
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * An extension that an initrd's systemd-sysext will accept: NAME.raw named after its
 * extension-release file, and SYSEXT_SCOPE= including "initrd" when given.
 */
export async function checkInitrdExtension(path: string): Promise<ExtensionInfo> {
  const info = await readExtensionImage(path);
  const file = basename(path);
  if (file !== `${info.name}.raw`) {
    throw new UserError('INPUT', `${file}: systemd-sysext ignores an extension whose file name is not ${info.name}.raw (its extension-release name)`, {
      hint: `rename it to ${info.name}.raw`,
    });
  }
  if (info.scope.length > 0 && !info.scope.includes('initrd')) {
    throw new UserError('INPUT', `${file}: SYSEXT_SCOPE=${info.scope.join(' ')} does not include initrd, so systemd-sysext in an initrd skips it`, {
      hint: 'build it with --scope initrd',
    });
  }
  return info;
}

/** Text for an extension list (inspect, sysext pack). */
export function formatExtension(info: Pick<ExtensionInfo, 'name' | 'scope' | 'verity' | 'signed' | 'bytes' | 'filesystem'> & { where?: string; pinned?: boolean }): string {
  const scope = info.scope.length ? info.scope.join(',') : 'system,portable';
  const pinned = info.pinned ? ', root hash pinned' : '';
  const protection = info.signed ? `verity, signed${pinned}` : info.verity ? `verity, unsigned${pinned}` : 'no verity, unsigned';
  return `${info.where ? info.where + ': ' : ''}extension "${info.name}" scope ${scope}, ${info.filesystem}, ${protection}, ${info.bytes} bytes`;
}

/**
 * Where an initrd's systemd-sysext looks for extensions (systemd-sysext(8); /.extra/sysext
 * is where systemd-stub puts the ones it finds next to a UKI, systemd >= 253).
 */
export const INITRD_EXTENSION_DIRS = ['.extra/sysext', 'var/lib/extensions', 'run/extensions', 'etc/extensions', 'usr/lib/extensions', 'usr/local/lib/extensions'];
const EXTENSION_ENTRY = new RegExp(`^(?:\\./)?(${INITRD_EXTENSION_DIRS.map((d) => d.replaceAll('.', '\\.')).join('|')})/([^/]+\\.raw)$`);
/** NAME.roothash / NAME.usrhash beside NAME.raw: the root hash systemd-sysext uses (build --extension pins it). */
const ROOTHASH_ENTRY = new RegExp(`^(?:\\./)?(${INITRD_EXTENSION_DIRS.map((d) => d.replaceAll('.', '\\.')).join('|')})/([^/]+)\\.(roothash|usrhash)$`);

/** The extension images an initrd image carries (in any segment), each read like readExtensionImage. */
export async function listImageExtensions(image: string): Promise<(ExtensionInfo & { where: string; pinned?: boolean })[]> {
  const work = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-ext-'));
  const found: (ExtensionInfo & { where: string; pinned?: boolean })[] = [];
  const hashes = new Map<string, string>();
  try {
    let n = 0;
    for await (const member of readImage(image)) {
      const h = ROOTHASH_ENTRY.exec(member.entry.name);
      if (h && member.entry.type === 'file') {
        const chunks: Buffer[] = [];
        for await (const chunk of member.data) chunks.push(Buffer.from(chunk as Uint8Array));
        hashes.set(`/${h[1]}/${h[2]}.raw`, Buffer.concat(chunks).toString('utf8').trim().slice(0, 200));
        continue;
      }
      const m = EXTENSION_ENTRY.exec(member.entry.name);
      if (!m || member.entry.type !== 'file') continue;
      const dir = join(work, String(n++));
      await mkdir(dir);
      const file = join(dir, m[2]!);
      await pipeline(Readable.from(member.data), createWriteStream(file, { mode: 0o600 }));
      const info = await readExtensionImage(file);
      found.push({ ...info, path: `/${m[1]}/${m[2]}`, where: `/${m[1]}/${m[2]}` });
      await rm(dir, { recursive: true, force: true });
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  // A later entry of the same name replaces an earlier one (the kernel unpacks in order); a
  // pinned hash counts only if it is the image's own.
  for (const ext of found) if (ext.verity && ext.roothash && hashes.get(ext.where) === ext.roothash) ext.pinned = true;
  return found;
}
