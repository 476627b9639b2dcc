/**
 * One typed entry per package manager: everything about it that is not code. The config's
 * PackageManager= values and their error text (config), the resolver registry (resolver:
 * each entry needs a factory there, checked by the compiler), the pruner's
 * package-manager rule, each resolver's `databasePaths` and sysext's STATE_PATHS are
 * derived from this table. Adding a package manager: one entry here, one resolver
 * (packages/resolver/src/NAME.ts) and its factory in packages/resolver/src/registry.ts.
 *
 * Lives in common because every consumer (config, resolver, pruner, builder, sysext) may
 * import common, and the pruner may import nothing else.
 */
export interface PackageManagerEntry {
  /** The value of PackageManager= (mkosi's names where they exist). */
  readonly name: string;
  /** Subdirectory of the cache directory for repository metadata and downloaded packages. */
  readonly cacheDir: string;
  /**
   * The package database and the manager's own caches, state and logs, relative to the
   * root (a path covers everything below it): pruned from initrds, never extension
   * content, left out of an installroot's content digest.
   */
  readonly databasePaths: readonly string[];
  /**
   * State the distribution's packaging helpers write while installing (relative to the
   * root): never extension content, but kept in images.
   */
  readonly helperStatePaths: readonly string[];
}

export const PACKAGE_MANAGERS = {
  apt: {
    name: 'apt',
    cacheDir: 'apt',
    databasePaths: ['var/lib/dpkg', 'var/lib/apt', 'var/cache/apt', 'var/cache/debconf', 'var/log/apt', 'var/log/dpkg.log', 'var/log/alternatives.log'],
    helperStatePaths: [
      'var/lib/ucf',
      'var/lib/systemd/deb-systemd-helper-enabled',
      'var/lib/systemd/deb-systemd-helper-masked',
      'var/lib/systemd/deb-systemd-user-helper-enabled',
    ],
  },
  dnf: {
    name: 'dnf',
    cacheDir: 'dnf',
    databasePaths: [
      // rpm's database: /usr/lib/sysimage/rpm since rpm 4.16 (Fedora 36), /var/lib/rpm before.
      'usr/lib/sysimage/rpm',
      'usr/lib/sysimage/libdnf5',
      'usr/lib/sysimage/dnf',
      'var/lib/rpm',
      'var/lib/rpm-state',
      'var/lib/dnf',
      'var/lib/yum',
      'var/cache/dnf',
      'var/cache/libdnf5',
      'var/cache/yum',
      'var/log/dnf.log',
      'var/log/dnf.librepo.log',
      'var/log/dnf.rpm.log',
      'var/log/dnf5.log',
      'var/log/hawkey.log',
      'etc/dnf/modules.d',
    ],
    helperStatePaths: [],
  },
} as const satisfies Record<string, PackageManagerEntry>;

export type PackageManagerName = keyof typeof PACKAGE_MANAGERS;

/** Every PackageManager= value, in the table's order. */
export const PACKAGE_MANAGER_NAMES = Object.keys(PACKAGE_MANAGERS) as PackageManagerName[];

export function isPackageManagerName(value: string): value is PackageManagerName {
  return Object.hasOwn(PACKAGE_MANAGERS, value);
}

export function packageManagerEntry(name: PackageManagerName): PackageManagerEntry {
  return PACKAGE_MANAGERS[name];
}

/** Every package manager's database and helper state paths (sysext's STATE_PATHS, the pruner). */
export function allPackageManagerPaths(which: 'databasePaths' | 'helperStatePaths'): string[] {
  return [...new Set(PACKAGE_MANAGER_NAMES.flatMap((n) => PACKAGE_MANAGERS[n][which]))];
}
