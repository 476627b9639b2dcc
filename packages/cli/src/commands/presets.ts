import { UserError } from '@mkinitrd-pkg/common';
import { BaseCommand } from '../base.js';

export default class Presets extends BaseCommand {
  static override description = 'List the available presets';

  async run(): Promise<void> {
    await this.parse(Presets);
    throw new UserError('USAGE', 'this command is not implemented yet');
  }
}
