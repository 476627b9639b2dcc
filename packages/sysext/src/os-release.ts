import { lstat, readFile, readlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { UserError, isErrnoException, safeComponents } from '@mkinitrd-pkg/common';
import type { SysextScope } from './definition.js';

/** os-release(5): KEY=value lines, values optionally quoted with shell-like escapes. */
export function parseOsRelease(text: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!m) continue;
    let value = m[2]!;
    const q = value[0];
    if ((q === '"' || q === "'") && value.endsWith(q) && value.length >= 2) {
      value = value.slice(1, -1);
      if (q === '"') value = value.replace(/\\([$"\\`])/g, '$1');
    }
    fields[m[1]!] = value;
  }
  return fields;
}

/**
 * Read a file inside `root` as the root would see it: symlinks (absolute or relative)
 * are resolved against the root, never the host, so an image's /etc/os-release →
 * ../usr/lib/os-release works and a hostile /etc/os-release → /etc/shadow cannot reach
 * the host. Returns undefined when it does not exist.
 */
const MAX_RELEASE_FILE = 64 * 1024;

export async function readFileInRoot(root: string, path: string, hops = 0): Promise<string | undefined> {
  const parts = safeComponents(path);
  for (let i = 0; i < parts.length; i++) {
    const here = join(root, ...parts.slice(0, i + 1));
    let st;
    try {
      st = await lstat(here);
    } catch (error) {
      if (isErrnoException(error) && (error.code === 'ENOENT' || error.code === 'ENOTDIR')) return undefined;
      throw error;
    }
    if (st.isSymbolicLink()) {
      if (hops >= 40) throw new UserError('INPUT', `too many levels of symbolic links at ${path} in ${root}`);
      const target = await readlink(here);
      const dir = '/' + parts.slice(0, i).join('/');
      const next = posix.resolve(target.startsWith('/') ? '/' : dir, target, ...parts.slice(i + 1));
      return readFileInRoot(root, next, hops + 1);
    }
    if (i === parts.length - 1) {
      if (!st.isFile()) return undefined;
      // Identity files are a few hundred bytes: a base cannot make us read gigabytes.
      if (st.size > MAX_RELEASE_FILE) throw new UserError('INPUT', `${path} in ${root} is too large (${st.size} bytes) for an os-release file`);
      return readFile(here, 'utf8');
    }
    if (!st.isDirectory()) return undefined;
  }
  return undefined;
}

/**
 * os-release(5): ID=, VERSION_ID=, VERSION_CODENAME=, SYSEXT_LEVEL= and the words of
 * ID_LIKE= are "lower-case string (no spaces or other characters outside of 0–9, a–z,
 * '.', '_' and '-')". These are the fields this program uses from a base image — to pick
 * a preset and to write the extension-release file — so they are checked against that
 * syntax when read: a value from an image is data, never a path or a line to echo.
 */
const OS_RELEASE_NAME_FIELDS = ['ID', 'VERSION_ID', 'VERSION_CODENAME', 'SYSEXT_LEVEL'] as const;
const OS_RELEASE_NAME_RE = /^[a-z0-9._-]+$/;

export function checkOsReleaseFields(fields: Record<string, string>, source: string): Record<string, string> {
  for (const key of [...OS_RELEASE_NAME_FIELDS, 'ID_LIKE']) {
    const value = fields[key];
    if (value === undefined || value === '') continue;
    const words = key === 'ID_LIKE' ? value.split(' ').filter(Boolean) : [value];
    if (!words.every((w) => OS_RELEASE_NAME_RE.test(w))) {
      const clipped = value.length > 60 ? `${value.slice(0, 60)}…` : value;
      throw new UserError('INPUT', `${source}: ${key}= is not a valid os-release value: ${JSON.stringify(clipped)}`, {
        hint: "os-release(5) allows only 0-9, a-z, '.', '_' and '-' there; fix the base image's os-release",
      });
    }
  }
  return fields;
}

export interface BaseRelease {
  /** Which file it came from (relative to the base), or undefined when none. */
  source: string | undefined;
  fields: Record<string, string>;
}

/**
 * The base's identity that systemd-sysext matches an extension against: os-release
 * (/etc first, then /usr/lib, as os-release(5) says); for an initrd without one, its
 * /etc/initrd-release (systemd's initrd identity, os-release format).
 */
export async function readBaseRelease(root: string): Promise<BaseRelease> {
  for (const source of ['etc/os-release', 'usr/lib/os-release', 'etc/initrd-release', 'usr/lib/initrd-release']) {
    const text = await readFileInRoot(root, source);
    if (text !== undefined) return { source, fields: checkOsReleaseFields(parseOsRelease(text), `the base's /${source}`) };
  }
  return { source: undefined, fields: {} };
}

export interface ExtensionReleaseOptions {
  base: BaseRelease;
  scope: SysextScope;
  /** systemd's architecture name (x86-64, arm64, …): the same names mkosi's Architecture= uses. */
  architecture: string;
  /** ID=_any: the extension claims to work on any distribution (and drops version matching). */
  anyDistro?: boolean;
}

/**
 * usr/lib/extension-release.d/extension-release.NAME (systemd-sysext(8), os-release(5)):
 * ID= must equal the base's (or be _any); then SYSEXT_LEVEL= if the base has one, else
 * VERSION_ID=, must match; ARCHITECTURE= and SYSEXT_SCOPE= restrict where it applies.
 */
export function extensionReleaseFields(options: ExtensionReleaseOptions): Record<string, string> {
  const base = options.base.fields;
  const fields: Record<string, string> = {};
  if (options.anyDistro || !base.ID) {
    fields.ID = '_any';
  } else {
    fields.ID = base.ID;
    if (base.SYSEXT_LEVEL) fields.SYSEXT_LEVEL = base.SYSEXT_LEVEL;
    else if (base.VERSION_ID) fields.VERSION_ID = base.VERSION_ID;
  }
  fields.ARCHITECTURE = options.architecture;
  fields.SYSEXT_SCOPE = options.scope;
  return fields;
}

export function renderOsRelease(fields: Record<string, string>): string {
  return (
    Object.entries(fields)
      .map(([k, v]) => (/^[A-Za-z0-9._:+-]*$/.test(v) ? `${k}=${v}` : `${k}="${v.replace(/([$"\\`])/g, '\\$1')}"`))
      .join('\n') + '\n'
  );
}
