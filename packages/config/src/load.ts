import { constants as fsConstants } from 'node:fs';
import { open, readdir } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { ADMIN_DATA_DIR, UserError, VENDOR_DATA_DIR, builtinDataPath, dataSearchPath, isErrnoException, pathExists } from '@mkinitrd-pkg/common';
import { parseIniAssignments, shown, type Assignment } from './ini-lines.js';
import { SCHEMA, applyAssignments, flagAssignments, emptyConfig, isPasswordHash, lookupKey, type Compression, type ImageConfig, type FlagValue } from './schema.js';

/** The presets shipped with this installation (checkout, npm package or /usr/lib/mkinitrd-pkg). */
export const BUILTIN_PRESET_DIR = builtinDataPath('presets') ?? '';

/**
 * Command-line flag values by flag name (SCHEMA's FlagSpec names: compression, package,
 * kernel-version …); names that are no config key's flag are ignored.
 */
export type ConfigOverrides = Readonly<Record<string, FlagValue>>;

export interface LoadConfigOptions {
  /** A preset name (looked up in the preset dirs) or a path to a .conf file. */
  preset?: string;
  /** `preset` came from data (an image's os-release), not from the user: a name, never a path. */
  presetNameOnly?: boolean;
  /** --config files, applied in order after the drop-ins. */
  configFiles?: string[];
  overrides?: ConfigOverrides;
  /** Preset search path, highest priority first. */
  presetDirs?: string[];
  /**
   * Drop-in directories, lowest priority first; `*.conf` inside each are applied in
   * name order, and a file in a later directory masks one of the same name earlier.
   */
  dropInDirs?: string[];
}

/** /usr/lib is the vendor's, /etc the admin's (which wins), as systemd does. */
export const DEFAULT_DROPIN_DIRS = [join(VENDOR_DATA_DIR, 'mkinitrd-pkg.conf.d'), join(ADMIN_DATA_DIR, 'mkinitrd-pkg.conf.d')];
/** /etc/mkinitrd-pkg/presets, /usr/lib/mkinitrd-pkg/presets, then the shipped ones (common/src/data.ts). */
export const DEFAULT_PRESET_DIRS = dataSearchPath('presets');

/** Config files are small; anything bigger is not one (a disk image, /dev/zero …). */
const MAX_CONFIG_BYTES = 1024 * 1024;

/**
 * The text of a config file (preset, drop-in, --config, sysext definition). Only a
 * regular file is read: a FIFO would block forever, a device or /proc file never ends.
 * Opened non-blocking and checked with fstat on the same descriptor, so nothing can be
 * swapped in between the check and the read.
 */
export async function readConfigText(path: string, what = 'config file'): Promise<string> {
  let handle;
  try {
    handle = await open(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY);
  } catch (error) {
    if (isErrnoException(error) && error.code === 'ENOENT') throw new UserError('CONFIG', `${what} not found: ${path}`);
    throw new UserError('CONFIG', `cannot read ${what} ${path}: ${(error as Error).message}`);
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) {
      throw new UserError('CONFIG', `${what} ${path} is ${st.isDirectory() ? 'a directory' : st.isFIFO() ? 'a FIFO' : 'not a regular file'}`, {
        hint: 'name a regular file (a pipe or device cannot be a config file)',
      });
    }
    if (st.size > MAX_CONFIG_BYTES) throw new UserError('CONFIG', `${what} ${path} is too large (${st.size} bytes; at most ${MAX_CONFIG_BYTES})`);
    // A /proc file passes as "regular" with size 0 and may have nothing to read now
    // (EAGAIN on the non-blocking descriptor): one line, not a crash.
    const text = await handle.readFile('utf8').catch((error: Error) => {
      throw new UserError('CONFIG', `cannot read ${what} ${path}: ${error.message}`);
    });
    if (text.length > MAX_CONFIG_BYTES) throw new UserError('CONFIG', `${what} ${path} is too large`);
    return text;
  } finally {
    await handle.close();
  }
}

async function readConfigFile(path: string, including: readonly string[] = [], read: string[] = []): Promise<Assignment[]> {
  const what = including.length > 0 ? `config file included from ${including.at(-1)}` : 'config file';
  const assignments = await expandIncludes(parseIniAssignments(await readConfigText(path, what), path), [...including, path], read);
  read.push(path);
  return assignments;
}

