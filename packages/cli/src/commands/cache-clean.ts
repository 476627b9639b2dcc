import { Flags } from '@oclif/core';
import { defaultCacheDir, formatBytes } from '@mkinitrd-pkg/common';
import { BaseCommand } from '../base.js';

export default class CacheClean extends BaseCommand {
  static override description = 'Remove cached installroots and unpacked kernels (with --all, downloaded packages and metadata too)';
  static override flags = {
    'cache-dir': Flags.string({ description: 'cache directory (default: ~/.cache/mkinitrd-pkg)' }),
    all: Flags.boolean({ description: 'also remove downloaded packages and repository metadata' }),
    json: Flags.boolean({ description: 'print as JSON' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(CacheClean);
    const { cleanCache } = await import('@mkinitrd-pkg/builder');
    const result = await cleanCache(flags['cache-dir'] ?? defaultCacheDir(), flags.all);
    if (flags.json) return this.printJson(result);
    process.stdout.write(result.removed.length ? `removed ${result.removed.join(', ')} (${formatBytes(result.bytes)})\n` : 'nothing to remove\n');
  }
}
