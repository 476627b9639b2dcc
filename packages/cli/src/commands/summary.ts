import { Flags } from '@oclif/core';
import { BaseCommand } from '../base.js';
import { configFlags, loadConfigFromFlags } from '../config-flags.js';

export default class Summary extends BaseCommand {
  static override description = 'Print the resolved configuration (presets, drop-ins, --config files and flags merged)';
  static override flags = { ...configFlags, json: Flags.boolean({ description: 'print as JSON' }) };

  async run(): Promise<void> {
    const { flags } = await this.parse(Summary);
    const config = await loadConfigFromFlags(flags);
    const { renderConfig } = await import('@mkinitrd-pkg/config');
    if (flags.json) this.printJson(config);
    else process.stdout.write(renderConfig(config));
  }
}
