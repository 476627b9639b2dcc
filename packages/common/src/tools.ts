import { AsyncLocalStorage } from 'node:async_hooks';
import { execFileSync } from 'node:child_process';
import { accessSync, closeSync, constants, fstatSync, lstatSync, openSync, readFileSync, readSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from './errors.js';

/**
 * How every external program is found (issue 9 "tools tree", issue 10 item 4).
 *
 * Never through the caller's PATH: under `npx`, PATH starts with node_modules/.bin of the
 * working directory and each of its parents, so a file planted as
 * `node_modules/.bin/depmod` would run as root. A program name is resolved to an absolute
 * path, either
 *  - from the **tools root** of the running build (a root unpacked from the preset's own
 *    distribution packages, see packages/resolver/src/tools.ts), run through that root's
 *    own dynamic loader with that root's libraries — so the host's versions of mksquashfs,
 *    xz, depmod … never change an image — or
 *  - from the fixed system directories below (ToolsTree=host, and the package-manager
 *    machinery that installs roots in the first place, HOST_TOOLS).
 * Children get PATH=SYSTEM_PATH, so a shell pipeline or apt's own helpers resolve the same way.
 */
export const SYSTEM_TOOL_DIRS = ['/usr/sbin', '/usr/bin', '/sbin', '/bin'] as const;
export const SYSTEM_PATH = SYSTEM_TOOL_DIRS.join(':');

/**
 * Always taken from the host: the machinery that creates roots (the package managers, the
 * namespace and mount helpers, the shell and coreutils they script), which the README's
 * first command requires of the host anyway. Everything else comes from the tools root
 * when a build has one.
 */
export const HOST_TOOLS: ReadonlySet<string> = new Set([
  'apt-get', 'apt-cache', 'dpkg', 'dpkg-deb', 'tar', 'flock', 'unshare', 'setpriv', 'mount', 'umount', 'chroot',
  'sh', 'cp', 'mkdir', 'env', 'dnf', 'rpm', 'rpm2cpio', 'cpio', 'createrepo_c',
  // Creates the accounts of a foreign-architecture root from its own sysusers.d (files only:
  // any architecture's root).
  'systemd-sysusers',
  // The UKI tools arrived last: from the host's system directories until binutils and
  // sbsigntool are added to ToolsTreePackages= and checked (ukify, a Python script, cannot
  // run with a tools root's loader at all).
  'objcopy', 'sbsign', 'sbverify', 'ukify',
]);

/**
 * The Debian package providing each program: what a "missing" error names. (The host is a
 * Debian system per README; a tools root's package names come from the preset's
 * ToolsTreePackages=.)
 */
export const TOOL_PACKAGES: Readonly<Record<string, string>> = {
  'apt-get': 'apt', 'apt-cache': 'apt', dpkg: 'dpkg', 'dpkg-deb': 'dpkg', tar: 'tar', flock: 'util-linux', unshare: 'util-linux',
  setpriv: 'util-linux', mount: 'mount', umount: 'mount', chroot: 'coreutils', sh: 'dash', cp: 'coreutils', mkdir: 'coreutils', env: 'coreutils',
  dnf: 'dnf', rpm: 'rpm', rpm2cpio: 'rpm2cpio', cpio: 'cpio', createrepo_c: 'createrepo-c', 'systemd-sysusers': 'systemd',
  depmod: 'kmod', modinfo: 'kmod', modprobe: 'kmod', mksquashfs: 'squashfs-tools', unsquashfs: 'squashfs-tools',
  'mkfs.erofs': 'erofs-utils', 'fsck.erofs': 'erofs-utils', veritysetup: 'cryptsetup-bin', sfdisk: 'fdisk', openssl: 'openssl',
  xz: 'xz-utils', lz4: 'lz4', gzip: 'gzip', zstd: 'zstd', sbsign: 'sbsigntool', sbverify: 'sbsigntool', objcopy: 'binutils',
  ukify: 'systemd-ukify', 'systemd-dissect': 'systemd-container', 'qemu-system-x86_64': 'qemu-system-x86',
};

/** The package to name for a program (its own name when unknown: better than "…"). */
export function packageForTool(name: string): string {
  return TOOL_PACKAGES[name] ?? name;
}

export interface ToolsRoot {
  /** Absolute path of the unpacked tools root. */
  root: string;
  /** What it was made from, for messages: "debian trixie". */
  description: string;
}

export interface ResolvedTool {
  name: string;
  /** The program's absolute path (inside the tools root or a system directory). */
  path: string;
  /** What to exec: the program itself, or the tools root's dynamic loader. */
  file: string;
  /** Arguments before the caller's (the loader's options and the program). */
  prefixArgs: string[];
  /** Environment the program needs to use its own root's configuration. */
  env: Record<string, string>;
  from: 'tools' | 'host';
}

const toolsContext = new AsyncLocalStorage<ToolsRoot | undefined>();

/** Run `body` with `tools` as the tools root of every program it runs (undefined: the host's). */
export function withToolsRoot<T>(tools: ToolsRoot | undefined, body: () => Promise<T>): Promise<T> {
  return toolsContext.run(tools, body);
}

export function currentToolsRoot(): ToolsRoot | undefined {
  return toolsContext.getStore();
}

// Synchronous on purpose: a few stats per program, and spawnFilter (packages/packer) must
// hand back its child process synchronously.
function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    const fd = openSync(path, 'r');
    try {
      return fstatSync(fd).isFile();
    } finally {
      closeSync(fd);
    }
  } catch {
    return false;
  }
}

