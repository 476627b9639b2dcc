import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { UserError, checkOutputPath, createProgress, createWorkDir, removeWorkDir, defaultCacheDir, getLogger, pathExists, requireRoot, sourceDateEpochFromEnv, run, withAtomicOutput, type Logger } from '@mkinitrd-pkg/common';
import type { ImageConfig } from '@mkinitrd-pkg/config';
import { createResolver, type InstalledPackage, type Resolver } from '@mkinitrd-pkg/resolver';
import { findKernelVersions, installKernelModules, runDepmod } from '@mkinitrd-pkg/kmod';
import { prune, DEFAULT_PRUNE_RULES, type PruneReport } from '@mkinitrd-pkg/pruner';
import { packTree } from '@mkinitrd-pkg/packer';
import pLimit from 'p-limit';
import { makeInitrdRoot } from './initrd.js';
import { lookupRoot, storeRoot, removeStaleTemporaries, readMetadataState, writeMetadataState, stageVerified, KERNEL_CACHE_DIR, ROOT_CACHE_FORMAT } from './cache.js';
import { sizeByDirectory } from './tree.js';

export interface BuildOptions {
  config: ImageConfig;
  cacheDir?: string;
  /** Overrides env SOURCE_DATE_EPOCH and the newest package's date. */
  sourceDateEpoch?: number;
  logger?: Logger;
  /**
   * Where each image's manifest goes: default IMAGE.manifest.json; a template with
   * {kver}; '' for none (kernel-install copies every staged initrd* file into the entry).
   */
  manifest?: string;
  /**
   * Where to write each kernel's image (vmlinuz) beside the initrd: a path with {kver};
   * undefined for none. The kernel comes from where the modules come from (the kernel
   * package's staging root, or the host's /boot), so a boot needs nothing else.
   */
  kernelOutput?: string;
  /** Use and fill the installroot cache (default true). */
  useCache?: boolean;
  /** Fetch repository metadata even if it is fresh enough. */
  refresh?: boolean;
  /** How old repository metadata may be before a build fetches it again (default 1 h). */
  metadataMaxAgeSeconds?: number;
  /** Build for every kernel found (in the kernel package, else in the modules root). */
  allKernels?: boolean;
  /** Kernels built at once (default 2: each pack uses both cores for compression anyway). */
  parallelKernels?: number;
}

export interface ImageResult {
  kernelVersion: string;
  path: string;
  manifestPath: string | undefined;
  sha256: string;
  bytes: number;
  modules: string[];
  firmware: string[];
  /** Firmware the modules declare that no firmware package (FirmwarePackages=) has. */
  missingFirmware: string[];
  /** Why it is missing, for the summary and the manifest. */
  missingFirmwareReason: string | undefined;
  modulesSource: string;
  /** Where the kernel image was written (--kernel-output), if asked for. */
  kernelImagePath: string | undefined;
}

export interface PhaseTiming {
  phase: string;
  seconds: number;
}

export interface BuildResult {
  preset: string;
  images: ImageResult[];
  packages: InstalledPackage[];
  sourceDateEpoch: number;
  prune: PruneReport;
  sizeByDirectory: Record<string, number>;
  phases: PhaseTiming[];
  warnings: string[];
  compression: string;
  /** Whether the pruned installroot came from the cache. */
  cache: 'hit' | 'miss' | 'disabled';
}

/**
 * zstd level for initrds when the config names none. Measured on the generic Debian
 * image (80 MB of cpio, 2 cores): level 3 → 22.9 MB in 0.5 s, 12 → 20.3 MB in 1.3 s,
 * 16 → 19.4 MB in 7.5 s. 12 is where size stops coming cheaply.
 */
const INITRD_DEFAULT_LEVELS: Partial<Record<string, number>> = { zstd: 12 };

/** Names of kernel packages' parts that hold modules, across distributions (data). */
const KERNEL_PACKAGE_NAMES = /^(linux-image-|linux-modules-|kernel-core$|kernel-modules)/;

