/**
 * A root of another architecture than the build host's (an arm64 image built on x86-64):
 * apt unpacks the packages without running their maintainer scripts — dpkg runs them
 * chrooted, and foreign programs need an emulator (qemu-user + binfmt_misc) that this
 * machine kind does not have. Offline, against the local apt fixture (Architecture: all
 * packages, indexed for amd64 and arm64).
 */
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostArchitecture, silentLogger } from '@mkinitrd-pkg/common';
import { loadConfig, type ImageConfig } from '@mkinitrd-pkg/config';
import { AptResolver, isForeignArchitecture, toolsTreeConfig } from '@mkinitrd-pkg/resolver';
import { buildAptRepos, SUITE, type AptRepos } from './fixtures/apt/build-repo.js';

const host = hostArchitecture();
const foreign = host?.name === 'arm64' ? 'x86-64' : 'arm64';
const exists = (path: string) => access(path).then(() => true, () => false);

describe.runIf(host?.name === 'x86-64' || host?.name === 'arm64')('apt into a foreign-architecture root', () => {
  let repos: AptRepos;
  let work: string;
  let config: ImageConfig;

  beforeAll(async () => {
    repos = await buildAptRepos();
    work = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-foreign-'));
    const file = join(work, 'foreign.conf');
    await writeFile(file, `[Distribution]\nArchitecture=${foreign}\nMirror=file://${repos.main}\nRelease=${SUITE}\nComponents=\nComponents=main\nRepositories=\nRepositoryKeyCheck=no\n[Content]\nPackages=\nPackages=mk-app\n`);
    config = await loadConfig({ preset: 'debian', configFiles: [file], dropInDirs: [] });
  }, 300_000);

  afterAll(async () => {
    await repos?.cleanup();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('unpacks the closure, runs no maintainer script, records the packages as unpacked', async () => {
    expect(isForeignArchitecture(config)).toBe(true);
    const resolver = new AptResolver();
    const root = join(work, 'root');
    const result = await resolver.install({ root, config, packages: config.packages, cacheDir: join(work, 'cache'), logger: silentLogger(), sourceDateEpoch: 86400 });
    const names = result.packages.map((p) => p.name);
    expect(names).toEqual(['mk-app', 'mk-base', 'mk-lib', 'mk-shell', 'mk-system', 'usr-is-merged']);
    expect(await readFile(join(root, 'usr/lib/mk/base.txt'), 'utf8')).toBe('mk-base 1.0\n');
    // mk-base's postinst writes /etc/mk-post-ran when it runs (test/resolver-conformance).
    expect(await exists(join(root, 'etc/mk-post-ran'))).toBe(false);
    expect(result.warnings.join('\n')).toMatch(new RegExp(`${foreign} is foreign to this ${host!.name} host: 6 packages unpacked without running their maintainer scripts`));
    const status = await readFile(join(root, 'var/lib/dpkg/status'), 'utf8');
    expect(status.match(/^Status: install ok unpacked$/gm)).toHaveLength(6);
    expect(status).toMatch(/^Package: mk-base\nStatus: install ok unpacked\n(?:.*\n)*?Depends: mk-lib, mk-system$/m);
    // What the root holds is what the next layer (a sysext) starts from.
    expect((await resolver.listInstalled(root, config)).map((p) => p.name)).toEqual(names);
    // A second install adds to the root instead of starting over.
    await resolver.install({ root, config, packages: ['mk-fails'], cacheDir: join(work, 'cache'), logger: silentLogger() });
    expect((await resolver.listInstalled(root, config)).map((p) => p.name)).toContain('mk-fails');
    expect(await exists(join(root, 'usr/lib/mk/fails.txt'))).toBe(true);
  }, 300_000);

  it("builds the tools root for the host's architecture, not the image's", async () => {
    const tools = await toolsTreeConfig({ ...config, toolsTree: 'default', toolsTreePackages: ['kmod'] });
    expect(tools?.architecture).toBe(host!.name);
    expect(tools?.mirror).toBe(config.mirror);
  });
});
