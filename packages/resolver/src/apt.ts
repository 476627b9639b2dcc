import { createHash } from 'node:crypto';
import { copyFile, mkdir, readFile, readdir, rm, stat, writeFile, lstat } from 'node:fs/promises';
import { join, basename } from 'node:path';
import { UserError, run, lastLines, architectureEntry, hostArchitecture, ARCHITECTURE_NAMES, PACKAGE_MANAGERS, packageManagerCachePath, type RunResult } from '@mkinitrd-pkg/common';
import { repositoryIdentity, type ImageConfig } from '@mkinitrd-pkg/config';
import { runInMountNamespace, systemMounts } from './namespace.js';
import { createRootSkeleton } from './rootfs.js';
import type { InstallRequest, InstallResult, InstalledPackage, Resolver, UnpackRequest, UnpackResult } from './types.js';

/** Architecture= (mkosi's names) → dpkg's, from common's ARCHITECTURES table. */
export function debianArchitecture(config: Pick<ImageConfig, 'architecture'>): string {
  const entry = architectureEntry(config.architecture);
  if (!entry) throw new UserError('CONFIG', `architecture ${config.architecture} is not known for apt`, { hint: `known: ${ARCHITECTURE_NAMES.join(', ')}` });
  return entry.debian;
}

/**
 * Whether dpkg can run this root's maintainer scripts: they run chrooted, so their
 * programs must be of the build host's architecture. A foreign root (an arm64 image built
 * on x86-64) is unpacked without them (installUnpacked), as debootstrap --foreign's first
 * stage does: running them needs an emulator (qemu-user-static via binfmt_misc) and dpkg
 * set up for the foreign architecture, which this machine kind does not have.
 */
export function isForeignArchitecture(config: Pick<ImageConfig, 'architecture'>): boolean {
  const host = hostArchitecture();
  return host !== undefined && debianArchitecture(config) !== host.debian;
}

/** Where apt's lists and .debs live for one repository set (config's repositoryIdentity): shared by every build of it. */
function repoCacheDir(cacheDir: string, config: ImageConfig): string {
  const key = repositoryIdentity(config).slice(0, 16);
  return packageManagerCachePath(cacheDir, 'apt', `${config.distribution}-${config.release}-${key}`);
}

interface AptPaths {
  cache: string;
  aptConfig: string;
  env: Record<string, string>;
}

