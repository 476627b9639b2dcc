import { lstatSync, readdirSync, rmdirSync, unlinkSync, type Dirent, type Stats } from 'node:fs';
import { lstat, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError, getLogger, isErrnoException, type Logger } from '@mkinitrd-pkg/common';
import { globToRegExpSource } from '@mkinitrd-pkg/common';
import type { PruneRule } from './rules.js';

export interface PruneOptions {
  root: string;
  rules: PruneRule[];
  /** Globs that are never removed (a matching directory keeps everything below it). */
  keep?: string[];
  /** The user's RemoveFiles= globs, reported as rule 'RemoveFiles' after the others. */
  extraRemove?: string[];
  logger?: Logger;
}

export interface PruneRuleReport {
  name: string;
  /** Non-directory entries removed (regular files, symlinks, others). */
  files: number;
  /** Sum of st_size of the regular files removed, each hard-linked inode once. */
  bytes: number;
}

export interface PruneReport {
  rules: PruneRuleReport[];
  totalFiles: number;
  totalBytes: number;
}

/**
 * Matching (globs relative to the root, `*` within a component, `**` across, a leading
 * `/` ignored, a trailing `/` or `/**` = the directory and everything below it):
 *
 * - an entry matched by a rule is removed; a matched directory takes its whole subtree
 *   with it, except what `keep` (all rules) or the rule's `except` protects;
 * - an entry matched by several rules is counted by the first of them (rule order,
 *   RemoveFiles last);
 * - a directory is removed only if it was matched (itself or through a matched
 *   ancestor) and is empty once its matched contents are gone; a directory that no
 *   rule matched stays even if pruning emptied it.
 *
 * Safety: the tree is walked with lstat semantics. Symlinks are never followed: a
 * matched symlink is unlinked itself (its target is untouched) and a symlink to a
 * directory is never descended into. Other file systems mounted below the root are not
 * entered. Nothing outside the root is read or removed.
 *
 * One walk of the tree with globs compiled to one RegExp per rule; removal happens
 * after the walk (files, then directories deepest first). The walk and the removal use
 * the synchronous fs calls on purpose: they are tens of thousands of tiny metadata
 * operations, and measured on a 133k-entry tree (54k removed) the sync calls took
 * 0.37 s against 2.6 s for the promise API (allocation and GC dominate); a build has
 * nothing else to do meanwhile. An initrd root of 10–20k files prunes in ~50 ms.
 */
export async function prune(o: PruneOptions): Promise<PruneReport> {
  const logger = o.logger ?? getLogger();
  const started = performance.now();
  const root = await checkRoot(o.root);
  const rules = o.rules.map((rule) => compileRule(rule.name, rule.patterns, rule.except ?? []));
  if (o.extraRemove && o.extraRemove.length > 0) rules.push(compileRule('RemoveFiles', o.extraRemove, []));
  const keep = compileGlobs(o.keep ?? []);

  const plan = walk(root.path, root.dev, rules, keep, logger);

  // Count, in a stable order so that a hard-linked inode is attributed deterministically.
  plan.files.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  const reports: PruneRuleReport[] = rules.map((r) => ({ name: r.name, files: 0, bytes: 0 }));
  const seenInodes = new Set<string>();
  for (const f of plan.files) {
    const report = reports[f.rule]!;
    report.files++;
    if (!f.stats.isFile()) continue;
    if (f.stats.nlink > 1) {
      const key = `${f.stats.dev}:${f.stats.ino}`;
      if (seenInodes.has(key)) continue;
      seenInodes.add(key);
    }
    report.bytes += f.stats.size;
  }

  for (const f of plan.files) ignoreMissing(() => unlinkSync(f.path));
  // Deepest first, so a directory is empty by the time it is removed.
  plan.dirs.sort((a, b) => b.depth - a.depth);
  for (const d of plan.dirs) ignoreMissing(() => rmdirSync(d.path));

  const report: PruneReport = {
    rules: reports,
    totalFiles: reports.reduce((n, r) => n + r.files, 0),
    totalBytes: reports.reduce((n, r) => n + r.bytes, 0),
  };
  logger.debug(
    { rules: reports.filter((r) => r.files > 0), dirs: plan.dirs.length, ms: Math.round(performance.now() - started) },
    'pruned',
  );
  return report;
}

interface CompiledRule {
  name: string;
  match: RegExp | undefined;
  except: RegExp | undefined;
}

