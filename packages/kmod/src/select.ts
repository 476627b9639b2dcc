import { UserError, type Logger } from '@mkinitrd-pkg/common';
import { globToRegExp, hasGlob } from '@mkinitrd-pkg/common';
import { modulePathForms, normalizeAlias, resolveModuleRequest, type ModuleDatabase, type ModuleSoftdeps } from './moddb.js';

/**
 * Module selection patterns (KernelModules=), evaluated in order; the LAST pattern that
 * matches a module decides whether it is in (plain) or out (`-` prefix):
 *
 *   kernel/drivers/ata/*        contains `/`: matched against the module's path relative to
 *                               /usr/lib/modules/KVER. `*` and `?` stay within one path
 *                               component, `**` crosses them. The path is tried as stored
 *                               (`…/ahci.ko.xz`), without the compression suffix (`…/ahci.ko`)
 *                               and without `.ko…` (`…/ahci`), so a pattern need not know how
 *                               the distribution compresses modules.
 *   kernel/drivers/ata/         a trailing `/` means the whole directory tree (same as `/**`).
 *   ext4, virtio*, hid-generic  no `/`: matched against module names; `-` and `_` are the
 *                               same character (kmod's rule), globs allowed.
 *   -kernel/drivers/ata/pata_*  `-` prefix: exclude what matches (unless a later pattern
 *   -floppy                     includes it again).
 *
 * A plain pattern without glob characters is a request for something that must exist:
 * if it names no module and nothing built into the kernel (modules.builtin), that is a
 * MODULE_NOT_FOUND error. A glob that matches nothing is fine (logged at debug).
 *
 * Dependencies are added after selection: hard dependencies (modules.dep) always —
 * a module cannot load without them, so excluding one only produces a warning — and
 * soft dependencies (modules.softdep and `softdep` in modinfo, `pre:` and `post:`)
 * when they exist and are not excluded.
 */
export interface ModulePattern {
  source: string;
  exclude: boolean;
  kind: 'path' | 'name';
  glob: boolean;
  /** The normalised pattern text (name: `-`→`_`; path: trailing `/` → `/**`). */
  text: string;
  regexp: RegExp;
}

export function compileModulePatterns(patterns: readonly string[]): ModulePattern[] {
  const out: ModulePattern[] = [];
  for (const source of patterns) {
    let body = source.trim();
    if (body === '') continue;
    const exclude = body.startsWith('-');
    if (exclude) body = body.slice(1).trim();
    if (body === '') {
      throw new UserError('INPUT', `empty kernel module pattern: ${JSON.stringify(source)}`, {
        hint: 'use a module name (ext4), a path glob (kernel/drivers/ata/*) or "-" followed by one of those',
      });
    }
    if (body.includes('/')) {
      body = body.replace(/^\/+/, '');
      if (body.endsWith('/')) body += '**';
      if (body.split('/').includes('..')) {
        throw new UserError('INPUT', `kernel module pattern must not contain "..": ${source}`);
      }
      out.push({ source, exclude, kind: 'path', glob: hasGlob(body), text: body, regexp: globToRegExp(body) });
    } else {
      const text = normalizeAlias(body);
      out.push({ source, exclude, kind: 'name', glob: hasGlob(text), text, regexp: globToRegExp(text) });
    }
  }
  return out;
}

function patternMatches(pattern: ModulePattern, name: string, pathForms: readonly string[]): boolean {
  if (pattern.kind === 'name') return pattern.regexp.test(name);
  return pathForms.some((p) => pattern.regexp.test(p));
}

export interface Selection {
  /** Modules the patterns selected (before dependencies). */
  selected: Set<string>;
  /** Modules whose last matching pattern excludes them. */
  excluded: Set<string>;
  /** Explicit patterns that name built-in modules (nothing to install). */
  builtinRequested: string[];
}

