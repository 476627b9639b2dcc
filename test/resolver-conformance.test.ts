/**
 * One resolver conformance suite, run unchanged against every package manager: the same
 * cases and the same expectations for apt (a local repository built here with dpkg-deb,
 * apt-ftparchive and gpg — no mirror needed) and dnf (RPMs built with rpmbuild and
 * createrepo_c). Both fixtures carry the same packages in the same roles
 * (test/fixtures/{apt,rpm}). A zypper or pacman resolver adds one Backend entry: its
 * fixture, how a config names a local repository, and its key format.
 */
import { access, mkdtemp, readFile, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UserError, silentLogger } from '@mkinitrd-pkg/common';
import { loadConfig, type ImageConfig } from '@mkinitrd-pkg/config';
import { createResolver, type InstallResult, type Resolver } from '@mkinitrd-pkg/resolver';
import { buildAptRepos, SUITE } from './fixtures/apt/build-repo.js';
import { buildRpmRepos } from './fixtures/rpm/build-repo.js';
import type { LocalRepos } from './fixtures/local-repos.js';

interface Backend {
  packageManager: string;
  preset: string;
  build(): Promise<LocalRepos>;
  /** [Distribution] lines that point the preset at one local repository, unsigned. */
  repository(path: string): string;
  /** A Repositories= entry for a second local repository. */
  secondRepository(path: string): string;
  /** A RepositoryKey= value for a key file. */
  keyValue(path: string): string;
}

const BACKENDS: Backend[] = [
  {
    packageManager: 'apt',
    preset: 'debian',
    build: buildAptRepos,
    repository: (path) => `Mirror=file://${path}\nRelease=${SUITE}\nComponents=\nComponents=main\nRepositories=\n`,
    secondRepository: (path) => `file://${path} ${SUITE} main`,
    keyValue: (path) => path,
  },
  {
    packageManager: 'dnf',
    preset: 'fedora',
    build: buildRpmRepos,
    repository: (path) => `Mirror=file://${path}\nRepositories=\n`,
    secondRepository: (path) => `file://${path}`,
    keyValue: (path) => `file://${path}`,
  },
];

const logger = silentLogger();
const exists = (path: string) => access(path).then(() => true, () => false);
const names = (result: InstallResult) => result.packages.map((p) => p.name).filter((n) => n !== 'usr-is-merged');