/**
 * `[Config] Include=FILE…` (mkosi's key): the named files' assignments take the place of
 * the Include= line, so a later line of the including file overrides them. Relative
 * paths are relative to the including file, which lets every preset share one
 * file (presets/include/) wherever the presets are installed. A cycle is an error.
 * Included files are added to `read` before the includer (lower precedence first).
 */
async function expandIncludes(assignments: Assignment[], stack: readonly string[], read: string[]): Promise<Assignment[]> {
  const out: Assignment[] = [];
  for (const a of assignments) {
    if (a.section !== 'Config') {
      out.push(a);
      continue;
    }
    if (a.key !== 'Include') lookupKey(CONFIG_SECTION, a);
    for (const name of a.value.split(/\s+/).filter(Boolean)) {
      const path = resolve(dirname(a.file), name);
      if (stack.includes(path)) {
        throw new UserError('CONFIG', `${a.file}:${a.line}: Include=${name} includes itself (${[...stack, path].map((f) => basename(f)).join(' → ')})`);
      }
      out.push(...(await readConfigFile(path, stack, read)));
    }
  }
  return out;
}

/** The [Config] section: only Include= (handled while reading, before the schema). */
const CONFIG_SECTION: Record<string, Record<string, true>> = { Config: { Include: true } };

export interface PresetInfo {
  name: string;
  path: string;
  distribution: string;
  release: string;
  packageManager: string;
}

/**
 * NAME.conf files on a search path, highest priority first: a name found in an earlier
 * directory masks the same name later (presets, sysext definitions). Sorted by name.
 */
export async function listConfFiles(dirs: readonly string[]): Promise<Array<{ name: string; path: string }>> {
  const found = new Map<string, string>();
  for (const dir of dirs) {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      continue;
    }
    for (const name of names.sort()) {
      if (!name.endsWith('.conf')) continue;
      const base = name.slice(0, -'.conf'.length);
      if (!found.has(base)) found.set(base, join(dir, name));
    }
  }
  return [...found].sort(([a], [b]) => a.localeCompare(b)).map(([name, path]) => ({ name, path }));
}

/** All presets on the search path (a name in a higher-priority dir masks lower ones). */
export async function listPresets(presetDirs: string[] = DEFAULT_PRESET_DIRS): Promise<PresetInfo[]> {
  const presets: PresetInfo[] = [];
  for (const { name, path } of await listConfFiles(presetDirs)) {
    const config = emptyConfig(name);
    applyAssignments(config, await readConfigFile(path));
    presets.push({ name, path, distribution: config.distribution, release: config.release, packageManager: config.packageManager });
  }
  return presets;
}

/** A preset name: what os-release(5) allows in ID= plus upper case (a preset file's base name). */
export const PRESET_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/**
 * Find a preset. `preset` is what the user typed (a name, or a path to a .conf file) —
 * unless `nameOnly`: a value that came from data (an image's os-release ID=) is looked up
 * as a name in the preset directories and never read as a path.
 */
export async function findPreset(preset: string, presetDirs: string[] = DEFAULT_PRESET_DIRS, options: { nameOnly?: boolean } = {}): Promise<{ name: string; path: string }> {
  if (!options.nameOnly && (preset.includes('/') || preset.endsWith('.conf'))) {
    const path = resolve(preset);
    if (!(await pathExists(path))) throw new UserError('PRESET_NOT_FOUND', `preset file not found: ${preset}`);
    return { name: basename(path).replace(/\.conf$/, ''), path };
  }
  if (!PRESET_NAME_RE.test(preset) || preset.endsWith('.conf')) {
    throw new UserError('PRESET_NOT_FOUND', `invalid preset name ${shown(preset)}`);
  }
  for (const dir of presetDirs) {
    const path = join(dir, `${preset}.conf`);
    if (await pathExists(path)) return { name: preset, path };
  }
  const known = (await listPresets(presetDirs)).map((p) => p.name);
  throw new UserError('PRESET_NOT_FOUND', `unknown preset "${preset}"`, {
    hint: known.length ? `available presets: ${known.join(', ')}` : 'no presets found',
  });
}

async function dropInFiles(dirs: string[]): Promise<string[]> {
  const byName = new Map<string, string>();
  for (const dir of dirs) {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      continue;
    }
    for (const name of names) if (name.endsWith('.conf')) byName.set(name, join(dir, name));
  }
  return [...byName.keys()].sort().map((name) => byName.get(name)!);
}

