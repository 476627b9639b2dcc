import { mkdir, readdir, rm, stat, writeFile, lstat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { UserError, checkOutputPath, createProgress, createWorkDir, removeWorkDir, defaultCacheDir, getLogger, requireRoot, sourceDateEpochFromEnv, requireCommands, withAtomicOutput, withToolsRoot, type Logger } from '@mkinitrd-pkg/common';
import { prepareTools, removeStaleTemporaries, type ToolsManifest } from '@mkinitrd-pkg/builder';
import { createResolver, type InstalledPackage } from '@mkinitrd-pkg/resolver';
import { prune, DEFAULT_PRUNE_RULES, type PruneReport } from '@mkinitrd-pkg/pruner';
import { loadDefinition, SCOPES, type SysextDefinition, type SysextScope } from './definition.js';
import { resolveBase, type BaseKind } from './base.js';
import { copyBase, overlayWorks, prepareOverlay, runInstallWorker } from './layer.js';
import { STATE_PATHS, diffLayer, enforceSysextScope, removeEmptyDirs, summarizeTree } from './tree.js';
import { extensionReleaseFields, readBaseRelease, renderOsRelease } from './os-release.js';
import { FORMATS, formatVerity, loadSigningIdentity, makeFilesystem, sha256File, signRootHash, signaturePartition, type SysextFormat, type SigningIdentity } from './image.js';
import { partitionName, writeDdi, type PartitionInput, type PartitionLayout } from './ddi.js';
import { derivedUuid, formatUuid, rootHashUuids } from './uuid.js';

export interface SysextBuildOptions {
  /** A definition name (sysext/NAME.conf on the search path), a .conf path, or a parsed definition. */
  definition: string | SysextDefinition;
  /** An initrd image file, an unpacked initrd, or an installroot directory. */
  base?: string;
  /**
   * Without `base`: the preset whose installroot is the base. With `base`: the preset
   * whose repositories the packages come from (default: the base's os-release ID).
   */
  preset?: string;
  /** Extra config files applied to the preset (as `build --config`). */
  configFiles?: string[];
  /** The image to write (NAME.raw; a directory or a trailing / means DIR/NAME.raw). */
  output: string;
  format?: SysextFormat;
  /** Add a dm-verity hash partition (implied by signing). */
  verity?: boolean;
  signKey?: string;
  signCert?: string;
  /** Default: $SOURCE_DATE_EPOCH, else the newest package's date, else 0. */
  sourceDateEpoch?: number;
  cacheDir?: string;
  /** Overrides the definition's Scope=. */
  scope?: SysextScope;
  /** ID=_any in the extension-release file: not tied to the base's distribution/version. */
  anyDistro?: boolean;
  /** 'auto' (default): overlayfs when it can be mounted, else a copy of the base; 'never': always copy. */
  overlay?: 'auto' | 'never';
  definitionDirs?: string[];
  presetDirs?: string[];
  dropInDirs?: string[];
  logger?: Logger;
}

export interface SysextPartition extends PartitionLayout {}

export interface SysextBuildResult {
  path: string;
  /** The extension's name: the image name without .raw, as in extension-release.NAME. */
  name: string;
  definition: { name: string; path: string; packages: string[] };
  scope: SysextScope;
  format: SysextFormat;
  /** root: the directory layered over (not for an image: that one is unpacked per build and removed). */
  base: { kind: BaseKind; source: string; root?: string; cached?: boolean; release: Record<string, string>; releaseFile: string | undefined };
  preset: string;
  extensionRelease: Record<string, string>;
  /** Packages the extension added on top of the base. */
  packages: InstalledPackage[];
  /** Files (non-directories) and bytes (regular files) in the extension. */
  files: number;
  bytes: number;
  /** The file system image's size. */
  filesystemBytes: number;
  imageBytes: number;
  sha256: string;
  roothash?: string;
  roothashPath?: string;
  signaturePath?: string;
  certificateFingerprint?: string;
  partitions: SysextPartition[];
  pruned: PruneReport;
  /** Where mksquashfs, veritysetup … came from: the tools root's packages, or the host. */
  tools: ToolsManifest;
  dropped: {
    /** Entries byte-identical to the base's (reinstalled dependencies of a base without a package database). */
    identical: number;
    /** Base entries the packages deleted: an extension cannot delete, so they were ignored. */
    deletions: string[];
    /** /etc, /var and /root files: sysext merges only /usr and /opt. */
    outsideUsr: string[];
    specialFiles: string[];
  };
  flattenedAlternatives: string[];
  sourceDateEpoch: number;
  /** How the packages were installed over the base. */
  layering: 'overlay' | 'copy';
  warnings: string[];
}

const IMAGE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** The output path and the extension's name (systemd-sysext: image file name without .raw). */
async function resolveOutput(output: string, definition: SysextDefinition): Promise<{ path: string; name: string }> {
  let path = resolve(output);
  const st = await stat(path).catch(() => undefined);
  if (output.endsWith('/') || st?.isDirectory()) path = join(path, `${definition.name}.raw`);
  const name = basename(path).replace(/\.raw$/, '');
  if (!IMAGE_NAME_RE.test(name)) {
    throw new UserError('USAGE', `invalid extension image name "${basename(path)}"`, { hint: 'name it NAME.raw with letters, digits, ".", "_" and "-" in NAME' });
  }
  // The image and the files beside it, checked before any work (common/src/fs.ts).
  await checkOutputPath(path);
  for (const extra of ['.roothash', '.roothash.p7s']) await checkOutputPath(path.replace(/\.raw$/, '') + extra);
  return { path, name };
}

function stripSlash(pattern: string): string {
  return pattern.replace(/^\/+/, '').replace(/\/+$/, '');
}

function list(paths: readonly string[], max = 8): string {
  return paths.slice(0, max).join(', ') + (paths.length > max ? `, … (${paths.length - max} more)` : '');
}

/**
 * Build a systemd-sysext image: the definition's packages installed over the base on an
 * overlay, only the upper layer kept (minus what is identical to the base, package
 * state and — with warnings — /etc, /var and deletions), pruned like the base, an
 * extension-release file, a reproducible squashfs/erofs, optionally dm-verity and a
 * signature, in a GPT disk image (DDI) that systemd-dissect and systemd-sysext accept.
 */
export async function buildSysext(options: SysextBuildOptions): Promise<SysextBuildResult> {
  const logger = options.logger ?? getLogger();
  const warnings: string[] = [];
  const warn = (message: string, details?: Record<string, unknown>) => {
    warnings.push(message);
    logger.warn(details ?? {}, message);
  };

  // Everything that can be checked cheaply is checked before any work.
  const definition = typeof options.definition === 'string' ? await loadDefinition(options.definition, options.definitionDirs) : options.definition;
  const scope = options.scope ?? definition.scope;
  if (!SCOPES.includes(scope)) throw new UserError('USAGE', `unknown scope "${scope}"`, { hint: `use one of: ${SCOPES.join(', ')}` });
  const format = options.format ?? 'squashfs';
  if (!FORMATS.includes(format)) throw new UserError('USAGE', `unknown format "${format}"`, { hint: `use one of: ${FORMATS.join(', ')}` });
  if ((options.signKey === undefined) !== (options.signCert === undefined)) {
    throw new UserError('USAGE', options.signKey !== undefined ? '--sign-key needs --sign-cert' : '--sign-cert needs --sign-key', {
      hint: 'a signature needs the private key and the certificate that goes with it',
    });
  }
  let identity: SigningIdentity | undefined;
  if (options.signKey !== undefined && options.signCert !== undefined) identity = await loadSigningIdentity(options.signKey, options.signCert);
  const verity = Boolean(options.verity || identity);
  const output = await resolveOutput(options.output, definition);
  requireRoot('building a sysext');
  await requireCommands(['unshare', 'setpriv']);
  const explicitEpoch = options.sourceDateEpoch ?? sourceDateEpochFromEnv();
  const cacheDir = resolve(options.cacheDir ?? defaultCacheDir());
  const progress = createProgress('mkinitrd-pkg sysext');

  const workDir = await createWorkDir(cacheDir, 'sysext', logger);
  try {
    // Entries a killed build left half-stored (its base included), as a build does: under the cache lock.
    await removeStaleTemporaries(cacheDir, logger);
    progress.update('preparing the base');
    const base = await resolveBase({
      base: options.base,
      preset: options.preset,
      presetDirs: options.presetDirs,
      dropInDirs: options.dropInDirs,
      configFiles: options.configFiles,
      cacheDir,
      workDir,
      sourceDateEpoch: explicitEpoch,
      logger,
    });
    const baseRelease = await readBaseRelease(base.root);
    // The image tools come from packages of the base's preset (ToolsTree=), not the host.
    progress.update('preparing the tools root');
    const tools = await prepareTools({ config: base.config, cacheDir, logger, ...(options.presetDirs && { presetDirs: options.presetDirs }), ...(options.dropInDirs && { dropInDirs: options.dropInDirs }) });
    const withTools = <T>(body: () => Promise<T>) => withToolsRoot(tools.toolsRoot, body);
    await withTools(() => requireCommands(['sfdisk', format === 'squashfs' ? 'mksquashfs' : 'mkfs.erofs', ...(verity ? ['veritysetup'] : []), ...(identity ? ['openssl'] : [])]));
    const resolver = createResolver(base.config.packageManager);
    const ignore = [...new Set([...STATE_PATHS, ...resolver.databasePaths])];

    // Install the packages over the base: overlay (upper layer = the extension) or a copy.
    progress.update(`installing ${definition.packages.join(' ')}`);
    const layering = options.overlay !== 'never' && (await overlayWorks(workDir, base.root)) ? 'overlay' : 'copy';
    if (layering === 'copy' && options.overlay !== 'never') warn('overlayfs is not available here: installing into a copy of the base instead');
    let upper: string;
    let outcome;
    const installRequest = {
      base: base.root,
      ignore,
      config: base.config,
      packages: definition.packages,
      cacheDir,
      ...(explicitEpoch !== undefined && { sourceDateEpoch: explicitEpoch }),
    };
    logger.info({ definition: definition.name, packages: definition.packages, base: base.source, layering }, 'installing the extension packages');
    if (layering === 'overlay') {
      const overlay = await prepareOverlay(workDir, base.root);
      upper = overlay.upper;
      outcome = await runInstallWorker(workDir, overlay.mounts, { ...installRequest, root: overlay.merged, upper }, logger);
    } else {
      upper = join(workDir, 'copy');
      await mkdir(upper);
      await copyBase(base.root, upper);
      outcome = await runInstallWorker(workDir, [], { ...installRequest, root: upper, upper }, logger);
    }
    const had = new Set(outcome.before.map((p) => `${p.name}\0${p.version}`));
    const added = outcome.install.packages.filter((p) => !had.has(`${p.name}\0${p.version}`));
    const sourceDateEpoch = explicitEpoch ?? outcome.install.newestPackageEpoch ?? 0;
    for (const w of outcome.install.warnings) warn(w);

    // Keep only what the packages added: the upper layer minus what equals the base.
    progress.update('collecting the extension content');
    const staging = join(workDir, 'staging');
    const diff = await diffLayer({ upper, base: base.root, staging, ignore });
    await rm(join(workDir, layering === 'overlay' ? 'upper' : 'copy'), { recursive: true, force: true });
    const deletions = outcome.deletions.filter((p) => p === 'usr' || p === 'opt' || p.startsWith('usr/') || p.startsWith('opt/'));
    if (deletions.length) {
      // An extension is an overlay over the base at run time: it can add and replace
      // files but has no way to delete one (sysext images carry no whiteouts). The
      // packages' deletions are dropped; the base keeps those files.
      warn(`the packages deleted ${deletions.length} base file(s); an extension cannot delete, so the base keeps them: ${list(deletions)}`, { deletions });
    }
    if (diff.skippedSpecial.length) warn(`special files (devices, fifos, sockets) are not extension content, dropped: ${list(diff.skippedSpecial)}`);

    // Prune like the base: the default rules plus the preset's and the definition's lists.
    progress.update('pruning');
    const pruned = await prune({
      root: staging,
      rules: [...DEFAULT_PRUNE_RULES],
      keep: [...base.config.keepFiles, ...definition.keepFiles].map(stripSlash),
      extraRemove: [...base.config.removeFiles, ...definition.removeFiles].flatMap((p) => [stripSlash(p), `${stripSlash(p)}/**`]),
      logger,
    });

    const scopeCheck = await enforceSysextScope(staging);
    if (scopeCheck.outside.length) {
      throw new UserError('SYSEXT', `the packages install files outside /usr and /opt, which a sysext cannot carry: ${list(scopeCheck.outside, 5)}`, {
        hint: 'systemd-sysext merges only /usr and /opt; drop them with RemoveFiles= in the definition, or pick other packages',
      });
    }
    if (scopeCheck.droppedConfig.length) {
      warn(`dropped ${scopeCheck.droppedConfig.length} file(s) under /etc, /var and /root (sysext merges only /usr and /opt; the programs use built-in defaults, or ship configuration in the base or a confext): ${list(scopeCheck.droppedConfig)}`, {
        dropped: scopeCheck.droppedConfig,
      });
    }
    await removeEmptyDirs(staging, diff.emptyNewDirs);
    const usr = await lstat(join(staging, 'usr')).catch(() => undefined);
    const opt = await lstat(join(staging, 'opt')).catch(() => undefined);
    if (!usr && !opt) {
      throw new UserError('SYSEXT', `the extension would be empty: ${definition.packages.join(' ')} added nothing to the base under /usr or /opt`, {
        hint: 'the base already has these packages',
      });
    }

    // The identity systemd-sysext checks against the base.
    const extensionRelease = extensionReleaseFields({ base: baseRelease, scope, architecture: base.config.architecture, anyDistro: options.anyDistro ?? false });
    if (!options.anyDistro && !baseRelease.fields.ID) warn('the base has no os-release: the extension is marked ID=_any');
    const releaseDir = join(staging, 'usr/lib/extension-release.d');
    await mkdir(releaseDir, { recursive: true, mode: 0o755 });
    for (const name of await readdir(releaseDir)) {
      // A package's own extension-release file would make the image claim another name.
      await rm(join(releaseDir, name), { force: true });
      warn(`removed ${name} shipped by a package: the image's own extension-release file is written instead`);
    }
    await writeFile(join(releaseDir, `extension-release.${output.name}`), renderOsRelease(extensionRelease), { mode: 0o644 });

    const tree = await summarizeTree(staging);

    progress.update(`making the ${format} file system`);
    const data = join(workDir, `data.${format}`);
    await withTools(() => makeFilesystem({ format, source: staging, output: data, sourceDateEpoch, contentDigest: tree.digest }));
    const filesystemBytes = (await stat(data)).size;
    await rm(staging, { recursive: true, force: true });

    const parts: PartitionInput[] = [];
    let roothash: string | undefined;
    let labelId: string;
    let signature: Buffer | undefined;
    if (verity) {
      progress.update('dm-verity');
      const v = await withTools(() => formatVerity(data, join(workDir, 'verity.hash')));
      roothash = v.roothash;
      const uuids = rootHashUuids(roothash);
      parts.push({ role: 'root', name: partitionName(output.name), uuid: uuids.data, content: data, bytes: filesystemBytes });
      parts.push({ role: 'root-verity', name: partitionName(output.name, '-verity'), uuid: uuids.verity, content: v.hashPath, bytes: v.hashBytes });
      if (identity) {
        progress.update('signing');
        const id = identity;
        signature = await withTools(() => signRootHash(roothash!, id, workDir));
        const sig = signaturePartition(roothash, identity.fingerprint, signature);
        parts.push({ role: 'root-verity-sig', name: partitionName(output.name, '-verity-sig'), uuid: derivedUuid('mkinitrd-pkg root-verity-sig', roothash), content: sig, bytes: sig.length });
      }
      labelId = derivedUuid('mkinitrd-pkg disk', roothash);
    } else {
      const dataHash = await sha256File(data);
      parts.push({ role: 'root', name: partitionName(output.name), uuid: formatUuid(Buffer.from(dataHash, 'hex')), content: data, bytes: filesystemBytes });
      labelId = derivedUuid('mkinitrd-pkg disk', dataHash);
    }

    // Side files first, the image last: whoever sees the image sees its root hash too.
    let roothashPath: string | undefined;
    let signaturePath: string | undefined;
    const stem = output.path.replace(/\.raw$/, '');
    if (roothash) {
      roothashPath = `${stem}.roothash`;
      const hex = roothash;
      await withAtomicOutput(roothashPath, (o) => o.handle.writeFile(hex).then(() => undefined), 0o644);
      if (signature) {
        signaturePath = `${stem}.roothash.p7s`;
        const der = signature;
        await withAtomicOutput(signaturePath, (o) => o.handle.writeFile(der).then(() => undefined), 0o644);
      }
    } else {
      // A stale side file from an earlier verity build would no longer match.
      await rm(`${stem}.roothash`, { force: true });
      await rm(`${stem}.roothash.p7s`, { force: true });
    }
    progress.update('writing the disk image');
    const layout = await withTools(() => writeDdi(output.path, labelId, parts, base.config.architecture));
    const sha256 = await sha256File(output.path);
    progress.done();
    logger.info({ path: output.path, bytes: layout.diskBytes, roothash }, 'sysext image written');

    return {
      path: output.path,
      name: output.name,
      definition: { name: definition.name, path: definition.path, packages: definition.packages },
      scope,
      format,
      base: { kind: base.kind, source: base.source, ...(base.kind !== 'image' && { root: base.root }), ...(base.cached !== undefined && { cached: base.cached }), release: baseRelease.fields, releaseFile: baseRelease.source },
      preset: base.config.preset,
      extensionRelease,
      packages: added,
      files: tree.files,
      bytes: tree.bytes,
      filesystemBytes,
      imageBytes: layout.diskBytes,
      sha256,
      ...(roothash !== undefined && { roothash }),
      ...(roothashPath !== undefined && { roothashPath }),
      ...(signaturePath !== undefined && { signaturePath }),
      ...(identity && { certificateFingerprint: identity.fingerprint }),
      partitions: layout.partitions,
      pruned,
      tools: tools.manifest,
      dropped: { identical: diff.identical, deletions, outsideUsr: scopeCheck.droppedConfig, specialFiles: diff.skippedSpecial },
      flattenedAlternatives: diff.flattenedAlternatives,
      sourceDateEpoch,
      layering,
      warnings,
    };
  } catch (error) {
    progress.done();
    throw error;
  } finally {
    await removeWorkDir(workDir);
  }
}
