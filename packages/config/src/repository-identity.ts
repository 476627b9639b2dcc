import { createHash } from 'node:crypto';
import type { ImageConfig } from './schema.js';

/** The keys that decide which repositories, and so which packages and versions, a build sees. */
export type RepositoryFields = Pick<
  ImageConfig,
  'packageManager' | 'distribution' | 'release' | 'architecture' | 'mirror' | 'repositories' | 'components' | 'repositoryKeyCheck' | 'repositoryKeys'
>;

/**
 * The identity of a configuration's repository set (sha256, hex): the one answer to "is
 * this the same set of repositories?". The package managers' download directories, the
 * metadata freshness record, the installroot key and sysext's base key are all derived
 * from it (each adds what else decides its own content), so two caches can never
 * disagree on which configurations share repositories. A key that changes what is seen
 * belongs here: keys only one package manager reads (Components= for apt) cost the
 * other nothing. Keep the order: it is what existing caches are named by.
 */
export function repositoryIdentity(config: RepositoryFields): string {
  return createHash('sha256')
    .update(
      JSON.stringify([
        config.packageManager,
        config.distribution,
        config.release,
        config.architecture,
        config.mirror,
        config.repositories,
        config.components,
        config.repositoryKeyCheck,
        config.repositoryKeys,
      ]),
    )
    .digest('hex');
}
