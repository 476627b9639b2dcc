/**
 * DnfResolver against real RPM repositories built here with rpmbuild + createrepo_c
 * (test/fixtures/rpm): real dnf, real rpm, real scriptlets in a private mount namespace.
 */
import { createHash } from 'node:crypto';
import { lstat, mkdtemp, readFile, readdir, readlink, rm, writeFile, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { UserError, silentLogger } from '@mkinitrd-pkg/common';
import { loadConfig, type ImageConfig } from '@mkinitrd-pkg/config';
import { DnfResolver, RPMDB_PATH, createResolver } from '@mkinitrd-pkg/resolver';
import { BUILD_EPOCH, buildRpmRepos, type RpmRepos } from './fixtures/rpm/build-repo.js';

const logger = silentLogger();
const resolver = new DnfResolver();
let repos: RpmRepos;
let work: string;
let cacheDir: string;
let hostBefore: string[];

/** What dnf/rpm would leave on the host if they escaped the installroot. */
async function hostState(): Promise<string[]> {
  const out: string[] = [];
  for (const dir of ['/var/cache/dnf', '/var/lib/dnf', '/var/log', `${process.env.HOME ?? '/root'}/.rpmdb`]) {
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const name of names) if (dir !== '/var/log' || /^(dnf|hawkey)/.test(name)) out.push(`${dir}/${name}`);
  }
  return out.sort();
}

beforeAll(async () => {
  hostBefore = await hostState();
  repos = await buildRpmRepos();
  work = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-dnf-'));
  cacheDir = join(work, 'cache');
});

afterAll(async () => {
  await repos?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
});

let counter = 0;
/** The real fedora preset, pointed at a local repository by a --config file, as a user would. */
async function fedora(lines: string): Promise<ImageConfig> {
  const file = join(work, `override-${++counter}.conf`);
  await writeFile(file, lines);
  return loadConfig({ preset: 'fedora', configFiles: [file], dropInDirs: [] });
}

function localRepo(mirror: string, extra = ''): string {
  return `[Distribution]\nMirror=file://${mirror}\nRepositories=\n${extra}RepositoryKeyCheck=no\n[Content]\nPackages=\nPackages=mk-app mk-fails\n`;
}

async function install(config: ImageConfig, packages = config.packages, root?: string) {
  const target = root ?? (await mkdtemp(join(work, 'root-')));
  const result = await resolver.install({ root: target, config, packages, cacheDir, logger });
  return { root: target, result };
}

async function failure(promise: Promise<unknown>): Promise<UserError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(UserError);
  return error as UserError;
}

/** path → type, mode and content hash (or link target) of every file in a tree, minus excluded prefixes. */
async function treeDigest(root: string, exclude: readonly string[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name);
    const rel = relative(root, path);
    if (exclude.some((x) => rel === x || rel.startsWith(`${x}/`))) continue;
    const st = await lstat(path);
    const mode = (st.mode & 0o7777).toString(8);
    if (st.isSymbolicLink()) out[rel] = `link ${await readlink(path)}`;
    else if (st.isFile()) out[rel] = `file ${mode} ${createHash('sha256').update(await readFile(path)).digest('hex')}`;
    else if (st.isDirectory()) out[rel] = `dir ${mode}`;
    else out[rel] = `other ${mode}`;
  }
  return out;
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