/**
 * Resolve the configuration: preset < /usr/lib drop-ins < /etc drop-ins < --config
 * files in order < command-line flags (design.md §3).
 */
export async function loadConfig(options: LoadConfigOptions = {}): Promise<ImageConfig> {
  const presetName = options.preset ?? 'debian';
  const preset = await findPreset(presetName, options.presetDirs ?? DEFAULT_PRESET_DIRS, { nameOnly: options.presetNameOnly ?? false });
  const config = emptyConfig(preset.name);
  const layers = [preset.path, ...(await dropInFiles(options.dropInDirs ?? DEFAULT_DROPIN_DIRS)), ...(options.configFiles ?? []).map((f) => resolve(f))];
  for (const file of layers) {
    const read: string[] = [];
    applyAssignments(config, await readConfigFile(file, [], read));
    config.sources.push(...read);
  }
  // Flags last: they win over every file, and are read by the same rules as the keys.
  applyAssignments(config, flagAssignments(options.overrides ?? {}));
  validateConfig(config);
  return config;
}

function validateConfig(config: ImageConfig): void {
  const where = config.sources.join(', ');
  if (!config.distribution) throw new UserError('CONFIG', `no Distribution= set (read: ${where})`);
  if (!config.release) throw new UserError('CONFIG', `no Release= set (read: ${where})`);
  if (!config.mirror) throw new UserError('CONFIG', `no Mirror= set (read: ${where})`);
  if (config.packages.length === 0) throw new UserError('CONFIG', `no Packages= set (read: ${where})`);
  for (const kver of config.kernelVersions) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._+~-]*$/.test(kver)) throw new UserError('USAGE', `invalid kernel version ${shown(kver)}`);
  }
  if (config.compressionLevel !== undefined) {
    const [lo, hi] = LEVEL_RANGES[config.compression];
    if (config.compressionLevel < lo || config.compressionLevel > hi) {
      throw new UserError('CONFIG', `compression level ${config.compressionLevel} is out of range for ${config.compression} (${lo}..${hi})`);
    }
  }
  if (Boolean(config.secureBootKey) !== Boolean(config.secureBootCertificate)) {
    throw new UserError('CONFIG', 'SecureBootKey= and SecureBootCertificate= go together', { hint: 'set both (--sign-key and --sign-cert), or neither' });
  }
  if (config.secureBootKey && config.format !== 'uki') {
    throw new UserError('CONFIG', 'a Secure Boot key signs a UKI, but the output format is cpio', {
      hint: 'add Format=uki (--format uki); a boot loader does not verify a plain initrd',
    });
  }
  if (config.emergencyShell === 'password' && !(config.emergencyShellPassword && isPasswordHash(config.emergencyShellPassword))) {
    throw new UserError('CONFIG', 'EmergencyShell=password needs EmergencyShellPassword= (a password hash)', { hint: 'make the hash with: openssl passwd -6' });
  }
  if (!isAbsolute(config.kernelModulesRoot)) throw new UserError('CONFIG', `KernelModulesRoot= must be absolute: ${config.kernelModulesRoot}`);
}

const LEVEL_RANGES: Record<Compression, [number, number]> = {
  zstd: [1, 22],
  xz: [0, 9],
  gzip: [1, 9],
  lz4: [1, 12],
  none: [0, 0],
};

/** Render the resolved configuration back as INI (what `summary` prints). */
export function renderConfig(config: ImageConfig): string {
  const lines = [`# preset: ${config.preset}`, ...config.sources.map((s) => `# read: ${s}`)];
  // Every key of SCHEMA, in its order, each section followed by a blank line.
  for (const [section, keys] of Object.entries(SCHEMA)) {
    lines.push(`[${section}]`);
    for (const [key, spec] of Object.entries(keys)) {
      const raw = config[spec.field];
      const value = spec.render ? spec.render(raw as never) : raw;
      if (value === undefined || (Array.isArray(value) && value.length === 0)) continue;
      if (typeof value === 'boolean') lines.push(`${key}=${value ? 'yes' : 'no'}`);
      else if (Array.isArray(value)) lines.push(...(spec.wholeValue ? value.map((x) => `${key}=${x}`) : [`${key}=${value.join(' ')}`]));
      else lines.push(`${key}=${String(value)}`);
    }
    lines.push('');
  }
  return lines.join('\n');
}
