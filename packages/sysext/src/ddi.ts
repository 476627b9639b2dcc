import { open, type FileHandle } from 'node:fs/promises';
import { UserError, architectureEntry, createAtomicOutput, requireCommands, run, ARCHITECTURE_NAMES, type PartitionTypes } from '@mkinitrd-pkg/common';
import { BLOCK, roundUp } from './image.js';

/**
 * The partitions an extension image has: data, verity hash tree, signature. The root
 * types, not the usr ones, as mkosi does (systemd-dissect 252 reports "✗ extension" for
 * usr types, design.md §4).
 */
export type PartitionRole = Extract<keyof PartitionTypes, 'root' | 'root-verity' | 'root-verity-sig'>;

/**
 * The Discoverable Partitions Specification's type GUIDs of an architecture (common's
 * ARCHITECTURES table, design.md §5): systemd only takes an extension whose partition
 * types match its ARCHITECTURE=.
 */
export function partitionTypes(architecture: string): PartitionTypes {
  const entry = architectureEntry(architecture);
  if (!entry) {
    throw new UserError('CONFIG', `no partition types known for architecture ${architecture}`, { hint: `known: ${ARCHITECTURE_NAMES.join(', ')}` });
  }
  return entry.partitionTypes;
}

export interface PartitionInput {
  role: PartitionRole;
  name: string;
  uuid: string;
  /** A file holding the content, or the content itself. */
  content: string | Buffer;
  bytes: number;
}

export interface PartitionLayout {
  number: number;
  role: PartitionRole;
  type: string;
  name: string;
  uuid: string;
  /** Byte offset and size in the image. */
  offset: number;
  size: number;
}

const SECTOR = 512;
/** The first partition at 1 MiB (sfdisk's and everyone's default); the rest 4 KiB-aligned. */
const FIRST_OFFSET = 1 << 20;
/** A GPT's backup: 32 sectors of entries and the header, at the end of the disk. */
const BACKUP_GPT = 33 * SECTOR;
/** GPT attribute 60: read-only (systemd mounts such partitions read-only). */
const READ_ONLY_ATTR = 'GUID:60';

/** Where each partition goes, of which type (for `architecture`), and how big the disk is. */
export function layoutPartitions(parts: readonly PartitionInput[], architecture = 'x86-64'): { partitions: PartitionLayout[]; diskBytes: number } {
  const types = partitionTypes(architecture);
  let offset = FIRST_OFFSET;
  const partitions = parts.map((p, i) => {
    const size = roundUp(Math.max(p.bytes, 1), BLOCK);
    const layout: PartitionLayout = { number: i + 1, role: p.role, type: types[p.role], name: p.name, uuid: p.uuid, offset, size };
    offset = roundUp(offset + size, BLOCK);
    return layout;
  });
  return { partitions, diskBytes: roundUp(offset + BACKUP_GPT, BLOCK) };
}

export function sfdiskScript(labelId: string, partitions: readonly PartitionLayout[]): string {
  const lines = ['label: gpt', `label-id: ${labelId}`, 'unit: sectors', `first-lba: ${FIRST_OFFSET / SECTOR}`, `sector-size: ${SECTOR}`, ''];
  for (const p of partitions) {
    if (!/^[A-Za-z0-9._ -]{1,36}$/.test(p.name)) throw new Error(`bad partition name ${JSON.stringify(p.name)}`);
    lines.push(`start=${p.offset / SECTOR}, size=${p.size / SECTOR}, type=${p.type}, uuid=${p.uuid}, name="${p.name}", attrs="${READ_ONLY_ATTR}"`);
  }
  return lines.join('\n') + '\n';
}

async function copyInto(out: FileHandle, content: string | Buffer, offset: number): Promise<void> {
  if (Buffer.isBuffer(content)) {
    await out.write(content, 0, content.length, offset);
    return;
  }
  const input = await open(content, 'r');
  try {
    const buf = Buffer.alloc(1 << 20);
    let pos = 0;
    for (;;) {
      const { bytesRead } = await input.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) break;
      await out.write(buf, 0, bytesRead, offset + pos);
      pos += bytesRead;
    }
  } finally {
    await input.close();
  }
}

/** A GPT name holds 36 UTF-16 units; keep the suffix (-verity, -verity-sig) readable. */
export function partitionName(base: string, suffix = ''): string {
  return base.slice(0, 36 - suffix.length) + suffix;
}

/**
 * Write a GPT disk image (a DDI) atomically: size the temporary file, let sfdisk write
 * the partition table (fixed label-id and partition UUIDs: no randomness, no loop
 * device), then copy each partition's content to its offset. Sysext images are meant
 * to be world-readable (systemd-sysext, /run/extensions): mode 0644.
 */
export async function writeDdi(path: string, labelId: string, parts: readonly PartitionInput[], architecture = 'x86-64'): Promise<{ partitions: PartitionLayout[]; diskBytes: number }> {
  await requireCommands(['sfdisk'], 'install fdisk');
  const layout = layoutPartitions(parts, architecture);
  const output = await createAtomicOutput(path, 0o644);
  try {
    await output.handle.truncate(layout.diskBytes);
    await run('sfdisk', ['--no-reread', '--no-tell-kernel', '--wipe', 'never', '--wipe-partitions', 'never', '--quiet', output.tempPath], {
      input: sfdiskScript(labelId, layout.partitions),
      explainFailure: (r) => new UserError('COMMAND_FAILED', `sfdisk could not write the partition table of ${path}`, { hint: r.stderr.trim() }),
    });
    for (const [i, p] of layout.partitions.entries()) await copyInto(output.handle, parts[i]!.content, p.offset);
    await output.commit();
  } catch (error) {
    await output.abort();
    throw error;
  }
  return layout;
}
