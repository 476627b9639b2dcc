import { describe, expect, it } from 'vitest';
import { PACKAGE_MANAGERS, PACKAGE_MANAGER_NAMES, UserError } from '@mkinitrd-pkg/common';
import { applyAssignments, emptyConfig, type PackageManager } from '@mkinitrd-pkg/config';
import { createResolver, RESOLVER_FACTORIES } from './registry.js';

// One typed entry per package manager (common's PACKAGE_MANAGERS): everything else is derived.
describe('package manager registry', () => {
  it('has a factory for every entry, and each resolver reports the entry it came from', () => {
    expect(Object.keys(RESOLVER_FACTORIES).sort()).toEqual([...PACKAGE_MANAGER_NAMES].sort());
    for (const name of PACKAGE_MANAGER_NAMES) {
      const resolver = createResolver(name);
      expect(resolver.packageManager).toBe(name);
      expect(resolver.databasePaths).toEqual(PACKAGE_MANAGERS[name].databasePaths);
    }
  });

  it('an unknown name is a CONFIG error listing the known ones', () => {
    let error: unknown;
    try {
      createResolver('zypper' as PackageManager);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).code).toBe('CONFIG');
    expect((error as UserError).hint).toBe(`use one of: ${PACKAGE_MANAGER_NAMES.join(', ')}`);
  });

  it('PackageManager= accepts exactly the entries, and the error names them', () => {
    const where = { file: 'x.conf', line: 2, section: 'Distribution', key: 'PackageManager' };
    for (const name of PACKAGE_MANAGER_NAMES) {
      const config = emptyConfig('x');
      applyAssignments(config, [{ ...where, value: name }]);
      expect(config.packageManager).toBe(name);
    }
    expect(() => applyAssignments(emptyConfig('x'), [{ ...where, value: 'pacman' }])).toThrow('x.conf:2: Distribution.PackageManager: unknown package manager "pacman"');
  });
});
