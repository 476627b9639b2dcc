import { allPackageManagerPaths } from '@mkinitrd-pkg/common';

/**
 * A named group of globs (relative to the image root) whose matches are removed.
 * `except` globs carve exceptions out of this rule only (e.g. keep C.UTF-8 while
 * dropping other locales); the caller's `keep` list protects from every rule.
 */
export interface PruneRule {
  name: string;
  description: string;
  patterns: string[];
  except?: string[];
}

/**
 * What an initrd built from distribution packages does not need. Chosen to leave
 * everything systemd, udev, kmod, cryptsetup, lvm, mdadm and the file system tools use at
 * run time: no rule touches usr/lib/systemd, usr/lib/udev/rules.d, usr/share/dbus-1,
 * usr/lib/modprobe.d, etc/ (except the hwdb and package manager files), terminfo, keymaps
 * or console fonts.
 */
export const DEFAULT_PRUNE_RULES: PruneRule[] = [
  {
    name: 'docs',
    description: 'documentation',
    patterns: ['usr/share/doc/**', 'usr/share/gtk-doc/**', 'usr/share/help/**', 'usr/share/bug/**'],
  },
  { name: 'man', description: 'manual pages', patterns: ['usr/share/man/**'] },
  { name: 'info', description: 'GNU info pages', patterns: ['usr/share/info/**'] },
  {
    name: 'locales',
    description: 'translations and compiled locales (C.UTF-8 kept)',
    patterns: ['usr/share/locale/**', 'usr/lib/locale/**'],
    // Debian/Ubuntu: C.utf8; Fedora's glibc-minimal-langpack: C.utf8 too; some: C.UTF-8.
    except: ['usr/lib/locale/C.utf8/**', 'usr/lib/locale/C.UTF-8/**'],
  },
  { name: 'i18n', description: 'locale and charmap sources', patterns: ['usr/share/i18n/**'] },
  {
    name: 'gconv',
    description: 'iconv converters (Unicode and FAT code pages kept)',
    patterns: ['usr/lib/*/gconv/*', 'usr/lib64/gconv/*', 'usr/lib/gconv/*'],
    // UTF-8 needs no module; UTF-16/32 and UNICODE do; fsck.fat converts labels from
    // code page 850 (its default) or 437; gconv-modules* is the configuration.
    except: ['**/gconv/gconv-modules*', '**/gconv/UTF-*', '**/gconv/UNICODE.so', '**/gconv/IBM437.so', '**/gconv/IBM850.so'],
  },
  {
    name: 'licenses',
    description: 'license texts',
    patterns: ['usr/share/licenses/**', 'usr/share/common-licenses/**'],
  },
  {
    name: 'zoneinfo',
    description: 'time zone data (UTC kept)',
    patterns: ['usr/share/zoneinfo/**'],
    // /etc/localtime usually points at Etc/UTC in a fresh root: keep it resolvable.
    except: ['usr/share/zoneinfo/UTC', 'usr/share/zoneinfo/Etc/UTC'],
  },
  {
    name: 'hwdb',
    description: 'udev hardware database',
    patterns: ['etc/udev/hwdb.d/**', 'etc/udev/hwdb.bin', 'usr/lib/udev/hwdb.d/**', 'usr/lib/udev/hwdb.bin'],
  },
  {
    name: 'package-manager',
    description: 'package manager databases, caches and logs',
    // Derived from common's PACKAGE_MANAGERS: a database path matches itself and everything below.
    patterns: allPackageManagerPaths('databasePaths'),
  },
  // The directories themselves stay: tmpfiles.d and services expect /var/cache, /var/log.
  { name: 'caches', description: 'caches', patterns: ['var/cache/*'] },
  { name: 'logs', description: 'log files', patterns: ['var/log/*'] },
  {
    name: 'shell-completion',
    description: 'shell completions',
    patterns: ['usr/share/bash-completion/**', 'etc/bash_completion.d/**', 'usr/share/zsh/**', 'usr/share/fish/**'],
  },
  { name: 'lintian', description: 'lintian overrides', patterns: ['usr/share/lintian/**'] },
  {
    name: 'development',
    description: 'headers, pkg-config and aclocal files',
    patterns: ['usr/include/**', 'usr/lib/pkgconfig/**', 'usr/lib/*/pkgconfig/**', 'usr/lib64/pkgconfig/**', 'usr/share/pkgconfig/**', 'usr/share/aclocal/**'],
  },
  { name: 'python-bytecode', description: 'Python bytecode caches', patterns: ['**/__pycache__', '**/*.pyc'] },
  {
    name: 'journal-catalog',
    description: 'journal message catalog sources',
    patterns: ['usr/lib/systemd/catalog/**'],
  },
];