function readdirOrEmpty(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}

function isDirectory(path: string): boolean {
  try {
    return lstatSync(path).isDirectory();
  } catch {
    return false;
  }
}

/**
 * The path `name` (absolute, as seen from inside `root`) names, with every symlink resolved
 * as if `root` were `/` (as chroot would): absolute targets stay in the root, `..` stops at
 * it. Tools roots are unpacked packages, whose links are absolute (/lib64/ld-linux-x86-64.so.2
 * → /lib/x86_64-linux-gnu/…) or relative (/sbin/depmod → ../bin/kmod). A missing /bin,
 * /sbin or /lib* is taken as merged into /usr.
 */
const MERGED_USR = new Set(['bin', 'sbin', 'lib', 'lib64', 'lib32', 'libx32']);

export function realpathInRoot(root: string, name: string): string | undefined {
  let pending = name.split('/').filter((c) => c !== '' && c !== '.');
  const done: string[] = [];
  for (let hops = 0; pending.length > 0; ) {
    const part = pending.shift()!;
    if (part === '..') {
      done.pop();
      continue;
    }
    let path = join(root, ...done, part);
    let st;
    try {
      st = lstatSync(path);
    } catch {
      // Merged /usr: /bin, /sbin, /lib* are links into /usr on every Debian ≥ 12 and Fedora
      // root, but base-files (trixie) or the installer makes them, not the packages a tools
      // root holds — trixie's libc6 ships its loader as /usr/lib64/ld-linux-x86-64.so.2 only.
      if (done.length !== 0 || !MERGED_USR.has(part)) return undefined;
      path = join(root, 'usr', part);
      try {
        st = lstatSync(path);
      } catch {
        return undefined;
      }
      done.push('usr');
    }
    if (st.isSymbolicLink()) {
      if (++hops > 40) return undefined;
      const target = readlinkSync(path);
      if (target.startsWith('/')) done.length = 0;
      pending = [...target.split('/').filter((c) => c !== '' && c !== '.'), ...pending];
      continue;
    }
    done.push(part);
  }
  return join(root, ...done);
}

/** The first executable `name` in the fixed system directories, or undefined. */
export function findSystemTool(name: string): string | undefined {
  for (const dir of SYSTEM_TOOL_DIRS) {
    const path = join(dir, name);
    if (isExecutableFile(path)) return path;
  }
  return undefined;
}

/**
 * PT_INTERP of an ELF file (the dynamic loader it names), null for a static ELF, undefined
 * for something that is not ELF (a script). ELF spec: e_phoff at 0x20, e_phentsize at 0x36,
 * e_phnum at 0x38 (64-bit); a program header's p_type at 0, p_offset at 8, p_filesz at 32.
 */