describe('DnfResolver: install into a private installroot', () => {
  let first: Awaited<ReturnType<typeof install>>;

  beforeAll(async () => {
    first = await install(await fedora(localRepo(repos.main)));
  });

  it('is what createResolver gives for PackageManager=dnf', () => {
    expect(createResolver('dnf')).toBeInstanceOf(DnfResolver);
  });

  it('installs the dependency closure and records it in ROOT/usr/lib/sysimage/rpm', async () => {
    const names = first.result.packages.map((p) => p.name);
    expect(names).toEqual(['mk-app', 'mk-base', 'mk-fails', 'mk-lib', 'mk-shell', 'mk-system']);
    expect(first.result.packages.find((p) => p.name === 'mk-lib')).toEqual({ name: 'mk-lib', version: '1.0-1', architecture: 'noarch' });
    // rpm itself agrees, and the database is where Fedora's rpm looks, not in ~/.rpmdb.
    const rpm = await execa('rpm', ['--root', first.root, '--dbpath', RPMDB_PATH, '-qa', '--qf', '%{NAME}\n']);
    expect(String(rpm.stdout).split('\n').sort()).toContain('mk-lib');
    expect(await exists(join(first.root, RPMDB_PATH, 'rpmdb.sqlite'))).toBe(true);
    expect(await resolver.listInstalled(first.root)).toEqual(first.result.packages);
  });

  it('made the merged-/usr symlinks before the first package', async () => {
    for (const dir of ['bin', 'sbin', 'lib', 'lib64']) expect(await readlink(join(first.root, dir))).toBe(`usr/${dir}`);
  });

  it('ran %post chrooted: the scriptlet wrote its file', async () => {
    expect(await readFile(join(first.root, 'etc/mk-post-ran'), 'utf8')).toBe('mk-base 1.0-1 configured\n');
  });

  it('reports the failing %post as a warning, not an error', () => {
    expect(first.result.warnings).toEqual(['%post scriptlet of mk-fails-1.0-1.noarch failed (exit status 1)']);
    expect(first.result.packages.map((p) => p.name)).toContain('mk-fails');
  });

  it('honours tsflags=nodocs (docs gone, %license and zoneinfo kept for the pruner)', async () => {
    expect(await exists(join(first.root, 'usr/share/doc/mk-lib/README'))).toBe(false);
    expect(await exists(join(first.root, 'usr/share/doc/mk-base/README'))).toBe(false);
    expect(await readFile(join(first.root, 'usr/share/licenses/mk-lib/LICENSE'), 'utf8')).toBe('MIT License\n');
    expect(await readFile(join(first.root, 'usr/share/zoneinfo/Mk/Test'), 'utf8')).toBe('TZif-test\n');
  });

  it('returns the newest BUILDTIME and a repository digest equal to refresh()', async () => {
    expect(first.result.newestPackageEpoch).toBe(BUILD_EPOCH);
    expect(first.result.repositoryDigest).toMatch(/^[0-9a-f]{64}$/);
    const config = await fedora(localRepo(repos.main));
    expect(await resolver.refresh({ config, cacheDir, logger })).toBe(first.result.repositoryDigest);
  });

  it('changes the repository digest exactly when the repository changes', async () => {
    const copy = join(work, 'changing-repo');
    await execa('cp', ['-a', repos.main, copy]);
    const config = await fedora(localRepo(copy));
    const before = await resolver.refresh({ config, cacheDir, logger });
    expect(await resolver.refresh({ config, cacheDir, logger })).toBe(before);
    await execa('cp', ['-a', join(repos.extra, 'noarch'), join(copy, 'extra')]);
    await execa('createrepo_c', ['--quiet', copy]);
    expect(await resolver.refresh({ config, cacheDir, logger })).not.toBe(before);
  });

  it('leaves no mount behind and nothing from the host repositories', async () => {
    const mounts = await readFile('/proc/self/mountinfo', 'utf8');
    expect(mounts).not.toContain(first.root);
    expect(await readdir(join(first.root, 'proc'))).toEqual([]);
    expect(await exists(join(first.root, 'var/cache/dnf'))).toBe(false);
    expect(await exists(join(first.root, 'etc/yum.repos.d'))).toBe(false);
  });

  it('is reproducible: a second install gives the same packages and the same files', async () => {
    const second = await install(await fedora(localRepo(repos.main)));
    expect(second.result.packages).toEqual(first.result.packages);
    expect(second.result.repositoryDigest).toBe(first.result.repositoryDigest);
    const a = await treeDigest(first.root, resolver.databasePaths);
    const b = await treeDigest(second.root, resolver.databasePaths);
    expect(Object.keys(a).length).toBeGreaterThan(20);
    expect(b).toEqual(a);
  });

  it('passes SOURCE_DATE_EPOCH to scriptlets', async () => {
    const root = await mkdtemp(join(work, 'root-'));
    await resolver.install({ root, config: await fedora(localRepo(repos.main)), packages: ['mk-base'], cacheDir, sourceDateEpoch: 1234567890, logger });
    expect(await readFile(join(root, 'etc/mk-post-epoch'), 'utf8')).toBe('1234567890\n');
  });

  it('adds to a root that already has packages (sysext layering), with a second repository', async () => {
    const config = await fedora(localRepo(repos.main, `Repositories=file://${repos.extra}\n`));
    const { result } = await install(config, ['mk-extra'], first.root);
    expect(result.packages.map((p) => p.name)).toEqual(['mk-app', 'mk-base', 'mk-extra', 'mk-fails', 'mk-lib', 'mk-shell', 'mk-system']);
    expect(await readFile(join(first.root, 'usr/lib/mk/extra.txt'), 'utf8')).toBe('mk-extra 1.0\n');
    expect(result.warnings).toEqual([]);
  });
});

