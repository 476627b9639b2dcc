import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError, hostArchitecture, HOST_TOOLS, SYSTEM_TOOL_DIRS, TOOL_PACKAGES, checkToolLibraries, elfInterpreter, realpathInRoot, type Logger } from '@mkinitrd-pkg/common';
import { loadConfig, type ImageConfig } from '@mkinitrd-pkg/config';
import { createResolver } from './registry.js';
import type { InstalledPackage } from './types.js';

/**
 * The tools root (issue 9 "Build tools from packages"): the programs a build runs —
 * depmod/modinfo, mksquashfs, mkfs.erofs, veritysetup, sfdisk, openssl, xz, lz4 — unpacked
 * from the distribution's own packages with their dependency closure, by the same apt
 * machinery that unpacks the kernel package (download + `dpkg-deb -x`, no maintainer
 * script, no package database: the programs only need their files). They run through the
 * root's own dynamic loader with the root's library directories
 * (packages/common/src/tools.ts), so paths on the command line stay the host's and no
 * chroot or bind mount is needed. Caching and verification: packages/builder/src/tools.ts.
 */

/**
 * The configuration whose repositories and ToolsTreePackages= make the tools root, or
 * undefined for ToolsTree=host. `default`: the image's own (release, mirror, --config
 * files included); a preset name: that preset as this machine configures it (drop-ins).
 */
export async function toolsTreeConfig(config: ImageConfig, options: { presetDirs?: string[]; dropInDirs?: string[] } = {}): Promise<ImageConfig | undefined> {
  if (config.toolsTree === 'host') return undefined;
  // The tools run on this machine: an arm64 image built on x86-64 gets x86-64 tools from
  // the same repositories (Debian's archive carries every architecture).
  const host = hostArchitecture();
  const tools =
    config.toolsTree === 'default'
      ? { ...config, architecture: host?.name ?? config.architecture }
      : await loadConfig({
          preset: config.toolsTree,
          ...(options.presetDirs && { presetDirs: options.presetDirs }),
          ...(options.dropInDirs && { dropInDirs: options.dropInDirs }),
        });
  if (tools.toolsTree === 'host' && config.toolsTree !== 'default') {
    throw new UserError('CONFIG', `ToolsTree=${config.toolsTree} names a preset that has no tools tree (it sets ToolsTree=host)`, { hint: 'name an apt preset (e.g. ToolsTree=debian) or set ToolsTree=host' });
  }
  if (tools.packageManager !== 'apt') {
    throw new UserError('CONFIG', `a tools tree is unpacked with apt, but ${tools.preset} uses ${tools.packageManager}`, {
      hint: 'set ToolsTree=host, or name an apt preset (ToolsTree=debian)',
    });
  }
  if (tools.toolsTreePackages.length === 0) {
    throw new UserError('CONFIG', `ToolsTreePackages= is empty for the tools tree of ${tools.preset}`, {
      hint: 'list the packages of the build tools (e.g. kmod squashfs-tools erofs-utils cryptsetup-bin fdisk openssl xz-utils lz4), or set ToolsTree=host',
    });
  }
  return tools;
}

export interface UnpackToolsRequest {
  config: ImageConfig;
  cacheDir: string;
  /** Given the package file names, where to unpack (undefined: already there). */
  target: (packageFiles: string[]) => Promise<string | undefined>;
  logger: Logger;
}

/** Download ToolsTreePackages= with their closure and unpack them all (no scripts run). */
export async function unpackToolsRoot(request: UnpackToolsRequest): Promise<{ packages: InstalledPackage[]; target: string | undefined }> {
  const resolver = createResolver(request.config.packageManager);
  if (!resolver.unpack) throw new UserError('CONFIG', `a tools tree cannot be unpacked with ${resolver.packageManager}`, { hint: 'set ToolsTree=host' });
  const result = await resolver.unpack({
    config: request.config,
    packages: request.config.toolsTreePackages,
    cacheDir: request.cacheDir,
    include: () => true,
    target: request.target,
    logger: request.logger,
  });
  return { packages: result.packages, target: result.target };
}

/**
 * Check, before a tools root is stored, that every build tool it has (the programs named in
 * TOOL_PACKAGES: what the build runs) loads all its libraries from the root. Other
 * programs the closure brought along (dpkg …) are never run and not checked.
 * Returns the programs checked.
 */
export async function checkToolsRoot(root: string): Promise<string[]> {
  const checked: string[] = [];
  for (const name of Object.keys(TOOL_PACKAGES)) {
    if (HOST_TOOLS.has(name)) continue;
    for (const dir of SYSTEM_TOOL_DIRS) {
      const real = realpathInRoot(root, `${dir}/${name}`);
      if (!real || !(await lstat(real).then((st) => st.isFile(), () => false))) continue;
      if (elfInterpreter(real) === undefined) continue; // a script: refused when run
      checkToolLibraries(root, real);
      checked.push(name);
      break;
    }
  }
  return checked;
}
