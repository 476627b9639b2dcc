import { createHash, X509Certificate } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { UserError, checkOutputPath, copyFileAtomically, createProgress, createWorkDir, removeWorkDir, defaultCacheDir, getLogger, globToRegExp, pathExists, requireRoot, sourceDateEpochFromEnv, run, withAtomicOutput, withToolsRoot, type Logger } from '@mkinitrd-pkg/common';
import { repositoryIdentity, type ImageConfig } from '@mkinitrd-pkg/config';
import { createResolver, type InstalledPackage, type Resolver } from '@mkinitrd-pkg/resolver';
import { findKernelVersions, installKernelModules, runDepmod } from '@mkinitrd-pkg/kmod';
import { prune, DEFAULT_PRUNE_RULES, type PruneReport } from '@mkinitrd-pkg/pruner';
import { packTree } from '@mkinitrd-pkg/packer';
import pLimit from 'p-limit';
import { applyEmergencyShell, applyExtensionImagePolicy, installInitrdTree, makeInitrdRoot } from './initrd.js';
import { stubPath, placeUkiExtensions, writeUki } from './uki.js';
import { lookupRoot, storeRoot, removeStaleTemporaries, writeMetadataState, stageVerified, frameStore, pruneFrames, ROOT_CACHE_FORMAT, type VerifyMode } from './cache.js';
import { sizeByDirectory } from './tree.js';
import { prepareTools, type ToolsManifest } from './tools.js';
import { repositoryMetadataDigest } from './metadata.js';

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
  /**
   * Check every cached tree used (installroot, kernel staging root, tools root) by its
   * content, not only by its stat digest: catches damage no inode field shows.
   */
  verifyCache?: boolean;
  /** Fetch repository metadata even if it is fresh enough. */
  refresh?: boolean;
  /** How old repository metadata may be before a build fetches it again (default 1 h). */
  metadataMaxAgeSeconds?: number;
  /** Build for every kernel found (in the kernel package, else in the modules root). */
  allKernels?: boolean;
  /** Kernels built at once (default 2: each pack uses both cores for compression anyway). */
  parallelKernels?: number;
  /** The kernel for a UKI (kernel-install's KERNEL_IMAGE) instead of the one beside the modules. */
  kernelImage?: string;
  /**
   * Extension images (checked by the caller: @mkinitrd-pkg/sysext checkExtensions). A cpio
   * image carries them as /var/lib/extensions/NAME.raw (see EXTENSION_TARGETS for why
   * there); a UKI gets them beside it, in NAME.efi.extra.d/, where systemd-stub finds them.
   */
  extensions?: BuildExtension[];
  /**
   * X.509 certificates (PEM) the initrd trusts for signed extension images, installed as
   * /etc/verity.d/NAME.crt: systemd >= 256 verifies a signed image's PKCS#7 against them
   * in user space when the kernel's keyring does not know the signer (measured with 257:
   * the kernel says ENOKEY, then systemd-sysext verifies and merges; without the file the
   * image is refused). That is what lets signed extensions under /.extra/sysext (where
   * systemd-stub puts them, and 257's image policy wants signed images) be merged.
   */
  verityCerts?: string[];
}

/** An extension image to carry (see BuildOptions.extensions). */
export interface BuildExtension {
  name: string;
  path: string;
  sha256?: string;
  /**
   * Images with a verity partition: the root hash (signed: from the signature partition;
   * else the data + verity partition UUIDs) and where both partitions are. The build checks the data against it (veritysetup
   * verify) and pins it beside the image as NAME.roothash, which systemd-sysext reads
   * (verity_settings_load): the image is then opened through dm-verity.
   */
  verity?: { roothash: string; designator: 'root' | 'usr'; data: { offset: number; size: number }; hash: { offset: number; size: number } };
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
  format: 'cpio' | 'uki';
  /** UKI: signed for Secure Boot. */
  signed: boolean;
  /** What the initrd's emergency shell does (EmergencyShell=, resolved). */
  emergencyShell: string;
  /** Extension images delivered: inside the image (cpio), or beside it (UKI: NAME.efi.extra.d/); roothash: pinned beside the image as NAME.roothash (verity images). */
  extensions: { name: string; path: string; sha256: string; roothash?: string }[];
  /** Where the kernel image was written (--kernel-output), if asked for. */
  kernelImagePath: string | undefined;
  /** Compressed frames taken from the cache, and compressed (stored); undefined without the cache. */
  frames: { hits: number; stored: number } | undefined;
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
  /** Where depmod, xz … came from: the tools root's packages, or the host. */
  tools: ToolsManifest;
}

