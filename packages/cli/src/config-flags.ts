import { Flags } from '@oclif/core';
import { flagKeys, type FlagValue, type ImageConfig } from '@mkinitrd-pkg/config';

/**
 * Flags that select and override the configuration (shared by build and summary): the
 * preset and extra files, then one flag per config key that has one in SCHEMA (config's
 * FlagSpec). A new key gets its flag there, not here.
 */
const keyFlags = Object.fromEntries(
  flagKeys().map(({ key, spec, flag }) => {
    const common = { description: flag.description.includes(`${key}=`) ? flag.description : `${flag.description} (${key}=)`, ...(flag.char && { char: flag.char as 'k' }) };
    if (flag.sets !== undefined) return [flag.name, Flags.boolean(common)];
    if (flag.integer) return [flag.name, Flags.integer(common)];
    if (spec.list) return [flag.name, Flags.string({ ...common, multiple: true })];
    return [flag.name, Flags.string({ ...common, ...(flag.options && { options: [...flag.options] }) })];
  }),
) as Record<string, ReturnType<typeof Flags.string> | ReturnType<typeof Flags.boolean> | ReturnType<typeof Flags.integer>>;

export const configFlags = {
  ...keyFlags,
  preset: Flags.string({ char: 'p', description: 'preset name (see `mkinitrd-pkg presets`) or a .conf file', default: 'debian' }),
  config: Flags.string({ char: 'c', description: 'extra config file, applied after presets and drop-ins (repeatable)', multiple: true }),
};

export type ConfigFlagValues = { preset: string; config?: string[] } & Record<string, FlagValue>;

export async function loadConfigFromFlags(flags: ConfigFlagValues): Promise<ImageConfig> {
  const { loadConfig } = await import('@mkinitrd-pkg/config');
  const { preset, config, ...overrides } = flags;
  return loadConfig({ preset, configFiles: config ?? [], overrides });
}
