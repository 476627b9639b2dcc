/**
 * The module database of one kernel, read from the text files depmod writes
 * (modules.dep, modules.softdep, modules.alias) and from modules.builtin. Parsed here in
 * TypeScript: it is a few thousand lines, faster than asking modprobe module by module.
 *
 * Formats (kmod's depmod(8), modules.dep(5)):
 *   modules.dep      `kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko`
 *                    (paths relative to /usr/lib/modules/KVER; .ko, .ko.xz, .ko.zst, .ko.gz)
 *   modules.softdep  `softdep ext4 pre: crypto-crc32c` (names or aliases; `post:` too)
 *   modules.alias    `alias crypto-crc32c crc32c_intel` (alias may be a glob)
 *   modules.builtin  `kernel/crypto/crc32c_generic.ko` (compiled into the kernel)
 * The same line parser reads `depmod -n` output, which prints these files one after
 * another (used when a kernel package was unpacked without running depmod).
 */

const MODULE_SUFFIX = /\.ko(?:\.(?:xz|zst|gz))?$/;
const COMPRESSION_SUFFIX = /\.(?:xz|zst|gz)$/;

/** kmod treats `-` and `_` in module names as the same character; `_` is canonical. */
export function normalizeModuleName(name: string): string {
  return name.replaceAll('-', '_');
}

/** `kernel/fs/ext4/ext4.ko.zst` → `ext4`. */
export function moduleNameFromPath(path: string): string {
  const base = path.slice(path.lastIndexOf('/') + 1);
  return normalizeModuleName(base.replace(MODULE_SUFFIX, ''));
}

export function isModulePath(path: string): boolean {
  return MODULE_SUFFIX.test(path);
}

/** The forms a path pattern is compared with: as stored, without compression, without `.ko…`. */
export function modulePathForms(path: string): string[] {
  const plain = path.replace(COMPRESSION_SUFFIX, '');
  const bare = path.replace(MODULE_SUFFIX, '');
  return plain === path ? [path, bare] : [path, plain, bare];
}

/**
 * Normalise an alias as kmod does (alias_normalize): `-` → `_` except inside `[…]`, so
 * `crypto-crc32c` and `crypto_crc32c` are the same request.
 */
export function normalizeAlias(alias: string): string {
  let out = '';
  let inBracket = false;
  for (const c of alias) {
    if (c === '[') inBracket = true;
    else if (c === ']') inBracket = false;
    out += c === '-' && !inBracket ? '_' : c;
  }
  return out;
}

export interface ModuleEntry {
  name: string;
  /** Relative to the modules directory (`kernel/…/x.ko[.xz|.zst|.gz]`). */
  path: string;
  /** Names of the modules this one needs (modules.dep), in depmod's order. */
  deps: string[];
}

export interface ModuleSoftdeps {
  pre: string[];
  post: string[];
}

export interface ModuleDatabase {
  modules: Map<string, ModuleEntry>;
  /** Names of modules compiled into the kernel. */
  builtin: Set<string>;
  /** Paths (relative, as in modules.builtin) of built-in modules. */
  builtinPaths: string[];
  /** module name → soft dependencies (names or aliases, not yet resolved). */
  softdeps: Map<string, ModuleSoftdeps>;
  /** normalised alias without glob characters → module names. */
  aliases: Map<string, string[]>;
  /** aliases that are globs (e.g. `pci:v00008086d*`), checked after exact ones; compiled on first use. */
  globAliases: { glob: string; module: string; pattern?: RegExp }[];
}

export function emptyDatabase(): ModuleDatabase {
  return { modules: new Map(), builtin: new Set(), builtinPaths: [], softdeps: new Map(), aliases: new Map(), globAliases: [] };
}

/**
 * Parse the tokens after `softdep NAME`. Tokens before any `pre:`/`post:` are treated as
 * `pre:` — some 6.1 modules (cifs) declare `MODULE_SOFTDEP("gcm")` without a keyword;
 * modprobe ignores those, but taking them is harmless and is what the author meant.
 */
