import { Flags } from '@oclif/core';
import { UserError, formatBytes } from '@mkinitrd-pkg/common';
import type { SysextBuildResult } from '@mkinitrd-pkg/sysext';
import { BaseCommand } from '../base.js';

export default class SysextBuild extends BaseCommand {
  static override description = `Build a systemd-sysext extension image for an initrd (or a system)

Installs the definition's packages (sysext/NAME.conf) over the base on an overlay and keeps only what they add under /usr and /opt, pruned like the base, as a reproducible squashfs or erofs in a GPT disk image (DDI), optionally with dm-verity and a signature.`;

  static override examples = [
    '<%= config.bin %> sysext build --definition lvm --preset debian --output lvm.raw',
    '<%= config.bin %> sysext build --definition raid --base initrd.img --output raid.raw --verity',
    '<%= config.bin %> sysext build --definition debug --base /boot/initrd.img-$(uname -r) --preset debian --output debug.raw',
    '<%= config.bin %> sysext build --definition ./my.conf --preset debian --output my.raw --sign-key db.key --sign-cert db.crt',
  ];

  static override flags = {
    definition: Flags.string({ char: 'd', description: 'extension definition: a name (sysext/NAME.conf) or a .conf file', required: true }),
    base: Flags.string({ char: 'b', description: 'base to extend: an initrd image, an unpacked initrd or an installroot directory' }),
    preset: Flags.string({ char: 'p', description: "base = this preset's installroot; with --base: the preset whose repositories to use (default: the base's os-release ID)" }),
    config: Flags.string({ char: 'c', description: 'extra config file applied to the preset (repeatable)', multiple: true }),
    output: Flags.string({ char: 'o', description: 'image to write, NAME.raw (a directory or trailing / gives DIR/DEFINITION.raw)', required: true }),
    format: Flags.option({ options: ['squashfs', 'erofs'] as const, description: 'file system of the extension', default: 'squashfs' })(),
    verity: Flags.boolean({ description: 'add a dm-verity hash partition and write NAME.roothash' }),
    'sign-key': Flags.string({ description: 'sign the verity root hash with this private key (implies --verity)' }),
    'sign-cert': Flags.string({ description: 'X.509 certificate of --sign-key' }),
    scope: Flags.option({ options: ['initrd', 'system'] as const, description: "where the extension applies (SYSEXT_SCOPE=; default: the definition's Scope=, else initrd)" })(),
    'any-distro': Flags.boolean({ description: "mark the extension ID=_any instead of the base's distribution and version" }),
    'source-date-epoch': Flags.integer({ description: 'timestamp for reproducible output (default: $SOURCE_DATE_EPOCH or the newest package)', min: 0, max: 4294967295 }),
    'cache-dir': Flags.string({ description: 'package and base installroot cache (default: ~/.cache/mkinitrd-pkg)' }),
    'no-overlay': Flags.boolean({ description: 'install into a copy of the base instead of an overlay', hidden: true }),
    json: Flags.boolean({ description: 'print the result as JSON on stdout' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(SysextBuild);
    if (flags.base === undefined && flags.preset === undefined) {
      throw new UserError('USAGE', 'name the base: --base IMAGE|DIR or --preset NAME', { hint: "e.g. --preset debian (the preset's installroot) or --base /boot/initrd.img-$(uname -r)" });
    }
    const { buildSysext } = await import('@mkinitrd-pkg/sysext');
    const result = await buildSysext({
      definition: flags.definition,
      output: flags.output,
      format: flags.format,
      ...(flags.base !== undefined && { base: flags.base }),
      ...(flags.preset !== undefined && { preset: flags.preset }),
      ...(flags.config !== undefined && { configFiles: flags.config }),
      ...(flags.verity && { verity: true }),
      ...(flags['sign-key'] !== undefined && { signKey: flags['sign-key'] }),
      ...(flags['sign-cert'] !== undefined && { signCert: flags['sign-cert'] }),
      ...(flags.scope !== undefined && { scope: flags.scope }),
      ...(flags['any-distro'] && { anyDistro: true }),
      ...(flags['source-date-epoch'] !== undefined && { sourceDateEpoch: flags['source-date-epoch'] }),
      ...(flags['cache-dir'] !== undefined && { cacheDir: flags['cache-dir'] }),
      ...(flags['no-overlay'] && { overlay: 'never' as const }),
      logger: this.logger,
    });
    if (flags.json) this.printJson(result);
    else process.stdout.write(renderSysextSummary(result));
  }
}

export function renderSysextSummary(r: SysextBuildResult): string {
  const lines: string[] = [];
  lines.push(`${r.path}: ${formatBytes(r.imageBytes)} DDI, ${r.format} ${formatBytes(r.filesystemBytes)}, extension "${r.name}" for ${r.scope}`);
  lines.push(`  sha256 ${r.sha256}`);
  if (r.roothash) lines.push(`  roothash ${r.roothash}${r.signaturePath ? ' (signed)' : ''}`);
  for (const p of r.partitions) lines.push(`  ${String(p.number)} ${p.role.padEnd(16)} ${p.uuid} ${formatBytes(p.size).padStart(10)}  ${p.name}`);
  lines.push(`  ${Object.entries(r.extensionRelease).map(([k, v]) => `${k}=${v}`).join(' ')}`);
  lines.push(`base: ${r.base.kind} ${r.base.source}${r.base.cached ? ' (cached)' : ''}   packages added: ${r.packages.map((p) => p.name).join(' ') || '-'}`);
  lines.push(`content: ${r.files} files, ${formatBytes(r.bytes)}; pruned ${r.pruned.totalFiles} files (${formatBytes(r.pruned.totalBytes)}); ${r.dropped.identical} identical to the base dropped`);
  lines.push(`SOURCE_DATE_EPOCH: ${r.sourceDateEpoch}   layering: ${r.layering}`);
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n') + '\n';
}
