import { createHash } from 'node:crypto';
import { lstat, mkdir, rm, stat, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError, isErrnoException, isPathInside, type Logger } from '@mkinitrd-pkg/common';
import { listPresets, loadConfig, repositoryIdentity, type ImageConfig } from '@mkinitrd-pkg/config';
import { createResolver, type InstalledPackage } from '@mkinitrd-pkg/resolver';
import { lookupEntry, storeEntry, type EntryMeta, type VerifiedEntry } from '@mkinitrd-pkg/builder';
import { extractImage } from '@mkinitrd-pkg/packer';
import { readBaseRelease } from './os-release.js';
import { runInstallWorker } from './layer.js';

export type BaseKind = 'preset' | 'directory' | 'image';

export interface ResolvedBase {
  kind: BaseKind;
  /** The root directory to layer the extension over (never modified). */
  root: string;
  /** What the user named: the preset, the directory or the image file. */
  source: string;
  /** Repositories and package manager to install the extension's packages with. */
  config: ImageConfig;
  /** preset: whether the cached installroot was reused. */
  cached?: boolean;
}

export interface ResolveBaseOptions {
  base?: string | undefined;
  preset?: string | undefined;
  presetDirs?: string[] | undefined;
  dropInDirs?: string[] | undefined;
  configFiles?: string[] | undefined;
  cacheDir: string;
  workDir: string;
  sourceDateEpoch?: number | undefined;
  logger: Logger;
}

async function statOrUndefined(path: string) {
  try {
    return await stat(path);
  } catch (error) {
    if (isErrnoException(error) && (error.code === 'ENOENT' || error.code === 'ENOTDIR')) return undefined;
    throw new UserError('INPUT', `cannot read base ${path}: ${(error as Error).message}`);
  }
}

/** The preset as `build` would resolve it (drop-ins and --config files included): the base's identity. */
function presetLoadOptions(preset: string, options: ResolveBaseOptions, fromImage = false) {
  return {
    preset,
    // A name taken from the image is looked up as a name only (config/src/load.ts).
    presetNameOnly: fromImage,
    ...(options.presetDirs && { presetDirs: options.presetDirs }),
    ...(options.dropInDirs && { dropInDirs: options.dropInDirs }),
    configFiles: options.configFiles ?? [],
  };
}

/**
 * Which repositories a --base DIR|IMAGE is extended from: --preset if given, else the
 * preset named like the base's os-release ID (debian → presets/debian.conf).
 */
async function configForBase(root: string, options: ResolveBaseOptions): Promise<ImageConfig> {
  const release = await readBaseRelease(root);
  const id = release.fields.ID;
  if (options.preset) {
    const config = await loadConfig(presetLoadOptions(options.preset, options));
    if (id && id !== config.distribution) {
      options.logger.warn({ base: id, preset: config.distribution }, `the base is ${id} but preset ${config.preset} installs ${config.distribution} packages`);
    }
    return config;
  }
  if (!id) {
    throw new UserError('INPUT', `the base ${options.base} has no os-release: cannot tell which distribution's packages to install`, {
      hint: 'pass --preset NAME to choose the repositories',
    });
  }
  // The base's identity is data from someone else's image: it is compared with the
  // presets' own fields, never used to form a file name. Same distribution and release
  // (VERSION_CODENAME) wins — a bookworm base extends from debian-12, a trixie one from
  // debian — else the preset named like the distribution.
  const codename = release.fields.VERSION_CODENAME;
  const candidates = (await listPresets(options.presetDirs)).filter((p) => p.distribution === id);
  const chosen = candidates.find((p) => codename !== undefined && p.release === codename) ?? candidates.find((p) => p.name === id);
  if (!chosen) {
    throw new UserError('INPUT', `no preset for the base's distribution ${JSON.stringify(id).slice(0, 80)}`, { hint: 'pass --preset NAME (or a .conf file) naming its repositories' });
  }
  // A name from the preset listing, looked up as a name (never a path) all the same.
  const config = await loadConfig(presetLoadOptions(chosen.name, options, true));
  if (codename && config.release && codename !== config.release) {
    options.logger.warn({ base: codename, preset: config.release }, `the base is ${id} ${codename} but preset ${config.preset} installs from ${config.release}`);
  }
  return config;
}

/**
 * Cache key of a preset's installroot: its repository set (config's repositoryIdentity, the
 * same identity the builder's caches use), the exact state of those repositories, and the
 * package sets installed into it (BootstrapPackages= first) and rpm's database path.
 */
export function presetBaseKey(config: ImageConfig, repositoryDigest: string): string {
  return createHash('sha256')
    .update(JSON.stringify([repositoryIdentity(config), repositoryDigest, [...config.packages].sort(), [...config.bootstrapPackages].sort(), config.rpmDatabase]))
    .digest('hex')
    .slice(0, 20);
}

/** Bump when what a cached base contains (or how it is made) changes. */
export const BASE_CACHE_FORMAT = 1;

