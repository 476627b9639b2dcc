import { basename, join, resolve } from 'node:path';
import { UserError, builtinDataPath, dataSearchPath, pathExists } from '@mkinitrd-pkg/common';
import { listConfFiles, lookupKey, parseIniAssignments, readConfigText, type Assignment } from '@mkinitrd-pkg/config';

export type SysextScope = 'initrd' | 'system';
export const SCOPES: readonly SysextScope[] = ['initrd', 'system'];

/** One extension definition (sysext/*.conf): what to install on top of a base. */
export interface SysextDefinition {
  /** Name= (default: the file name without .conf); the default output name. */
  name: string;
  description: string;
  packages: string[];
  /** Scope= (default initrd): becomes SYSEXT_SCOPE= in the extension-release file. */
  scope: SysextScope;
  /** RemoveFiles=: globs (relative to /) removed after install, like the preset's. */
  removeFiles: string[];
  /** KeepFiles=: globs the prune rules must not remove. */
  keepFiles: string[];
  /** The file it was read from. */
  path: string;
}

/** The definitions shipped with this installation (checkout, npm package or /usr/lib/mkinitrd-pkg). */
export const BUILTIN_DEFINITION_DIR = builtinDataPath('sysext') ?? '';
/** Admin's, vendor's, then ours — the first that has NAME.conf wins (as for presets; common/src/data.ts). */
export const DEFAULT_DEFINITION_DIRS = dataSearchPath('sysext');

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
// Debian/RPM package names plus apt's arch/version qualifiers; never an option.
const PACKAGE_RE = /^[A-Za-z0-9][A-Za-z0-9+._:~=-]*$/;

interface KeySpec {
  list?: boolean;
  apply: (def: SysextDefinition, value: string, where: Assignment) => void;
}

function fail(where: Assignment, message: string, hint?: string): never {
  throw new UserError('CONFIG', `${where.file}:${where.line}: ${where.section}.${where.key}: ${message}`, hint ? { hint } : {});
}

function listKey(field: 'packages' | 'removeFiles' | 'keepFiles', check?: (item: string, where: Assignment) => void): KeySpec {
  return {
    list: true,
    apply(def, value, where) {
      // mkosi's rule, as in presets: lists accumulate, an empty assignment resets.
      if (value === '') {
        def[field] = [];
        return;
      }
      for (const item of value.split(/\s+/).filter(Boolean)) {
        check?.(item, where);
        if (!def[field].includes(item)) def[field].push(item);
      }
    },
  };
}

const SCHEMA: Record<string, Record<string, KeySpec>> = {
  Extension: {
    Name: {
      apply(def, value, where) {
        if (!NAME_RE.test(value)) fail(where, `invalid name "${value}"`, 'use letters, digits, ".", "_" and "-"');
        def.name = value;
      },
    },
    Description: { apply: (def, value) => void (def.description = value.replaceAll('\n', ' ')) },
    Packages: listKey('packages', (item, where) => {
      if (!PACKAGE_RE.test(item)) fail(where, `invalid package name "${item}"`);
    }),
    Scope: {
      apply(def, value, where) {
        if (!(SCOPES as readonly string[]).includes(value)) fail(where, `unknown scope "${value}"`, `use one of: ${SCOPES.join(', ')}`);
        def.scope = value as SysextScope;
      },
    },
    RemoveFiles: listKey('removeFiles'),
    KeepFiles: listKey('keepFiles'),
  },
};

/** Parse a definition's text; every error names file:line. */
export function parseDefinition(text: string, file: string): SysextDefinition {
  const def: SysextDefinition = {
    name: basename(file).replace(/\.conf$/, ''),
    description: '',
    packages: [],
    scope: 'initrd',
    removeFiles: [],
    keepFiles: [],
    path: file,
  };
  for (const a of parseIniAssignments(text, file)) {
    lookupKey(SCHEMA, a).apply(def, a.value, a);
  }
  if (def.packages.length === 0) {
    throw new UserError('CONFIG', `${file}: no Packages= set`, { hint: 'an extension installs at least one package: [Extension] Packages=…' });
  }
  return def;
}

export interface DefinitionInfo {
  name: string;
  path: string;
}

/** All definitions on the search path (a name in a higher-priority dir masks lower ones). */
export async function listDefinitions(dirs: readonly string[] = DEFAULT_DEFINITION_DIRS): Promise<DefinitionInfo[]> {
  return listConfFiles(dirs);
}

/** A definition by name (searched in `dirs`) or by path (contains "/" or ends in .conf). */
export async function loadDefinition(nameOrFile: string, dirs: readonly string[] = DEFAULT_DEFINITION_DIRS): Promise<SysextDefinition> {
  let path: string | undefined;
  if (nameOrFile.includes('/') || nameOrFile.endsWith('.conf')) {
    path = resolve(nameOrFile);
    if (!(await pathExists(path))) throw new UserError('INPUT', `extension definition not found: ${nameOrFile}`);
  } else {
    if (!NAME_RE.test(nameOrFile)) throw new UserError('INPUT', `invalid extension definition name "${nameOrFile}"`);
    for (const dir of dirs) {
      const candidate = join(dir, `${nameOrFile}.conf`);
      if (await pathExists(candidate)) {
        path = candidate;
        break;
      }
    }
    if (!path) {
      const known = (await listDefinitions(dirs)).map((d) => d.name);
      throw new UserError('INPUT', `unknown extension definition "${nameOrFile}"`, {
        hint: known.length ? `available definitions: ${known.join(', ')} (or pass a .conf file)` : 'no definitions found; pass a .conf file',
      });
    }
  }
  // Regular files only, size-limited (config/src/load.ts): a FIFO must not hang the build.
  return parseDefinition(await readConfigText(path, 'extension definition'), path);
}