/**
 * zstd level for initrds when the config names none. Measured on the generic Debian
 * image (80 MB of cpio, 2 cores): level 3 → 22.9 MB in 0.5 s, 12 → 20.3 MB in 1.3 s,
 * 16 → 19.4 MB in 7.5 s. 12 is where size stops coming cheaply.
 */
const INITRD_DEFAULT_LEVELS: Partial<Record<string, number>> = { zstd: 12 };

/**
 * Which packages of the kernel package's closure hold the kernel and its modules: the
 * preset's KernelModulePackages= globs (distribution data), else KernelPackage= itself.
 */
export function kernelModulePackageFilter(config: Pick<ImageConfig, 'kernelPackage' | 'kernelModulePackages'>): (name: string) => boolean {
  const globs = config.kernelModulePackages.map((g) => globToRegExp(g));
  return globs.length ? (name) => globs.some((g) => g.test(name)) : (name) => name === config.kernelPackage;
}

/**
 * What differs between the images of one installroot: the kernel's modules and firmware,
 * and the extensions an image carries. The packer writes them after everything else
 * (packer ScanOptions.lateNames), so the compressed frames of the rest are the same for
 * every kernel and are reused from the cache (frameStore) instead of compressed again
 * (a kernel part's frames too, when the same kernel is built again).
 */
