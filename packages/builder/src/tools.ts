import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError, type Logger, type ToolsRoot } from '@mkinitrd-pkg/common';
import type { ImageConfig } from '@mkinitrd-pkg/config';
import { checkToolsRoot, toolsTreeConfig, unpackToolsRoot, type InstalledPackage } from '@mkinitrd-pkg/resolver';
import { treeDigest } from './cache.js';

/** Bump when what a cached tools root contains (or how it is made) changes. */
const TOOLS_CACHE_FORMAT = 1;

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
  cache: 'hit' | 'miss' | 'host';
}

interface ToolsMeta {
  format: number;
  packages: InstalledPackage[];
  treeDigest: string;
  description: string;
}

interface ToolsIndex {
  id: string;
  metadataDigest: string | undefined;
  refreshedAt: number;
}

function digestOf(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value)).digest('hex');
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

async function writeJson(path: string, value: unknown): Promise<void> {
  const temp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(temp, JSON.stringify(value, null, 2) + '\n');
  await rename(temp, path);
}

/**
 * A verified tools root `cacheDir/tools/ID/root` (ID: digest of the package files), or
 * undefined. Like the installroot cache: its tree digest is checked before every use, and a
 * damaged entry is removed, never used.
 */
async function lookup(dir: string, logger: Logger): Promise<ToolsMeta | undefined> {
  const meta = await readJson<ToolsMeta>(join(dir, 'meta.json'));
  if (!meta) return undefined;
  let ok = meta.format === TOOLS_CACHE_FORMAT;
  try {
    ok = ok && treeDigest(join(dir, 'root')) === meta.treeDigest;
  } catch {
    ok = false;
  }
  if (!ok) {
    logger.warn({ dir }, 'tools root does not match its digest; unpacking it again');
    await rm(dir, { recursive: true, force: true });
    return undefined;
  }
  return meta;
}

/**
 * The tools root of a build: from the preset's own packages (ToolsTree=default), another
 * preset's (ToolsTree=NAME), or none (ToolsTree=host). Cached by the exact package files;
 * with repository metadata no older than `metadataMaxAgeSeconds` (or the digest the build
 * already has), which files those are is looked up without the network too.
 */
export async function prepareTools(o: {
  config: ImageConfig;
  cacheDir: string;
  /** The build's repository metadata digest when the tools come from the same repositories. */
  metadataDigest?: string | undefined;
  metadataMaxAgeSeconds?: number;
  refresh?: boolean;
  presetDirs?: string[];
  dropInDirs?: string[];
  logger: Logger;
}): Promise<PreparedTools> {
  const { cacheDir, logger } = o;
  const tools = await toolsTreeConfig(o.config, { ...(o.presetDirs && { presetDirs: o.presetDirs }), ...(o.dropInDirs && { dropInDirs: o.dropInDirs }) });
  if (!tools) return { toolsRoot: undefined, manifest: { tree: 'host', packages: [] }, cache: 'host' };
  const description = `${tools.distribution} ${tools.release}`;
  const sameRepositories = tools === o.config;
  const metadataDigest = sameRepositories ? o.metadataDigest : undefined;
  const base = join(cacheDir, 'tools');
  const indexPath = join(base, 'index', `${digestOf([TOOLS_CACHE_FORMAT, tools.distribution, tools.release, tools.architecture, tools.mirror, tools.components, tools.repositories, tools.repositoryKeys, tools.repositoryKeyCheck, [...tools.toolsTreePackages].sort()]).slice(0, 32)}.json`);
  const result = (meta: ToolsMeta, id: string, cache: PreparedTools['cache']): PreparedTools => ({
    toolsRoot: { root: join(base, id, 'root'), description },
    manifest: { tree: o.config.toolsTree === 'default' ? o.config.preset : o.config.toolsTree, distribution: tools.distribution, release: tools.release, packages: meta.packages },
    cache,
  });

  const index = await readJson<ToolsIndex>(indexPath);
  const maxAge = (o.metadataMaxAgeSeconds ?? 3600) * 1000;
  // Found without apt (whose lock a concurrent install may hold for minutes) when the
  // build's metadata is the one the entry was resolved with, or the entry is fresh enough.
  const fresh = index && !o.refresh && ((metadataDigest !== undefined && index.metadataDigest === metadataDigest) || Date.now() - index.refreshedAt < maxAge);
  if (index && fresh) {
    const meta = await lookup(join(base, index.id), logger);
    if (meta) return result(meta, index.id, 'hit');
  }

  // Which package files: apt resolves the closure (a metadata refresh, then a download of
  // what is not in the package cache yet). Unpacked under a temporary name, checked, renamed.
  let id = '';
  let unpackedTo: string | undefined;
  let cachedMeta: ToolsMeta | undefined;
  const { packages } = await unpackToolsRoot({
    config: tools,
    cacheDir,
    logger,
    target: async (files) => {
      id = digestOf([TOOLS_CACHE_FORMAT, [...files].sort()]).slice(0, 20);
      cachedMeta = await lookup(join(base, id), logger);
      if (cachedMeta) return undefined;
      await mkdir(base, { recursive: true });
      unpackedTo = join(base, `.${id}.${randomBytes(4).toString('hex')}.tmp`);
      return join(unpackedTo, 'root');
    },
  });
  let cache: PreparedTools['cache'] = 'hit';
  if (!cachedMeta) {
    const temp = unpackedTo!;
    try {
      const programs = await checkToolsRoot(join(temp, 'root'));
      logger.info({ packages: packages.length, programs: programs.length, release: description }, 'tools root unpacked');
      const meta: ToolsMeta = { format: TOOLS_CACHE_FORMAT, packages, treeDigest: treeDigest(join(temp, 'root')), description };
      await writeFile(join(temp, 'meta.json'), JSON.stringify(meta, null, 2) + '\n');
      try {
        await rename(temp, join(base, id));
      } catch (error) {
        // Another build stored the same tools root meanwhile: same content, keep theirs.
        const code = (error as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error;
        await rm(temp, { recursive: true, force: true });
      }
      cachedMeta = meta;
      cache = 'miss';
    } catch (error) {
      await rm(temp, { recursive: true, force: true });
      throw error;
    }
  }
  await mkdir(join(base, 'index'), { recursive: true });
  await writeJson(indexPath, { id, metadataDigest, refreshedAt: Date.now() } satisfies ToolsIndex);
  if (!cachedMeta) throw new UserError('CACHE', 'the tools root could not be prepared');
  return result(cachedMeta, id, cache);
}