export function elfInterpreter(path: string): string | null | undefined {
  const fd = openSync(path, 'r');
  try {
    const header = Buffer.alloc(64);
    if (readSync(fd, header, 0, 64, 0) < 64) return undefined;
    if (header.readUInt32BE(0) !== 0x7f454c46) return undefined;
    if (header[4] !== 2 || header[5] !== 1) throw new Error(`${path}: only 64-bit little-endian ELF is supported`);
    const phoff = Number(header.readBigUInt64LE(0x20));
    const phentsize = header.readUInt16LE(0x36);
    const phnum = header.readUInt16LE(0x38);
    const table = Buffer.alloc(phentsize * phnum);
    readSync(fd, table, 0, table.length, phoff);
    for (let i = 0; i < phnum; i++) {
      const ph = table.subarray(i * phentsize);
      if (ph.readUInt32LE(0) !== 3) continue;
      const offset = Number(ph.readBigUInt64LE(8));
      const size = Number(ph.readBigUInt64LE(32));
      const interp = Buffer.alloc(size);
      readSync(fd, interp, 0, size, offset);
      return interp.toString('latin1').replace(/\0.*$/s, '');
    }
    return null;
  } finally {
    closeSync(fd);
  }
}

/**
 * The tools root's library directories: its ld.so.conf (with includes, as ldconfig reads
 * them; Debian's libc6 ships /etc/ld.so.conf.d/x86_64-linux-gnu.conf) plus /lib and /usr/lib.
 */
function libraryPath(root: string): string[] {
  const dirs: string[] = [];
  const seen = new Set<string>();
  const readConf = (path: string, depth: number): void => {
    if (depth > 4 || seen.has(path)) return;
    seen.add(path);
    let text = '';
    try {
      text = readFileSync(join(root, path), 'utf8');
    } catch {
      /* no such file: nothing to add */
    }
    for (const raw of text.split('\n')) {
      const line = raw.replace(/#.*$/, '').trim();
      if (!line) continue;
      const include = /^include\s+(.+)$/.exec(line);
      if (include) {
        const pattern = include[1]!.trim();
        const slash = pattern.lastIndexOf('/');
        const dir = pattern.slice(0, slash);
        const glob = new RegExp(`^${pattern.slice(slash + 1).replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`);
        const names = readdirOrEmpty(join(root, dir)).filter((n) => glob.test(n)).sort();
        for (const name of names) readConf(`${dir}/${name}`, depth + 1);
      } else if (line.startsWith('/')) {
        dirs.push(line);
      }
    }
  };
  readConf('/etc/ld.so.conf', 0);
  // /etc/ld.so.conf itself is libc-bin's, which a tools root may not hold; libc6 ships the
  // ld.so.conf.d entries (Debian: x86_64-linux-gnu.conf), so read those in any case.
  for (const name of readdirOrEmpty(join(root, 'etc/ld.so.conf.d')).filter((n) => n.endsWith('.conf')).sort()) readConf(`/etc/ld.so.conf.d/${name}`, 1);
  dirs.push('/lib', '/usr/lib');
  const out: string[] = [];
  for (const dir of dirs) {
    const real = realpathInRoot(root, dir);
    if (real && !out.includes(real) && isDirectory(real)) out.push(real);
  }
  return out;
}

const libraryPathCache = new Map<string, string[]>();

/** The loader invocation that runs `program` (inside `root`) with `root`'s libraries only. */
export function toolsRootInvocation(root: string, program: string, argv0: string = program): { file: string; prefixArgs: string[] } {
  const interp = elfInterpreter(program);
  if (interp === undefined) {
    throw new UserError('MISSING_TOOL', `${program} in the tools root is a script, which cannot run with the tools root's libraries`, {
      hint: 'use ToolsTree=host for it, or a package that ships the program as an ELF binary',
    });
  }
  if (interp === null) return { file: program, prefixArgs: [] };
  let lib = libraryPathCache.get(root);
  if (!lib) {
    lib = libraryPath(root);
    libraryPathCache.set(root, lib);
  }
  const loader = realpathInRoot(root, interp);
  if (!loader || !isExecutableFile(loader)) {
    throw new UserError('MISSING_TOOL', `the tools root has no dynamic loader ${interp} for ${program}`, { hint: 'remove the tools cache (mkinitrd-pkg cache clean) and build again' });
  }
  // ld.so(8): an explicitly invoked loader runs the program with exactly these library
  // directories; --inhibit-cache keeps the host's /etc/ld.so.cache out of the search.
  // --argv0 (glibc ≥ 2.33): the name it was called by, which multi-call programs dispatch
  // on (kmod: depmod, modinfo → /usr/bin/kmod).
  return { file: loader, prefixArgs: ['--inhibit-cache', '--library-path', lib.join(':'), '--argv0', argv0, program] };
}

const checkedPrograms = new Set<string>();

/**
 * A tools-root program must load every library from the root: the loader's built-in
 * directories (/lib/x86_64-linux-gnu …) are the host's, so a library missing from the root
 * would otherwise be taken from the host silently. ld.so(8) --list says how each resolves.
 * Checked once per program and process (one short loader run).
 */
export function checkToolLibraries(root: string, program: string): void {
  if (checkedPrograms.has(program)) return;
  const { file, prefixArgs } = toolsRootInvocation(root, program);
  if (file === program) return; // static
  let out: string;
  try {
    out = execFileSync(file, [...prefixArgs.slice(0, 3), '--list', program], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: SYSTEM_PATH } });
  } catch (error) {
    out = String((error as { stdout?: unknown }).stdout ?? '');
  }
  for (const line of out.split('\n')) {
    const m = /^\s*(\S+) => (.*?)(?: \(0x[0-9a-f]+\))?$/.exec(line);
    if (!m) continue;
    if (m[2] === 'not found' || !m[2]!.startsWith(root + '/')) {
      const name = program.slice(root.length);
      throw new UserError('MISSING_TOOL', `the tools root is incomplete: ${name} needs ${m[1]}, which ${m[2] === 'not found' ? 'is not in it' : `would come from the host (${m[2]})`}`, {
        hint: 'add the package that ships the library to ToolsTreePackages=',
      });
    }
  }
  checkedPrograms.add(program);
}

