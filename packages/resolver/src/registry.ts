import { UserError, PACKAGE_MANAGER_NAMES } from '@mkinitrd-pkg/common';
import type { PackageManager } from '@mkinitrd-pkg/config';
import { AptResolver } from './apt.js';
import { DnfResolver } from './dnf.js';
import type { Resolver } from './types.js';

/**
 * The factory of each entry of common's PACKAGE_MANAGERS: the one place a package manager
 * name becomes code (the mapped type makes a new entry without a factory a compile error);
 * everything else is preset data.
 */
export const RESOLVER_FACTORIES: { readonly [K in PackageManager]: () => Resolver } = {
  apt: () => new AptResolver(),
  dnf: () => new DnfResolver(),
};

export function createResolver(packageManager: PackageManager): Resolver {
  const factory = Object.hasOwn(RESOLVER_FACTORIES, packageManager) ? RESOLVER_FACTORIES[packageManager] : undefined;
  if (!factory) {
    throw new UserError('CONFIG', `package manager ${String(packageManager)} is not supported`, { hint: `use one of: ${PACKAGE_MANAGER_NAMES.join(', ')}` });
  }
  return factory();
}
