import { UserError } from '@mkinitrd-pkg/common';
import { BaseCommand } from '../base.js';

export default class Extract extends BaseCommand {
  static override description = 'Extract an initrd image into a directory';

  async run(): Promise<void> {
    await this.parse(Extract);
    throw new UserError('USAGE', 'this command is not implemented yet');
  }
}
