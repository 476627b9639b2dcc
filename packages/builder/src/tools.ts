import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError, type Logger, type ToolsRoot } from '@mkinitrd-pkg/common';
import type { ImageConfig } from '@mkinitrd-pkg/config';
import { checkToolsRoot, createResolver, toolsTreeConfig, unpackToolsRoot, type InstalledPackage } from '@mkinitrd-pkg/resolver';
import { stageVerified, type VerifyMode } from './cache.js';
import { repositoryMetadataDigest } from './metadata.js';

/** What the manifest records about the tools a build ran. */
export interface ToolsManifest {
  /** 'host', or the preset whose packages made the tools root. */
  tree: string;
  distribution?: string;
  release?: string;
  /** Every package unpacked into the tools root, with its version. */
  packages: InstalledPackage[];
}

export interface PreparedTools {
  /** Undefined for ToolsTree=host: programs come from the host's system directories. */
  toolsRoot: ToolsRoot | undefined;
  manifest: ToolsManifest;
}

/** Inside the tools root, so the tree digest that verifies the root covers it too. */
const PACKAGES_FILE = '.mkinitrd-pkg-tools.json';

function digestOf(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value)).digest('hex');
}

/**
 * The tools root of a build: from the preset's own packages (ToolsTree=default), another
 * preset's (ToolsTree=NAME), or none (ToolsTree=host). Staged like the kernel package
 * (cache.ts: stageVerified): cached by the exact package files, verified by its tree digest
 * before every use, found without the network while the repositories' metadata is fresh.
 * Before it is stored, every build tool in it is checked to load only the root's libraries.
 */
export async function prepareTools(o: {
  config: ImageConfig;
  cacheDir: string;
  /** The build's repository metadata digest (used when the tools come from the same repositories). */
  metadataDigest?: string | undefined;
  metadataMaxAgeSeconds?: number | undefined;
  refresh?: boolean | undefined;
  presetDirs?: string[];
  dropInDirs?: string[];
  /** 'full': check the cached tools root's content even when its stat digest matches (--verify-cache). */
  verify?: VerifyMode;
  logger: Logger;
}): Promise<PreparedTools> {
  const { cacheDir, logger } = o;
  const tools = await toolsTreeConfig(o.config, { ...(o.presetDirs && { presetDirs: o.presetDirs }), ...(o.dropInDirs && { dropInDirs: o.dropInDirs }) });
  if (!tools) return { toolsRoot: undefined, manifest: { tree: 'host', packages: [] } };
  const metadataDigest =
    tools === o.config && o.metadataDigest !== undefined
      ? o.metadataDigest
      : await repositoryMetadataDigest({ resolver: createResolver(tools.packageManager), config: tools, cacheDir, logger, refresh: o.refresh, maxAgeSeconds: o.metadataMaxAgeSeconds });
  const indexKey = digestOf([tools.architecture, [...tools.toolsTreePackages].sort(), metadataDigest]);
  let unpacked: InstalledPackage[] | undefined;
  const root = await stageVerified(cacheDir, 'tools', indexKey, logger, async (fill) => {
    let target: string | undefined;
    const result = await unpackToolsRoot({
      config: tools,
      cacheDir,
      logger,
      target: async (files) => (target = await fill(digestOf(['tools', [...files].sort()]).slice(0, 20))),
    });
    if (target === undefined) return; // a verified entry exists
    unpacked = result.packages;
    await writeFile(join(target, PACKAGES_FILE), JSON.stringify(unpacked, null, 2) + '\n', { mode: 0o644 });
    const checked = await checkToolsRoot(target);
    logger.info({ packages: unpacked.length, tools: checked.length, release: `${tools.distribution} ${tools.release}` }, 'tools root unpacked');
  }, o.verify);
  const packages = unpacked ?? (JSON.parse(await readFile(join(root, PACKAGES_FILE), 'utf8').catch(() => 'null')) as InstalledPackage[] | null);
  if (!packages) throw new UserError('CACHE', `the tools root ${root} has no package list`, { hint: 'mkinitrd-pkg cache clean, then build again' });
  return {
    toolsRoot: { root, description: `${tools.distribution} ${tools.release}` },
    manifest: { tree: o.config.toolsTree === 'default' ? o.config.preset : o.config.toolsTree, distribution: tools.distribution, release: tools.release, packages },
  };
}
