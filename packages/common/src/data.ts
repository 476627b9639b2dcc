/**
 * Where mkinitrd-pkg finds its data (presets, sysext definitions, the kernel-install
 * plugin, the host's extensions): the one table of search paths, as systemd orders its
 * own (/etc is the admin's and wins, /usr/lib is the distribution package's), then the
 * data shipped with this installation.
 *
 * "This installation" is found by walking up from this module's file to the first
 * directory that holds `presets/`: the repository root of a checkout
 * (packages/common/dist/data.js → ../../..), the root of the npm package or the bundle in
 * /usr/lib/mkinitrd-pkg (dist/mkinitrd-pkg.mjs → ..). A bundled copy has no fixed offset
 * from the source tree, so the walk, not a relative URL, is what works in all three.
 */
import { statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The admin's directory (wins over everything else). */
export const ADMIN_DATA_DIR = '/etc/mkinitrd-pkg';
/** The distribution package's directory. */
export const VENDOR_DATA_DIR = '/usr/lib/mkinitrd-pkg';

/** Data kinds, each a subdirectory of every data directory. */
export type DataKind = 'presets' | 'sysext' | 'kernel-install' | 'extensions';

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** The first directory at or above `start` that holds presets/ (undefined: none). */
export function findDataRoot(start: string): string | undefined {
  for (let dir = start; ; dir = dirname(dir)) {
    if (isDirectory(join(dir, 'presets'))) return dir;
    if (dirname(dir) === dir) return undefined;
  }
}

let builtinRoot: string | null | undefined;

/**
 * The data directory shipped with this installation (checkout root, npm package root,
 * or /usr/lib/mkinitrd-pkg for the Debian package); undefined when none was found.
 */
export function builtinDataDir(): string | undefined {
  if (builtinRoot === undefined) builtinRoot = findDataRoot(dirname(fileURLToPath(import.meta.url))) ?? null;
  return builtinRoot ?? undefined;
}

/**
 * Where the shipped data of a kind lives inside a data root. Only the kernel-install
 * plugin differs: a checkout keeps it with the other scripts (scripts/kernel-install/).
 */
function builtinCandidates(root: string, kind: DataKind): string[] {
  return kind === 'kernel-install' ? [join(root, 'kernel-install'), join(root, 'scripts', 'kernel-install')] : [join(root, kind)];
}

/**
 * The search path of one kind of data, highest priority first, without duplicates:
 * /etc/mkinitrd-pkg/KIND, /usr/lib/mkinitrd-pkg/KIND, then this installation's. A name
 * found in an earlier directory masks the same name later. Host extensions are the
 * admin's only (/etc/mkinitrd-pkg/extensions): nothing ships any.
 */
export function dataSearchPath(kind: DataKind): string[] {
  if (kind === 'extensions') return [join(ADMIN_DATA_DIR, kind)];
  const dirs = [join(ADMIN_DATA_DIR, kind), join(VENDOR_DATA_DIR, kind)];
  const root = builtinDataDir();
  if (root) {
    const candidates = builtinCandidates(root, kind);
    dirs.push(candidates.find(isDirectory) ?? candidates[0]!);
  }
  return [...new Set(dirs)];
}

/** The shipped directory of a kind (what `presets` lists last); undefined when not installed. */
export function builtinDataPath(kind: Exclude<DataKind, 'extensions'>): string | undefined {
  const root = builtinDataDir();
  if (!root) return undefined;
  const candidates = builtinCandidates(root, kind);
  return candidates.find(isDirectory) ?? candidates[0];
}

/** The first NAME in the search path of a kind (undefined: not found anywhere). */
export function findDataFile(kind: DataKind, name: string): string | undefined {
  for (const dir of dataSearchPath(kind)) {
    const path = join(dir, name);
    try {
      if (statSync(path).isFile()) return path;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}