/** Evaluate patterns against the database; throws MODULE_NOT_FOUND for explicit misses. */
export function selectModules(db: ModuleDatabase, patterns: readonly ModulePattern[], kernelVersion: string, logger: Logger): Selection {
  const selected = new Set<string>();
  const excluded = new Set<string>();
  const hits = new Array<boolean>(patterns.length).fill(false);
  for (const entry of db.modules.values()) {
    const forms = modulePathForms(entry.path);
    let decided = false;
    for (let i = patterns.length - 1; i >= 0; i--) {
      const pattern = patterns[i]!;
      if (!patternMatches(pattern, entry.name, forms)) continue;
      hits[i] = true;
      if (!decided) {
        decided = true;
        (pattern.exclude ? excluded : selected).add(entry.name);
      }
    }
  }

  const builtinForms = db.builtinPaths.flatMap(modulePathForms);
  const builtinRequested: string[] = [];
  const missing: string[] = [];
  patterns.forEach((pattern, i) => {
    if (hits[i]) return;
    const builtin =
      pattern.kind === 'name'
        ? [...db.builtin].some((b) => pattern.regexp.test(b))
        : builtinForms.some((p) => pattern.regexp.test(p));
    if (builtin) {
      if (!pattern.exclude) builtinRequested.push(pattern.source);
      logger.debug({ pattern: pattern.source }, 'kernel module pattern names only built-in modules');
    } else if (pattern.glob || pattern.exclude) {
      logger.debug({ pattern: pattern.source }, 'kernel module pattern matches no module');
    } else {
      missing.push(pattern.source);
    }
  });
  if (missing.length > 0) {
    const suggestions = suggest(db, missing);
    throw new UserError(
      'MODULE_NOT_FOUND',
      `kernel ${kernelVersion} has no module ${missing.map((m) => JSON.stringify(m)).join(', ')} (neither loadable nor built in)`,
      {
        hint:
          (suggestions.length > 0 ? `similar modules: ${suggestions.join(', ')}; ` : '') +
          'check the KernelModules= entry; a glob (e.g. "name*") makes an entry optional',
      },
    );
  }
  return { selected, excluded, builtinRequested };
}

function suggest(db: ModuleDatabase, missing: readonly string[]): string[] {
  const out: string[] = [];
  for (const m of missing) {
    const word = normalizeAlias(m.slice(m.lastIndexOf('/') + 1)).replace(/\.ko.*$/, '');
    if (word.length < 2) continue;
    for (const name of db.modules.keys()) {
      if (name.includes(word) || (word.includes(name) && name.length >= 3)) out.push(name);
      if (out.length >= 8) return out;
    }
  }
  return out;
}

/**
 * Grows `closure` with hard and soft dependencies, starting at `queue`. `extraSoftdeps`
 * are soft dependencies read from modinfo. Returns the modules newly added.
 */
export function addDependencies(
  db: ModuleDatabase,
  closure: Set<string>,
  queue: string[],
  excluded: ReadonlySet<string>,
  extraSoftdeps: ReadonlyMap<string, ModuleSoftdeps>,
  logger: Logger,
): string[] {
  const added: string[] = [];
  const add = (name: string, by: string, hard: boolean) => {
    if (closure.has(name)) return;
    if (excluded.has(name)) {
      if (!hard) {
        logger.debug({ module: name, by }, 'soft dependency is excluded by a pattern; leaving it out');
        return;
      }
      logger.warn({ module: name, by }, 'module is excluded by a pattern but required by another module; keeping it');
    }
    closure.add(name);
    added.push(name);
    queue.push(name);
  };
  for (const name of queue) closure.add(name);
  while (queue.length > 0) {
    const name = queue.pop()!;
    const entry = db.modules.get(name);
    if (!entry) continue;
    for (const dep of entry.deps) add(dep, name, true);
    for (const soft of [db.softdeps.get(name), extraSoftdeps.get(name)]) {
      if (!soft) continue;
      for (const request of [...soft.pre, ...soft.post]) {
        for (const dep of resolveModuleRequest(db, request)) add(dep, name, false);
      }
    }
  }
  return added;
}
