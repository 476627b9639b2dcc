import { createHash, randomBytes } from 'node:crypto';
import { access, mkdir, mkdtemp, readFile, readdir, rename, rm, rmdir, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError, requireCommands, run, architectureEntry, ARCHITECTURE_NAMES, PACKAGE_MANAGERS, packageManagerCachePath, type RunResult } from '@mkinitrd-pkg/common';
import { repositoryIdentity, type ImageConfig } from '@mkinitrd-pkg/config';
import { runInMountNamespace, systemMounts, type NamespaceMount } from './namespace.js';
import { createRootSkeleton } from './rootfs.js';
import type { InstallRequest, InstallResult, InstalledPackage, Resolver, UnpackRequest, UnpackResult } from './types.js';

/** RpmDatabase='s default: rpm's own since 4.16 (Fedora >= 36); a preset may name another. */
export const RPMDB_PATH = '/usr/lib/sysimage/rpm';

/**
 * dnf 4 prepends the installroot to the cachedir, logdir and persistdir of its config
 * file (dnf/cli/cli.py, `_read_conf_file`), so the private cache that builds share is
 * bind-mounted here inside the mount namespace; the mount vanishes with dnf. Do not
 * pass `--setopt=cachedir=` on the command line: dnf 4.14 then uses the unprefixed
 * path for repository metadata but the prefixed one for other state, i.e. it writes
 * into the host's /var/cache/dnf (measured).
 */
const ROOT_CACHEDIR = '/var/cache/dnf';

/** Architecture= (mkosi's names) → rpm's, from common's ARCHITECTURES table. */
export function rpmArchitecture(config: Pick<ImageConfig, 'architecture'>): string {
  const entry = architectureEntry(config.architecture);
  if (!entry) throw new UserError('CONFIG', `architecture ${config.architecture} is not known for dnf`, { hint: `known: ${ARCHITECTURE_NAMES.join(', ')}` });
  return entry.rpm;
}

export interface DnfRepository {
  /** Stable: "mirror" for Mirror=, "repo-" + a digest of the URL for each Repositories= entry. */
  id: string;
  baseurl: string;
}

/** Mirror= and every Repositories= entry, each a baseurl, with ids that do not depend on order. */
export function dnfRepositories(config: ImageConfig): DnfRepository[] {
  const repos: DnfRepository[] = [{ id: 'mirror', baseurl: config.mirror }];
  for (const url of config.repositories) {
    const baseurl = url.trim();
    if (/\s/.test(baseurl)) {
      throw new UserError('CONFIG', `Repositories= entry for dnf must be one baseurl: "${baseurl}"`, { hint: 'one URL per Repositories= line, e.g. https://dl.fedoraproject.org/pub/fedora/linux/updates/43/Everything/x86_64/' });
    }
    const id = `repo-${createHash('sha256').update(baseurl).digest('hex').slice(0, 12)}`;
    if (!repos.some((r) => r.id === id)) repos.push({ id, baseurl });
  }
  return repos;
}

/** Turn RepositoryKey= values into gpgkey= URLs; local keys must exist (a clear error beats a Curl one). */
async function gpgKeyUrls(config: ImageConfig): Promise<string[]> {
  if (!config.repositoryKeyCheck) return [];
  if (config.repositoryKeys.length === 0) {
    throw new UserError('CONFIG', 'RepositoryKeyCheck=yes but no RepositoryKey= is set', {
      hint: 'name the distribution key (e.g. file:///etc/pki/rpm-gpg/RPM-GPG-KEY-fedora-43-x86_64) or set RepositoryKeyCheck=no explicitly',
    });
  }
  const urls: string[] = [];
  for (const key of config.repositoryKeys) {
    const url = key.startsWith('/') ? `file://${key}` : key;
    if (url.startsWith('file://')) {
      try {
        await access(fileURLToPath(url));
      } catch {
        throw new UserError('CONFIG', `repository key not found: ${key}`, {
          hint: 'Fedora keys come with fedora-gpg-keys (/etc/pki/rpm-gpg) or distribution-gpg-keys (/usr/share/distribution-gpg-keys/fedora); point RepositoryKey= at one, or set RepositoryKeyCheck=no',
        });
      }
    } else if (!/^https?:\/\//.test(url)) {
      throw new UserError('CONFIG', `RepositoryKey= for dnf must be a path, file:// or http(s):// URL: ${key}`);
    }
    urls.push(url);
  }
  return urls;
}

