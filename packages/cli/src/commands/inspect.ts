import { Args, Flags } from '@oclif/core';
import { BaseCommand } from '../base.js';

export default class Inspect extends BaseCommand {
  static override description = 'List the segments and entries of an initrd image (like lsinitrd)';

  static override examples = ['<%= config.bin %> inspect /boot/initrd.img', '<%= config.bin %> inspect initrd.img --json'];

  static override args = {
    image: Args.string({ description: 'initrd image (newc cpio segments, compressed or not)', required: true }),
  };

  static override flags = {
    json: Flags.boolean({ description: 'print segments, entries and totals as JSON' }),
    'no-entries': Flags.boolean({ description: 'show segments and totals only' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Inspect);
    const { inspectImage, formatInspect } = await import('@mkinitrd-pkg/packer');
    const result = await inspectImage(args.image, { entries: !flags['no-entries'] });
    // Extension images the initrd carries (var/lib/extensions, /.extra/sysext …): read by
    // the sysext package, which knows the DDI format.
    const { listImageExtensions, formatExtension } = await import('@mkinitrd-pkg/sysext');
    const extensions = (await listImageExtensions(args.image)).map(({ partitions: _p, release: _r, ...e }) => e);
    if (flags.json) this.printJson({ ...result, extensions });
    else {
      process.stdout.write(formatInspect(result));
      process.stdout.write(extensions.length ? extensions.map((e) => formatExtension(e) + '\n').join('') : 'extensions: none\n');
    }
  }
}
