import { constants as fsConstants } from 'node:fs';
import { copyFile, lstat, mkdir, readdir, readFile, realpath, rm, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import pLimit from 'p-limit';
import {
  UserError,
  getLogger,
  isErrnoException,
  resolveInsideRoot,
  run,
  safeComponents,
  type Logger,
} from '@mkinitrd-pkg/common';
import { runDepmod } from './depmod.js';
import { readModinfo, type ModuleInfo } from './modinfo.js';
import { emptyDatabase, parseModuleLines, parseModulesBuiltin, type ModuleDatabase } from './moddb.js';
import { RootResolver } from './rootfs.js';
import { addDependencies, compileModulePatterns, selectModules } from './select.js';
import { HOST_PATTERN, readHostModules, type HostModuleSources } from './host.js';

export interface ModuleSelection {
  /** Ordered globs; a `-` prefix excludes. See select.ts for the full semantics. */
  patterns: string[];
}

export interface InstallModulesOptions {
  /** The initrd tree being built; modules go to imageRoot/usr/lib/modules/KVER. */
  imageRoot: string;
  kernelVersion: string;
  /**
   * A root holding usr/lib/modules/KVER (or lib/modules/KVER) and the firmware: '/' for
   * the host, or a staging root where a kernel package was unpacked (modules.dep may be
   * missing there; it is then computed with `depmod -n`, without writing to the root).
   */
  sourceRoot: string;
  /** e.g. ['kernel/drivers/ata/*', 'ext4', 'virtio*', '-kernel/drivers/ata/pata_*']. */
  patterns: string[];
  /**
   * Directories to look for firmware in, in order. Default: sourceRoot/usr/lib/firmware
   * and sourceRoot/lib/firmware (symlinks resolved inside sourceRoot). Each given
   * directory is its own root: symlinks in it cannot reach outside it.
   */
  firmwareRoots?: string[];
  /** Where `host` in the patterns reads the running system's modules (host.ts). */
  host?: HostModuleSources;
  /**
   * The form module files take in the image (KernelModulesCompression=): 'keep' copies
   * them as the kernel package ships them; 'none' stores them decompressed (.ko), so the
   * image's own compressor sees their contents (see decompressModules). Default 'keep'.
   */
  compression?: ModuleCompression;
  logger?: Logger;
}

export interface InstallModulesResult {
  kernelVersion: string;
  /** Names of the installed (loadable) modules, normalised (`_`), sorted. */
  modules: string[];
  /**
   * Files written under usr/lib/modules/KVER, relative to imageRoot, sorted: the module
   * files, the copied metadata (modules.order, modules.builtin, modules.builtin.modinfo)
   * and what depmod generated.
   */
  files: string[];
  /** Firmware files copied, relative to imageRoot (usr/lib/firmware/…), sorted. */
  firmware: string[];
  /** Firmware names (as modules declare them) found in no firmware root, sorted. */
  missingFirmware: string[];
  /** The modules that declare each missing firmware file. */
  missingFirmwareModules: Record<string, string[]>;
  /** Total size of everything in `files` and `firmware`. */
  bytes: number;
}

/**
 * How module files are stored in the image. 'keep': as packaged (.ko, .ko.xz, .ko.zst,
 * .ko.gz). 'none': decompressed to .ko — loadable by every kernel, whatever it was built
 * to decompress (kernel/module/decompress.c handles only the CONFIG_MODULE_COMPRESS_*
 * format; kmod falls back to userspace decompression only if it was built with it).
 */
export type ModuleCompression = 'keep' | 'none';
export const MODULE_COMPRESSIONS: readonly ModuleCompression[] = ['keep', 'none'];

/** Compressed module suffixes and the program (with its flags) that decompresses files in place. */
const MODULE_DECOMPRESSORS: { suffix: string; tool: string; args: string[] }[] = [
  { suffix: '.xz', tool: 'xz', args: ['-d', '-q', '-f', '--'] },
  { suffix: '.zst', tool: 'zstd', args: ['-d', '-q', '-f', '--rm', '--'] },
  { suffix: '.gz', tool: 'gzip', args: ['-d', '-q', '-f', '--'] },
];

const METADATA_FILES = ['modules.order', 'modules.builtin', 'modules.builtin.modinfo'];
const MODULE_DIRS = ['usr/lib/modules', 'lib/modules'];
/** Suffixes the kernel's firmware loader tries, in its order (uncompressed, zstd, xz). */
const FIRMWARE_SUFFIXES = ['', '.zst', '.xz'];

function checkKernelVersion(kernelVersion: string): void {
  if (kernelVersion === '' || kernelVersion === '.' || kernelVersion === '..' || /[/\0]/.test(kernelVersion)) {
    throw new UserError('INPUT', `invalid kernel version: ${JSON.stringify(kernelVersion)}`, {
      hint: 'a kernel version is a directory name under /usr/lib/modules (uname -r names the running one)',
    });
  }
}

async function realRoot(path: string, what: string): Promise<string> {
  try {
    return await realpath(path);
  } catch (error) {
    if (isErrnoException(error) && error.code === 'ENOENT') {
      throw new UserError('INPUT', `${what} ${path} does not exist`);
    }
    throw error;
  }
}

function compareVersions(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

/**
 * Kernel versions with modules in a root: directories under usr/lib/modules and
 * lib/modules that contain modules.dep or kernel/. Sorted, oldest first.
 */
export async function findKernelVersions(sourceRoot: string): Promise<string[]> {
  const root = new RootResolver(await realRoot(sourceRoot, 'source root'));
  return findVersions(root);
}

async function findVersions(root: RootResolver): Promise<string[]> {
  const found = new Set<string>();
  for (const base of MODULE_DIRS) {
    const dir = await root.resolve(base);
    if (!dir?.stats.isDirectory()) continue;
    for (const name of await readdir(dir.path)) {
      const kdir = await root.resolve(`${dir.rel}/${name}`);
      if (!kdir?.stats.isDirectory()) continue;
      const dep = await root.resolve(`${kdir.rel}/modules.dep`);
      const kernel = await root.resolve(`${kdir.rel}/kernel`);
      if (dep?.stats.isFile() || kernel?.stats.isDirectory()) found.add(name);
    }
  }
  return [...found].sort(compareVersions);
}

async function readOptional(root: RootResolver, rel: string): Promise<string | undefined> {
  const file = await root.resolve(rel);
  if (!file?.stats.isFile()) return undefined;
  return readFile(file.path, 'utf8');
}

async function loadDatabase(root: RootResolver, modRel: string, modHostPath: string, kernelVersion: string, logger: Logger): Promise<ModuleDatabase> {
  const db = emptyDatabase();
  const dep = await readOptional(root, `${modRel}/modules.dep`);
  if (dep !== undefined) {
    parseModuleLines(db, dep);
    for (const name of ['modules.softdep', 'modules.alias']) {
      const text = await readOptional(root, `${modRel}/${name}`);
      if (text !== undefined) parseModuleLines(db, text);
    }
  } else {
    // A kernel package unpacked without its postinst: Debian's linux-image ships no
    // modules.dep. Compute it without touching the source root.
    logger.debug({ dir: modHostPath }, 'no modules.dep; computing it with depmod -n');
    parseModuleLines(db, await runDepmod({ modulesDir: dirname(modHostPath), kernelVersion, dryRun: true, logger }));
  }
  const builtin = await readOptional(root, `${modRel}/modules.builtin`);
  if (builtin !== undefined) parseModulesBuiltin(db, builtin);
  return db;
}

/** Creates directories below a directory this run made itself (so no symlinks in it). */
class DirMaker {
  private readonly made = new Map<string, Promise<unknown>>();
  ensure(dir: string): Promise<unknown> {
    let p = this.made.get(dir);
    if (!p) {
      p = mkdir(dir, { recursive: true });
      this.made.set(dir, p);
    }
    return p;
  }
}

/**
 * Install the kernel modules selected by `patterns` (plus their dependency closure and
 * firmware) from sourceRoot into imageRoot/usr/lib/modules/KVER, then run depmod there.
 * An existing imageRoot/usr/lib/modules/KVER is replaced. Nothing outside sourceRoot is
 * read and nothing outside imageRoot is written: symlinks in the source are resolved
 * inside it, and only regular files are copied.
 */
export async function installKernelModules(o: InstallModulesOptions): Promise<InstallModulesResult> {
  const logger = o.logger ?? getLogger();
  const started = performance.now();
  checkKernelVersion(o.kernelVersion);
  const kver = o.kernelVersion;
  // `host` (KernelModules=host) adds what the running system uses (host.ts).
  const hostOnly = o.patterns.some((p) => p.trim() === HOST_PATTERN);
  const patterns = compileModulePatterns(o.patterns.filter((p) => p.trim() !== HOST_PATTERN));
  const source = new RootResolver(await realRoot(o.sourceRoot, 'source root'));

  // 1. Where the kernel's modules are in the source root.
  let modDir: { path: string; rel: string } | undefined;
  for (const base of MODULE_DIRS) {
    const dir = await source.resolve(`${base}/${kver}`);
    if (dir?.stats.isDirectory()) {
      modDir = dir;
      break;
    }
  }
  if (!modDir) {
    const versions = await findVersions(source);
    throw new UserError('KERNEL_NOT_FOUND', `no modules for kernel ${kver} in ${o.sourceRoot}`, {
      hint:
        versions.length > 0
          ? `kernels with modules there: ${versions.join(', ')}`
          : `${o.sourceRoot} has no usr/lib/modules/*: install a kernel package there (KernelPackage=) or choose another --kernel-version`,
    });
  }

  // 2. The module database and the selection with its dependency closure.
  const db = await loadDatabase(source, modDir.rel, modDir.path, kver, logger);
  const selection = selectModules(db, patterns, kver, logger);
  if (hostOnly) {
    const host = await readHostModules(o.host);
    const elsewhere: string[] = [];
    for (const name of host.names) {
      if (db.modules.has(name)) {
        if (!selection.excluded.has(name)) selection.selected.add(name);
      } else if (!db.builtin.has(name) && name !== host.rootFilesystem) {
        elsewhere.push(name);
      }
    }
    // A module the host loaded that this kernel lacks (another version or config): the
    // image can still be right, so say it, do not fail.
    if (elsewhere.length > 0) logger.warn({ kernelVersion: kver, modules: elsewhere }, 'host modules that this kernel has neither as module nor built in');
    logger.info({ loaded: host.loaded, rootFilesystem: host.rootFilesystem, crypttab: host.crypttab }, 'host-only module selection');
  }
  const closure = new Set<string>();
  addDependencies(db, closure, [...selection.selected], selection.excluded, new Map(), logger);

  const sourceFiles = new Map<string, { path: string; size: number }>();
  const resolveModule = async (name: string) => {
    const entry = db.modules.get(name)!;
    const file = await source.resolve(`${modDir.rel}/${entry.path}`);
    if (!file?.stats.isFile()) {
      throw new UserError('IO', `module ${name} is listed in modules.dep but ${join(modDir.path, entry.path)} is missing or not a regular file`, {
        hint: 'the kernel modules in the source root are incomplete or modules.dep is stale: reinstall the kernel package or run depmod',
      });
    }
    sourceFiles.set(name, { path: file.path, size: file.stats.size });
  };

  const infos = new Map<string, ModuleInfo>();
  const softdepsFromModinfo = new Map<string, ModuleInfo['softdeps']>();
  let pending = [...closure];
  while (pending.length > 0) {
    const limit = pLimit(16);
    await Promise.all(pending.map((name) => limit(() => resolveModule(name))));
    const read = await readModinfo(
      pending.map((name) => sourceFiles.get(name)!.path),
      logger,
    );
    for (const [name, info] of read) {
      infos.set(name, info);
      softdepsFromModinfo.set(name, info.softdeps);
    }
    // Soft dependencies that only modinfo knew about (e.g. no modules.softdep).
    pending = addDependencies(db, closure, pending.filter((n) => read.has(n)), selection.excluded, softdepsFromModinfo, logger);
  }
  const modules = [...closure].sort();

  // 3. A fresh destination directory inside the image (touched only now that the
  // request is known to be valid).
  await mkdir(o.imageRoot, { recursive: true });
  const imageRoot = await realRoot(o.imageRoot, 'image root');
  const destRel = `usr/lib/modules/${kver}`;
  const dest = await resolveInsideRoot(imageRoot, destRel);
  if (dest === modDir.path || (await realpath(dest).catch(() => undefined)) === modDir.path) {
    throw new UserError('INPUT', `the image root and the source root hold the same modules directory ${modDir.path}`, {
      hint: 'install kernel modules from a separate source root (the host "/" or an unpacked kernel package)',
    });
  }
  await rm(dest, { recursive: true, force: true });
  await mkdir(dest, { recursive: true });

  const dirs = new DirMaker();
  const limit = pLimit(16);
  const written: { rel: string; size: number }[] = [];
  const copyInto = async (from: string, relInDest: string, size: number) => {
    const to = join(dest, relInDest);
    await dirs.ensure(dirname(to));
    await copyFile(from, to, fsConstants.COPYFILE_EXCL);
    written.push({ rel: `${destRel}/${relInDest}`, size });
  };

  // 4. Module files (paths from modules.dep, refused if they climb out) and metadata.
  await Promise.all(
    modules.map((name) =>
      limit(async () => {
        const src = sourceFiles.get(name)!;
        await copyInto(src.path, safeComponents(db.modules.get(name)!.path).join('/'), src.size);
      }),
    ),
  );
  if ((o.compression ?? 'keep') === 'none') await decompressModules(dest, destRel, written, logger);
  for (const name of METADATA_FILES) {
    const file = await source.resolve(`${modDir.rel}/${name}`);
    if (file?.stats.isFile()) await copyInto(file.path, name, file.stats.size);
  }

  // 5. Firmware.
  const wanted = new Map<string, string[]>(); // firmware name → modules that want it
  for (const name of modules) {
    for (const fw of infos.get(name)?.firmware ?? []) {
      const list = wanted.get(fw);
      if (list) list.push(name);
      else wanted.set(fw, [name]);
    }
  }
  const firmwareRoots = await firmwareSearchRoots(o, source, logger);
  const firmware: { rel: string; size: number }[] = [];
  const missingFirmware: string[] = [];
  await Promise.all(
    [...wanted.keys()].map((fw) =>
      limit(async () => {
        const found = await findFirmware(firmwareRoots, fw, kver);
        if (!found) {
          missingFirmware.push(fw);
          logger.debug({ firmware: fw, modules: wanted.get(fw) }, 'firmware not found');
          return;
        }
        const rel = `usr/lib/firmware/${found.rel}`;
        const to = await resolveInsideRoot(imageRoot, rel);
        await mkdir(dirname(to), { recursive: true });
        await unlink(to).catch((error: unknown) => {
          if (!(isErrnoException(error) && error.code === 'ENOENT')) throw error;
        });
        try {
          await copyFile(found.path, to, fsConstants.COPYFILE_EXCL);
        } catch (error) {
          // Another kernel installed in parallel copied the same file first.
          if (!(isErrnoException(error) && error.code === 'EEXIST')) throw error;
        }
        firmware.push({ rel, size: found.size });
      }),
    ),
  );

  // 6. depmod on the image. Use the image as base when its lib/modules is the same
  // directory (merged /usr), so its depmod.d applies; otherwise a private base.
  const image = new RootResolver(imageRoot);
  const libModules = await image.resolve('lib/modules');
  await runDepmod({
    modulesDir: dirname(dest),
    kernelVersion: kver,
    ...(libModules?.rel === 'usr/lib/modules' && { baseRoot: imageRoot }),
    logger,
  });
  const generated = new Set(written.map((w) => w.rel));
  for (const entry of await readdir(dest, { withFileTypes: true })) {
    const rel = `${destRel}/${entry.name}`;
    if (!entry.isFile() || generated.has(rel)) continue;
    written.push({ rel, size: (await lstat(join(dest, entry.name))).size });
  }

  const result: InstallModulesResult = {
    kernelVersion: kver,
    modules,
    files: written.map((w) => w.rel).sort(),
    firmware: [...new Set(firmware.map((f) => f.rel))].sort(),
    missingFirmware: missingFirmware.sort(),
    missingFirmwareModules: Object.fromEntries(missingFirmware.map((fw) => [fw, wanted.get(fw) ?? []])),
    bytes: written.reduce((n, w) => n + w.size, 0) + firmware.reduce((n, f) => n + f.size, 0),
  };
  logger.info(
    {
      kernelVersion: kver,
      modules: modules.length,
      builtinRequested: selection.builtinRequested.length,
      firmware: result.firmware.length,
      missingFirmware: result.missingFirmware.length,
      bytes: result.bytes,
      ms: Math.round(performance.now() - started),
    },
    'kernel modules installed',
  );
  return result;
}

/**
 * Decompress the module files among `written` (below dest, which this run created) in
 * place with the tools root's xz/zstd/gzip, and rename their entries (foo.ko.xz → foo.ko).
 * depmod runs afterwards, so modules.dep names the files as they now are.
 *
 * Why: Debian and Fedora ship .ko.xz, which the image's compressor cannot compress again;
 * decompressed, the modules share one compression window (kernel/drivers/scsi's HBAs
 * compress against each other) and the image gets smaller at the price of RAM while the
 * initrd runs (measured in the README, "Module form"). Programs take many files per call:
 * one process per module would cost more than the decompression.
 */
async function decompressModules(dest: string, destRel: string, written: { rel: string; size: number }[], logger: Logger): Promise<void> {
  const started = performance.now();
  const prefix = `${destRel}/`;
  const limit = pLimit(2);
  const jobs: Promise<unknown>[] = [];
  let count = 0;
  for (const { suffix, tool, args } of MODULE_DECOMPRESSORS) {
    const entries = written.filter((w) => w.rel.startsWith(prefix) && w.rel.endsWith(`.ko${suffix}`));
    count += entries.length;
    for (let i = 0; i < entries.length; i += 160) {
      const batch = entries.slice(i, i + 160);
      jobs.push(
        limit(async () => {
          await run(tool, [...args, ...batch.map((w) => join(dest, w.rel.slice(prefix.length)))]);
          for (const w of batch) {
            w.rel = w.rel.slice(0, -suffix.length);
            w.size = (await lstat(join(dest, w.rel.slice(prefix.length)))).size;
          }
        }),
      );
    }
  }
  await Promise.all(jobs);
  if (count > 0) logger.debug({ modules: count, ms: Math.round(performance.now() - started) }, 'kernel modules decompressed');
}

interface FirmwareRoot {
  resolver: RootResolver;
  /** Directory of the firmware inside the resolver's root. */
  rel: string;
}

async function firmwareSearchRoots(o: InstallModulesOptions, source: RootResolver, logger: Logger): Promise<FirmwareRoot[]> {
  const roots: FirmwareRoot[] = [];
  const seen = new Set<string>();
  if (o.firmwareRoots === undefined) {
    for (const rel of ['usr/lib/firmware', 'lib/firmware']) {
      const dir = await source.resolve(rel);
      if (!dir?.stats.isDirectory() || seen.has(dir.path)) continue;
      seen.add(dir.path);
      roots.push({ resolver: source, rel: dir.rel });
    }
  } else {
    for (const path of o.firmwareRoots) {
      const real = await realpath(path).catch(() => undefined);
      if (real === undefined || seen.has(real)) {
        if (real === undefined) logger.debug({ path }, 'firmware directory does not exist');
        continue;
      }
      seen.add(real);
      roots.push({ resolver: new RootResolver(real), rel: '' });
    }
  }
  return roots;
}

/**
 * The file the kernel's firmware loader would load for `name`: for each suffix
 * (none, .zst, .xz) it tries updates/KVER, updates, KVER and the top directory
 * (drivers/base/firmware_loader/main.c, fw_path[]). Relative placement is kept.
 */
async function findFirmware(
  roots: readonly FirmwareRoot[],
  name: string,
  kver: string,
): Promise<{ path: string; rel: string; size: number } | undefined> {
  let parts: string[];
  try {
    parts = safeComponents(name);
  } catch {
    return undefined;
  }
  if (parts.length === 0) return undefined;
  const clean = parts.join('/');
  for (const suffix of FIRMWARE_SUFFIXES) {
    for (const root of roots) {
      for (const sub of [`updates/${kver}`, 'updates', kver, '']) {
        const rel = sub === '' ? clean + suffix : `${sub}/${clean}${suffix}`;
        const file = await root.resolver.resolve(root.rel === '' ? rel : `${root.rel}/${rel}`);
        if (file?.stats.isFile()) return { path: file.path, rel, size: file.stats.size };
      }
    }
  }
  return undefined;
}
