import { UserError } from '@mkinitrd-pkg/common';
import { BaseCommand } from '../base.js';

export default class Summary extends BaseCommand {
  static override description = 'Print the resolved configuration';

  async run(): Promise<void> {
    await this.parse(Summary);
    throw new UserError('USAGE', 'this command is not implemented yet');
  }
}