class Phases {
  readonly timings: PhaseTiming[] = [];
  constructor(private readonly logger: Logger) {}
  async time<T>(phase: string, body: () => Promise<T>): Promise<T> {
    const start = performance.now();
    this.logger.debug({ phase }, 'phase start');
    try {
      return await body();
    } finally {
      const seconds = Math.round(performance.now() - start) / 1000;
      this.timings.push({ phase, seconds });
      this.logger.info({ phase, seconds }, 'phase done');
    }
  }
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

interface KernelSource {
  kernelVersion: string;
  sourceRoot: string;
  description: string;
}

/**
 * Unpack the kernel package (and the module packages it pulls) into a staging root,
 * cached by the exact package files and verified like the installroot cache before
 * every use (cache.ts: stageVerified): a removed or modified module is never used, the
 * entry is unpacked again. With fresh repository metadata the lookup of which files
 * those are is cached too (by package name and metadata digest): no network.
 */
async function stageKernelPackage(resolver: Resolver, config: ImageConfig, cacheDir: string, metadataDigest: string | undefined, logger: Logger): Promise<string> {
  if (!resolver.unpack) throw new UserError('CONFIG', `KernelPackage= is not supported with ${resolver.packageManager} yet`);
  const unpack = resolver.unpack.bind(resolver);
  // STAGED_WITH_DEPMOD in both keys: entries sealed before modules.dep was written into
  // them are not picked up (they would cost a depmod -n of the whole tree per build).
  const indexKey = metadataDigest ? digestOf([STAGED_WITH_DEPMOD, config.kernelPackage, config.architecture, metadataDigest, config.firmwarePackages]) : undefined;
  return stageVerified(cacheDir, KERNEL_CACHE_DIR, indexKey, logger, async (fill) => {
    let root: string | undefined;
    await unpack({
      config,
      // The firmware packages land in the same staging root: the module installer looks
      // for firmware in its usr/lib/firmware and lib/firmware.
      packages: [config.kernelPackage!, ...config.firmwarePackages],
      cacheDir,
      include: (name) => KERNEL_PACKAGE_NAMES.test(name) || config.firmwarePackages.includes(name),
      logger,
      target: async (files) => (root = await fill(digestOf([STAGED_WITH_DEPMOD, ...[...files].sort()]).slice(0, 20))),
    });
    // Before the entry is sealed (its tree digest is taken after this returns).
    if (root !== undefined) await depmodStaged(root, await findKernelVersions(root), logger);
  });
}

/**
 * Kernel packages ship no modules.dep (Debian's postinst writes it); without one every
 * build would compute it for the whole tree again (`depmod -n`, 20–50 s here for 4,000
 * xz modules). The staging root is this cache's own, so it is written there once,
 * while the entry is still a temporary (before its tree digest is taken).
 */
const STAGED_WITH_DEPMOD = 'staged-with-modules.dep';

async function depmodStaged(staged: string, versions: readonly string[], logger: Logger): Promise<void> {
  for (const kver of versions) {
    for (const base of ['usr/lib/modules', 'lib/modules']) {
      const dir = join(staged, base, kver);
      if (!(await pathExists(join(dir, 'modules.order'))) || (await pathExists(join(dir, 'modules.dep')))) continue;
      await runDepmod({ modulesDir: join(staged, base), kernelVersion: kver, logger });
      break;
    }
  }
}

function digestOf(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value)).digest('hex');
}

async function resolveKernels(resolver: Resolver, config: ImageConfig, cacheDir: string, metadataDigest: string | undefined, allKernels: boolean, logger: Logger): Promise<KernelSource[]> {
  const hostRoot = config.kernelModulesRoot;
  let staged: string | undefined;
  let stagedVersions: string[] = [];
  if (config.kernelPackage) {
    staged = await stageKernelPackage(resolver, config, cacheDir, metadataDigest, logger);
    stagedVersions = await findKernelVersions(staged);
  }
  const hostVersions = await findKernelVersions(hostRoot);
  const requested = allKernels
    ? [...new Set([...config.kernelVersions, ...(staged ? stagedVersions : hostVersions)])]
    : config.kernelVersions.length
      ? config.kernelVersions
      : stagedVersions;
  if (requested.length === 0) {
    throw new UserError('KERNEL_NOT_FOUND', 'no kernel version to build for', {
      hint: 'pass --kernel-version KVER (modules from /usr/lib/modules/KVER) or set KernelPackage=',
    });
  }
  return requested.map((kernelVersion) => {
    if (staged && stagedVersions.includes(kernelVersion)) {
      return { kernelVersion, sourceRoot: staged, description: `package ${config.kernelPackage}` };
    }
    if (hostVersions.includes(kernelVersion)) {
      return { kernelVersion, sourceRoot: hostRoot, description: `${join(hostRoot, 'usr/lib/modules', kernelVersion)}` };
    }
    const known = [...new Set([...stagedVersions, ...hostVersions])];
    throw new UserError('KERNEL_NOT_FOUND', `no modules for kernel ${kernelVersion}`, {
      hint: known.length ? `kernels available: ${known.join(', ')}` : 'install the kernel package, or set KernelPackage=',
    });
  });
}

