import { UserError } from '@mkinitrd-pkg/common';
import { BaseCommand } from '../base.js';

export default class Inspect extends BaseCommand {
  static override description = 'List the segments and entries of an initrd image';

  async run(): Promise<void> {
    await this.parse(Inspect);
    throw new UserError('USAGE', 'this command is not implemented yet');
  }
}
