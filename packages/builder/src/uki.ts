import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { UserError, architectureEntry, copyFileAtomically, formatBytes, isUserError, pathExists, requireCommands, run, withAtomicOutput } from '@mkinitrd-pkg/common';
import { formatInspect, inspectImage, type InspectOptions, type InspectResult } from '@mkinitrd-pkg/packer';
import { normalizePeTimestamp, readPeHeaders, sectionData, type PeSection } from './pe.js';

/**
 * Unified Kernel Images (UAPI.5 "Unified Kernel Image" specification; systemd-stub(7)):
 * systemd-stub with the kernel, the initrd and their metadata as PE sections.
 *
 * The assembler is binutils' objcopy, not ukify: objcopy is on every build host (binutils),
 * while ukify exists only from Debian 13 on and needs python3 + pefile; objcopy adds
 * sections without us writing PE by hand. Its one non-reproducible output (the COFF
 * timestamp, and so the checksum) is normalised (pe.ts).
 */

/** Where systemd's packages put the x86-64 stub (systemd-boot-efi on Debian). */
export const STUB_PATH = 'usr/lib/systemd/boot/efi/linuxx64.efi.stub';

/** The stub of an architecture: linux<EFI suffix>.efi.stub (common's ARCHITECTURES table). */
export function stubPath(architecture: string): string {
  const efi = architectureEntry(architecture)?.efi;
  if (!efi) throw new UserError('CONFIG', `Format=uki: no UEFI stub for architecture ${architecture}`, { hint: 'build a cpio initrd (Format=cpio) for this architecture' });
  return `usr/lib/systemd/boot/efi/linux${efi}.efi.stub`;
}

export interface UkiInput {
  stub: string;
  kernel: string;
  initrd: string;
  /** os-release of the image (what boot menus show). */
  osRelease: string;
  kernelVersion: string;
  cmdline: string | undefined;
  output: string;
  /** Scratch directory (removed by the caller). */
  workDir: string;
  sourceDateEpoch: number;
  sign?: { key: string; cert: string } | undefined;
}

function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

/**
 * Build the UKI: sections in ukify's order with .linux last (systemd's ukify.py: the stub
 * and tools expect the kernel at the end), each at the next section-aligned address after
 * the stub's own. Signed with sbsign when a key is given, then written atomically.
 */
export async function writeUki(input: UkiInput): Promise<{ sections: string[] }> {
  await requireCommands(['objcopy'], 'install binutils (objcopy assembles the UKI)');
  if (input.sign) await requireCommands(['sbsign'], 'install sbsigntool (sbsign signs the UKI for Secure Boot)');
  const stub = await readFile(input.stub);
  const headers = readPeHeaders(stub, `the stub ${input.stub}`);
  const parts: Array<{ name: string; file: string }> = [];
  const text = async (name: string, content: string) => {
    const file = join(input.workDir, `section${name}`);
    await writeFile(file, content);
    parts.push({ name, file });
  };
  await text('.osrel', input.osRelease.endsWith('\n') ? input.osRelease : input.osRelease + '\n');
  if (input.cmdline) await text('.cmdline', input.cmdline);
  await text('.uname', input.kernelVersion);
  parts.push({ name: '.initrd', file: input.initrd });
  parts.push({ name: '.linux', file: input.kernel });

  let address = alignUp(Math.max(...headers.sections.map((s) => s.virtualAddress + s.virtualSize)), headers.sectionAlignment);
  const args: string[] = [];
  for (const part of parts) {
    const size = (await readFile(part.file)).length;
    args.push('--add-section', `${part.name}=${part.file}`, '--change-section-vma', `${part.name}=0x${(headers.imageBase + BigInt(address)).toString(16)}`);
    args.push('--set-section-flags', `${part.name}=contents,alloc,load,readonly,data`);
    address = alignUp(address + size, headers.sectionAlignment);
  }
  const unsigned = join(input.workDir, 'uki.unsigned.efi');
  await run('objcopy', [...args, input.stub, unsigned]);
  const image = await readFile(unsigned);
  normalizePeTimestamp(image, input.sourceDateEpoch);
  await writeFile(unsigned, image);

  let final = unsigned;
  if (input.sign) {
    for (const f of [input.sign.key, input.sign.cert]) {
      if (!(await pathExists(f))) throw new UserError('SIGNING', `Secure Boot signing file not found: ${f}`, { hint: 'check --sign-key/--sign-cert (SecureBootKey=/SecureBootCertificate=)' });
    }
    final = join(input.workDir, 'uki.signed.efi');
    try {
      await run('sbsign', ['--key', input.sign.key, '--cert', input.sign.cert, '--output', final, unsigned]);
    } catch (error) {
      throw new UserError('SIGNING', `sbsign could not sign the UKI with ${basename(input.sign.key)}`, {
        hint: 'the key must be an unencrypted PEM private key and the certificate its PEM X.509 certificate',
        cause: error,
      });
    }
  }
  const bytes = await readFile(final);
  await withAtomicOutput(input.output, (out) => out.handle.writeFile(bytes));
  return { sections: [...headers.sections.map((s) => s.name), ...parts.map((p) => p.name)] };
}