describe.each(BACKENDS)('resolver conformance: $packageManager', (backend) => {
  let repos: LocalRepos;
  let work: string;
  let cacheDir: string;
  let resolver: Resolver;
  let counter = 0;
  let first: { root: string; result: InstallResult };

  async function config(distribution: string, extra = ''): Promise<ImageConfig> {
    const file = join(work, `override-${++counter}.conf`);
    await writeFile(file, `[Distribution]\n${distribution}RepositoryKeyCheck=no\n${extra}[Content]\nPackages=\nPackages=mk-app\n`);
    return loadConfig({ preset: backend.preset, configFiles: [file], dropInDirs: [] });
  }
  const main = () => config(backend.repository(repos.main));
  const signedWith = (key: string) => config(backend.repository(repos.signed), `RepositoryKeyCheck=yes\nRepositoryKey=\nRepositoryKey=${backend.keyValue(key)}\n`);

  async function install(cfg: ImageConfig, packages: string[], options: { root?: string; sourceDateEpoch?: number } = {}) {
    const root = options.root ?? (await mkdtemp(join(work, 'root-')));
    const result = await resolver.install({ root, config: cfg, packages, cacheDir, logger, ...(options.sourceDateEpoch !== undefined && { sourceDateEpoch: options.sourceDateEpoch }) });
    return { root, result };
  }
  async function failure(promise: Promise<unknown>): Promise<UserError> {
    const error = await promise.then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(UserError);
    return error as UserError;
  }

  beforeAll(async () => {
    repos = await backend.build();
    work = await mkdtemp(join(tmpdir(), `mkinitrd-pkg-conformance-${backend.packageManager}-`));
    cacheDir = join(work, 'cache');
    resolver = createResolver(backend.packageManager as ImageConfig['packageManager']);
    first = await install(await main(), ['mk-app'], { sourceDateEpoch: 1234567890 });
  }, 600_000);

  afterAll(async () => {
    await repos?.cleanup();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('is the resolver createResolver gives for its PackageManager=', () => {
    expect(resolver.packageManager).toBe(backend.packageManager);
  });

  it('installs the dependency closure, and only it', async () => {
    expect(names(first.result)).toEqual(['mk-app', 'mk-base', 'mk-lib', 'mk-shell', 'mk-system']);
    expect(await readFile(join(first.root, 'usr/lib/mk/lib.txt'), 'utf8')).toBe('mk-lib 1.0\n');
    expect(await exists(join(first.root, 'usr/bin/mk-app'))).toBe(true);
    expect(await exists(join(first.root, 'usr/lib/mk/fails.txt'))).toBe(false);
  });

  it('runs maintainer scripts chrooted in the root (never on the host), with SOURCE_DATE_EPOCH', async () => {
    expect(await readFile(join(first.root, 'etc/mk-post-ran'), 'utf8')).toMatch(/^mk-base 1\.0-1 configured\n$/);
    expect(await readFile(join(first.root, 'etc/mk-post-epoch'), 'utf8')).toBe('1234567890\n');
    expect(await exists('/etc/mk-post-ran')).toBe(false);
  });

  it('makes the merged-/usr symlinks and leaves no mount behind', async () => {
    for (const dir of ['bin', 'sbin', 'lib']) expect(await readlink(join(first.root, dir))).toBe(`usr/${dir}`);
    expect(await readFile('/proc/self/mountinfo', 'utf8')).not.toContain(first.root);
    expect(await readdir(join(first.root, 'proc'))).toEqual([]);
  });

  it('returns a repository digest equal to refresh(), stable while the repository is', async () => {
    expect(first.result.repositoryDigest).toMatch(/^[0-9a-f]{64}$/);
    const cfg = await main();
    expect(await resolver.refresh({ config: cfg, cacheDir, logger })).toBe(first.result.repositoryDigest);
    expect(await resolver.refresh({ config: cfg, cacheDir, logger })).toBe(first.result.repositoryDigest);
  });

  it('adds to a root that already has packages, from a second repository', async () => {
    const cfg = await config(backend.repository(repos.main), `Repositories=${backend.secondRepository(repos.extra)}\n`);
    const { result } = await install(cfg, ['mk-extra'], { root: first.root });
    expect(names(result)).toContain('mk-extra');
    expect(names(result)).toContain('mk-app');
    expect(await readFile(join(first.root, 'usr/lib/mk/extra.txt'), 'utf8')).toBe('mk-extra 1.0\n');
  });

  it('reports a failing maintainer script, naming the package', async () => {
    // dnf exits 0 on a failed %post (design.md §4): a warning; dpkg stops: an error.
    const outcome = await install(await main(), ['mk-fails']).then(
      ({ result }) => result.warnings.join('\n'),
      (e: unknown) => (e instanceof UserError ? e.message : String(e)),
    );
    expect(outcome).toMatch(/mk-fails/);
  });

  it('unknown package → PACKAGE_NOT_FOUND naming it', async () => {
    const e = await failure(install(await main(), ['mk-app', 'no-such-package-mk']));
    expect(e.code).toBe('PACKAGE_NOT_FOUND');
    expect(e.message).toBe('package not found: no-such-package-mk');
  });

  it('broken dependency → DEPENDENCY_CONFLICT naming what is missing', async () => {
    const e = await failure(install(await main(), ['mk-broken']));
    expect(e.code).toBe('DEPENDENCY_CONFLICT');
    expect(e.message).toMatch(/mk-absent-capability/);
    expect(e.message).not.toContain('\n');
  });

  it('unreachable repository → MIRROR_UNREACHABLE, one line', async () => {
    const e = await failure(install(await config(backend.repository('/nonexistent/mkinitrd-pkg-repo')), ['mk-app']));
    expect(e.code).toBe('MIRROR_UNREACHABLE');
    expect(e.message).not.toContain('\n');
  });

  it('RepositoryKeyCheck=yes without a key → CONFIG before the package manager runs', async () => {
    const e = await failure(install(await config(backend.repository(repos.main), 'RepositoryKeyCheck=yes\nRepositoryKey=\n'), ['mk-app']));
    expect(e.code).toBe('CONFIG');
    expect(e.message).toBe('RepositoryKeyCheck=yes but no RepositoryKey= is set');
  });

  it('signed repository: the right key installs, a wrong key fails the signature check', async () => {
    const ok = await install(await signedWith(repos.key), ['mk-app']);
    expect(names(ok.result)).toEqual(['mk-app', 'mk-base', 'mk-lib', 'mk-shell', 'mk-system']);
    const e = await failure(install(await signedWith(repos.otherKey), ['mk-app']));
    expect(e.message).toMatch(/^repository signature check failed/);
    expect(e.message).not.toContain('\n');
  });

  it('an unsigned repository with key checking on fails the signature check', async () => {
    const cfg = await config(backend.repository(repos.main), `RepositoryKeyCheck=yes\nRepositoryKey=\nRepositoryKey=${backend.keyValue(repos.key)}\n`);
    const e = await failure(install(cfg, ['mk-app']));
    expect(e.message).toMatch(/^repository signature check failed/);
  });
});