describe('DnfResolver: errors are one clear line', () => {
  it('unknown package → PACKAGE_NOT_FOUND', async () => {
    const e = await failure(install(await fedora(localRepo(repos.main)), ['mk-app', 'no-such-package-mk']));
    expect(e.code).toBe('PACKAGE_NOT_FOUND');
    expect(e.message).toBe('package not found: no-such-package-mk');
  });

  it('unreachable repository (file:// and http) → MIRROR_UNREACHABLE', async () => {
    for (const mirror of ['file:///nonexistent/mkinitrd-pkg-repo', 'http://127.0.0.1:9/repo']) {
      const config = await fedora(localRepo(repos.main).replace(`file://${repos.main}`, mirror));
      const e = await failure(install(config));
      expect(e.code).toBe('MIRROR_UNREACHABLE');
      expect(e.message).toMatch(/^repository unreachable \(mirror\): /);
      expect(e.message).not.toContain('\n');
    }
  });

  it('broken dependency → DEPENDENCY_CONFLICT with the problem', async () => {
    const e = await failure(install(await fedora(localRepo(repos.main)), ['mk-broken']));
    expect(e.code).toBe('DEPENDENCY_CONFLICT');
    expect(e.message).toBe('dependency problem: nothing provides mk-absent-capability needed by mk-broken-1.0-1.noarch');
  });

  it('RepositoryKeyCheck=yes without a key → CONFIG before dnf runs', async () => {
    const config = await fedora(`${localRepo(repos.main)}[Distribution]\nRepositoryKeyCheck=yes\nRepositoryKey=\n`);
    const e = await failure(install(config));
    expect(e.code).toBe('CONFIG');
    expect(e.message).toBe('RepositoryKeyCheck=yes but no RepositoryKey= is set');
  });

  it("the preset's key missing on this host → CONFIG naming it", async () => {
    const config = await fedora(`${localRepo(repos.main)}[Distribution]\nRepositoryKeyCheck=yes\n`);
    const e = await failure(install(config));
    expect(e.code).toBe('CONFIG');
    expect(e.message).toBe('repository key not found: file:///etc/pki/rpm-gpg/RPM-GPG-KEY-fedora-43-x86_64');
    expect(e.hint).toMatch(/distribution-gpg-keys/);
  });

  it('unsigned packages with key checking on → signature failure with a RepositoryKey= hint', async () => {
    const config = await fedora(`${localRepo(repos.main)}[Distribution]\nRepositoryKeyCheck=yes\nRepositoryKey=\nRepositoryKey=${repos.key}\n`);
    const e = await failure(install(config));
    expect(e.message).toMatch(/^repository signature check failed: Package mk-\S+ is not signed$/);
    expect(e.hint).toMatch(/RepositoryKey=.*RepositoryKeyCheck=no/);
  });

  it('signed packages: the right key installs, a wrong key fails', async () => {
    const signed = (key: string) => fedora(`${localRepo(repos.signed)}[Distribution]\nRepositoryKeyCheck=yes\nRepositoryKey=\nRepositoryKey=file://${key}\n`);
    const ok = await install(await signed(repos.key), ['mk-app']);
    expect(ok.result.packages.map((p) => p.name)).toEqual(['mk-app', 'mk-base', 'mk-lib', 'mk-shell', 'mk-system']);
    const e = await failure(install(await signed(repos.otherKey), ['mk-app']));
    expect(e.message).toMatch(/^repository signature check failed: /);
  });
});

describe('DnfResolver.unpack: a kernel package without scripts or database', () => {
  it('unpacks only what include() selects from the closure, and reuses the download', async () => {
    const config = await fedora(localRepo(repos.main));
    const target = join(work, 'kernel');
    const first = await resolver.unpack({
      config,
      packages: ['kernel-modules-core'],
      cacheDir,
      include: (name) => name.startsWith('kernel-'),
      target: async (files) => {
        expect(files).toEqual(['kernel-modules-core-6.99.0-1.mk.noarch.rpm']);
        return target;
      },
      logger,
    });
    expect(first.packages).toEqual([{ name: 'kernel-modules-core', version: '6.99.0-1.mk', architecture: 'noarch' }]);
    expect(await readFile(join(target, 'usr/lib/modules/6.99.0-1.mk.x86_64/kernel/drivers/mk/mk_dummy.ko'), 'utf8')).toBe('not a real module\n');
    // mk-lib is in the closure but not selected; no rpmdb was written.
    expect(await exists(join(target, 'usr/lib/mk/lib.txt'))).toBe(false);
    expect(await exists(join(target, RPMDB_PATH))).toBe(false);
    // A cache hit: target() says no, nothing is unpacked.
    const again = await resolver.unpack({ config, packages: ['kernel-modules-core'], cacheDir, include: (n) => n.startsWith('kernel-'), target: async () => undefined, logger });
    expect(again.target).toBeUndefined();
    expect(again.packageFiles.map((f) => f.split('/').pop())).toEqual(['kernel-modules-core-6.99.0-1.mk.noarch.rpm']);
  });

  it('a package without kernel parts → KERNEL_NOT_FOUND', async () => {
    const config = await fedora(localRepo(repos.main));
    const e = await failure(resolver.unpack({ config, packages: ['mk-lib'], cacheDir, include: (n) => n.startsWith('kernel-'), target: async () => join(work, 'none'), logger }));
    expect(e.code).toBe('KERNEL_NOT_FOUND');
  });
});

describe('the host', () => {
  it('keeps no dnf cache, log, history or ~/.rpmdb from these installs', async () => {
    expect(await hostState()).toEqual(hostBefore);
  });
});