export function parseSoftdepTokens(tokens: readonly string[], into: ModuleSoftdeps): void {
  let mode: 'pre' | 'post' = 'pre';
  for (const token of tokens) {
    if (token === 'pre:') mode = 'pre';
    else if (token === 'post:') mode = 'post';
    else if (token !== '') into[mode].push(token);
  }
}

function addSoftdeps(db: ModuleDatabase, module: string, tokens: readonly string[]): void {
  const name = normalizeModuleName(module);
  let entry = db.softdeps.get(name);
  if (!entry) {
    entry = { pre: [], post: [] };
    db.softdeps.set(name, entry);
  }
  parseSoftdepTokens(tokens, entry);
}

/** Read lines of modules.dep / modules.softdep / modules.alias / `depmod -n` into `db`. */
export function parseModuleLines(db: ModuleDatabase, text: string): void {
  const pendingDeps: [ModuleEntry, string[]][] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('alias ')) {
      const [, alias, module] = line.split(/\s+/);
      if (!alias || !module) continue;
      const key = normalizeAlias(alias);
      const mod = normalizeModuleName(module);
      if (/[*?[]/.test(key)) {
        db.globAliases.push({ glob: key, module: mod });
      } else {
        const list = db.aliases.get(key);
        if (list) {
          if (!list.includes(mod)) list.push(mod);
        } else db.aliases.set(key, [mod]);
      }
      continue;
    }
    if (line.startsWith('softdep ')) {
      const [, module, ...rest] = line.split(/\s+/);
      if (module) addSoftdeps(db, module, rest);
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const path = line.slice(0, colon);
    if (!isModulePath(path)) continue;
    const name = moduleNameFromPath(path);
    if (db.modules.has(name)) continue; // depmod lists each name once; keep the first
    const entry: ModuleEntry = { name, path, deps: [] };
    db.modules.set(name, entry);
    const depPaths = line.slice(colon + 1).trim();
    pendingDeps.push([entry, depPaths === '' ? [] : depPaths.split(/\s+/)]);
  }
  for (const [entry, depPaths] of pendingDeps) entry.deps = depPaths.map(moduleNameFromPath);
}

export function parseModulesBuiltin(db: ModuleDatabase, text: string): void {
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    db.builtinPaths.push(line);
    db.builtin.add(moduleNameFromPath(line));
  }
}

/** Alias globs use fnmatch(3) without FNM_PATHNAME: `*` also matches `/`. */
function aliasGlobToRegExp(glob: string): RegExp {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') out += '.*';
    else if (c === '?') out += '.';
    else if (c === '[') {
      const close = glob.indexOf(']', i + 2);
      if (close === -1) out += '\\[';
      else {
        let body = glob.slice(i + 1, close);
        const negate = body.startsWith('!');
        if (negate) body = body.slice(1);
        out += `[${negate ? '^' : ''}${body.replace(/[\\\]^]/g, '\\$&')}]`;
        i = close;
      }
    } else out += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${out}$`);
}

/**
 * What a soft dependency name means, as modprobe would resolve it: a module of that
 * name, else every module with that alias. Built-in or unknown names give [].
 */
export function resolveModuleRequest(db: ModuleDatabase, request: string): string[] {
  const name = normalizeModuleName(request);
  if (db.modules.has(name)) return [name];
  const key = normalizeAlias(request);
  const exact = db.aliases.get(key);
  if (exact) return exact.filter((m) => db.modules.has(m));
  const out: string[] = [];
  for (const alias of db.globAliases) {
    alias.pattern ??= aliasGlobToRegExp(alias.glob);
    if (alias.pattern.test(key) && db.modules.has(alias.module) && !out.includes(alias.module)) out.push(alias.module);
  }
  return out;
}