function normalizePattern(pattern: string): string | undefined {
  let p = pattern.trim().replace(/^(?:\.?\/)+/, '');
  if (p === '') return undefined;
  if (p.endsWith('/')) p += '**';
  if (p.split('/').includes('..')) {
    throw new UserError('INPUT', `prune pattern must not contain "..": ${pattern}`, {
      hint: 'patterns are relative to the image root, e.g. usr/share/doc/**',
    });
  }
  return p;
}

function compileGlobs(patterns: readonly string[]): RegExp | undefined {
  const sources = patterns.map(normalizePattern).filter((p): p is string => p !== undefined);
  if (sources.length === 0) return undefined;
  return new RegExp(`^(?:${sources.map((s) => globToRegExpSource(s)).join('|')})$`);
}

function compileRule(name: string, patterns: readonly string[], except: readonly string[]): CompiledRule {
  return { name, match: compileGlobs(patterns), except: compileGlobs(except) };
}

async function checkRoot(path: string): Promise<{ path: string; dev: number }> {
  let real: string;
  try {
    real = await realpath(path);
  } catch (error) {
    if (isErrnoException(error) && error.code === 'ENOENT') throw new UserError('INPUT', `cannot prune ${path}: it does not exist`);
    throw error;
  }
  const st = await lstat(real);
  if (!st.isDirectory()) throw new UserError('INPUT', `cannot prune ${path}: not a directory`);
  if (real === '/') {
    throw new UserError('UNSAFE_PATH', 'refusing to prune /', { hint: 'prune works on an image root, never on the running system' });
  }
  return { path: real, dev: st.dev };
}

interface PlannedFile {
  path: string;
  rel: string;
  rule: number;
  stats: Stats;
}

interface Plan {
  files: PlannedFile[];
  dirs: { path: string; depth: number }[];
}

const NONE = -1;

function walk(rootPath: string, rootDev: number, rules: readonly CompiledRule[], keep: RegExp | undefined, logger: Logger): Plan {
  const plan: Plan = { files: [], dirs: [] };

  /**
   * Visit a directory whose entries inherit `inherited` (the rule that matched an
   * ancestor, or NONE) and `excepted` (rules an ancestor is excepted from).
   * Returns true when every entry in it will be removed.
   */
  const visit = (dir: string, relDir: string, depth: number, inherited: number, excepted: ReadonlySet<number>): boolean => {
    let allRemoved = true;
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const rel = relDir === '' ? entry.name : `${relDir}/${entry.name}`;
      if (keep?.test(rel)) {
        allRemoved = false;
        continue;
      }

      let except = excepted;
      for (let i = 0; i < rules.length; i++) {
        if (!except.has(i) && rules[i]!.except?.test(rel)) {
          if (except === excepted) except = new Set(excepted);
          (except as Set<number>).add(i);
        }
      }
      let rule = inherited !== NONE && !except.has(inherited) ? inherited : NONE;
      const upTo = rule === NONE ? rules.length : rule;
      for (let i = 0; i < upTo; i++) {
        if (!except.has(i) && rules[i]!.match?.test(rel)) {
          rule = i;
          break;
        }
      }

      const path = join(dir, entry.name);
      const type = entryType(entry, path);
      if (type.kind === 'dir') {
        const st = type.stats ?? lstatSync(path);
        if (st.dev !== rootDev) {
          logger.warn({ path: rel }, 'not pruning inside another file system mounted in the image root');
          allRemoved = false;
          continue;
        }
        const empty = visit(path, rel, depth + 1, rule, except);
        if (rule === NONE || !empty) allRemoved = false;
        else plan.dirs.push({ path, depth });
        continue;
      }
      if (rule === NONE) {
        allRemoved = false;
        continue;
      }
      plan.files.push({ path, rel, rule, stats: type.stats ?? lstatSync(path) });
    }
    return allRemoved;
  };

  visit(rootPath, '', 0, NONE, new Set());
  return plan;
}

/** Dirent types come from readdir; only when a file system reports none is lstat needed. */
function entryType(entry: Dirent, path: string): { kind: 'dir' | 'other'; stats?: Stats } {
  if (entry.isDirectory()) return { kind: 'dir' };
  if (entry.isFile() || entry.isSymbolicLink() || entry.isFIFO() || entry.isSocket() || entry.isCharacterDevice() || entry.isBlockDevice()) {
    return { kind: 'other' };
  }
  const stats = lstatSync(path);
  return { kind: stats.isDirectory() ? 'dir' : 'other', stats };
}

function ignoreMissing(fn: () => void): void {
  try {
    fn();
  } catch (error) {
    if (isErrnoException(error) && error.code === 'ENOENT') return;
    throw error;
  }
}