export function outputPathFor(config: ImageConfig, kernelVersion: string, kernelCount: number): string {
  const output = config.output;
  if (!output) return resolve(`initrd-${config.preset}-${kernelVersion}.img`);
  if (output.includes('{kver}')) return resolve(output.replaceAll('{kver}', kernelVersion));
  if (output.endsWith('/')) return resolve(output, `initrd-${config.preset}-${kernelVersion}.img`);
  if (kernelCount > 1) {
    throw new UserError('USAGE', `--output ${output} names one file but ${kernelCount} kernels are built`, {
      hint: 'put {kver} in the output name, or end it with / to name a directory',
    });
  }
  return resolve(output);
}

/** What identifies a repository set (the metadata freshness record is kept per set). */
function repositoryKey(config: ImageConfig): string {
  return digestOf([config.packageManager, config.distribution, config.release, config.architecture, config.mirror, config.repositories, config.components, config.repositoryKeyCheck, config.repositoryKeys]);
}

/**
 * Everything that determines the pruned installroot: the repositories and their
 * metadata digest, the package set, what is pruned, the epoch given to maintainer
 * scripts, and the format of the cache itself.
 */
async function installrootKey(config: ImageConfig, metadataDigest: string, explicitEpoch: number | undefined): Promise<string> {
  const keys = await Promise.all(config.repositoryKeys.map(async (k) => digestOf(await readFile(k.replace(/^file:\/\//, ''), 'utf8').catch(() => k))));
  return digestOf({
    format: ROOT_CACHE_FORMAT,
    repositories: repositoryKey(config),
    keys,
    metadataDigest,
    packages: [...config.packages].sort(),
    removeFiles: config.removeFiles,
    keepFiles: config.keepFiles,
    prune: DEFAULT_PRUNE_RULES,
    explicitEpoch: explicitEpoch ?? null,
  });
}

interface PreparedRoot {
  root: string;
  /** True when `root` belongs to the cache and must be copied (hard links) before adding modules. */
  shared: boolean;
  packages: InstalledPackage[];
  sourceDateEpoch: number;
  prune: PruneReport;
  sizeByDirectory: Record<string, number>;
  warnings: string[];
  cache: BuildResult['cache'];
}

/**
 * The pipeline: packages → initrd root → prune (cached) → per kernel: modules +
 * depmod → pack. Returns what it built; writes nothing but the images, their
 * manifests and the cache.
 */
export async function buildInitrd(options: BuildOptions): Promise<BuildResult> {
  const logger = options.logger ?? getLogger();
  const config = options.config;
  const cacheDir = resolve(options.cacheDir ?? defaultCacheDir());
  const useCache = options.useCache ?? true;
  requireRoot('building an initrd');
  const phases = new Phases(logger);
  const progress = createProgress('mkinitrd-pkg');
  const resolver = createResolver(config.packageManager);
  const explicitEpoch = options.sourceDateEpoch ?? sourceDateEpochFromEnv();

  // Output and manifest paths are checked before any work: a bad one must not cost a
  // package install, and must never fail after the image was written.
  await checkOutputTemplates(config, options.manifest, options.kernelOutput);
  const workDir = await createWorkDir(cacheDir, 'build', logger);
  try {
    await removeStaleTemporaries(cacheDir, logger);
    // Repository metadata younger than the max age is trusted without asking the
    // mirror again: that is what makes a warm rebuild take seconds, not a network trip.
    let metadataDigest: string | undefined;
    if (useCache) {
      metadataDigest = await phases.time('metadata', async () => {
        const repoKey = repositoryKey(config);
        const state = await readMetadataState(cacheDir, repoKey);
        const maxAge = (options.metadataMaxAgeSeconds ?? 3600) * 1000;
        if (state && !options.refresh && Date.now() - state.refreshedAt < maxAge) return state.digest;
        progress.update('refreshing repository metadata');
        const digest = await resolver.refresh({ config, cacheDir, logger });
        await writeMetadataState(cacheDir, repoKey, { digest, refreshedAt: Date.now() });
        return digest;
      });
    }

    progress.update('resolving kernels');
    const kernels = await phases.time('kernel', () => resolveKernels(resolver, config, cacheDir, metadataDigest, options.allKernels ?? false, logger));
    const outputs = kernels.map((k) => outputPathFor(config, k.kernelVersion, kernels.length));
    const manifests = kernels.map((k, i) => manifestPathFor(options.manifest, outputs[i]!, k.kernelVersion));
    const kernelOutputs = kernels.map((k) => (options.kernelOutput ? resolve(options.kernelOutput.replaceAll('{kver}', k.kernelVersion)) : undefined));
    if (kernels.length > 1 && options.kernelOutput && !options.kernelOutput.includes('{kver}')) {
      throw new UserError('USAGE', `--kernel-output ${options.kernelOutput} names one file but ${kernels.length} kernels are built`, { hint: 'put {kver} in the kernel output name' });
    }
    await checkOutputs(outputs, manifests, kernelOutputs);
    // The kernel image must exist before any work is done for it.
    const kernelImages = await Promise.all(kernels.map((k, i) => (kernelOutputs[i] ? findKernelImage(k) : undefined)));

    const prepared = await prepareRoot({ config, cacheDir, workDir, resolver, explicitEpoch, metadataDigest, useCache, phases, progress, logger });

    const limit = pLimit(Math.max(1, options.parallelKernels ?? 2));
    const images = await Promise.all(
      kernels.map((kernel, i) =>
        limit(async (): Promise<ImageResult> => {
          // A cached root is shared: each image gets a hard-linked copy to add modules to
          // (nothing rewrites a file in place, and the cache is verified before every use).
          const ownRoot = !prepared.shared && kernels.length === 1;
          const imageRoot = ownRoot ? prepared.root : join(workDir, `root-${kernel.kernelVersion}`);
          if (!ownRoot) await run('cp', [prepared.shared ? '-al' : '-a', prepared.root, imageRoot]);
          progress.update(`kernel modules for ${kernel.kernelVersion}`);
          const modules = await phases.time(`modules ${kernel.kernelVersion}`, () =>
            installKernelModules({ imageRoot, kernelVersion: kernel.kernelVersion, sourceRoot: kernel.sourceRoot, patterns: config.kernelModules, logger }),
          );
          const missingReason = missingFirmwareReason(config, kernel, modules.missingFirmware.length);
          const output = outputs[i]!;
          progress.update(`packing ${basename(output)}`);
          const level = config.compressionLevel ?? INITRD_DEFAULT_LEVELS[config.compression];
          await phases.time(`pack ${kernel.kernelVersion}`, () =>
            packTree({
              source: imageRoot,
              output,
              compression: config.compression,
              ...(level !== undefined && { level }),
              sourceDateEpoch: prepared.sourceDateEpoch,
              owner: 'root',
            }),
          );
          const sha256 = await sha256File(output);
          const bytes = (await stat(output)).size;
          const manifestPath = manifests[i];
          if (manifestPath) {
            await writeManifest(manifestPath, {
              image: basename(output),
              sha256,
              bytes,
              preset: config.preset,
              distribution: config.distribution,
              release: config.release,
              architecture: config.architecture,
              compression: config.compression,
              kernelVersion: kernel.kernelVersion,
              modulesSource: kernel.description,
              sourceDateEpoch: prepared.sourceDateEpoch,
              packages: prepared.packages,
              modules: modules.modules,
              firmware: modules.firmware,
              firmwarePackages: config.firmwarePackages,
              missingFirmware: modules.missingFirmware,
              missingFirmwareReason: missingReason,
              missingFirmwareModules: modules.missingFirmwareModules,
              pruned: prepared.prune,
            });
          }
          if (imageRoot !== prepared.root) await rm(imageRoot, { recursive: true, force: true });
          const kernelImagePath = kernelOutputs[i];
          if (kernelImagePath) await copyAtomically(kernelImages[i]!, kernelImagePath, 0o644);
          return {
            kernelImagePath,
            kernelVersion: kernel.kernelVersion,
            path: output,
            manifestPath,
            sha256,
            bytes,
            modules: modules.modules,
            firmware: modules.firmware,
            missingFirmware: modules.missingFirmware,
            missingFirmwareReason: missingReason,
            modulesSource: kernel.description,
          };
        }),
      ),
    );
    progress.done();
    return {
      preset: config.preset,
      images,
      packages: prepared.packages,
      sourceDateEpoch: prepared.sourceDateEpoch,
      prune: prepared.prune,
      sizeByDirectory: prepared.sizeByDirectory,
      phases: phases.timings,
      warnings: prepared.warnings,
      compression: config.compression,
      cache: prepared.cache,
    };
  } catch (error) {
    progress.done();
    throw error;
  } finally {
    await removeWorkDir(workDir);
  }
}

async function prepareRoot(o: {
  config: ImageConfig;
  cacheDir: string;
  workDir: string;
  resolver: Resolver;
  explicitEpoch: number | undefined;
  metadataDigest: string | undefined;
  useCache: boolean;
  phases: Phases;
  progress: ReturnType<typeof createProgress>;
  logger: Logger;
}): Promise<PreparedRoot> {
  const { config, cacheDir, resolver, phases, progress, logger } = o;
  const key = o.useCache && o.metadataDigest ? await installrootKey(config, o.metadataDigest, o.explicitEpoch) : undefined;
  if (key) {
    const hit = await phases.time('cache lookup', () => lookupRoot(cacheDir, key, logger));
    if (hit) {
      logger.info({ key: key.slice(0, 16) }, 'using the cached installroot');
      return { root: hit.root, shared: true, ...pick(hit.meta), cache: 'hit' };
    }
  }
  const root = join(o.workDir, 'root');
  progress.update('installing packages');
  const install = await phases.time('install', () =>
    resolver.install({
      root,
      config,
      packages: config.packages,
      cacheDir,
      ...(o.explicitEpoch !== undefined && { sourceDateEpoch: o.explicitEpoch }),
      logger,
    }),
  );
  const sourceDateEpoch = o.explicitEpoch ?? install.newestPackageEpoch ?? 0;
  progress.update('making the initrd root');
  await phases.time('initrd', () => makeInitrdRoot(root));
  progress.update('pruning');
  const pruneReport = await phases.time('prune', () =>
    prune({
      root,
      rules: DEFAULT_PRUNE_RULES,
      keep: config.keepFiles.map(stripSlash),
      extraRemove: config.removeFiles.flatMap((p) => [stripSlash(p), `${stripSlash(p)}/**`]),
      logger,
    }),
  );
  const sizes = await sizeByDirectory(root);
  const result = { packages: install.packages, sourceDateEpoch, prune: pruneReport, sizeByDirectory: sizes, warnings: install.warnings };
  if (key) {
    // The metadata digest of the key is the one install() just used, if the mirror
    // changed in between, the entry is stored under the newer digest.
    const storeKey = install.repositoryDigest === o.metadataDigest ? key : await installrootKey(config, install.repositoryDigest, o.explicitEpoch);
    const stored = await phases.time('cache store', () => storeRoot(cacheDir, storeKey, root, { ...result, repositoryDigest: install.repositoryDigest }));
    if (storeKey !== key) await writeMetadataState(cacheDir, repositoryKey(config), { digest: install.repositoryDigest, refreshedAt: Date.now() });
    return { root: stored.root, shared: true, ...result, cache: 'miss' };
  }
  return { root, shared: false, ...result, cache: 'disabled' };
}

/**
 * Why declared firmware is absent: a generic image ships only what the firmware packages
 * hold (free firmware, e.g. Debian's firmware-linux-free); the rest is non-free (Debian's
 * firmware-* packages in non-free-firmware) or packaged nowhere, and the driver then
 * runs without it or asks for it later from the real root.
 */
function missingFirmwareReason(config: ImageConfig, kernel: KernelSource, missing: number): string | undefined {
  if (missing === 0) return undefined;
  if (!kernel.description.startsWith('package ')) return `not found in ${kernel.sourceRoot}/usr/lib/firmware (the host's firmware)`;
  if (config.firmwarePackages.length === 0) return 'no FirmwarePackages= configured';
  return `not in ${config.firmwarePackages.join(', ')} (FirmwarePackages=): non-free, or packaged by no one`;
}

function pick(meta: { packages: InstalledPackage[]; sourceDateEpoch: number; prune: PruneReport; sizeByDirectory: Record<string, number>; warnings: string[] }) {
  return { packages: meta.packages, sourceDateEpoch: meta.sourceDateEpoch, prune: meta.prune, sizeByDirectory: meta.sizeByDirectory, warnings: meta.warnings };
}

function stripSlash(pattern: string): string {
  return pattern.replace(/^\/+/, '');
}

/**
 * The kernel image that belongs to these modules: `boot/vmlinuz-KVER` in the kernel
 * package's staging root (Debian's and Fedora's packages both ship it there; Fedora also
 * keeps a copy as usr/lib/modules/KVER/vmlinuz), or in the host's root for host modules.
 */
async function findKernelImage(kernel: KernelSource): Promise<string> {
  const candidates = [join(kernel.sourceRoot, 'boot', `vmlinuz-${kernel.kernelVersion}`), join(kernel.sourceRoot, 'usr/lib/modules', kernel.kernelVersion, 'vmlinuz')];
  for (const candidate of candidates) if (await pathExists(candidate)) return candidate;
  throw new UserError('KERNEL_NOT_FOUND', `no kernel image for ${kernel.kernelVersion} in ${kernel.description}`, { hint: `looked for ${candidates.join(' and ')}` });
}

async function copyAtomically(source: string, path: string, mode: number): Promise<void> {
  await withAtomicOutput(path, async (out) => {
    for await (const chunk of createReadStream(source)) await out.handle.write(chunk as Buffer);
  }, mode);
}

async function writeManifest(path: string, manifest: unknown): Promise<void> {
  await withAtomicOutput(path, (o) => o.handle.writeFile(JSON.stringify(manifest, null, 2) + '\n'), 0o644);
}

function manifestPathFor(template: string | undefined, output: string, kernelVersion: string): string | undefined {
  if (template === undefined) return `${output}.manifest.json`;
  if (template === '') return undefined;
  return resolve(template.replaceAll('{kver}', kernelVersion));
}

/**
 * What can be checked of --output/--manifest before the kernels are known: a path
 * without {kver} fully, one with {kver} as far as its directory is fixed.
 */
async function checkOutputTemplates(config: ImageConfig, manifest: string | undefined, kernelOutput: string | undefined): Promise<void> {
  const check = async (template: string, what: string) => {
    if (template.endsWith('/') && !template.includes('{kver}')) {
      const st = await stat(template).catch(() => undefined);
      if (!st?.isDirectory()) throw new UserError('INPUT', `${what} directory does not exist: ${resolve(template)}`, { hint: 'create it first, or choose another path' });
      return;
    }
    if (!template.includes('{kver}')) await checkOutputPath(template, { what });
    else if (!dirname(template).includes('{kver}')) await checkOutputPath(join(dirname(template), 'x'), { what });
  };
  if (config.output) await check(config.output, 'output');
  if (manifest) await check(manifest, 'manifest');
  if (kernelOutput) await check(kernelOutput, 'kernel output');
  if (config.output && manifest && resolve(config.output) === resolve(manifest)) {
    throw new UserError('INPUT', `--manifest and --output name the same file: ${resolve(manifest)}`);
  }
}

/** Every image, manifest and kernel path, once the kernels are known: usable, and no two the same. */
async function checkOutputs(outputs: string[], manifests: Array<string | undefined>, kernelOutputs: Array<string | undefined>): Promise<void> {
  const seen = new Set<string>();
  const named = (paths: Array<string | undefined>, what: string) => paths.flatMap((p) => (p ? [[p, what] as const] : []));
  for (const [path, what] of [...named(outputs, 'output'), ...named(manifests, 'manifest'), ...named(kernelOutputs, 'kernel output')]) {
    await checkOutputPath(path, { what });
    if (seen.has(path)) throw new UserError('INPUT', `${path} would be written twice (image, manifest or kernel, or two kernels)`, { hint: 'use {kver} in --output/--manifest/--kernel-output, and different names for them' });
    seen.add(path);
  }
}
