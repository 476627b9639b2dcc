import { UserError } from '@mkinitrd-pkg/common';
import { BaseCommand } from '../base.js';

export default class Pack extends BaseCommand {
  static override description = 'Pack a directory into a reproducible newc cpio initrd';

  async run(): Promise<void> {
    await this.parse(Pack);
    throw new UserError('USAGE', 'this command is not implemented yet');
  }
}
