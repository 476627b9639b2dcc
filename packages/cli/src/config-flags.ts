import { resolve } from 'node:path';
import { Flags } from '@oclif/core';
import type { ImageConfig } from '@mkinitrd-pkg/config';

/** Flags that select and override the configuration (shared by build and summary). */
export const configFlags = {
  preset: Flags.string({ char: 'p', description: 'preset name (see `mkinitrd-pkg presets`) or a .conf file', default: 'debian' }),
  config: Flags.string({ char: 'c', description: 'extra config file, applied after presets and drop-ins (repeatable)', multiple: true }),
  'kernel-version': Flags.string({ char: 'k', description: 'build for this kernel version (repeatable)', multiple: true }),
  'kernel-package': Flags.string({ description: 'take modules from this package (empty: from the host)' }),
  package: Flags.string({ description: 'add a package (repeatable)', multiple: true }),
  compression: Flags.string({ description: 'zstd | xz | gzip | lz4 | none' }),
  'compression-level': Flags.integer({ description: 'compression level' }),
  output: Flags.string({ char: 'o', description: 'output image path ({kver} is replaced; a trailing / names a directory)' }),
  mirror: Flags.string({ description: 'override Mirror=' }),
  'no-repository-key-check': Flags.boolean({ description: 'accept unsigned repositories (RepositoryKeyCheck=no)' }),
  'tools-tree': Flags.string({ description: 'where build tools come from: default (packages of the preset), host, or a preset name (ToolsTree=)' }),
  format: Flags.string({ description: 'cpio (an initrd) | uki (systemd-stub + kernel + initrd, Format=)', options: ['cpio', 'uki'] }),
  'kernel-command-line': Flags.string({ description: "the UKI's .cmdline (KernelCommandLine=)" }),
  'sign-key': Flags.string({ description: 'sign the UKI for Secure Boot with this PEM key (SecureBootKey=)' }),
  'sign-cert': Flags.string({ description: 'the PEM certificate of --sign-key (SecureBootCertificate=)' }),
  'emergency-shell': Flags.string({ description: 'yes | password | no (EmergencyShell=; default: no for a signed UKI, else yes)', options: ['yes', 'password', 'no'] }),
};

export type ConfigFlagValues = {
  preset: string;
  config?: string[];
  'kernel-version'?: string[];
  'kernel-package'?: string;
  package?: string[];
  compression?: string;
  'compression-level'?: number;
  output?: string;
  mirror?: string;
  'no-repository-key-check'?: boolean;
  'tools-tree'?: string;
  format?: string;
  'kernel-command-line'?: string;
  'sign-key'?: string;
  'sign-cert'?: string;
  'emergency-shell'?: string;
};

export async function loadConfigFromFlags(flags: ConfigFlagValues): Promise<ImageConfig> {
  const { loadConfig } = await import('@mkinitrd-pkg/config');
  return loadConfig({
    preset: flags.preset,
    configFiles: flags.config ?? [],
    overrides: {
      ...(flags['kernel-version'] && { kernelVersions: flags['kernel-version'] }),
      ...(flags['kernel-package'] !== undefined && { kernelPackage: flags['kernel-package'] === '' ? undefined : flags['kernel-package'] }),
      ...(flags.package && { packages: flags.package }),
      ...(flags.compression !== undefined && { compression: flags.compression }),
      ...(flags['compression-level'] !== undefined && { compressionLevel: flags['compression-level'] }),
      ...(flags.output !== undefined && { output: flags.output }),
      ...(flags.mirror !== undefined && { mirror: flags.mirror }),
      ...(flags['no-repository-key-check'] && { repositoryKeyCheck: false }),
      ...(flags['tools-tree'] !== undefined && { toolsTree: flags['tools-tree'] }),
      ...(flags.format !== undefined && { format: flags.format }),
      ...(flags['kernel-command-line'] !== undefined && { kernelCommandLine: flags['kernel-command-line'] }),
      ...(flags['sign-key'] !== undefined && { secureBootKey: resolve(flags['sign-key']) }),
      ...(flags['sign-cert'] !== undefined && { secureBootCertificate: resolve(flags['sign-cert']) }),
      ...(flags['emergency-shell'] !== undefined && { emergencyShell: flags['emergency-shell'] }),
    },
  });
}