async function prepareApt(cacheDir: string, config: ImageConfig, root: string | undefined): Promise<AptPaths> {
  const cache = repoCacheDir(cacheDir, config);
  const etc = join(cache, 'etc');
  await Promise.all([
    mkdir(join(cache, 'lists', 'partial'), { recursive: true }),
    mkdir(join(cache, 'archives', 'partial'), { recursive: true }),
    mkdir(join(etc, 'apt.conf.d'), { recursive: true }),
    mkdir(join(etc, 'preferences.d'), { recursive: true }),
    mkdir(join(etc, 'trusted.gpg.d'), { recursive: true }),
    mkdir(join(cache, 'log'), { recursive: true }),
    mkdir(join(cache, 'state'), { recursive: true }),
  ]);
  const arch = debianArchitecture(config);
  const components = config.components.length ? config.components : ['main'];
  // A copy of each keyring referenced by Signed-By, so the host's trust store is never used.
  const keyOptions: string[] = [];
  if (config.repositoryKeyCheck) {
    if (config.repositoryKeys.length === 0) {
      throw new UserError('CONFIG', 'RepositoryKeyCheck=yes but no RepositoryKey= is set', { hint: 'name the archive keyring (e.g. /usr/share/keyrings/debian-archive-keyring.gpg) or set RepositoryKeyCheck=no explicitly' });
    }
    const copies: string[] = [];
    for (const key of config.repositoryKeys) {
      const copy = join(etc, 'keyrings', basename(key));
      await mkdir(join(etc, 'keyrings'), { recursive: true });
      try {
        await copyFile(key, copy);
      } catch {
        throw new UserError('CONFIG', `repository key not found: ${key}`, { hint: 'install the distribution keyring package (e.g. debian-archive-keyring) or point RepositoryKey= at it' });
      }
      copies.push(copy);
    }
    keyOptions.push(`signed-by=${copies.join(',')}`);
  } else {
    keyOptions.push('trusted=yes');
  }
  const options = `[arch=${arch} ${keyOptions.join(' ')}]`;
  // A local repository is read through apt's copy: method, not file:, because file: uses
  // the .debs in place and never puts them into Dir::Cache::Archives, where the essential
  // set is unpacked from (apt-transport-method(1): copy "copies files into the cache").
  const uri = (value: string) => value.replace(/^file:(\/\/)?/, 'copy:');
  const sources = [`deb ${options} ${uri(config.mirror)} ${config.release} ${components.join(' ')}`];
  for (const repo of config.repositories) sources.push(repo.startsWith('deb ') ? repo : `deb ${options} ${uri(repo)}`);
  await writeFile(join(etc, 'sources.list'), sources.join('\n') + '\n');
  const rootOr = root ?? join(cache, 'nonexistent-root');
  // One config file per installroot: builds sharing this cache run at the same time, and
  // each one's apt must see its own root (Dir::State::Status, dpkg --root).
  const aptConfig = join(etc, root === undefined ? 'apt.conf' : `apt-${createHash('sha256').update(root).digest('hex').slice(0, 16)}.conf`);
  // Everything private (design.md §4): the host's apt.conf.d has Post-Invoke hooks.
  const aptConf = `
Dir "/";
Dir::Etc "${etc}";
Dir::Etc::main "${aptConfig}";
Dir::Etc::Parts "${join(etc, 'apt.conf.d')}";
Dir::Etc::SourceList "${join(etc, 'sources.list')}";
Dir::Etc::SourceParts "${join(etc, 'sources.list.d')}";
Dir::Etc::Preferences "${join(etc, 'preferences')}";
Dir::Etc::PreferencesParts "${join(etc, 'preferences.d')}";
Dir::Etc::TrustedParts "${join(etc, 'trusted.gpg.d')}";
Dir::Etc::Trusted "${join(etc, 'trusted.gpg')}";
Dir::State "${root === undefined ? join(cache, 'state') : join(root, 'var/lib/apt')}";
Dir::State::Lists "${join(cache, 'lists')}";
Dir::State::Status "${join(rootOr, 'var/lib/dpkg/status')}";
Dir::Cache "${cache}";
Dir::Cache::Archives "${join(cache, 'archives')}";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Dir::Log "${join(cache, 'log')}";
Dir::Bin::dpkg "/usr/bin/dpkg";
APT::Architecture "${arch}";
APT::Architectures { "${arch}"; };
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT::Immediate-Configure "false";
APT::Sandbox::User "root";
Acquire::Languages "none";
Acquire::Retries "3";
Acquire::Check-Valid-Until "false";
Debug::NoLocking "true";
pkgCacheGen::ForceEssential ",";
DPkg::Options { "--root=${rootOr}"; "--force-unsafe-io"; "--force-confnew"; "--log=/dev/null"; };
DPkg::Use-Pty "false";
DPkg::Install::Recursive::Minimum "1000";
`;
  await writeFile(aptConfig, aptConf);
  return {
    cache,
    aptConfig,
    env: {
      APT_CONFIG: aptConfig,
      DEBIAN_FRONTEND: 'noninteractive',
      DEBCONF_NONINTERACTIVE_SEEN: 'true',
      LC_ALL: 'C.UTF-8',
      LANG: 'C.UTF-8',
      PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
    },
  };
}

/** Distil apt's output into one line the user can act on. */
export function explainAptFailure(result: RunResult): UserError | undefined {
  const text = `${result.stdout}\n${result.stderr}`;
  const notFound = /E: Unable to locate package (\S+)/.exec(text) ?? /E: Package '([^']+)' has no installation candidate/.exec(text);
  if (notFound) {
    return new UserError('PACKAGE_NOT_FOUND', `package not found: ${notFound[1]}`, { hint: 'check the name in Packages= (apt-cache search NAME on a machine of that release)' });
  }
  if (/Unable to correct problems|unmet dependencies|held broken packages/.test(text)) {
    const unmet = /^\s*(\S+ : (?:Depends|PreDepends|Conflicts|Breaks): .*)$/m.exec(text);
    return new UserError('DEPENDENCY_CONFLICT', `dependency problem: ${unmet ? unmet[1]!.trim() : 'apt could not resolve the package set'}`, {
      hint: lastLines(result.stderr, 3) || undefined,
    });
  }
  const fetch = /(?:Failed to fetch|Could not resolve|Could not connect to|Temporary failure resolving|Connection failed|404\s+Not Found)[^\n]*/.exec(text);
  if (fetch) {
    return new UserError('MIRROR_UNREACHABLE', `repository unreachable: ${fetch[0].trim()}`, { hint: 'check Mirror= and the network; cached metadata is reused only when the mirror was reached once' });
  }
  if (/NO_PUBKEY|not signed|is not signed|GPG error|Signed-By/.test(text)) {
    const gpg = /(.*(?:NO_PUBKEY|GPG error|not signed).*)/.exec(text);
    return new UserError('SIGNATURE', `repository signature check failed: ${gpg ? gpg[1]!.replace(/^[WE]: /, '').trim() : ''}`, {
      hint: 'RepositoryKey= must name the keyring that signs the archive (RepositoryKeyCheck=no disables the check)',
    });
  }
  // dpkg names the package whose maintainer script failed ("dpkg: error processing
  // package NAME (--configure):" then "… NAME package post-installation script
  // subprocess returned error exit status N"); apt's own E: line only says dpkg failed.
  const script = /(\S+) package (pre-installation|post-installation|pre-removal|post-removal) script subprocess returned error exit status (\d+)/.exec(text);
  const processing = /dpkg: error processing (?:package|archive) (\S+)/.exec(text);
  if (script || processing) {
    const name = script?.[1] ?? processing![1]!;
    const what = script ? `its ${script[2]} script exited with ${script[3]}` : 'dpkg could not process it';
    return new UserError('SCRIPTLET_FAILED', `package ${name} failed to install: ${what}`, { hint: lastLines(result.stderr, 3) || undefined });
  }
  const err = /^E: (.*)$/m.exec(text);
  if (err) return new UserError('COMMAND_FAILED', `apt failed: ${err[1]}`, { hint: `command: ${result.command}` });
  return undefined;
}