/**
 * Extensions for the UKI go where systemd-stub looks for them: NAME.efi.extra.d/*.raw
 * beside the UKI; the stub passes them to the initrd as /.extra/sysext/ (systemd-stub(7)).
 * Each copy is written under a temporary name and renamed.
 */
export async function placeUkiExtensions(uki: string, extensions: readonly string[]): Promise<string[]> {
  const dir = `${uki}.extra.d`;
  const placed: string[] = [];
  for (const ext of extensions) {
    if (!ext.endsWith('.raw')) throw new UserError('USAGE', `extension ${ext} must be a .raw image`, { hint: 'systemd-stub only picks up *.raw from NAME.efi.extra.d/' });
    if (!(await pathExists(ext))) throw new UserError('INPUT', `extension not found: ${ext}`);
    const target = join(dir, basename(ext));
    await copyFileAtomically(ext, target);
    placed.push(target);
  }
  return placed;
}

export interface UkiInfo {
  sections: Array<PeSection & { bytes: number }>;
  kernelVersion: string | undefined;
  cmdline: string | undefined;
  osRelease: string | undefined;
  signed: boolean;
  initrd: Buffer | undefined;
}

/** Is this file a PE image (a UKI) rather than a cpio? Only the first bytes are read. */
export async function isPeImage(path: string): Promise<boolean> {
  const { open } = await import('node:fs/promises');
  const handle = await open(path, 'r');
  try {
    const head = Buffer.alloc(2);
    await handle.read(head, 0, 2, 0);
    return head.toString('latin1') === 'MZ';
  } finally {
    await handle.close();
  }
}

/** The sections and metadata of a UKI, and its initrd's bytes (for the packer's inspect). */
export async function readUki(path: string): Promise<UkiInfo> {
  const buf = await readFile(path);
  let headers;
  try {
    headers = readPeHeaders(buf, path);
  } catch (error) {
    if (isUserError(error)) throw error;
    throw new UserError('INPUT', `${path}: cannot read the PE headers`, { cause: error });
  }
  const get = (name: string) => {
    const s = headers.sections.find((x) => x.name === name);
    return s ? sectionData(buf, s) : undefined;
  };
  const str = (name: string) => get(name)?.toString('utf8').replace(/\0+$/, '');
  return {
    sections: headers.sections.map((s) => ({ ...s, bytes: Math.min(s.virtualSize || s.rawSize, s.rawSize) })),
    kernelVersion: str('.uname')?.trim(),
    cmdline: str('.cmdline')?.trim(),
    osRelease: str('.osrel'),
    signed: headers.certificateTable.size > 0,
    initrd: get('.initrd'),
  };
}


export interface UkiInspectResult {
  path: string;
  size: number;
  kernelVersion: string | undefined;
  cmdline: string | undefined;
  osRelease: Record<string, string>;
  signed: boolean;
  sections: Array<{ name: string; virtualAddress: number; bytes: number }>;
  /** The .initrd section, as `inspect` shows a plain image. */
  initrd: InspectResult | undefined;
}

/** `inspect` for a UKI: its sections and metadata, then the packer's inspect of .initrd. */
export async function inspectUki(path: string, options: InspectOptions = {}): Promise<UkiInspectResult> {
  const info = await readUki(path);
  let initrd: InspectResult | undefined;
  if (info.initrd) {
    const dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-uki-'));
    try {
      await writeFile(join(dir, 'initrd'), info.initrd, { mode: 0o600 });
      initrd = { ...(await inspectImage(join(dir, 'initrd'), options)), path: `${path}:.initrd` };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  const osRelease: Record<string, string> = {};
  for (const line of (info.osRelease ?? '').split('\n')) {
    const m = /^([A-Z_0-9]+)=(.*)$/.exec(line.trim());
    if (m) osRelease[m[1]!] = m[2]!.replace(/^"(.*)"$/, '$1');
  }
  return {
    path,
    size: (await readFile(path)).length,
    kernelVersion: info.kernelVersion,
    cmdline: info.cmdline,
    osRelease,
    signed: info.signed,
    sections: info.sections.map((s) => ({ name: s.name, virtualAddress: s.virtualAddress, bytes: s.bytes })),
    initrd,
  };
}

export function formatUkiInspect(result: UkiInspectResult): string {
  const lines = [
    `UKI: ${result.path}: ${formatBytes(result.size)}, ${result.signed ? 'signed (Authenticode)' : 'not signed'}`,
    `  kernel:  ${result.kernelVersion ?? '(no .uname)'}`,
    `  cmdline: ${result.cmdline ?? '(no .cmdline)'}`,
    `  os:      ${result.osRelease.PRETTY_NAME ?? result.osRelease.NAME ?? '(no .osrel)'}${result.osRelease.VARIANT ? ` — ${result.osRelease.VARIANT}` : ''}`,
    '  sections:',
    ...result.sections.map((s) => `    ${s.name.padEnd(9)} 0x${s.virtualAddress.toString(16).padStart(8, '0')} ${formatBytes(s.bytes).padStart(10)}`),
    '',
  ];
  return lines.join('\n') + (result.initrd ? formatInspect(result.initrd) : 'no .initrd section\n');
}
