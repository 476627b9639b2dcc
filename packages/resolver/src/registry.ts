import { UserError } from '@mkinitrd-pkg/common';
import type { PackageManager } from '@mkinitrd-pkg/config';
import { AptResolver } from './apt.js';
import { DnfResolver } from './dnf.js';
import type { Resolver } from './types.js';

/** The one place a package manager name becomes code; everything else is preset data. */
export function createResolver(packageManager: PackageManager): Resolver {
  switch (packageManager) {
    case 'apt':
      return new AptResolver();
    case 'dnf':
      return new DnfResolver();
    default:
      throw new UserError('CONFIG', `package manager ${packageManager} is not supported yet`);
  }
}