/** A private dnf.conf: nothing from the host's /etc/dnf, /etc/yum.repos.d or plugins. */
export function renderDnfConf(config: ImageConfig, repos: readonly DnfRepository[], gpgKeys: readonly string[], varsDir: string): string {
  const gpgcheck = config.repositoryKeyCheck ? 1 : 0;
  const lines = [
    '[main]',
    `gpgcheck=${gpgcheck}`,
    'localpkg_gpgcheck=0',
    'repo_gpgcheck=0',
    'keepcache=1',
    'plugins=0',
    'install_weak_deps=0',
    'tsflags=nodocs',
    `cachedir=${ROOT_CACHEDIR}`,
    'reposdir=/dev/null',
    `varsdir=${varsDir}`,
    'skip_if_unavailable=0',
    'countme=0',
    'protected_packages=',
    'debuglevel=2',
    '',
  ];
  for (const repo of repos) {
    lines.push(`[${repo.id}]`, `name=${repo.id}`, `baseurl=${repo.baseurl}`, 'enabled=1', `gpgcheck=${gpgcheck}`, 'repo_gpgcheck=0', 'skip_if_unavailable=0');
    if (gpgKeys.length) lines.push(`gpgkey=${gpgKeys.join(' ')}`);
    lines.push('');
  }
  return lines.join('\n');
}

/** Where dnf's metadata and RPMs live for one repository set (config's repositoryIdentity): shared by every build of it. */
function repoCacheDir(cacheDir: string, config: ImageConfig): string {
  const key = repositoryIdentity(config).slice(0, 16);
  return packageManagerCachePath(cacheDir, 'dnf', `${config.distribution}-${config.release}-${key}`);
}

interface DnfPaths {
  /** Bind-mounted at ROOT/var/cache/dnf. */
  cache: string;
  repos: DnfRepository[];
  argv: string[];
  env: Record<string, string>;
}

/**
 * rpm macros for every rpm and dnf run. Debian's rpm keeps its database in ~/.rpmdb;
 * %_dbpath puts it where Fedora's own rpm looks (design.md §4). Transaction plugins that
 * would talk to the build host (inhibitor locks, D-Bus, audit, syslog) are switched off.
 */
const rpmMacros = (dbpath: string) => `%_dbpath ${dbpath}
%__transaction_systemd_inhibit %{nil}
%__transaction_dbus_announce %{nil}
%__transaction_audit %{nil}
%__transaction_syslog %{nil}
`;

/** Builds sharing a cache may write these files at the same time: never show a half-written one. */
async function writeFileAtomic(path: string, content: string): Promise<void> {
  const temp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(temp, content);
  await rename(temp, path);
}

