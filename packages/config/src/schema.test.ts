import { describe, expect, it } from 'vitest';
import { parseIniAssignments } from './ini-lines.js';
import { renderConfig } from './load.js';
import { UserError, exitStatusOf } from '@mkinitrd-pkg/common';
import { SCHEMA, applyAssignments, emptyConfig, flagAssignments, flagKeys, schemaKeys, type ImageConfig } from './schema.js';

// SCHEMA is the one list of keys: defaults, list rules and the summary come from it.
describe('SCHEMA', () => {
  it('emptyConfig has exactly the fields SCHEMA names (plus preset and sources), lists empty, required scalars set', () => {
    const config = emptyConfig('x');
    const fields = schemaKeys().map(({ spec }) => spec.field);
    expect(new Set(fields).size, 'two keys set one field').toBe(fields.length);
    expect(Object.keys(config).sort()).toEqual([...fields, 'preset', 'sources'].sort());
    for (const { key, spec } of schemaKeys()) {
      const value = config[spec.field];
      if (spec.list) expect(value, key).toEqual([]);
      else if (spec.optional) expect(value, key).toBeUndefined();
      else expect(value, `${key} has no default`).not.toBeUndefined();
    }
  });

  it('summary shows every key that is set, and reading it back gives the same configuration', () => {
    const text = `[Distribution]
Distribution=debian
Release=trixie
PackageManager=dnf
Architecture=arm64
Mirror=http://deb.debian.org/debian
Components=main contrib
Repositories=http://deb.debian.org/debian trixie-updates main
Repositories=http://deb.debian.org/debian-security trixie-security main
RepositoryKeyCheck=no
RepositoryKey=/k1 /k2
RpmDatabase=/var/lib/rpm
[Content]
Packages=systemd udev
BootstrapPackages=usr-is-merged
RemoveFiles=/usr/share/foo/*
KeepFiles=/usr/share/keep
KernelPackage=linux-image-arm64
KernelModulePackages=linux-image-*
UkiStubPackage=systemd-boot-efi
FirmwarePackages=firmware-linux-free
KernelVersion=6.12.1
KernelModulesRoot=/srv
KernelModules=ext4 -ext4 ext4
KernelModulesCompression=none
KernelCommandLine=root=LABEL=r  rw
EmergencyShell=no
ExtensionImagePolicy=signed
[Output]
CompressOutput=xz
CompressLevel=9
Output=/tmp/x.img
Format=uki
[Validation]
SecureBootKey=/k.key
SecureBootCertificate=/k.crt
[Build]
ToolsTree=host
ToolsTreePackages=kmod zstd
`;
    const config = emptyConfig('x');
    applyAssignments(config, parseIniAssignments(text, 'in.conf'));
    const rendered = renderConfig(config);
    for (const { section, key, spec } of schemaKeys()) {
      if (spec.field === 'emergencyShellPassword') continue;
      expect(text, `the test sets ${key}`).toContain(`\n${key}=`);
      expect(rendered, `${section}.${key}`).toContain(`\n${key}=`);
    }
    const back = emptyConfig('x');
    applyAssignments(back, parseIniAssignments(rendered, 'summary.conf'));
    const strip = (c: ImageConfig) => ({ ...c, preset: '', sources: [] });
    expect(strip(back)).toEqual(strip(config));
    expect(Object.keys(SCHEMA)).toEqual(['Distribution', 'Content', 'Output', 'Validation', 'Build']);
  });

  it('the password hash is shown only as set', () => {
    const config = emptyConfig('x');
    config.emergencyShellPassword = '$6$salt$' + 'a'.repeat(40);
    expect(renderConfig(config)).toContain('EmergencyShellPassword=(hash set)');
    expect(renderConfig(config)).not.toContain('$6$');
  });

  // The CLI's config flags are made from SCHEMA (cli/src/config-flags.ts): a flag is its key.
  it('command-line flags are assignments of their keys: same parsing, lists add or replace, errors are usage errors', () => {
    const names = flagKeys().map((k) => k.flag.name);
    expect(new Set(names).size, 'two keys share a flag').toBe(names.length);
    const config = emptyConfig('x');
    applyAssignments(config, parseIniAssignments('[Content]\nPackages=systemd\nKernelVersion=1.0\n[Distribution]\nRepositoryKeyCheck=yes\n', 'p.conf'));
    applyAssignments(config, flagAssignments({ package: ['kmod', 'systemd'], 'kernel-version': ['6.12.1', '6.12.2'], 'no-repository-key-check': true, 'compression-level': 9, 'sign-key': 'k.pem', 'kernel-package': '', preset: 'ignored' }, '/work'));
    expect(config.packages).toEqual(['systemd', 'kmod']);
    expect(config.kernelVersions).toEqual(['6.12.1', '6.12.2']);
    expect(config.repositoryKeyCheck).toBe(false);
    expect(config.compressionLevel).toBe(9);
    expect(config.secureBootKey).toBe('/work/k.pem');
    expect(config.kernelPackage).toBeUndefined();
    let error: unknown;
    try {
      applyAssignments(emptyConfig('x'), flagAssignments({ compression: 'rar' }));
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).message).toBe('--compression: unknown compression "rar"');
    expect(exitStatusOf((error as UserError).code)).toBe(2);
  });
});
