import { resolve } from 'node:path';
import { UserError, ARCHITECTURE_NAMES, PACKAGE_MANAGER_NAMES, isArchitectureName, isPackageManagerName, type PackageManagerName } from '@mkinitrd-pkg/common';
import { shown, type Assignment } from './ini-lines.js';

/** A PackageManager= value: one of common's PACKAGE_MANAGERS entries. */
export type PackageManager = PackageManagerName;
export type Compression = 'zstd' | 'xz' | 'gzip' | 'lz4' | 'none';
export const COMPRESSIONS: readonly Compression[] = ['zstd', 'xz', 'gzip', 'lz4', 'none'];
/** cpio: an initrd for a boot loader; uki: a Unified Kernel Image (systemd-stub + kernel + initrd). */
export type OutputFormat = 'cpio' | 'uki';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['cpio', 'uki'];
/**
 * What the initrd's emergency/rescue shell does (systemd's emergency.target): yes = a root
 * shell without a password, password = sulogin asks for EmergencyShellPassword=, no = no
 * shell (a message, then reboot).
 */
/**
 * How kernel modules are stored in the image (KernelModulesCompression=): keep = as the
 * kernel package ships them; none = decompressed (.ko), so the image's compressor works on
 * their contents. The values of packages/kmod's ModuleCompression.
 */
export type ModuleCompression = 'keep' | 'none';
export const MODULE_COMPRESSIONS: readonly ModuleCompression[] = ['keep', 'none'];
export type EmergencyShell = 'yes' | 'password' | 'no';
export const EMERGENCY_SHELLS: readonly EmergencyShell[] = ['yes', 'password', 'no'];
/**
 * Which extension images the initrd's systemd-sysext accepts (systemd.image-policy(7)):
 * open = systemd's defaults (any image in /var/lib/extensions, verified or not; only
 * signed ones from /.extra/sysext); verity = every extension is opened through dm-verity
 * with a root hash pinned beside it (build --extension writes NAME.roothash; a signed
 * image's signature is still checked), anything else is refused; signed = only signed
 * verity images whose certificate the kernel keyring or /etc/verity.d trusts. Both refuse
 * directory extensions (no image policy covers them).
 */
export type ExtensionImagePolicy = 'open' | 'verity' | 'signed';
export const EXTENSION_IMAGE_POLICIES: readonly ExtensionImagePolicy[] = ['open', 'verity', 'signed'];

/** The resolved configuration of one image: every layer merged, every value checked. */
export interface ImageConfig {
  /** Name of the preset the configuration started from. */
  preset: string;
  distribution: string;
  release: string;
  packageManager: PackageManager;
  /** apt: archive URL; dnf: a baseurl (file:// allowed). */
  mirror: string;
  /** Further repositories: apt "URL SUITE COMPONENT…" lines or dnf baseurls. */
  repositories: string[];
  /** apt archive components (main, contrib, …). */
  components: string[];
  repositoryKeyCheck: boolean;
  /** Keyrings (apt) or GPG key files/URLs (dnf) that sign the repositories. */
  repositoryKeys: string[];
  /** mkosi-style architecture name (x86-64, arm64). */
  architecture: string;
  /** Where rpm keeps its database in the roots dnf makes (rpm's %_dbpath). */
  rpmDatabase: string;
  packages: string[];
  /**
   * apt: installed into an empty root together with the Essential set, before Packages=
   * (Debian: usr-is-merged, so the merged-/usr symlinks are the package's, not usrmerge's).
   */
  bootstrapPackages: string[];
  removeFiles: string[];
  keepFiles: string[];
  kernelModules: string[];
  /** Take modules from this package (installed into a staging root), not the host. */
  kernelPackage: string | undefined;
  /**
   * Globs naming the packages of KernelPackage='s dependency closure that hold the kernel
   * and its modules (Debian: linux-image-*; Fedora: kernel-core kernel-modules*). Empty:
   * KernelPackage= itself.
   */
  kernelModulePackages: string[];
  /** The package that holds systemd-stub (linuxx64.efi.stub), unpacked for Format=uki. */
  ukiStubPackage: string | undefined;
  /**
   * Packages unpacked beside the kernel package: the firmware the selected modules
   * declare (modinfo -F firmware) is taken from them (e.g. Debian's firmware-linux-free).
   */
  firmwarePackages: string[];
  kernelVersions: string[];
  /** Modules root on the host used when no kernel package is named. */
  kernelModulesRoot: string;
  /** The form of module files in the image: as packaged, or decompressed. */
  kernelModulesCompression: ModuleCompression;
  compression: Compression;
  compressionLevel: number | undefined;
  output: string | undefined;
  /**
   * Where build tools (depmod, mksquashfs, veritysetup, xz …) come from: 'default' (a tools
   * root unpacked from this configuration's own repositories), 'host' (the host's system
   * directories), or a preset name (that preset's repositories and ToolsTreePackages=).
   */
  toolsTree: string;
  /** Packages unpacked into the tools root (mkosi's ToolsTreePackages=). */
  toolsTreePackages: string[];
  format: OutputFormat;
  /** The UKI's .cmdline (whitespace normalised); undefined: none. */
  kernelCommandLine: string | undefined;
  /** Sign the UKI for Secure Boot (PEM private key and certificate). */
  secureBootKey: string | undefined;
  secureBootCertificate: string | undefined;
  /** undefined: "no" for a signed image, "yes" otherwise (resolved by the builder). */
  emergencyShell: EmergencyShell | undefined;
  /** crypt(3) hash of the emergency shell's root password (EmergencyShell=password). */
  emergencyShellPassword: string | undefined;
  /** ExtensionImagePolicy=: what systemd-sysext in the initrd accepts (default open). */
  extensionImagePolicy: ExtensionImagePolicy;
  /** Files read, in order of precedence (lowest first). */
  sources: string[];
}

