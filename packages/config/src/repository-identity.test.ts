import { describe, expect, it } from 'vitest';
import { emptyConfig } from './schema.js';
import { repositoryIdentity, type RepositoryFields } from './repository-identity.js';

const base = () => ({ ...emptyConfig('x'), distribution: 'debian', release: 'trixie', mirror: 'http://deb.debian.org/debian', components: ['main'] });

describe('repositoryIdentity: one answer to "same repositories?"', () => {
  it('changes with every key that decides what the package manager sees, and with nothing else', () => {
    const identity = repositoryIdentity(base());
    const changed: Array<[keyof RepositoryFields, unknown]> = [
      ['packageManager', 'dnf'],
      ['distribution', 'ubuntu'],
      ['release', 'bookworm'],
      ['architecture', 'arm64'],
      ['mirror', 'http://mirror.example/debian'],
      ['repositories', ['http://extra.example/debian trixie main']],
      ['components', ['main', 'contrib']],
      ['repositoryKeyCheck', false],
      ['repositoryKeys', ['/etc/keys/extra.gpg']],
    ];
    for (const [key, value] of changed) expect(repositoryIdentity({ ...base(), [key]: value }), key).not.toBe(identity);
    // What is installed, pruned or written out is the caches' own key material, not the repositories'.
    expect(repositoryIdentity({ ...base(), packages: ['systemd'], removeFiles: ['/usr/share/doc'], compression: 'xz', preset: 'other' })).toBe(identity);
  });
});
