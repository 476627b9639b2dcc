import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { access, mkdir, readdir, readFile, rm, stat, writeFile, rename } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { UserError, createProgress, getLogger, run, type Logger } from '@mkinitrd-pkg/common';
import type { ImageConfig } from '@mkinitrd-pkg/config';
import { createResolver, type InstalledPackage, type Resolver } from '@mkinitrd-pkg/resolver';
import { findKernelVersions, installKernelModules } from '@mkinitrd-pkg/kmod';
import { prune, DEFAULT_PRUNE_RULES, type PruneReport } from '@mkinitrd-pkg/pruner';
import { packTree } from '@mkinitrd-pkg/packer';
import { makeInitrdRoot } from './initrd.js';
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
}

export interface ImageResult {
  kernelVersion: string;
  path: string;
  manifestPath: string | undefined;
  sha256: string;
  bytes: number;
  modules: string[];
  firmware: string[];
  modulesSource: string;
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
}

export function defaultCacheDir(): string {
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'mkinitrd-pkg');
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

function requireRoot(): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new UserError('NOT_ROOT', 'building an initrd needs root (package maintainer scripts run chrooted)', {
      hint: 'run it with sudo, or as root in a container or VM',
    });
  }
}

function sourceDateEpochFromEnv(): number | undefined {
  const raw = process.env.SOURCE_DATE_EPOCH;
  if (raw === undefined || raw === '') return undefined;
  if (!/^\d+$/.test(raw)) throw new UserError('INPUT', `SOURCE_DATE_EPOCH must be a whole number of seconds, got "${raw}"`);
  return Number(raw);
}