type ListKey = { [K in keyof ImageConfig]: ImageConfig[K] extends string[] ? K : never }[keyof ImageConfig];
type ScalarKey = Exclude<keyof ImageConfig, ListKey | 'sources' | 'preset'>;

/**
 * How one key is read, what it defaults to and how `summary` shows it. The one list of
 * keys is SCHEMA below: emptyConfig(), the list and optional-value rules of
 * applyAssignments() and renderConfig() are derived from it, and the compiler checks
 * that every ImageConfig field has a key.
 */
export interface KeySpec {
  field: keyof ImageConfig;
  /** A list: accumulates across layers, `Key=` resets, `!item` removes (default value: []). */
  list?: boolean;
  /** A list whose order and repetition carry meaning (include/exclude globs): never deduplicated. */
  ordered?: boolean;
  /** A list of whole lines (repository lines contain spaces), not of words. */
  wholeValue?: boolean;
  parse?: (value: string, where: Assignment) => unknown;
  /** The value when no layer sets the key (scalars; lists start empty, optional ones undefined). */
  default?: string | number | boolean;
  /** A scalar that may be unset: `Key=` (empty) unsets it. */
  optional?: boolean;
  /** How summary shows a value (default: as written; undefined: not shown). */
  render?: (value: never) => string | undefined;
  /** The command-line flag that sets this key over every config file (build, summary). */
  flag?: FlagSpec;
}

/**
 * A config key's command-line flag. The CLI makes its flags from these and hands the
 * values back to loadConfig(overrides), which applies them as assignments of the key, so a
 * flag is read, checked and layered exactly like the key in a file (after every file).
 */
export interface FlagSpec {
  /** The long option, without "--". */
  name: string;
  char?: string;
  description: string;
  /** A list key: the flag's values replace the list instead of adding to it. */
  replaces?: boolean;
  /** A yes/no key set by a flag without a value (--no-repository-key-check): the value it sets. */
  sets?: string;
  /** Whole numbers only. */
  integer?: boolean;
  /** A path, made absolute against the working directory. */
  path?: boolean;
  /** The values the flag accepts (the CLI refuses others before anything is read). */
  options?: readonly string[];
}

function fail(where: Assignment, message: string, hint?: string): never {
  // A flag's value is the caller's usage (exit 2); a file's is configuration (file:line).
  if (where.flag !== undefined) throw new UserError('USAGE', `--${where.flag}: ${message}`, hint ? { hint } : {});
  throw new UserError('CONFIG', `${where.file}:${where.line}: ${where.section}.${where.key}: ${message}`, hint ? { hint } : {});
}

