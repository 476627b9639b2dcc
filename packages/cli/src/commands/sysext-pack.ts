import { Args, Flags } from '@oclif/core';
import { formatBytes } from '@mkinitrd-pkg/common';
import { BaseCommand } from '../base.js';

export default class SysextPack extends BaseCommand {
  static override description = `Pack extension images into an extension initrd (a small cpio)

For boot loaders that load several initrds (BLS "initrd" lines, GRUB "initrd A B"): the kernel unpacks them over each other, so the generic initrd plus this one boots with the extensions merged by systemd-sysext.`;

  static override strict = false;

  static override examples = [
    '<%= config.bin %> sysext pack lvm.raw raid.raw --output extensions.cpio',
    '<%= config.bin %> sysext pack lvm.raw --output stub.cpio --target .extra/sysext',
  ];

  static override args = {
    images: Args.string({ description: 'extension images NAME.raw (from sysext build)', required: true }),
  };

  static override flags = {
    output: Flags.string({ char: 'o', description: 'cpio to write (atomically)', required: true }),
    target: Flags.option({
      options: ['var/lib/extensions', '.extra/sysext'] as const,
      default: 'var/lib/extensions' as const,
      description: "directory in the initrd (.extra/sysext is systemd-stub's: systemd >= 254 accepts only signed images there)",
    })(),
    compression: Flags.option({
      options: ['zstd', 'none', 'xz', 'gzip', 'lz4'] as const,
      default: 'zstd' as const,
      description: 'compression; zstd (default) boots even when appended at an unaligned offset, none only at a 4-byte aligned one',
    })(),
    'source-date-epoch': Flags.integer({ description: 'mtime of the entries', env: 'SOURCE_DATE_EPOCH', min: 0 }),
    json: Flags.boolean({ description: 'print the result as JSON' }),
  };

  async run(): Promise<void> {
    const { argv, flags } = await this.parse(SysextPack);
    const { packExtensions, formatExtension } = await import('@mkinitrd-pkg/sysext');
    const result = await packExtensions({
      extensions: argv as string[],
      output: flags.output,
      target: flags.target,
      compression: flags.compression,
      ...(flags['source-date-epoch'] !== undefined && { sourceDateEpoch: flags['source-date-epoch'] }),
      logger: this.logger,
    });
    if (flags.json) {
      this.printJson({ output: result.pack.output, size: result.pack.size, extensions: result.extensions.map(({ partitions: _p, release: _r, ...e }) => e) });
      return;
    }
    process.stdout.write(`${result.pack.output}: ${formatBytes(result.pack.size)} (${result.pack.compression})\n`);
    for (const e of result.extensions) process.stdout.write(`  ${formatExtension(e)}\n`);
  }
}
