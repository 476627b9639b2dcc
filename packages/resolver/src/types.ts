import type { Logger } from '@mkinitrd-pkg/common';
import type { ImageConfig } from '@mkinitrd-pkg/config';

export interface InstalledPackage {
  name: string;
  version: string;
  architecture: string;
}

export interface InstallRequest {
  /** The installroot; created if missing. May already hold packages (sysext layering). */
  root: string;
  config: ImageConfig;
  /** Packages to install (the config's list, or a sysext definition's). */
  packages: string[];
  /** Reused across builds: repository metadata and downloaded packages. */
  cacheDir: string;
  /** Passed to maintainer scripts, so what they write (users, shadow dates) is reproducible. */
  sourceDateEpoch?: number;
  logger: Logger;
}

export interface InstallResult {
  /** Everything installed in the root afterwards, sorted by name. */
  packages: InstalledPackage[];
  /** Newest package build time: the default SOURCE_DATE_EPOCH. */
  newestPackageEpoch: number | undefined;
  /** A digest of the repository metadata used (for cache keys). */
  repositoryDigest: string;
  /** Non-fatal problems worth showing (e.g. failed scriptlets that were tolerated). */
  warnings: string[];
}

/** One implementation per package manager; distributions differ only in config data. */
export interface Resolver {
  readonly packageManager: string;
  /** Refresh repository metadata (cached) and return its digest without installing. */
  refresh(request: Omit<InstallRequest, 'root' | 'packages'>): Promise<string>;
  install(request: InstallRequest): Promise<InstallResult>;
  /** Packages recorded in an installroot's package database (where `config` says it is; default: the package manager's). */
  listInstalled(root: string, config?: ImageConfig): Promise<InstalledPackage[]>;
  /**
   * Download `packages` with their dependency closure and unpack those whose name
   * passes `include` into `target`, without running any script or touching a package
   * database: how kernel modules are taken from a kernel package instead of the host.
   * Returns the package files unpacked (their names identify the content for caching).
   */
  unpack?(request: UnpackRequest): Promise<UnpackResult>;
  /** Paths (relative to root) of a package database, for pruning after install. */
  readonly databasePaths: readonly string[];
}

export interface UnpackRequest {
  config: ImageConfig;
  packages: string[];
  cacheDir: string;
  /** Called with the path of the target directory; returns false to skip the unpack (cache hit). */
  target: (packageFiles: string[]) => Promise<string | undefined>;
  include: (name: string) => boolean;
  logger: Logger;
}

export interface UnpackResult {
  packageFiles: string[];
  packages: InstalledPackage[];
  target: string | undefined;
}
