import { Args, Flags } from '@oclif/core';
import { BaseCommand } from '../base.js';

export default class Inspect extends BaseCommand {
  static override description = 'List the segments and entries of an initrd image (like lsinitrd), or the sections of a UKI and its initrd';

  static override examples = ['<%= config.bin %> inspect /boot/initrd.img', '<%= config.bin %> inspect initrd.img --json'];

  static override args = {
    image: Args.string({ description: 'initrd image (newc cpio segments, compressed or not) or UKI (PE)', required: true }),
  };

  static override flags = {
    json: Flags.boolean({ description: 'print segments, entries and totals as JSON' }),
    'no-entries': Flags.boolean({ description: 'show segments and totals only' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Inspect);
    const { isPeImage, inspectUki, formatUkiInspect } = await import('@mkinitrd-pkg/builder');
    if (await isPeImage(args.image).catch(() => false)) {
      const uki = await inspectUki(args.image, { entries: !flags['no-entries'] });
      if (flags.json) this.printJson(uki);
      else process.stdout.write(formatUkiInspect(uki));
      return;
    }
    const { inspectImage, formatInspect } = await import('@mkinitrd-pkg/packer');
    const result = await inspectImage(args.image, { entries: !flags['no-entries'] });
    if (flags.json) this.printJson(result);
    else process.stdout.write(formatInspect(result));
  }
}