async function prepareDnf(cacheDir: string, config: ImageConfig): Promise<DnfPaths> {
  await requireCommands(['dnf', 'rpm'], 'install dnf and rpm (Debian: apt-get install dnf rpm)');
  const base = repoCacheDir(cacheDir, config);
  const cache = join(base, 'cache');
  // One HOME (.rpmmacros) per database path: builds of another RpmDatabase= may share the cache.
  const home = join(base, config.rpmDatabase === RPMDB_PATH ? 'home' : `home-${createHash('sha256').update(config.rpmDatabase).digest('hex').slice(0, 12)}`);
  const etc = join(base, 'etc');
  const vars = join(etc, 'vars');
  await Promise.all([mkdir(cache, { recursive: true }), mkdir(home, { recursive: true }), mkdir(vars, { recursive: true })]);
  await writeFileAtomic(join(home, '.rpmmacros'), rpmMacros(config.rpmDatabase));
  const repos = dnfRepositories(config);
  const conf = renderDnfConf(config, repos, await gpgKeyUrls(config), vars);
  // Named by content: builds with different key settings may share the cache at once.
  const confPath = join(etc, `dnf-${createHash('sha256').update(conf).digest('hex').slice(0, 12)}.conf`);
  await writeFileAtomic(confPath, conf);
  const argv = [
    'dnf',
    `--config=${confPath}`,
    `--releasever=${config.release}`,
    `--forcearch=${rpmArchitecture(config)}`,
    '--setopt=reposdir=/dev/null',
    `--setopt=varsdir=${vars}`,
    '--setopt=keepcache=True',
    '--setopt=install_weak_deps=False',
    '--setopt=tsflags=nodocs',
    '--setopt=plugins=False',
    '--assumeyes',
  ];
  if (!config.repositoryKeyCheck) argv.push('--nogpgcheck');
  return {
    cache,
    repos,
    argv,
    env: { HOME: home, LC_ALL: 'C.UTF-8', LANG: 'C.UTF-8', PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
  };
}

/** Distil dnf's output into one line the user can act on. */
export function explainDnfFailure(result: RunResult): UserError | undefined {
  const text = `${result.stdout}\n${result.stderr}`;
  const noMatch = [...text.matchAll(/^No match for argument: (\S+)/gm)].map((m) => m[1]!);
  const unable = /Unable to find a match: (.+)/.exec(text);
  if (noMatch.length || unable) {
    const names = noMatch.length ? [...new Set(noMatch)] : unable![1]!.trim().split(/\s+/);
    return new UserError('PACKAGE_NOT_FOUND', `package${names.length > 1 ? 's' : ''} not found: ${names.join(' ')}`, {
      hint: 'check the name in Packages= (dnf repoquery NAME on a machine of that release)',
    });
  }
  if (/GPG check FAILED|is not signed|Public key for .* is not installed|Import of key\(s\) didn't help|NOKEY|signature.*(BAD|not OK)/i.test(text)) {
    const line =
      /^(Package \S+ is not signed)/m.exec(text)?.[1] ??
      /^(Public key for \S+ is not installed)/m.exec(text)?.[1] ??
      /^(Import of key\(s\) didn't help, wrong key\(s\)\?)/m.exec(text)?.[1] ??
      'GPG check FAILED';
    // The same code apt's resolver gives a signature failure, so callers treat both alike.
    return new UserError('SIGNATURE', `repository signature check failed: ${line}`, {
      hint: 'RepositoryKey= must name the key that signs the packages (RepositoryKeyCheck=no disables the check)',
    });
  }
  const key = /^Curl error \(\d+\): .* for (\S+) \[/m.exec(text);
  if (key && !/\/repodata\/|\.rpm$/.test(key[1]!) && /gpg|key|\.asc$/i.test(key[1]!)) {
    return new UserError('CONFIG', `repository key could not be read: ${key[1]}`, { hint: 'check RepositoryKey= (RepositoryKeyCheck=no disables the check)' });
  }
  if (/Failed to download metadata|Cannot download repomd\.xml|Curl error|Cannot find a valid baseurl|Failed to synchronize cache/.test(text)) {
    const repo = /Failed to (?:download metadata|synchronize cache) for repo '([^']+)'/.exec(text)?.[1];
    const curl = /Curl error \(\d+\): ([^\n[]*?)(?: \[[^\n]*)?$/m.exec(text)?.[1]?.trim();
    const why = curl ?? /Cannot download repomd\.xml[^\n]*/.exec(text)?.[0] ?? 'cannot download repository metadata';
    return new UserError('MIRROR_UNREACHABLE', `repository unreachable${repo ? ` (${repo})` : ''}: ${why}`, {
      hint: 'check Mirror= / Repositories= and the network (a file:// baseurl must contain repodata/repomd.xml)',
    });
  }
  const problem = /^\s*Problem(?: \d+)?: (.*)$/m.exec(text);
  if (problem) {
    const after = text.slice(problem.index + problem[0].length);
    const first = /^\s*- (.*)$/m.exec(after)?.[1]?.trim();
    const count = text.match(/^\s*Problem(?: \d+)?: /gm)!.length;
    return new UserError('DEPENDENCY_CONFLICT', `dependency problem: ${first ?? problem[1]!.trim()}`, {
      hint: `${count > 1 ? `${count} problems; ` : ''}a repository providing it may be missing from Repositories=, or a package in Packages= cannot be installed`,
    });
  }
  const fileConflict = /^\s*(file \S+ (?:conflicts between attempted installs of|from install of) .*)$/m.exec(text);
  if (fileConflict) return new UserError('DEPENDENCY_CONFLICT', `file conflict: ${fileConflict[1]!.trim()}`);
  const fatalScriptlet = parseScriptletFailures(text).find((f) => f.fatal);
  if (fatalScriptlet) {
    return new UserError('SCRIPTLET_FAILED', `${fatalScriptlet.message}; the package was not installed`, {
      hint: 'a failing %pre/%pretrans stops the package from being installed; see the scriptlet output above with --debug',
    });
  }
  const err = /^Error: (.+)$/m.exec(text);
  if (err) return new UserError('COMMAND_FAILED', `dnf failed: ${err[1]!.trim()}`, { hint: `command: ${result.command}` });
  return undefined;
}

export interface ScriptletFailure {
  /** NEVRA from rpm's line ("mk-fails-1.0-1.noarch") or the name from dnf's. */
  package: string;
  /** "%post", "%posttrans", … */
  scriptlet: string;
  /** One line for the build summary. */
  message: string;
  /** %pre/%pretrans/%preun failures stop the element; the package is then not installed. */
  fatal: boolean;
}

const DNF_SCRIPTLET_NAMES: Record<string, string> = {
  PREIN: '%pre',
  POSTIN: '%post',
  PREUN: '%preun',
  POSTUN: '%postun',
  PRETRANS: '%pretrans',
  POSTTRANS: '%posttrans',
  PREUNTRANS: '%preuntrans',
  POSTUNTRANS: '%postuntrans',
  TRIGGERPREIN: '%triggerprein',
  TRIGGERIN: '%triggerin',
  TRIGGERUN: '%triggerun',
  TRIGGERPOSTUN: '%triggerpostun',
  VERIFY: '%verify',
};

const FATAL_SCRIPTLETS = new Set(['%pre', '%prein', '%pretrans', '%preun']);

/**
 * Failed scriptlets in dnf/rpm output. rpm prints
 * "warning: %post(NEVRA) scriptlet failed, exit status N" (error: for %pre, which aborts
 * the package) and dnf adds "Error in POSTIN scriptlet in rpm package NAME"; both can
 * appear for one failure, so rpm's more precise line wins and dnf's fills gaps.
 */
export function parseScriptletFailures(text: string): ScriptletFailure[] {
  const failures: ScriptletFailure[] = [];
  for (const m of text.matchAll(/^(?:warning|error): (%\w+)\(([^)]+)\) scriptlet failed, (exit status \d+|signal \d+)/gm)) {
    const scriptlet = m[1] === '%prein' ? '%pre' : m[1]!;
    if (failures.some((f) => f.package === m[2] && f.scriptlet === scriptlet)) continue;
    failures.push({ package: m[2]!, scriptlet, message: `${scriptlet} scriptlet of ${m[2]} failed (${m[3]})`, fatal: FATAL_SCRIPTLETS.has(scriptlet) });
  }
  for (const m of text.matchAll(/Error in (\w+) scriptlet in rpm package (\S+)/g)) {
    const scriptlet = DNF_SCRIPTLET_NAMES[m[1]!] ?? `%${m[1]!.toLowerCase()}`;
    const name = m[2]!;
    if (failures.some((f) => f.scriptlet === scriptlet && (f.package === name || f.package.startsWith(`${name}-`)))) continue;
    failures.push({ package: name, scriptlet, message: `${scriptlet} scriptlet of ${name} failed`, fatal: FATAL_SCRIPTLETS.has(scriptlet) });
  }
  return failures;
}

export interface PlannedRpm {
  name: string;
  architecture: string;
  /** [EPOCH:]VERSION-RELEASE as dnf prints it. */
  version: string;
  repository: string;
}

/**
 * The packages of dnf's transaction table ("Installing:", "Installing dependencies:", …).
 * dnf formats it for 80 columns when stdout is not a terminal and wraps a long name
 * onto its own line, so a row is read as tokens until it has all its columns
 * (name, arch, version, repository, size, unit).
 */
export function parseDnfTransaction(stdout: string): PlannedRpm[] {
  const planned: PlannedRpm[] = [];
  let inSection = false;
  let tokens: string[] = [];
  for (const line of stdout.split('\n')) {
    const header = /^(Installing|Upgrading|Reinstalling|Downgrading)[\w ]*:\s*$/.exec(line);
    if (header) {
      // Module and group sections list streams and groups, not packages.
      inSection = !/module|group|environment/i.test(line);
      tokens = [];
      continue;
    }
    if (!inSection) continue;
    if (line.trim() === '' || /^\S/.test(line)) {
      // A blank line, "Transaction Summary", "Removing:" … ends the package rows.
      inSection = false;
      tokens = [];
      continue;
    }
    if (/^\s+replacing\s/.test(line)) continue;
    tokens.push(...line.trim().split(/\s+/));
    if (tokens.length >= 6) {
      const [name, architecture, version, repository] = tokens;
      planned.push({ name: name!, architecture: architecture!, version: version!, repository: repository! });
      tokens = [];
    }
  }
  return planned;
}

export interface RpmRecord extends InstalledPackage {
  buildTime: number;
}

const RPM_QUERY_FORMAT = '%{NAME}\\t%|EPOCH?{%{EPOCH}:}|%{VERSION}-%{RELEASE}\\t%{ARCH}\\t%{BUILDTIME}\\n';

/** `rpm -qa --qf RPM_QUERY_FORMAT` output → records sorted by name, version, arch; keys (gpg-pubkey) left out. */
export function parseRpmQuery(stdout: string): RpmRecord[] {
  const records: RpmRecord[] = [];
  for (const line of stdout.split('\n')) {
    const [name, version, architecture, buildTime] = line.split('\t');
    // gpg-pubkey "packages" are imported signing keys, not software.
    if (!name || version === undefined || name === 'gpg-pubkey') continue;
    records.push({ name, version, architecture: architecture === '(none)' ? '' : architecture ?? '', buildTime: Number(buildTime) || 0 });
  }
  const key = (r: RpmRecord) => `${r.name}\0${r.version}\0${r.architecture}`;
  return records.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

async function queryRpmdb(root: string, dbpath: string): Promise<RpmRecord[]> {
  try {
    await access(join(root, dbpath));
  } catch {
    return [];
  }
  const result = await run('rpm', ['--root', root, '--dbpath', dbpath, '-qa', '--qf', RPM_QUERY_FORMAT], { env: { LC_ALL: 'C.UTF-8' } });
  return parseRpmQuery(result.stdout);
}

/** Digest of the repomd.xml files dnf fetched for these repositories: changes exactly when a repository changes. */
async function repomdDigest(cache: string, repos: readonly DnfRepository[]): Promise<string> {
  const hash = createHash('sha256');
  const entries = await readdir(cache).catch(() => [] as string[]);
  for (const repo of repos) {
    // dnf names a repository's directory "<id>-<digest of its URLs>".
    const dirs = entries.filter((e) => e.startsWith(`${repo.id}-`) && /^[0-9a-f]{16}$/.test(e.slice(repo.id.length + 1))).sort();
    let found = false;
    for (const dir of dirs) {
      try {
        const repomd = await readFile(join(cache, dir, 'repodata', 'repomd.xml'));
        hash.update(`${repo.id}\0${repo.baseurl}\0`).update(repomd);
        found = true;
      } catch {
        /* a directory without metadata (interrupted download) */
      }
    }
    if (!found) throw new UserError('CACHE', `dnf left no repomd.xml for repository ${repo.id} (${repo.baseurl}) in ${cache}`);
  }
  return hash.digest('hex');
}

async function runDnf(root: string, paths: DnfPaths, args: string[], mounts: NamespaceMount[], extraEnv: Record<string, string> = {}): Promise<RunResult> {
  const cacheMount: NamespaceMount = { kind: 'bind', source: paths.cache, target: join(root, ROOT_CACHEDIR) };
  try {
    return await runInMountNamespace([...mounts, cacheMount], [...paths.argv, `--installroot=${root}`, ...args], {
      env: { ...paths.env, ...extraEnv },
      explainFailure: explainDnfFailure,
    });
  } finally {
    // The mount point stays behind, empty, once the namespace is gone.
    await rmdir(join(root, ROOT_CACHEDIR)).catch(() => undefined);
  }
}

/** The downloaded files of planned packages: NAME-VERSION-RELEASE.ARCH.rpm, or found by their headers. */
async function locateRpms(dir: string, planned: readonly PlannedRpm[]): Promise<string[]> {
  const nevra = (p: PlannedRpm) => `${p.name}-${p.version.replace(/^\d+:/, '')}.${p.architecture}`;
  const files: string[] = [];
  let index: Map<string, string> | undefined;
  for (const p of planned) {
    const guess = join(dir, `${nevra(p)}.rpm`);
    if (await access(guess).then(() => true, () => false)) {
      files.push(guess);
      continue;
    }
    if (!index) {
      const map = new Map<string, string>();
      const rpms = (await readdir(dir)).filter((n) => n.endsWith('.rpm')).map((n) => join(dir, n));
      await Promise.all(
        rpms.map(async (file) => {
          const q = await run('rpm', ['-qp', '--nosignature', '--nodigest', '--qf', '%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}', file], { env: { LC_ALL: 'C.UTF-8' } });
          map.set(q.stdout.trim(), file);
        }),
      );
      index = map;
    }
    const found = index.get(nevra(p));
    if (!found) throw new UserError('CACHE', `dnf reported ${nevra(p)} but its file is not in ${dir}`);
    files.push(found);
  }
  return files;
}

export class DnfResolver implements Resolver {
  readonly packageManager = 'dnf';
  readonly databasePaths = PACKAGE_MANAGERS.dnf.databasePaths;

  async refresh(request: Omit<InstallRequest, 'root' | 'packages'>): Promise<string> {
    const paths = await prepareDnf(request.cacheDir, request.config);
    request.logger.info({ mirror: request.config.mirror, release: request.config.release }, 'refreshing repository metadata');
    // dnf needs an installroot to hang the cache on: a scratch one per call, since a
    // mount point shared with a concurrent build could be removed under it.
    const scratch = await mkdtemp(join(paths.cache, '..', 'refresh-root-'));
    try {
      await runDnf(scratch, paths, ['--refresh', 'makecache'], []);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
    return repomdDigest(paths.cache, paths.repos);
  }

  async install(request: InstallRequest): Promise<InstallResult> {
    const { root, config, logger } = request;
    const paths = await prepareDnf(request.cacheDir, config);
    await createRootSkeleton(root, [ROOT_CACHEDIR.slice(1)]);
    logger.info({ mirror: config.mirror, release: config.release, packages: request.packages.length }, 'installing packages with dnf');
    const env: Record<string, string> = {};
    if (request.sourceDateEpoch !== undefined) env.SOURCE_DATE_EPOCH = String(request.sourceDateEpoch);
    // --refresh: check the repositories every build as apt-get update does; only changed
    // metadata is downloaded and RPMs come from the cache (keepcache).
    const result = await runDnf(root, paths, ['--refresh', 'install', ...request.packages], systemMounts(root), env);

    // Decision: a failing %post/%posttrans/trigger is NOT fatal. rpm and dnf install the
    // package, record it in the rpmdb and exit 0; Fedora itself treats these as warnings
    // (many scriptlets only refresh caches or talk to a running systemd, which an
    // installroot does not have). We report each one in InstallResult.warnings (the
    // build summary) and in the log, so it is never silent. A failing %pre/%pretrans
    // keeps the package out and makes dnf fail: explainDnfFailure turns that into
    // SCRIPTLET_FAILED.
    const warnings = parseScriptletFailures(`${result.stdout}\n${result.stderr}`).map((f) => f.message);
    for (const warning of warnings) logger.warn(warning);

    const records = await queryRpmdb(root, config.rpmDatabase);
    const newest = records.reduce<number | undefined>((max, r) => (r.buildTime > 0 && r.buildTime > (max ?? 0) ? r.buildTime : max), undefined);
    return {
      packages: records.map(({ name, version, architecture }) => ({ name, version, architecture })),
      newestPackageEpoch: newest,
      repositoryDigest: await repomdDigest(paths.cache, paths.repos),
      warnings,
    };
  }

  /**
   * Download a package's closure (resolved against an empty rpmdb, so it is the
   * package's own) and unpack the parts `include` selects with rpm2cpio: no scriptlet
   * runs and no database is written. How kernel modules come from kernel-modules-core.
   */
  async unpack(request: UnpackRequest): Promise<UnpackResult> {
    const { config, logger } = request;
    const paths = await prepareDnf(request.cacheDir, config);
    await requireCommands(['rpm2cpio', 'cpio'], 'install rpm2cpio (rpm) and cpio');
    const base = join(paths.cache, '..');
    // With --downloaddir dnf keeps packages there instead of the cache and skips the
    // ones already present and intact, so this directory is the download cache here.
    const downloads = join(base, 'unpack-rpms');
    await mkdir(downloads, { recursive: true });
    logger.info({ packages: request.packages }, 'downloading packages to unpack');
    // Resolved against an empty root of its own: the closure is the package's alone.
    const emptyRoot = await mkdtemp(join(base, 'empty-root-'));
    let result: RunResult;
    try {
      result = await runDnf(emptyRoot, paths, ['--refresh', 'install', '--downloadonly', `--downloaddir=${downloads}`, ...request.packages], []);
    } finally {
      await rm(emptyRoot, { recursive: true, force: true });
    }
    const plan = parseDnfTransaction(result.stdout);
    const wanted = plan.filter((p) => request.include(p.name));
    if (wanted.length === 0) {
      throw new UserError('KERNEL_NOT_FOUND', `no package to unpack for ${request.packages.join(' ')}`, {
        hint: plan.length ? `dnf would install: ${plan.map((p) => p.name).join(' ')}` : undefined,
      });
    }
    const packageFiles = await locateRpms(downloads, wanted);
    const target = await request.target(packageFiles.map((f) => basename(f)));
    if (target !== undefined) {
      await mkdir(target, { recursive: true });
      for (const file of packageFiles) {
        logger.info({ package: basename(file) }, 'unpacking');
        await run('sh', ['-c', 'rpm2cpio "$1" | cpio -idmu --quiet --no-absolute-filenames', 'sh', file], { cwd: target });
      }
    }
    return { packageFiles, packages: wanted.map((p) => ({ name: p.name, version: p.version, architecture: p.architecture })), target };
  }

  async listInstalled(root: string, config?: Pick<ImageConfig, 'rpmDatabase'>): Promise<InstalledPackage[]> {
    return (await queryRpmdb(root, config?.rpmDatabase ?? RPMDB_PATH)).map(({ name, version, architecture }) => ({ name, version, architecture }));
  }
}
