import type { Logger } from '@mkinitrd-pkg/common';
import { repositoryIdentity, type ImageConfig } from '@mkinitrd-pkg/config';
import type { Resolver } from '@mkinitrd-pkg/resolver';
import { readMetadataState, writeMetadataState } from './cache.js';

/**
 * The digest of a repository set's metadata. Metadata younger than the max age (default
 * 1 h) is trusted without asking the mirror again: that is what makes a warm build take
 * seconds, not a network trip. `onRefresh` is told before the mirror is asked.
 */
export async function repositoryMetadataDigest(o: {
  resolver: Resolver;
  config: ImageConfig;
  cacheDir: string;
  logger: Logger;
  refresh?: boolean | undefined;
  maxAgeSeconds?: number | undefined;
  onRefresh?: () => void;
}): Promise<string> {
  // Kept per repository set: one record serves every preset that shares its repositories.
  const repoKey = repositoryIdentity(o.config);
  const state = await readMetadataState(o.cacheDir, repoKey);
  const maxAge = (o.maxAgeSeconds ?? 3600) * 1000;
  if (state && !o.refresh && Date.now() - state.refreshedAt < maxAge) return state.digest;
  o.onRefresh?.();
  const digest = await o.resolver.refresh({ config: o.config, cacheDir: o.cacheDir, logger: o.logger });
  await writeMetadataState(o.cacheDir, repoKey, { digest, refreshedAt: Date.now() });
  return digest;
}