/**
 * apt-get against the shared lists and package cache. Builds sharing a cache dir run
 * at the same time (CI matrices, kernel-install for two kernels): `flock` serialises
 * what writes the shared state, since our private apt config turns apt's own locking off.
 */
async function aptGet(paths: AptPaths, args: string[]): Promise<RunResult> {
  return run('flock', [join(paths.cache, 'lock'), 'apt-get', '-q', ...args], { env: paths.env, explainFailure: explainAptFailure });
}

/** Digest of the Release files apt fetched: changes exactly when the repository changes. */
async function listsDigest(cache: string): Promise<string> {
  const lists = join(cache, 'lists');
  const hash = createHash('sha256');
  const names = (await readdir(lists)).filter((n) => /(In)?Release$/.test(n)).sort();
  for (const name of names) hash.update(name).update(await readFile(join(lists, name)));
  return hash.digest('hex');
}

async function ensureRootSkeleton(root: string): Promise<void> {
  await createRootSkeleton(root, ['var/lib/dpkg/info', 'var/lib/dpkg/updates', 'var/lib/dpkg/triggers']);
  for (const file of ['var/lib/dpkg/status', 'var/lib/dpkg/available']) {
    try {
      await stat(join(root, file));
    } catch {
      await writeFile(join(root, file), '');
    }
  }
}

/** Stop maintainer scripts from starting services on the build host (invoke-rc.d). */
async function withPolicyRcD<T>(root: string, body: () => Promise<T>): Promise<T> {
  const path = join(root, 'usr/sbin/policy-rc.d');
  await writeFile(path, '#!/bin/sh\nexit 101\n', { mode: 0o755 });
  try {
    return await body();
  } finally {
    await rm(path, { force: true });
  }
}

/**
 * Installed packages of a dpkg status file. `unpacked`: count "install ok unpacked" too —
 * a foreign-architecture root made without maintainer scripts (installUnpacked) is all
 * unpacked.
 */
export function parseDpkgStatus(text: string, options: { unpacked?: boolean } = {}): InstalledPackage[] {
  const packages: InstalledPackage[] = [];
  for (const stanza of text.split(/\n\n+/)) {
    const field = (name: string) => new RegExp(`^${name}: (.*)$`, 'm').exec(stanza)?.[1]?.trim();
    const name = field('Package');
    const status = field('Status');
    if (!name || !status || !(status.endsWith(' installed') || (options.unpacked && status === 'install ok unpacked'))) continue;
    packages.push({ name, version: field('Version') ?? '', architecture: field('Architecture') ?? '' });
  }
  return packages.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Package names of an `apt-get -s install` plan ("Inst NAME (VERSION …)"), with versions. */
function parseSimulation(stdout: string): Array<{ name: string; version: string; arch: string }> {
  const plan: Array<{ name: string; version: string; arch: string }> = [];
  for (const m of stdout.matchAll(/^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) .*\[([^\]]+)\]\)/gm)) {
    plan.push({ name: m[1]!.replace(/:.*$/, ''), version: m[2]!, arch: m[3]! });
  }
  return plan;
}