/** A work directory per build, removed at the end; one left by a killed build is removed by the next. */
async function createWorkDir(cacheDir: string, logger: Logger): Promise<string> {
  const workBase = join(cacheDir, 'work');
  await mkdir(workBase, { recursive: true });
  for (const name of await readdir(workBase)) {
    const pidText = await readFile(join(workBase, name, 'pid'), 'utf8').catch(() => '');
    const pid = Number(pidText);
    let alive = false;
    if (pid > 0) {
      try {
        process.kill(pid, 0);
        alive = true;
      } catch {
        alive = false;
      }
    }
    if (!alive) {
      logger.info({ dir: join(workBase, name) }, 'removing the work directory of an interrupted build');
      await rm(join(workBase, name), { recursive: true, force: true });
    }
  }
  const dir = join(workBase, `build-${randomBytes(6).toString('hex')}`);
  await mkdir(dir);
  await writeFile(join(dir, 'pid'), String(process.pid));
  return dir;
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

interface KernelSource {
  kernelVersion: string;
  sourceRoot: string;
  description: string;
}

async function stageKernelPackage(resolver: Resolver, config: ImageConfig, cacheDir: string, logger: Logger): Promise<string> {
  if (!resolver.unpack) throw new UserError('CONFIG', `KernelPackage= is not supported with ${resolver.packageManager} yet`);
  const result = await resolver.unpack({
    config,
    packages: [config.kernelPackage!],
    cacheDir,
    include: (name) => KERNEL_PACKAGE_NAMES.test(name),
    logger,
    // Unpacked kernels are cached by the exact package files they came from.
    target: async (files) => {
      const key = createHash('sha256').update(files.sort().join('\n')).digest('hex').slice(0, 20);
      const dir = join(cacheDir, 'kernels', key);
      if (await exists(join(dir, '.complete'))) return undefined;
      await rm(dir, { recursive: true, force: true });
      return dir;
    },
  });
  const dir = result.target ?? join(cacheDir, 'kernels', createHash('sha256').update(result.packageFiles.map((f) => basename(f)).sort().join('\n')).digest('hex').slice(0, 20));
  if (result.target) await writeFile(join(dir, '.complete'), result.packageFiles.map((f) => basename(f)).join('\n') + '\n');
  return dir;
}

async function resolveKernels(resolver: Resolver, config: ImageConfig, cacheDir: string, logger: Logger): Promise<KernelSource[]> {
  const hostRoot = config.kernelModulesRoot;
  let staged: string | undefined;
  let stagedVersions: string[] = [];
  if (config.kernelPackage) {
    staged = await stageKernelPackage(resolver, config, cacheDir, logger);
    stagedVersions = await findKernelVersions(staged);
  }
  const requested = config.kernelVersions.length ? config.kernelVersions : stagedVersions;
  if (requested.length === 0) {
    throw new UserError('KERNEL_NOT_FOUND', 'no kernel version to build for', {
      hint: 'pass --kernel-version KVER (modules from /usr/lib/modules/KVER) or set KernelPackage=',
    });
  }
  const hostVersions = await findKernelVersions(hostRoot);
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

/**
 * The pipeline: packages → initrd root → prune → per kernel: modules + depmod → pack.
 * Returns what it built; writes nothing but the images and their manifests.
 */
export async function buildInitrd(options: BuildOptions): Promise<BuildResult> {
  const logger = options.logger ?? getLogger();
  const config = options.config;
  const cacheDir = resolve(options.cacheDir ?? defaultCacheDir());
  requireRoot();
  const phases = new Phases(logger);
  const progress = createProgress('mkinitrd-pkg');
  const resolver = createResolver(config.packageManager);
  const explicitEpoch = options.sourceDateEpoch ?? sourceDateEpochFromEnv();

  const workDir = await createWorkDir(cacheDir, logger);
  try {
    progress.update('resolving kernels');
    const kernels = await phases.time('kernel', () => resolveKernels(resolver, config, cacheDir, logger));
    const outputs = kernels.map((k) => outputPathFor(config, k.kernelVersion, kernels.length));
    for (const out of outputs) {
      if (!(await exists(dirname(out)))) throw new UserError('USAGE', `output directory does not exist: ${dirname(out)}`);
    }

    const root = join(workDir, 'root');
    progress.update('installing packages');
    const install = await phases.time('install', () =>
      resolver.install({
        root,
        config,
        packages: config.packages,
        cacheDir,
        ...(explicitEpoch !== undefined && { sourceDateEpoch: explicitEpoch }),
        logger,
      }),
    );
    const sourceDateEpoch = explicitEpoch ?? install.newestPackageEpoch ?? 0;

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

    const images: ImageResult[] = [];
    for (const [i, kernel] of kernels.entries()) {
      // One kernel: modules go straight into the root. Several: each image gets a copy.
      const imageRoot = kernels.length === 1 ? root : join(workDir, `root-${kernel.kernelVersion}`);
      if (imageRoot !== root) await run('cp', ['-a', '--reflink=auto', root, imageRoot]);
      progress.update(`kernel modules for ${kernel.kernelVersion}`);
      const modules = await phases.time(`modules ${kernel.kernelVersion}`, () =>
        installKernelModules({ imageRoot, kernelVersion: kernel.kernelVersion, sourceRoot: kernel.sourceRoot, patterns: config.kernelModules, logger }),
      );
      const output = outputs[i]!;
      progress.update(`packing ${basename(output)}`);
      await phases.time(`pack ${kernel.kernelVersion}`, () =>
        packTree({
          source: imageRoot,
          output,
          compression: config.compression,
          ...((config.compressionLevel ?? INITRD_DEFAULT_LEVELS[config.compression]) !== undefined && {
            level: config.compressionLevel ?? INITRD_DEFAULT_LEVELS[config.compression],
          }),
          sourceDateEpoch,
          owner: 'root',
        }),
      );
      const sha256 = await sha256File(output);
      const bytes = (await stat(output)).size;
      const manifestPath =
        options.manifest === undefined ? `${output}.manifest.json` : options.manifest === '' ? undefined : resolve(options.manifest.replaceAll('{kver}', kernel.kernelVersion));
      const image: ImageResult = {
        kernelVersion: kernel.kernelVersion,
        path: output,
        manifestPath,
        sha256,
        bytes,
        modules: modules.modules,
        firmware: modules.firmware,
        modulesSource: kernel.description,
      };
      if (manifestPath) await writeManifest(manifestPath, {
        image: basename(output),
        sha256,
        bytes,
        preset: config.preset,
        distribution: config.distribution,
        release: config.release,
        compression: config.compression,
        kernelVersion: kernel.kernelVersion,
        modulesSource: kernel.description,
        sourceDateEpoch,
        packages: install.packages,
        modules: modules.modules,
        firmware: modules.firmware,
        missingFirmware: modules.missingFirmware,
        pruned: pruneReport,
      });
      images.push(image);
      if (imageRoot !== root) await rm(imageRoot, { recursive: true, force: true });
    }
    progress.done();
    return {
      preset: config.preset,
      images,
      packages: install.packages,
      sourceDateEpoch,
      prune: pruneReport,
      sizeByDirectory: sizes,
      phases: phases.timings,
      warnings: install.warnings,
      compression: config.compression,
    };
  } catch (error) {
    progress.done();
    throw error;
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

function stripSlash(pattern: string): string {
  return pattern.replace(/^\/+/, '');
}

async function writeManifest(path: string, manifest: unknown): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(4).toString('hex')}.tmp`);
  await writeFile(temp, JSON.stringify(manifest, null, 2) + '\n', { mode: 0o644 });
  await rename(temp, path);
}