/** meta.json of a cached base (builder's EntryMeta: format, key, tree digests) plus what it was made from. */
export interface BaseCacheMeta extends EntryMeta {
  preset: string;
  sources: string[];
  repositoryDigest: string;
  packages: InstalledPackage[];
}

/**
 * The cached base under KEY, or undefined when there is none or it no longer matches its
 * tree digest (then it is removed: a damaged base is installed again, never layered under).
 */
export function lookupPresetBase(cacheDir: string, key: string, logger: Logger): Promise<VerifiedEntry<BaseCacheMeta> | undefined> {
  return lookupEntry<BaseCacheMeta>(cacheDir, 'sysextBases', key, BASE_CACHE_FORMAT, logger);
}

/** Move a finished base installroot into the cache under KEY, its tree digest recorded. */
export function storePresetBase(cacheDir: string, key: string, root: string, meta: Omit<BaseCacheMeta, keyof EntryMeta | 'statDigest'>): Promise<VerifiedEntry<BaseCacheMeta>> {
  return storeEntry<BaseCacheMeta>(cacheDir, 'sysextBases', key, BASE_CACHE_FORMAT, root, meta);
}

/**
 * A preset's installroot (its Packages= installed, not pruned, package database kept so
 * apt installs only what the extension adds), cached under CACHE/sysext/bases/KEY
 * (CACHE_DIRS.sysextBases) by presetBaseKey. Stored and verified by the builder's cache
 * entries (lookupEntry/storeEntry), like its installroots: its tree digest is checked
 * before every use, and a damaged or half-written base is removed and installed again,
 * never layered under an extension. Built in the work dir and renamed into place.
 */
async function presetBase(config: ImageConfig, options: ResolveBaseOptions): Promise<{ root: string; cached: boolean }> {
  const { logger, cacheDir } = options;
  const resolver = createResolver(config.packageManager);
  const digest = await resolver.refresh({ config, cacheDir, logger });
  const hit = await lookupPresetBase(cacheDir, presetBaseKey(config, digest), logger);
  if (hit) {
    logger.info({ base: hit.root }, 'reusing the cached base installroot');
    return { root: hit.root, cached: true };
  }
  logger.info({ preset: config.preset, packages: config.packages.length }, 'installing the base installroot');
  const stagingRoot = join(options.workDir, 'base-build', 'root');
  await rm(stagingRoot, { recursive: true, force: true });
  await mkdir(stagingRoot, { recursive: true });
  const outcome = await runInstallWorker(
    options.workDir,
    [],
    {
      root: stagingRoot,
      ignore: [],
      config,
      packages: config.packages,
      cacheDir,
      ...(options.sourceDateEpoch !== undefined && { sourceDateEpoch: options.sourceDateEpoch }),
    },
    logger,
  );
  const { repositoryDigest, packages } = outcome.install;
  // Keyed by the metadata the install really used (it may have been refreshed meanwhile).
  const stored = await storePresetBase(cacheDir, presetBaseKey(config, repositoryDigest), stagingRoot, { preset: config.preset, sources: config.sources, repositoryDigest, packages });
  return { root: stored.root, cached: false };
}

/** Turn --base / --preset into a root directory to layer over, plus the repositories to use. */
export async function resolveBase(options: ResolveBaseOptions): Promise<ResolvedBase> {
  if (options.base === undefined) {
    const config = await loadConfig(presetLoadOptions(options.preset ?? 'debian', options));
    const { root, cached } = await presetBase(config, options);
    return { kind: 'preset', root, source: config.preset, config, cached };
  }
  const st = await statOrUndefined(options.base);
  if (!st) throw new UserError('INPUT', `base not found: ${options.base}`, { hint: 'name an initrd image, an unpacked initrd or an installroot directory, or use --preset' });
  if (st.isDirectory()) {
    const root = await realpath(options.base);
    if (isPathInside(root, options.cacheDir)) {
      // Also what keeps `--base /` from layering the host under itself.
      throw new UserError('INPUT', `the cache directory ${options.cacheDir} lies inside the base ${options.base}`, {
        hint: root === '/' ? 'the running system is not a base: use --preset, an installroot or an initrd image' : 'pass --cache-dir outside the base',
      });
    }
    const usr = await lstat(join(root, 'usr')).catch(() => undefined);
    if (!usr?.isDirectory()) {
      throw new UserError('INPUT', `base ${options.base} is not a root file system (it has no usr/ directory)`);
    }
    return { kind: 'directory', root, source: options.base, config: await configForBase(root, options) };
  }
  if (!st.isFile()) throw new UserError('INPUT', `base ${options.base} is neither a directory nor an image file`);
  const root = join(options.workDir, 'base');
  options.logger.info({ image: options.base }, 'unpacking the base image');
  // The packer's reader: every segment (microcode, compressed, concatenated), safely.
  await extractImage(options.base, root, { logger: options.logger });
  const usr = await lstat(join(root, 'usr')).catch(() => undefined);
  if (!usr?.isDirectory()) throw new UserError('INPUT', `base image ${options.base} holds no usr/ directory: not an initrd of a merged-/usr system`);
  return { kind: 'image', root, source: options.base, config: await configForBase(root, options) };
}