/**
 * Package names as apt and dnf take them on the command line (Debian policy §5.6.1 names,
 * RPM names, with apt's =version and /release and dnf's version globs). Never starting
 * with "-": a value like -oDPkg::Pre-Invoke::=… would be read as an option.
 */
export const PACKAGE_NAME_RE = /^[A-Za-z0-9?][A-Za-z0-9+._:~=/*?-]*$/;

/** A repository URL: a scheme (http, https, file, mirror+http, …) and no whitespace or control characters. */
const URL_RE = /^[a-z][a-z0-9+.-]*:\/\/[^\s\x00-\x1f\x7f]+$/;

/** Control characters (NUL, newline, escape …): never valid in a config value that reaches apt or dnf. */
const CONTROL_RE = /[\x00-\x1f\x7f-\x9f]/;

/**
 * Why a value of `field` is unacceptable, or undefined. Values go into apt's and dnf's
 * sources files and argument lists: a newline in Mirror= would add a repository line,
 * a NUL would cut an argument, a leading "-" would become an option. Checked for every
 * layer (file:line) and for the command-line flags.
 */
export function invalidValue(field: keyof ImageConfig, value: string): string | undefined {
  if (CONTROL_RE.test(value)) return `control characters are not allowed: ${shown(value)}`;
  switch (field) {
    case 'packages':
    case 'bootstrapPackages':
    case 'kernelModulePackages':
    case 'kernelPackage':
      return PACKAGE_NAME_RE.test(value) ? undefined : `invalid package name ${shown(value)}`;
    case 'mirror':
      return URL_RE.test(value) ? undefined : `expected a URL like http://deb.debian.org/debian, got ${shown(value)}`;
    case 'rpmDatabase':
      return /^\/[^\s]*$/.test(value) && !value.split('/').includes('..') ? undefined : `expected an absolute path, got ${shown(value)}`;
    case 'distribution':
    case 'release':
    case 'components':
      return /^[A-Za-z0-9][A-Za-z0-9._+~-]*$/.test(value) ? undefined : `invalid name ${shown(value)}`;
    default:
      return undefined;
  }
}

export function parseBoolean(value: string, where: Assignment): boolean {
  const v = value.toLowerCase();
  if (['yes', 'true', '1', 'on'].includes(v)) return true;
  if (['no', 'false', '0', 'off'].includes(v)) return false;
  fail(where, `expected yes or no, got ${shown(value)}`);
}

function parseCompression(value: string, where: Assignment): Compression {
  const v = value.toLowerCase();
  if (v === 'yes') return 'zstd';
  if (v === 'no') return 'none';
  if ((COMPRESSIONS as readonly string[]).includes(v)) return v as Compression;
  fail(where, `unknown compression ${shown(value)}`, `use one of: ${COMPRESSIONS.join(', ')}`);
}

function parseModuleCompression(value: string, where: Assignment): ModuleCompression {
  const v = value.toLowerCase();
  if ((MODULE_COMPRESSIONS as readonly string[]).includes(v)) return v as ModuleCompression;
  fail(where, `unknown module compression ${shown(value)}`, 'use keep (as the kernel package ships them) or none (decompressed .ko)');
}

function parsePackageManager(value: string, where: Assignment): PackageManager {
  if (isPackageManagerName(value)) return value;
  fail(where, `unknown package manager ${shown(value)}`, `use one of: ${PACKAGE_MANAGER_NAMES.join(', ')}`);
}

function parseLevel(value: string, where: Assignment): number {
  if (!/^-?\d+$/.test(value)) fail(where, `expected a whole number, got ${shown(value)}`);
  return Number(value);
}

/** default | host | a preset name: a name, never a path (a path would let data pick a host file). */
export function parseToolsTree(value: string, where: Assignment): string {
  if (/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(value) && !value.endsWith('.conf')) return value;
  fail(where, `invalid tools tree "${value}"`, 'use default, host, or the name of a preset');
}

function parseFormat(value: string, where: Assignment): OutputFormat {
  if ((OUTPUT_FORMATS as readonly string[]).includes(value)) return value as OutputFormat;
  fail(where, `unknown format "${value}"`, `use one of: ${OUTPUT_FORMATS.join(', ')}`);
}

function parseExtensionImagePolicy(value: string, where: Assignment): ExtensionImagePolicy {
  if ((EXTENSION_IMAGE_POLICIES as readonly string[]).includes(value)) return value as ExtensionImagePolicy;
  fail(where, `unknown extension image policy ${shown(value)}`, `use one of: ${EXTENSION_IMAGE_POLICIES.join(', ')}`);
}

function parseEmergencyShell(value: string, where: Assignment): EmergencyShell {
  const v = value.toLowerCase();
  if (['yes', 'true', '1', 'on'].includes(v)) return 'yes';
  if (['no', 'false', '0', 'off'].includes(v)) return 'no';
  if (v === 'password') return 'password';
  fail(where, `expected yes, password or no, got "${value}"`);
}

/**
 * Only a crypt(3) hash is accepted (yescrypt $y$, SHA-512 $6$, SHA-256 $5$, bcrypt $2b$):
 * a clear-text password in a config file would end up in the image (shadow(5)).
 */
export function isPasswordHash(value: string): boolean {
  return /^\$(y|gy|7|6|5|2[abxy])\$[./A-Za-z0-9$=,]+$/.test(value) && value.length >= 20;
}

function parsePasswordHash(value: string, where: Assignment): string {
  if (value === '' || isPasswordHash(value)) return value;
  fail(where, 'expected a password hash ($y$…, $6$…), not a password', 'make one with: openssl passwd -6   (or mkpasswd -m yescrypt)');
}

function parseCommandLine(value: string): string {
  return value.split(/\s+/).filter(Boolean).join(' ');
}

/** One of common's ARCHITECTURES rows (systemd's and mkosi's names). */
function parseArchitecture(value: string, where: Assignment): string {
  if (!isArchitectureName(value)) fail(where, `unknown architecture ${shown(value)}`, `use one of: ${ARCHITECTURE_NAMES.join(', ')}`);
  return value;
}

/**
 * Section → key → how to read it: the one list of config keys. Keys are named like mkosi's
 * where the concept is the same; summary shows them in this order.
 */
const SCHEMA_TABLE = {
  Distribution: {
    Distribution: { field: 'distribution', default: '' },
    Release: { field: 'release', default: '' },
    PackageManager: { field: 'packageManager', parse: parsePackageManager, default: 'apt' },
    Architecture: { field: 'architecture', parse: parseArchitecture, default: 'x86-64' },
    Mirror: { field: 'mirror', default: '', flag: { name: 'mirror', description: 'override Mirror=' } },
    Components: { field: 'components', list: true },
    Repositories: { field: 'repositories', list: true, wholeValue: true },
    RepositoryKeyCheck: { field: 'repositoryKeyCheck', parse: parseBoolean, default: true, flag: { name: 'no-repository-key-check', sets: 'no', description: 'accept unsigned repositories (RepositoryKeyCheck=no)' } },
    RepositoryKey: { field: 'repositoryKeys', list: true },
    // rpm's own default since 4.16 (Fedora >= 36, openSUSE, RHEL 10); RHEL <= 9: /var/lib/rpm.
    RpmDatabase: { field: 'rpmDatabase', default: '/usr/lib/sysimage/rpm' },
  },
  Content: {
    Packages: { field: 'packages', list: true, flag: { name: 'package', description: 'add a package (repeatable)' } },
    BootstrapPackages: { field: 'bootstrapPackages', list: true },
    RemoveFiles: { field: 'removeFiles', list: true },
    KeepFiles: { field: 'keepFiles', list: true },
    KernelPackage: { field: 'kernelPackage', optional: true, flag: { name: 'kernel-package', description: 'take modules from this package (empty: from the host)' } },
    KernelModulePackages: { field: 'kernelModulePackages', list: true },
    UkiStubPackage: { field: 'ukiStubPackage', optional: true },
    FirmwarePackages: { field: 'firmwarePackages', list: true },
    KernelVersion: { field: 'kernelVersions', list: true, flag: { name: 'kernel-version', char: 'k', replaces: true, description: 'build for this kernel version (repeatable)' } },
    KernelModulesRoot: { field: 'kernelModulesRoot', default: '/' },
    KernelModules: { field: 'kernelModules', list: true, ordered: true },
    KernelModulesCompression: { field: 'kernelModulesCompression', parse: parseModuleCompression, default: 'keep', flag: { name: 'kernel-modules-compression', options: MODULE_COMPRESSIONS, description: 'modules as the kernel package ships them, or decompressed (KernelModulesCompression=)' } },
    KernelCommandLine: { field: 'kernelCommandLine', parse: parseCommandLine, optional: true, flag: { name: 'kernel-command-line', description: "the UKI's .cmdline (KernelCommandLine=)" } },
    EmergencyShell: { field: 'emergencyShell', parse: parseEmergencyShell, optional: true, flag: { name: 'emergency-shell', options: EMERGENCY_SHELLS, description: 'yes | password | no (EmergencyShell=; default: no for a signed UKI, else yes)' } },
    // The hash is not secret in the way a password is, but a summary is for reading: mark only that it is set.
    EmergencyShellPassword: { field: 'emergencyShellPassword', parse: parsePasswordHash, optional: true, render: (v: string | undefined) => (v ? '(hash set)' : undefined) },
    ExtensionImagePolicy: { field: 'extensionImagePolicy', parse: parseExtensionImagePolicy, default: 'open', flag: { name: 'extension-image-policy', options: EXTENSION_IMAGE_POLICIES, description: 'which extensions the initrd merges: open | verity | signed (ExtensionImagePolicy=)' } },
  },
  Output: {
    CompressOutput: { field: 'compression', parse: parseCompression, default: 'zstd', flag: { name: 'compression', description: 'zstd | xz | gzip | lz4 | none' } },
    CompressLevel: { field: 'compressionLevel', parse: parseLevel, optional: true, flag: { name: 'compression-level', integer: true, description: 'compression level' } },
    Output: { field: 'output', optional: true, flag: { name: 'output', char: 'o', description: 'output image path ({kver} is replaced; a trailing / names a directory)' } },
    Format: { field: 'format', parse: parseFormat, default: 'cpio', flag: { name: 'format', options: OUTPUT_FORMATS, description: 'cpio (an initrd) | uki (systemd-stub + kernel + initrd, Format=)' } },
  },
  // mkosi's names and section for the Secure Boot signing key.
  Validation: {
    SecureBootKey: { field: 'secureBootKey', optional: true, flag: { name: 'sign-key', path: true, description: 'sign the UKI for Secure Boot with this PEM key (SecureBootKey=)' } },
    SecureBootCertificate: { field: 'secureBootCertificate', optional: true, flag: { name: 'sign-cert', path: true, description: 'the PEM certificate of --sign-key (SecureBootCertificate=)' } },
  },
  Build: {
    ToolsTree: { field: 'toolsTree', parse: parseToolsTree, default: 'default', flag: { name: 'tools-tree', description: 'where build tools come from: default (packages of the preset), host, or a preset name (ToolsTree=)' } },
    ToolsTreePackages: { field: 'toolsTreePackages', list: true },
  },
} as const satisfies Record<string, Record<string, KeySpec>>;

type Table = typeof SCHEMA_TABLE;
type SchemaField = { [S in keyof Table]: { [K in keyof Table[S]]: Table[S][K] extends { field: infer F } ? F : never }[keyof Table[S]] }[keyof Table];
/** A field no key sets would silently keep its default: a compile error names it. */
type FieldWithoutKey = Exclude<keyof ImageConfig, SchemaField | 'preset' | 'sources'>;
const everyFieldHasAKey: [FieldWithoutKey] extends [never] ? true : FieldWithoutKey = true;
void everyFieldHasAKey;

export const SCHEMA: Readonly<Record<string, Readonly<Record<string, KeySpec>>>> = SCHEMA_TABLE;

/** Every key's spec, in SCHEMA order. */
export function schemaKeys(): Array<{ section: string; key: string; spec: KeySpec }> {
  return Object.entries(SCHEMA).flatMap(([section, keys]) => Object.entries(keys).map(([key, spec]) => ({ section, key, spec })));
}

/** The keys that have a command-line flag, in SCHEMA order. */
export function flagKeys(): Array<{ section: string; key: string; spec: KeySpec; flag: FlagSpec }> {
  return schemaKeys().flatMap((k) => (k.spec.flag ? [{ ...k, flag: k.spec.flag }] : []));
}

/** A flag's value as the CLI parsed it: a string, several, a number or a switch. */
export type FlagValue = string | readonly string[] | number | boolean | undefined;

/**
 * Command-line flag values (by flag name; other names are ignored, so a command can pass
 * all of its parsed flags) as assignments of their keys, to be applied after every file.
 */
export function flagAssignments(values: Readonly<Record<string, FlagValue>>, cwd = process.cwd()): Assignment[] {
  const out: Assignment[] = [];
  for (const { section, key, spec, flag } of flagKeys()) {
    const value = values[flag.name];
    if (value === undefined || value === false) continue;
    const assign = (v: string) => out.push({ section, key, value: v, file: 'command line', line: 0, flag: flag.name });
    if (value === true) {
      if (flag.sets === undefined) throw new TypeError(`--${flag.name} takes a value`);
      assign(flag.sets);
    } else if (typeof value === 'number') {
      assign(String(value));
    } else if (typeof value === 'string') {
      assign(flag.path && value !== '' ? resolve(cwd, value) : value);
    } else {
      if (!spec.list) throw new TypeError(`--${flag.name} takes one value`);
      if (flag.replaces) assign('');
      // One assignment per value: a list flag's value is one item (a repository line has spaces).
      for (const v of value) {
        if (v === '') continue;
        assign(flag.path ? resolve(cwd, v) : v);
      }
    }
  }
  return out;
}

/** The configuration before any file is read: every key's default (SCHEMA). */
export function emptyConfig(preset: string): ImageConfig {
  const config: Record<string, unknown> = { preset };
  for (const { spec } of schemaKeys()) config[spec.field] = spec.list ? [] : spec.optional ? undefined : spec.default;
  config.sources = [];
  return config as unknown as ImageConfig;
}

/**
 * The spec of an assignment's key in a section → key table; an unknown section or key is
 * an error naming file:line and listing what is known (presets and sysext definitions).
 */
export function lookupKey<T>(schema: Record<string, Record<string, T>>, a: Assignment): T {
  const section = schema[a.section];
  if (!section) {
    throw new UserError('CONFIG', `${a.file}:${a.line}: unknown section [${a.section}]`, {
      hint: `known sections: ${Object.keys(schema).map((s) => `[${s}]`).join(' ')}`,
    });
  }
  const spec = section[a.key];
  if (!spec) {
    throw new UserError('CONFIG', `${a.file}:${a.line}: unknown key ${a.key}= in [${a.section}]`, {
      hint: `known keys in [${a.section}]: ${Object.keys(section).join(', ')}`,
    });
  }
  return spec;
}

/**
 * Apply one file's assignments. Scalars: last one wins. Lists accumulate across layers
 * (a drop-in adds packages), and an empty assignment (`Packages=`) resets the list so a
 * later layer can replace it — mkosi's rule.
 */
export function applyAssignments(config: ImageConfig, assignments: readonly Assignment[]): void {
  for (const a of assignments) {
    const spec = lookupKey(SCHEMA, a);
    if (spec.list) {
      const field = spec.field as ListKey;
      if (a.value === '') {
        config[field] = [];
        continue;
      }
      const items = spec.wholeValue
        ? a.value.split('\n').map((l) => l.trim()).filter(Boolean)
        : a.value.split(/\s+/).filter(Boolean);
      for (const item of items) {
        const bad = invalidValue(spec.field, item.startsWith('!') ? item.slice(1) : item);
        if (bad) fail(a, bad);
        if (item.startsWith('!')) {
          // "!name" removes an item a lower layer added.
          config[field] = config[field].filter((x) => x !== item.slice(1));
        } else if (spec.ordered || !config[field].includes(item)) {
          config[field].push(item);
        }
      }
    } else {
      // Scalars are one line: an indented continuation would smuggle a newline in.
      const bad = a.value.includes('\n') ? `must be one line, got ${shown(a.value)}` : a.value === '' ? undefined : invalidValue(spec.field, a.value);
      if (bad) fail(a, bad);
      const value = spec.parse ? spec.parse(a.value, a) : a.value;
      (config as unknown as Record<ScalarKey, unknown>)[spec.field as ScalarKey] = a.value === '' && spec.optional ? undefined : value;
    }
  }
}
