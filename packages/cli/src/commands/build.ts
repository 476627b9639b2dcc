import { UserError } from '@mkinitrd-pkg/common';
import { BaseCommand } from '../base.js';

export default class Build extends BaseCommand {
  static override description = 'Build an initrd from distribution packages';

  async run(): Promise<void> {
    await this.parse(Build);
    throw new UserError('USAGE', 'this command is not implemented yet');
  }
}
