import { UserError } from '@mkinitrd-pkg/common';
import { BaseCommand } from '../base.js';

export default class SysextBuild extends BaseCommand {
  static override description = 'Build a systemd-sysext extension image';

  async run(): Promise<void> {
    await this.parse(SysextBuild);
    throw new UserError('USAGE', 'this command is not implemented yet');
  }
}
