import { Args, Flags } from '@oclif/core';
import { UserError, createProgress, formatBytes, sourceDateEpochFromEnv } from '@mkinitrd-pkg/common';
import { BaseCommand } from '../base.js';

export default class Pack extends BaseCommand {
  static override description = 'Pack a directory into a reproducible newc cpio initrd';

  static override examples = [
    '<%= config.bin %> pack ./root --output initrd.img',
    '<%= config.bin %> pack ./root -o initrd.img --microcode ./early --compression xz --source-date-epoch 1700000000',
  ];

  static override args = {
    dir: Args.string({ description: 'directory to pack (symlinks inside it are stored, never followed)', required: true }),
  };

  static override flags = {
    output: Flags.string({ char: 'o', description: 'image to write (atomically)', required: true }),
    compression: Flags.option({
      options: ['zstd', 'xz', 'gzip', 'lz4', 'none'] as const,
      default: 'zstd' as const,
      description: 'compression of the main archive',
    })(),
    'compression-level': Flags.integer({ description: 'compression level (default: zstd 3, gzip 6, xz 6, lz4 9)' }),
    microcode: Flags.string({ description: 'directory with kernel/x86/microcode/*.bin, packed first as an uncompressed archive' }),
    'source-date-epoch': Flags.integer({
      description: 'clamp mtimes to this time (seconds since 1970; default: $SOURCE_DATE_EPOCH)',
      min: 0,
      max: 4294967295,
    }),
    owner: Flags.option({
      options: ['keep', 'root'] as const,
      default: 'keep' as const,
      description: 'keep the files\' uid/gid, or store root (0/0) for all',
    })(),
    mode: Flags.string({ description: 'permissions of the output file, octal', default: '0600' }),
    'chunk-size': Flags.integer({ description: 'MiB per separately compressed frame (zstd, gzip, lz4)', hidden: true, min: 1 }),
    json: Flags.boolean({ description: 'print the result as JSON' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Pack);
    if (!/^0?[0-7]{1,4}$/.test(flags.mode)) {
      throw new UserError('USAGE', `--mode must be octal permissions like 0644, not ${JSON.stringify(flags.mode)}`);
    }
    // $SOURCE_DATE_EPOCH is read in one place (common/src/environment.ts), whose error
    // says the value came from the environment; oclif's env: would call it "--source-date-epoch".
    const sourceDateEpoch = flags['source-date-epoch'] ?? sourceDateEpochFromEnv();
    // Loaded here, not at the top: every command's module is imported at start-up.
    const { packTree } = await import('@mkinitrd-pkg/packer');
    const progress = flags.json ? undefined : createProgress('packing');
    const result = await packTree({
      source: args.dir,
      output: flags.output,
      compression: flags.compression,
      ...(flags['compression-level'] !== undefined && { level: flags['compression-level'] }),
      ...(flags.microcode !== undefined && { microcode: flags.microcode }),
      ...(sourceDateEpoch !== undefined && { sourceDateEpoch }),
      ...(flags['chunk-size'] !== undefined && { chunkSize: flags['chunk-size'] * 1024 * 1024 }),
      owner: flags.owner,
      mode: parseInt(flags.mode, 8),
      logger: this.logger,
      ...(progress && { onProgress: (done: number, total: number) => progress.update(formatBytes(done), done, total) }),
    });
    progress?.done();
    if (flags.json) {
      this.printJson(result);
      return;
    }
    const parts = result.segments.map(
      (s) =>
        `${s.role} ${formatBytes(s.size)} ${s.compression === 'none' ? 'uncompressed' : s.compression}` +
        (s.frames > 1 ? ` in ${s.frames} frames` : ''),
    );
    const level = result.compression === 'none' ? '' : ` -${result.level}`;
    process.stdout.write(
      `${result.output}: ${formatBytes(result.size)} (${result.compression}${level}), ${result.entries} entries, ` +
        `${formatBytes(result.dataBytes)} of data; ${parts.join(' + ')}\n`,
    );
  }
}