export const KERNEL_LAYER_NAMES = ['usr/lib/modules', 'usr/lib/firmware', 'lib/modules', 'lib/firmware', 'var/lib/extensions'];

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
async function stagePackage(
  resolver: Resolver,
  config: ImageConfig,
  cacheDir: string,
  metadataDigest: string | undefined,
  packages: string[],
  include: (name: string) => boolean,
  logger: Logger,
  verify: VerifyMode = 'quick',
): Promise<string> {
  if (!resolver.unpack) throw new UserError('CONFIG', `unpacking ${packages.join(' ')} is not supported with ${resolver.packageManager} yet`);
  const unpack = resolver.unpack.bind(resolver);
  // STAGED_WITH_DEPMOD in both keys: entries sealed before modules.dep was written into
  // them are not picked up (they would cost a depmod -n of the whole tree per build).
  const indexKey = metadataDigest ? digestOf([STAGED_WITH_DEPMOD, packages, config.architecture, metadataDigest]) : undefined;
  return stageVerified(cacheDir, 'stagedKernels', indexKey, logger, async (fill) => {
    let root: string | undefined;
    await unpack({
      config,
      packages,
      cacheDir,
      include,
      logger,
      target: async (files) => (root = await fill(digestOf([STAGED_WITH_DEPMOD, ...[...files].sort()]).slice(0, 20))),
    });
    // Before the entry is sealed (its tree digest is taken after this returns).
    if (root !== undefined) await depmodStaged(root, await findKernelVersions(root), logger);
  }, verify);
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

async function resolveKernels(resolver: Resolver, config: ImageConfig, cacheDir: string, metadataDigest: string | undefined, allKernels: boolean, logger: Logger, verify: VerifyMode): Promise<KernelSource[]> {
  const hostRoot = config.kernelModulesRoot;
  let staged: string | undefined;
  let stagedVersions: string[] = [];
  if (config.kernelPackage) {
    // The firmware packages land in the same staging root: the module installer looks for
    // firmware in its usr/lib/firmware and lib/firmware.
    const firmware = config.firmwarePackages;
    const isKernelPart = kernelModulePackageFilter(config);
    staged = await stagePackage(resolver, config, cacheDir, metadataDigest, [config.kernelPackage, ...firmware], (name) => isKernelPart(name) || firmware.includes(name), logger, verify);
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
  const name = config.format === 'uki' ? `${config.preset}-${kernelVersion}.efi` : `initrd-${config.preset}-${kernelVersion}.img`;
  if (!output) return resolve(name);
  if (output.includes('{kver}')) return resolve(output.replaceAll('{kver}', kernelVersion));
  if (output.endsWith('/')) return resolve(output, name);
  if (kernelCount > 1) {
    throw new UserError('USAGE', `--output ${output} names one file but ${kernelCount} kernels are built`, {
      hint: 'put {kver} in the output name, or end it with / to name a directory',
    });
  }
  return resolve(output);
}

/**
 * Everything that determines the pruned installroot: the repositories and their
 * metadata digest, the package set (and the bootstrap set and rpm database path), what is pruned, the epoch given to maintainer
 * scripts, and the format of the cache itself.
 */
async function installrootKey(config: ImageConfig, metadataDigest: string, explicitEpoch: number | undefined): Promise<string> {
  const keys = await Promise.all(config.repositoryKeys.map(async (k) => digestOf(await readFile(k.replace(/^file:\/\//, ''), 'utf8').catch(() => k))));
  return digestOf({
    format: ROOT_CACHE_FORMAT,
    repositories: repositoryIdentity(config),
    keys,
    metadataDigest,
    packages: [...config.packages].sort(),
    // How the root is made, beyond the package list: installed first (apt), and where rpm keeps its database.
    bootstrapPackages: [...config.bootstrapPackages].sort(),
    rpmDatabase: config.rpmDatabase,
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
  const verify: VerifyMode = options.verifyCache ? 'full' : 'quick';

  // Output and manifest paths are checked before any work: a bad one must not cost a
  // package install, and must never fail after the image was written.
  await checkOutputTemplates(config, options.manifest, options.kernelOutput);
  const workDir = await createWorkDir(cacheDir, 'build', logger);
  try {
    await removeStaleTemporaries(cacheDir, logger);
    if (useCache) await pruneFrames(cacheDir);
    const frames = useCache ? frameStore(cacheDir, logger) : undefined;
    // Repository metadata younger than the max age is trusted without asking the
    // mirror again: that is what makes a warm rebuild take seconds, not a network trip.
    let metadataDigest: string | undefined;
    if (useCache) {
      metadataDigest = await phases.time('metadata', () =>
        repositoryMetadataDigest({ resolver, config, cacheDir, logger, refresh: options.refresh, maxAgeSeconds: options.metadataMaxAgeSeconds, onRefresh: () => progress.update('refreshing repository metadata') }),
      );
    }

    // Build tools from packages (ToolsTree=), so the host's versions never change an image.
    progress.update('preparing the tools root');
    const tools = await phases.time('tools', () =>
      prepareTools({ config, cacheDir, metadataDigest, logger, verify, ...(options.refresh !== undefined && { refresh: options.refresh }), ...(options.metadataMaxAgeSeconds !== undefined && { metadataMaxAgeSeconds: options.metadataMaxAgeSeconds }) }),
    );

    progress.update('resolving kernels');
    const kernels = await phases.time('kernel', () => resolveKernels(resolver, config, cacheDir, metadataDigest, options.allKernels ?? false, logger, verify));
    if (options.kernelImage && kernels.length !== 1) throw new UserError('USAGE', '--kernel-image names one kernel, but several are built', { hint: 'pass one --kernel-version' });
    const outputs = kernels.map((k) => outputPathFor(config, k.kernelVersion, kernels.length));
    const manifests = kernels.map((k, i) => manifestPathFor(options.manifest, outputs[i]!, k.kernelVersion));
    const kernelOutputs = kernels.map((k) => (options.kernelOutput ? resolve(options.kernelOutput.replaceAll('{kver}', k.kernelVersion)) : undefined));
    if (kernels.length > 1 && options.kernelOutput && !options.kernelOutput.includes('{kver}')) {
      throw new UserError('USAGE', `--kernel-output ${options.kernelOutput} names one file but ${kernels.length} kernels are built`, { hint: 'put {kver} in the kernel output name' });
    }
    await checkOutputs(outputs, manifests, kernelOutputs);
    // The kernel image must exist before any work is done for it.
    const kernelImages = await Promise.all(kernels.map((k, i) => (kernelOutputs[i] ? findKernelImage(k) : undefined)));

    // The stub comes from the distribution's package, like the kernel: never from the host.
    let stub: string | undefined;
    if (config.format === 'uki') {
      if (!config.ukiStubPackage) {
        throw new UserError('CONFIG', 'Format=uki needs UkiStubPackage= (the package holding systemd-stub)', { hint: 'Debian: UkiStubPackage=systemd-boot-efi' });
      }
      const stubPackage = config.ukiStubPackage;
      progress.update(`unpacking ${stubPackage}`);
      const stubRoot = await phases.time('stub', () => stagePackage(resolver, config, cacheDir, metadataDigest, [stubPackage], (name) => name === stubPackage, logger, verify));
      const stubInPackage = stubPath(config.architecture);
      stub = join(stubRoot, stubInPackage);
      if (!(await pathExists(stub))) throw new UserError('INPUT', `${stubPackage} has no ${stubInPackage}`, { hint: 'UkiStubPackage= must name the package with systemd-stub for this architecture' });
    }
    const signed = Boolean(config.secureBootKey && config.secureBootCertificate);
    // A signed image protects the boot chain; an unauthenticated root shell on its console
    // would undo that, so the default there is no shell (README "Secure Boot").
    const emergencyShell = config.emergencyShell ?? (signed ? 'no' : 'yes');

    const prepared = await prepareRoot({ config, cacheDir, workDir, resolver, explicitEpoch, metadataDigest, useCache, verify, phases, progress, logger });

    const limit = pLimit(Math.max(1, options.parallelKernels ?? 2));
    // One pack at a time: each already uses every core for its frames, and the first one
    // stores the base layer's frames that the others then take from the cache (two packs
    // at once would both compress the base).
    const packOneAtATime = pLimit(1);
    const images = await Promise.all(
      kernels.map((kernel, i) =>
        limit(() => withToolsRoot(tools.toolsRoot, async (): Promise<ImageResult> => {
          // A cached root is shared: each image gets a hard-linked copy to add modules to
          // (nothing rewrites a file in place, and the cache is verified before every use).
          const ownRoot = !prepared.shared && kernels.length === 1;
          const output = outputs[i]!;
          const imageRoot = ownRoot ? prepared.root : join(workDir, `root-${kernel.kernelVersion}`);
          if (!ownRoot) await run('cp', [prepared.shared ? '-al' : '-a', prepared.root, imageRoot]);
          progress.update(`kernel modules for ${kernel.kernelVersion}`);
          const modules = await phases.time(`modules ${kernel.kernelVersion}`, () =>
            installKernelModules({ imageRoot, kernelVersion: kernel.kernelVersion, sourceRoot: kernel.sourceRoot, patterns: config.kernelModules, compression: config.kernelModulesCompression, logger }),
          );
          await applyEmergencyShell(imageRoot, emergencyShell, config.emergencyShellPassword);
          await installInitrdTree(imageRoot);
          // A UKI's extensions go beside it (systemd-stub hands them over as /.extra/sysext);
          // a plain image carries them.
          let extensions = stub ? [] : await addExtensions(imageRoot, options.extensions ?? [], join(workDir, `verity-${kernel.kernelVersion}`));
          await applyExtensionImagePolicy(imageRoot, config.extensionImagePolicy);
          await addVerityCerts(imageRoot, options.verityCerts ?? []);
          const missingReason = missingFirmwareReason(config, kernel, modules.missingFirmware.length);
          progress.update(`packing ${basename(output)}`);
          const level = config.compressionLevel ?? INITRD_DEFAULT_LEVELS[config.compression];
          const initrdPath = stub ? join(workDir, `initrd-${kernel.kernelVersion}.img`) : output;
          const packed = await packOneAtATime(() => phases.time(`pack ${kernel.kernelVersion}`, () =>
            packTree({
              source: imageRoot,
              output: initrdPath,
              compression: config.compression,
              ...(level !== undefined && { level }),
              sourceDateEpoch: prepared.sourceDateEpoch,
              owner: 'root',
              lateNames: KERNEL_LAYER_NAMES,
              ...(frames && { frameCache: frames }),
            }).then((packed) => {
              if (packed.frameCache) logger.info({ kernel: kernel.kernelVersion, ...packed.frameCache }, 'compressed frames reused from the cache');
              return packed;
            }),
          ));
          if (stub) {
            const kernelImage = options.kernelImage ? resolve(options.kernelImage) : await findKernelImage(kernel);
            if (!(await pathExists(kernelImage))) throw new UserError('KERNEL_NOT_FOUND', `kernel image not found: ${kernelImage}`);
            const ukiWork = join(workDir, `uki-${kernel.kernelVersion}`);
            await mkdir(ukiWork);
            progress.update(`assembling ${basename(output)}`);
            await phases.time(`uki ${kernel.kernelVersion}`, async () => {
              await writeUki({
                stub: stub!,
                kernel: kernelImage,
                initrd: initrdPath,
                osRelease: await readFile(join(imageRoot, 'etc/initrd-release'), 'utf8'),
                kernelVersion: kernel.kernelVersion,
                cmdline: config.kernelCommandLine,
                output,
                workDir: ukiWork,
                sourceDateEpoch: prepared.sourceDateEpoch,
                sign: signed ? { key: config.secureBootKey!, cert: config.secureBootCertificate! } : undefined,
              });
              const placed = await placeUkiExtensions(output, (options.extensions ?? []).map((e) => e.path));
              extensions = await Promise.all(placed.map(async (path, n) => ({ name: options.extensions![n]!.name, path, sha256: await sha256File(path) })));
            });
          }
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
              format: config.format,
              signed: stub ? signed : false,
              ...(stub && { kernelCommandLine: config.kernelCommandLine ?? '', stubPackage: config.ukiStubPackage }),
              emergencyShell,
              kernelVersion: kernel.kernelVersion,
              modulesSource: kernel.description,
              sourceDateEpoch: prepared.sourceDateEpoch,
              packages: prepared.packages,
              modules: modules.modules,
              firmware: modules.firmware,
              firmwarePackages: config.firmwarePackages,
              missingFirmware: modules.missingFirmware,
              extensions,
              missingFirmwareReason: missingReason,
              missingFirmwareModules: modules.missingFirmwareModules,
              pruned: prepared.prune,
              tools: tools.manifest,
            });
          }
          if (imageRoot !== prepared.root) await rm(imageRoot, { recursive: true, force: true });
          const kernelImagePath = kernelOutputs[i];
          if (kernelImagePath) await copyFileAtomically(kernelImages[i]!, kernelImagePath, 0o644);
          return {
            kernelImagePath,
            frames: packed.frameCache,
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
            format: config.format,
            signed: stub ? signed : false,
            extensions,
            emergencyShell,
          };
        })),
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
      tools: tools.manifest,
    };
  } catch (error) {
    progress.done();
    throw error;
  } finally {
    await removeWorkDir(workDir);
  }
}

/**
 * Extensions go to var/lib/extensions: systemd-sysext reads it in the initrd with every
 * version we ship (252, 257) and accepts unsigned images there; /.extra/sysext is the
 * boot loader's (systemd-stub's) place and is refused for unsigned images by 257's image
 * policy and ignored by 252. The image root is this build's own copy (never the cache's).
 */
async function addExtensions(imageRoot: string, extensions: NonNullable<BuildOptions['extensions']>, workDir: string): Promise<{ name: string; path: string; sha256: string; roothash?: string }[]> {
  if (extensions.length === 0) return [];
  const dir = join(imageRoot, 'var/lib/extensions');
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const out = [];
  for (const ext of extensions) {
    const dest = join(dir, `${ext.name}.raw`);
    await rm(dest, { force: true });
    await copyFile(ext.path, dest);
    // Pin the root hash in the image (as trusted as the image itself): without it systemd has
    // no root hash for an unsigned image and mounts its data partition without dm-verity
    // (measured with 257: a flipped data byte reached the root); a signed image's signature is
    // still checked against it. Checked first, so a tampered image is refused here, not pinned.
    if (ext.verity) {
      await verifyVerity(dest, ext.name, ext.verity, workDir);
      // verity_settings_load (src/shared/dissect-image.c): NAME.roothash for a root data
      // partition, NAME.usrhash for a usr one, read beside NAME.raw.
      await writeFile(join(dir, `${ext.name}.${ext.verity.designator === 'usr' ? 'usrhash' : 'roothash'}`), `${ext.verity.roothash}\n`, { mode: 0o644 });
    }
    out.push({ name: ext.name, path: `/var/lib/extensions/${ext.name}.raw`, sha256: ext.sha256 ?? (await sha256File(dest)), ...(ext.verity && { roothash: ext.verity.roothash }) });
  }
  return out;
}

/** veritysetup verify, in user space, on copies of the data and hash partitions. */
async function verifyVerity(image: string, name: string, verity: NonNullable<BuildExtension['verity']>, workDir: string): Promise<void> {
  if (!/^[0-9a-f]{64}$/.test(verity.roothash)) throw new UserError('INPUT', `extension "${name}": not a sha256 root hash: ${verity.roothash.slice(0, 80)}`);
  await mkdir(workDir, { recursive: true });
  const data = join(workDir, `${name}.data`);
  const hash = join(workDir, `${name}.verity`);
  const whole = await readFile(image);
  const slice = (r: { offset: number; size: number }) => {
    if (r.offset < 0 || r.size <= 0 || r.offset + r.size > whole.length) throw new UserError('INPUT', `extension "${name}": a partition lies outside the image`);
    return whole.subarray(r.offset, r.offset + r.size);
  };
  await writeFile(data, slice(verity.data));
  await writeFile(hash, slice(verity.hash));
  try {
    // Exit 0: the data matches; otherwise (veritysetup: 1 wrong parameters, 2 verification
    // failed) one line naming the image.
    await run('veritysetup', ['verify', data, hash, verity.roothash], {
      explainFailure: (r) =>
        new UserError('INPUT', `extension "${name}": its data does not match its root hash ${verity.roothash.slice(0, 16)}… (veritysetup verify: ${(r.stderr || r.stdout).trim().split('\n')[0]})`, {
          hint: 'the image was changed after sysext build made it: build it again',
        }),
    });
  } finally {
    await rm(data, { force: true });
    await rm(hash, { force: true });
  }
}

async function addVerityCerts(imageRoot: string, certs: string[]): Promise<void> {
  if (certs.length === 0) return;
  const dir = join(imageRoot, 'etc/verity.d');
  await mkdir(dir, { recursive: true, mode: 0o755 });
  for (const cert of certs) {
    let pem: string;
    try {
      pem = new X509Certificate(await readFile(cert)).toString();
    } catch (error) {
      throw new UserError('INPUT', `${cert} is not a readable X.509 certificate: ${(error as Error).message}`, { hint: 'give the certificate (PEM or DER) the extensions were signed with (sysext build --sign-cert)' });
    }
    const name = basename(cert).replace(/\.(pem|crt|cer|der)$/, '');
    await writeFile(join(dir, `${name}.crt`), pem, { mode: 0o644 });
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
  verify: VerifyMode;
  phases: Phases;
  progress: ReturnType<typeof createProgress>;
  logger: Logger;
}): Promise<PreparedRoot> {
  const { config, cacheDir, resolver, phases, progress, logger } = o;
  const key = o.useCache && o.metadataDigest ? await installrootKey(config, o.metadataDigest, o.explicitEpoch) : undefined;
  if (key) {
    const hit = await phases.time('cache lookup', () => lookupRoot(cacheDir, key, logger, o.verify));
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
    if (storeKey !== key) await writeMetadataState(cacheDir, repositoryIdentity(config), { digest: install.repositoryDigest, refreshedAt: Date.now() });
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
