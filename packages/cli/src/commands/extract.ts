import { Args, Flags } from '@oclif/core';
import { formatBytes } from '@mkinitrd-pkg/common';
import { BaseCommand } from '../base.js';

export default class Extract extends BaseCommand {
  static override description = 'Extract an initrd image into a directory (all segments)';

  static override examples = ['<%= config.bin %> extract /boot/initrd.img ./root'];

  static override args = {
    image: Args.string({ description: 'initrd image', required: true }),
    dir: Args.string({ description: 'destination directory (created if missing)', required: true }),
  };

  static override flags = {
    json: Flags.boolean({ description: 'print the result as JSON' }),
    'no-same-owner': Flags.boolean({ description: 'do not restore uid/gid (the default when not root)' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Extract);
    const { extractImage } = await import('@mkinitrd-pkg/packer');
    const result = await extractImage(args.image, args.dir, {
      ...(flags['no-same-owner'] && { preserveOwner: false }),
      logger: this.logger,
    });
    if (flags.json) {
      this.printJson(result);
      return;
    }
    const skipped = result.skipped.length > 0 ? `, ${result.skipped.length} skipped` : '';
    process.stdout.write(
      `${result.destination}: ${result.entries} entries (${result.files} files, ${result.dirs} dirs, ${result.symlinks} symlinks, ` +
        `${result.hardlinks} hard links, ${result.devices + result.fifos + result.sockets} special), ${formatBytes(result.bytes)}${skipped}\n`,
    );
  }
}
