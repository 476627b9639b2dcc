import { Flags } from '@oclif/core';
import { formatBytes } from '@mkinitrd-pkg/common';
import type { BuildExtension, BuildResult } from '@mkinitrd-pkg/builder';
import { BaseCommand } from '../base.js';
import { configFlags, loadConfigFromFlags } from '../config-flags.js';

export default class Build extends BaseCommand {
  static override description = 'Build an initrd from distribution packages';
  static override examples = [
    '<%= config.bin %> build --preset debian --output initrd.img',
    '<%= config.bin %> build --preset debian --kernel-version 6.1.0-28-amd64 --kernel-package ""',
  ];
  static override flags = {
    ...configFlags,
    'source-date-epoch': Flags.integer({ description: 'timestamp for reproducible output (default: $SOURCE_DATE_EPOCH or the newest package)', min: 0, max: 4294967295 }),
    'cache-dir': Flags.string({ description: 'package and installroot cache (default: ~/.cache/mkinitrd-pkg)' }),
    'all-kernels': Flags.boolean({ description: 'one image per kernel found (in KernelPackage=, else in the modules root)' }),
    'no-cache': Flags.boolean({ description: 'neither use nor fill the installroot cache' }),
    refresh: Flags.boolean({ description: 'fetch repository metadata even if it is less than an hour old' }),
    'verify-cache': Flags.boolean({ description: 'check cached trees by their content, not only by their inode metadata (a damaged entry is rebuilt)' }),
    manifest: Flags.string({ description: 'manifest path ({kver} is replaced; "" for none; default IMAGE.manifest.json)' }),
    extension: Flags.string({
      description: 'extension image (NAME.raw, from sysext build): a cpio image carries it as /var/lib/extensions/NAME.raw, a UKI gets it beside it in NAME.efi.extra.d/; repeatable',
      multiple: true,
    }),
    'verity-cert': Flags.string({
      description: 'certificate the initrd trusts for signed extensions (/etc/verity.d/; systemd >= 256 checks signatures against it); repeatable',
      multiple: true,
    }),
    'kernel-output': Flags.string({ description: 'also write the kernel image (vmlinuz) of each kernel here ({kver} is replaced)' }),
    json: Flags.boolean({ description: 'print the build result (manifest data) as JSON on stdout' }),
    'kernel-image': Flags.string({ description: "the kernel put into the UKI (default: the kernel package's, or /boot/vmlinuz-KVER)" }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Build);
    const config = await loadConfigFromFlags(flags);
    // Checked before the (long) build: a wrong name or scope fails in a second.
    const extensions = flags.extension?.length ? await (await import('@mkinitrd-pkg/sysext')).checkExtensions(flags.extension) : [];
    const { buildInitrd } = await import('@mkinitrd-pkg/builder');
    const result = await buildInitrd({
      config,
      ...(flags['cache-dir'] !== undefined && { cacheDir: flags['cache-dir'] }),
      ...(flags['source-date-epoch'] !== undefined && { sourceDateEpoch: flags['source-date-epoch'] }),
      ...(flags.manifest !== undefined && { manifest: flags.manifest }),
      ...(flags['kernel-output'] !== undefined && { kernelOutput: flags['kernel-output'] }),
      useCache: !flags['no-cache'],
      allKernels: flags['all-kernels'],
      refresh: flags.refresh,
      verifyCache: flags['verify-cache'],
      extensions: extensions.map((e) => ({ name: e.name, path: e.path, ...(e.verity && e.roothash && { verity: verityLayout(e.roothash, e.partitions) }) })),
      ...(flags['verity-cert'] !== undefined && { verityCerts: flags['verity-cert'] }),
      ...(flags['kernel-image'] !== undefined && { kernelImage: flags['kernel-image'] }),
      logger: this.logger,
    });
    if (flags.json) this.printJson(result);
    else process.stdout.write(renderSummary(result));
  }
}

/**
 * A verity image's root hash and partitions, for the builder to check and pin. A signed
 * image's root hash (from its signature partition, matched with the partition UUIDs) is
 * pinned too: systemd still loads and checks the signature for it.
 */
function verityLayout(roothash: string, partitions: { role: string; offset: number; size: number }[]): BuildExtension['verity'] {
  const data = partitions.find((p) => p.role === 'root' || p.role === 'usr');
  const hash = partitions.find((p) => p.role === 'root-verity' || p.role === 'usr-verity');
  if (!data || !hash) return undefined;
  return { roothash, designator: data.role === 'usr' ? 'usr' : 'root', data: { offset: data.offset, size: data.size }, hash: { offset: hash.offset, size: hash.size } };
}

export function renderSummary(result: BuildResult): string {
  const lines: string[] = [];
  for (const image of result.images) {
    const kind = image.format === 'uki' ? `UKI${image.signed ? ', signed' : ''}, initrd ${result.compression}` : result.compression;
    lines.push(`${image.path}: ${formatBytes(image.bytes)} (${kind}), kernel ${image.kernelVersion}, ${image.modules.length} modules, ${image.firmware.length} firmware files`);
    lines.push(`  sha256 ${image.sha256}`);
    for (const ext of image.extensions) lines.push(`  extension ${ext.name} at ${ext.path}${ext.roothash ? `, root hash ${ext.roothash.slice(0, 16)}… pinned (dm-verity)` : ''}`);
    if (image.missingFirmware.length > 0) lines.push(`  firmware missing: ${image.missingFirmware.length} files, ${image.missingFirmwareReason} (listed in the manifest)`);
  }
  lines.push(`packages: ${result.packages.length}   SOURCE_DATE_EPOCH: ${result.sourceDateEpoch}   installroot cache: ${result.cache}`);
  lines.push(`tools: ${result.tools.tree === 'host' ? 'the host (ToolsTree=host)' : `${result.tools.distribution} ${result.tools.release} packages (${result.tools.packages.length}, ToolsTree=${result.tools.tree})`}`);
  lines.push(`pruned: ${formatBytes(result.prune.totalBytes)} in ${result.prune.totalFiles} files`);
  for (const rule of result.prune.rules.filter((r) => r.files > 0)) {
    lines.push(`  ${rule.name.padEnd(16)} ${formatBytes(rule.bytes).padStart(10)}  ${rule.files} files`);
  }
  lines.push('size by directory (before modules):');
  for (const [dir, bytes] of Object.entries(result.sizeByDirectory).slice(0, 8)) {
    lines.push(`  ${dir.padEnd(16)} ${formatBytes(bytes).padStart(10)}`);
  }
  lines.push(`time: ${result.phases.map((p) => `${p.phase} ${p.seconds.toFixed(1)}s`).join(', ')}`);
  for (const warning of result.warnings) lines.push(`warning: ${warning}`);
  return lines.join('\n') + '\n';
}