/** Configuration files a program reads from fixed host paths unless told otherwise. */
function toolEnvironment(root: string, name: string): Record<string, string> {
  if (name === 'openssl') {
    // The root's own configuration (Debian: /usr/lib/ssl/openssl.cnf → /etc/ssl/openssl.cnf),
    // never the host's; none at all rather than the host's when the root has none.
    const conf = realpathInRoot(root, '/usr/lib/ssl/openssl.cnf');
    let isFile = false;
    try {
      isFile = conf !== undefined && lstatSync(conf).isFile();
    } catch {
      /* dangling */
    }
    return { OPENSSL_CONF: isFile && conf !== undefined ? conf : '/dev/null' };
  }
  return {};
}

/**
 * Resolve a program name to what is executed. Names with a slash are taken as they are
 * (the caller chose the file). Nothing here looks at PATH.
 */
export async function resolveTool(name: string): Promise<ResolvedTool> {
  return resolveToolSync(name);
}

/** resolveTool for callers that must spawn synchronously. */
export function resolveToolSync(name: string): ResolvedTool {
  if (name.includes('/')) return { name, path: name, file: name, prefixArgs: [], env: {}, from: 'host' };
  const tools = currentToolsRoot();
  if (tools && !HOST_TOOLS.has(name)) {
    for (const dir of SYSTEM_TOOL_DIRS) {
      const program = join(tools.root, dir, name);
      const real = realpathInRoot(tools.root, join(dir, name));
      if (!real || !isExecutableFile(real)) continue;
      const { file, prefixArgs } = toolsRootInvocation(tools.root, real, program);
      checkToolLibraries(tools.root, real);
      return { name, path: program, file, prefixArgs, env: toolEnvironment(tools.root, name), from: 'tools' };
    }
    throw new UserError('MISSING_TOOL', `${name} is not in the tools root (${tools.description})`, {
      hint: `add ${packageForTool(name)} to ToolsTreePackages= (or set ToolsTree=host to use the host's ${name})`,
    });
  }
  const path = findSystemTool(name);
  if (!path) {
    throw new UserError('MISSING_TOOL', `${name} is not installed (looked in ${SYSTEM_TOOL_DIRS.join(' ')})`, {
      hint: `apt-get install ${packageForTool(name)}`,
    });
  }
  return { name, path, file: path, prefixArgs: [], env: {}, from: 'host' };
}
