import { UserError } from '@mkinitrd-pkg/common';
import { shown, type Assignment } from './ini-lines.js';

export type PackageManager = 'apt' | 'dnf';
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
  packages: string[];
  removeFiles: string[];
  keepFiles: string[];
  kernelModules: string[];
  /** Take modules from this package (installed into a staging root), not the host. */
  kernelPackage: string | undefined;
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

type ListKey = 'repositories' | 'components' | 'repositoryKeys' | 'packages' | 'removeFiles' | 'keepFiles' | 'kernelModules' | 'kernelVersions' | 'toolsTreePackages' | 'firmwarePackages';
type ScalarKey = Exclude<keyof ImageConfig, ListKey | 'sources' | 'preset'>;

interface KeySpec {
  field: keyof ImageConfig;
  list?: boolean;
  parse?: (value: string, where: Assignment) => unknown;
}

function fail(where: Assignment, message: string, hint?: string): never {
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
    case 'kernelPackage':
      return PACKAGE_NAME_RE.test(value) ? undefined : `invalid package name ${shown(value)}`;
    case 'mirror':
      return URL_RE.test(value) ? undefined : `expected a URL like http://deb.debian.org/debian, got ${shown(value)}`;
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

function parsePackageManager(value: string, where: Assignment): PackageManager {
  if (value === 'apt' || value === 'dnf') return value;
  fail(where, `unknown package manager ${shown(value)}`, 'use apt or dnf');
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

function parseArchitecture(value: string, where: Assignment): string {
  if (!/^[a-z0-9_-]+$/.test(value)) fail(where, `invalid architecture ${shown(value)}`);
  return value;
}

/** Section → key → how to read it. Keys are named like mkosi's where the concept is the same. */
export const SCHEMA: Record<string, Record<string, KeySpec>> = {
  Distribution: {
    Distribution: { field: 'distribution' },
    Release: { field: 'release' },
    PackageManager: { field: 'packageManager', parse: parsePackageManager },
    Mirror: { field: 'mirror' },
    Repositories: { field: 'repositories', list: true },
    Components: { field: 'components', list: true },
    RepositoryKeyCheck: { field: 'repositoryKeyCheck', parse: parseBoolean },
    RepositoryKey: { field: 'repositoryKeys', list: true },
    Architecture: { field: 'architecture', parse: parseArchitecture },
  },
  Content: {
    Packages: { field: 'packages', list: true },
    RemoveFiles: { field: 'removeFiles', list: true },
    KeepFiles: { field: 'keepFiles', list: true },
    KernelModules: { field: 'kernelModules', list: true },
    KernelPackage: { field: 'kernelPackage' },
    UkiStubPackage: { field: 'ukiStubPackage' },
    FirmwarePackages: { field: 'firmwarePackages', list: true },
    KernelVersion: { field: 'kernelVersions', list: true },
    KernelModulesRoot: { field: 'kernelModulesRoot' },
    KernelCommandLine: { field: 'kernelCommandLine', parse: parseCommandLine },
    EmergencyShell: { field: 'emergencyShell', parse: parseEmergencyShell },
    EmergencyShellPassword: { field: 'emergencyShellPassword', parse: parsePasswordHash },
    ExtensionImagePolicy: { field: 'extensionImagePolicy', parse: parseExtensionImagePolicy },
  },
  Output: {
    CompressOutput: { field: 'compression', parse: parseCompression },
    CompressLevel: { field: 'compressionLevel', parse: parseLevel },
    Output: { field: 'output' },
    Format: { field: 'format', parse: parseFormat },
  },
  // mkosi's names and section for the Secure Boot signing key.
  Validation: {
    SecureBootKey: { field: 'secureBootKey' },
    SecureBootCertificate: { field: 'secureBootCertificate' },
  },
  Build: {
    ToolsTree: { field: 'toolsTree', parse: parseToolsTree },
    ToolsTreePackages: { field: 'toolsTreePackages', list: true },
  },
};

/** Lists where order and repetition carry meaning (include/exclude globs): never deduplicated. */
const ORDERED_LISTS = new Set<keyof ImageConfig>(['kernelModules']);
const OPTIONAL_SCALARS = new Set<keyof ImageConfig>([
  'kernelPackage',
  'ukiStubPackage',
  'compressionLevel',
  'output',
  'kernelCommandLine',
  'secureBootKey',
  'secureBootCertificate',
  'emergencyShell',
  'emergencyShellPassword',
]);

/** Lists split on whitespace, except repository lines (one per line/assignment, with spaces). */
const WHOLE_VALUE_LISTS = new Set<keyof ImageConfig>(['repositories']);

export function emptyConfig(preset: string): ImageConfig {
  return {
    preset,
    distribution: '',
    release: '',
    packageManager: 'apt',
    mirror: '',
    repositories: [],
    components: [],
    repositoryKeyCheck: true,
    repositoryKeys: [],
    architecture: 'x86-64',
    packages: [],
    removeFiles: [],
    keepFiles: [],
    kernelModules: [],
    kernelPackage: undefined,
    ukiStubPackage: undefined,
    firmwarePackages: [],
    kernelVersions: [],
    kernelModulesRoot: '/',
    compression: 'zstd',
    compressionLevel: undefined,
    output: undefined,
    toolsTree: 'default',
    toolsTreePackages: [],
    format: 'cpio',
    kernelCommandLine: undefined,
    secureBootKey: undefined,
    secureBootCertificate: undefined,
    emergencyShell: undefined,
    emergencyShellPassword: undefined,
    extensionImagePolicy: 'open',
    sources: [],
  };
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
      const items = WHOLE_VALUE_LISTS.has(spec.field)
        ? a.value.split('\n').map((l) => l.trim()).filter(Boolean)
        : a.value.split(/\s+/).filter(Boolean);
      for (const item of items) {
        const bad = invalidValue(spec.field, item.startsWith('!') ? item.slice(1) : item);
        if (bad) fail(a, bad);
        if (item.startsWith('!')) {
          // "!name" removes an item a lower layer added.
          config[field] = config[field].filter((x) => x !== item.slice(1));
        } else if (ORDERED_LISTS.has(spec.field) || !config[field].includes(item)) {
          config[field].push(item);
        }
      }
    } else {
      // Scalars are one line: an indented continuation would smuggle a newline in.
      const bad = a.value.includes('\n') ? `must be one line, got ${shown(a.value)}` : a.value === '' ? undefined : invalidValue(spec.field, a.value);
      if (bad) fail(a, bad);
      const value = spec.parse ? spec.parse(a.value, a) : a.value;
      (config as unknown as Record<ScalarKey, unknown>)[spec.field as ScalarKey] = a.value === '' && OPTIONAL_SCALARS.has(spec.field) ? undefined : value;
    }
  }
}
