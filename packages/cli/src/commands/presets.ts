import { Flags } from '@oclif/core';
import { BaseCommand } from '../base.js';

export default class Presets extends BaseCommand {
  static override description = 'List the available presets';
  static override flags = { json: Flags.boolean({ description: 'print as JSON' }) };

  async run(): Promise<void> {
    const { flags } = await this.parse(Presets);
    const { listPresets } = await import('@mkinitrd-pkg/config');
    const presets = await listPresets();
    if (flags.json) return this.printJson(presets);
    for (const p of presets) {
      process.stdout.write(`${p.name.padEnd(12)} ${`${p.distribution} ${p.release}`.padEnd(20)} ${p.packageManager.padEnd(4)} ${p.path}\n`);
    }
  }
}