function debFileName(p: { name: string; version: string; arch: string }): string {
  // apt stores NAME_VERSION_ARCH.deb with the epoch colon escaped.
  return `${p.name}_${p.version.replace(':', '%3a')}_${p.arch}.deb`;
}

async function newestChangelogEpoch(root: string): Promise<number | undefined> {
  // dpkg keeps the mtimes of packaged files; a changelog's mtime is its package's
  // SOURCE_DATE_EPOCH. The newest one is the default epoch of the image.
  let newest: number | undefined;
  let docs: string[];
  try {
    docs = await readdir(join(root, 'usr/share/doc'));
  } catch {
    return undefined;
  }
  await Promise.all(
    docs.map(async (pkg) => {
      try {
        const st = await lstat(join(root, 'usr/share/doc', pkg, 'changelog.Debian.gz'));
        if (st.isFile()) newest = Math.max(newest ?? 0, Math.floor(st.mtimeMs / 1000));
      } catch {
        /* a package without a changelog */
      }
    }),
  );
  return newest;
}

export class AptResolver implements Resolver {
  readonly packageManager = 'apt';
  readonly databasePaths = PACKAGE_MANAGERS.apt.databasePaths;

  async refresh(request: Omit<InstallRequest, 'root' | 'packages'>): Promise<string> {
    const paths = await prepareApt(request.cacheDir, request.config, undefined);
    request.logger.info({ mirror: request.config.mirror, release: request.config.release }, 'refreshing repository metadata');
    await aptGet(paths, ['update', '--error-on=any']);
    return listsDigest(paths.cache);
  }

  async install(request: InstallRequest): Promise<InstallResult> {
    const { root, config, logger } = request;
    await ensureRootSkeleton(root);
    const paths = await prepareApt(request.cacheDir, config, root);
    try {
      logger.info({ mirror: config.mirror, release: config.release }, 'refreshing repository metadata');
      await aptGet(paths, ['update', '--error-on=any']);
      const repositoryDigest = await listsDigest(paths.cache);

      const installed = new Set((await this.listInstalled(root, config)).map((p) => p.name));
      const firstInstall = installed.size === 0;
      // apt does not add Essential packages into an empty status by itself (design.md §4);
      // BootstrapPackages= (Debian: usr-is-merged) come with them.
      const bootstrap = ['?essential', ...config.bootstrapPackages];
      const wanted = firstInstall ? [...bootstrap, ...request.packages] : [...request.packages];

      const simulation = await aptGet(paths, ['-s', 'install', ...wanted]);
      const plan = parseSimulation(simulation.stdout);
      logger.info({ packages: plan.length }, 'downloading packages');
      await aptGet(paths, ['-y', '--download-only', 'install', ...wanted]);

      if (isForeignArchitecture(config)) return await this.installUnpacked(request, paths, plan, repositoryDigest);

      if (firstInstall) {
        // Unpack the Essential closure by hand first so maintainer scripts find /bin/sh,
        // /usr/bin/dpkg's helpers and friends when dpkg runs them chrooted.
        const essential = parseSimulation((await aptGet(paths, ['-s', 'install', ...bootstrap])).stdout);
        logger.info({ packages: essential.length }, 'unpacking the essential set');
        for (const p of essential) {
          const deb = join(paths.cache, 'archives', debFileName(p));
          await run('sh', ['-c', 'dpkg-deb --fsys-tarfile "$1" | tar -x --keep-directory-symlink -C "$2"', 'sh', deb, root]);
        }
      }

      logger.info({ packages: plan.length }, 'installing packages');
      const env: Record<string, string> = { ...paths.env };
      if (request.sourceDateEpoch !== undefined) env.SOURCE_DATE_EPOCH = String(request.sourceDateEpoch);
      await withPolicyRcD(root, () =>
        // Under the same lock as the downloads: apt-get install reads the shared lists and
        // archives, which a concurrent build's update must not rewrite meanwhile.
        runInMountNamespace(systemMounts(root), ['flock', join(paths.cache, 'lock'), 'apt-get', '-q', '-y', 'install', ...wanted], { env, explainFailure: explainAptFailure }),
      );
      const packages = await this.listInstalled(root);
      const halfInstalled = (await readFile(join(root, 'var/lib/dpkg/status'), 'utf8'))
        .split(/\n\n+/)
        .filter((s) => /^Status: .* (half-configured|half-installed|unpacked|triggers-awaited|triggers-pending)$/m.test(s))
        .map((s) => /^Package: (.*)$/m.exec(s)?.[1]);
      if (halfInstalled.length) {
        throw new UserError('SCRIPTLET_FAILED', `packages not fully configured: ${halfInstalled.join(', ')}`);
      }
      return { packages, newestPackageEpoch: await newestChangelogEpoch(root), repositoryDigest, warnings: [] };
    } finally {
      await rm(paths.aptConfig, { force: true });
    }
  }

