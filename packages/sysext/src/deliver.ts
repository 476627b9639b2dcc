import { link, copyFile, mkdir, rm, mkdtemp } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { UserError, getLogger, type Logger } from '@mkinitrd-pkg/common';
import { packTree, type Compression, type PackResult } from '@mkinitrd-pkg/packer';
import { checkInitrdExtension, type ExtensionInfo } from './read.js';

/**
 * Where delivered extensions go inside the initrd. `var/lib/extensions` is the default:
 * systemd-sysext reads it in every version (252 in Debian 12, 257 in Debian 13), and its
 * image policy there accepts unsigned images (systemd-sysext(8), "--image-policy": the
 * default for /var/lib/extensions allows verity, signed and unprotected file systems).
 * `.extra/sysext` is where systemd-stub puts extensions it finds next to a UKI: systemd
 * 252 does not read it at all, and systemd >= 254 applies a strict policy there (only
 * signed verity images whose certificate the initrd trusts: design.md §4b, measured with
 * 257) — choose it only to emulate the stub.
 */
export const EXTENSION_TARGETS = ['var/lib/extensions', '.extra/sysext'] as const;
export type ExtensionTarget = (typeof EXTENSION_TARGETS)[number];

/**
 * Check extension images before they go into an initrd (NAME.raw named after its
 * extension-release, scope includes initrd, no name twice).
 */
export async function checkExtensions(paths: readonly string[]): Promise<ExtensionInfo[]> {
  const infos: ExtensionInfo[] = [];
  for (const path of paths) {
    const info = await checkInitrdExtension(resolve(path));
    if (infos.some((i) => i.name === info.name)) {
      throw new UserError('INPUT', `extension "${info.name}" given twice (${path})`, { hint: 'systemd-sysext merges one image per name' });
    }
    infos.push(info);
  }
  return infos;
}

/** Put checked extension images into a tree at `target` (hard links where possible, else copies). */
export async function stageExtensions(tree: string, infos: readonly ExtensionInfo[], target: ExtensionTarget = 'var/lib/extensions'): Promise<string[]> {
  const dir = join(tree, target);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const staged: string[] = [];
  for (const info of infos) {
    const dest = join(dir, `${info.name}.raw`);
    await rm(dest, { force: true });
    await link(info.path, dest).catch(() => copyFile(info.path, dest));
    staged.push(`/${target}/${info.name}.raw`);
  }
  return staged;
}

export interface PackExtensionsOptions {
  extensions: readonly string[];
  output: string;
  target?: ExtensionTarget;
  /**
   * Default zstd, although squashfs/erofs are compressed already: the kernel takes an
   * uncompressed archive only at a 4-byte aligned offset of the initrd (init/initramfs.c,
   * unpack_to_rootfs: `*buf == '0' && !(this_header & 3)`, else "invalid magic at start of
   * compressed archive", measured), and a compressed member anywhere; so `cat base ext`
   * boots whatever the base's size.
   */
  compression?: Compression;
  sourceDateEpoch?: number;
  logger?: Logger;
}

export interface PackExtensionsResult {
  pack: PackResult;
  extensions: (ExtensionInfo & { where: string })[];
}

/**
 * An extension initrd: a newc cpio holding only TARGET/NAME.raw, for boot loaders that
 * load several initrds (the kernel unpacks them one over the other: init/initramfs.c).
 */
export async function packExtensions(options: PackExtensionsOptions): Promise<PackExtensionsResult> {
  const logger = options.logger ?? getLogger();
  if (options.extensions.length === 0) throw new UserError('USAGE', 'no extension image given', { hint: 'mkinitrd-pkg sysext pack lvm.raw raid.raw --output extensions.cpio' });
  const infos = await checkExtensions(options.extensions);
  const output = resolve(options.output);
  await mkdir(dirname(output), { recursive: true }).catch(() => undefined);
  const tree = await mkdtemp(join(dirname(output), '.mkinitrd-pkg-sysext-pack-'));
  try {
    const where = await stageExtensions(tree, infos, options.target);
    const pack = await packTree({
      source: tree,
      output,
      compression: options.compression ?? 'zstd',
      owner: 'root',
      mode: 0o644,
      sourceDateEpoch: options.sourceDateEpoch ?? 0,
      logger,
    });
    return { pack, extensions: infos.map((info, i) => ({ ...info, where: where[i]! })) };
  } finally {
    await rm(tree, { recursive: true, force: true });
  }
}