  /**
   * A foreign-architecture root: every planned package unpacked in dependency order
   * (apt's plan), no maintainer script run, and each recorded in the root's dpkg status as
   * "install ok unpacked" with its control fields, so a later layer (sysext) sees what is
   * there. What the scripts would have done is left undone and reported as a warning.
   */
  private async installUnpacked(request: InstallRequest, paths: AptPaths, plan: ReturnType<typeof parseSimulation>, repositoryDigest: string): Promise<InstallResult> {
    const { root, config, logger } = request;
    logger.warn({ architecture: config.architecture, host: hostArchitecture()?.name }, 'foreign architecture: packages are unpacked, their maintainer scripts are not run');
    const stanzas: string[] = [];
    for (const p of plan) {
      const deb = join(paths.cache, 'archives', debFileName(p));
      await run('sh', ['-c', 'dpkg-deb --fsys-tarfile "$1" | tar -x --keep-directory-symlink -C "$2"', 'sh', deb, root]);
      const control = (await run('dpkg-deb', ['-f', deb])).stdout.trimEnd();
      stanzas.push(control.replace(/^(Package: .*)$/m, '$1\nStatus: install ok unpacked'));
    }
    // The accounts the scripts would have made (base-passwd, systemd's sysusers.d): the
    // host's systemd-sysusers reads the root's sysusers.d and only writes files, so it works
    // for any architecture. SOURCE_DATE_EPOCH (default: the newest package's) fixes the
    // shadow "last change" day, so the root is reproducible.
    const newest = await newestChangelogEpoch(root);
    const epoch = request.sourceDateEpoch ?? newest;
    await run('systemd-sysusers', [`--root=${root}`], { env: epoch !== undefined ? { SOURCE_DATE_EPOCH: String(epoch) } : {} });
    const statusPath = join(root, 'var/lib/dpkg/status');
    const previous = (await readFile(statusPath, 'utf8').catch(() => '')).trim();
    await writeFile(statusPath, [previous, ...stanzas].filter(Boolean).join('\n\n') + '\n');
    const packages = await this.listInstalled(root, config);
    const warnings = [`${config.architecture} is foreign to this ${hostArchitecture()?.name ?? process.arch} host: ${plan.length} packages unpacked without running their maintainer scripts (accounts made with systemd-sysusers; alternatives and other script work left undone)`];
    return { packages, newestPackageEpoch: newest, repositoryDigest, warnings };
  }

  async unpack(request: UnpackRequest): Promise<UnpackResult> {
    const { config, logger } = request;
    // Resolve against an empty package database of our own: the closure is the package's.
    const emptyRoot = join(repoCacheDir(request.cacheDir, config), 'empty-root');
    await mkdir(join(emptyRoot, 'var/lib/dpkg'), { recursive: true });
    await writeFile(join(emptyRoot, 'var/lib/dpkg/status'), '');
    const paths = await prepareApt(request.cacheDir, config, emptyRoot);
    await aptGet(paths, ['update', '--error-on=any']);
    const plan = parseSimulation((await aptGet(paths, ['-s', 'install', ...request.packages])).stdout).filter((p) => request.include(p.name));
    if (plan.length === 0) {
      throw new UserError('KERNEL_NOT_FOUND', `no package to unpack for ${request.packages.join(' ')}`);
    }
    await aptGet(paths, ['-y', '--download-only', 'install', ...request.packages]);
    const packageFiles = plan.map((p) => join(paths.cache, 'archives', debFileName(p)));
    const target = await request.target(packageFiles.map((f) => basename(f)));
    if (target !== undefined) {
      await mkdir(target, { recursive: true });
      for (const file of packageFiles) {
        logger.info({ package: basename(file) }, 'unpacking');
        await run('dpkg-deb', ['-x', file, target]);
      }
    }
    return { packageFiles, packages: plan.map((p) => ({ name: p.name, version: p.version, architecture: p.arch })), target };
  }

  async listInstalled(root: string, config?: Pick<ImageConfig, 'architecture'>): Promise<InstalledPackage[]> {
    try {
      return parseDpkgStatus(await readFile(join(root, 'var/lib/dpkg/status'), 'utf8'), { unpacked: config !== undefined && isForeignArchitecture(config) });
    } catch {
      return [];
    }
  }
}
