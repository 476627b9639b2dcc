import { existsSync } from 'node:fs';
import { link, lstat, mkdir, mkdtemp, readFile, readlink, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PACKAGE_MANAGERS, PACKAGE_MANAGER_NAMES, UserError, silentLogger } from '@mkinitrd-pkg/common';
import { DEFAULT_PRUNE_RULES, prune, type PruneRule } from './index.js';

const logger = silentLogger();
let base: string;
let root: string;

beforeEach(async () => {
  base = await realpath(await mkdtemp(join(tmpdir(), 'pruner-')));
  root = join(base, 'root');
  await mkdir(root);
});
afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

/** Write a file of exactly `size` bytes (path relative to the root unless absolute). */
async function file(rel: string, size: number): Promise<void> {
  const path = rel.startsWith('/') ? rel : join(root, rel);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, 'x'.repeat(size));
}

const here = (rel: string) => existsSync(join(root, rel));
const linkHere = async (rel: string) => (await lstat(join(root, rel)).catch(() => undefined)) !== undefined;

const RULES: PruneRule[] = [
  { name: 'docs', description: 'documentation', patterns: ['usr/share/doc/**'] },
  { name: 'man', description: 'manual pages', patterns: ['/usr/share/man/'] },
  { name: 'locales', description: 'locales', patterns: ['usr/share/locale/**', 'usr/lib/locale/**'], except: ['usr/lib/locale/C.utf8/**'] },
  { name: 'pkgdb', description: 'package manager', patterns: ['var/cache/apt/**', 'var/log/dpkg.log'] },
  { name: 'caches', description: 'caches', patterns: ['var/cache/*'] },
  { name: 'logs', description: 'logs', patterns: ['var/log/*'] },
  { name: 'pycache', description: 'bytecode', patterns: ['**/__pycache__'] },
];

describe('prune', () => {
  it('removes what the rules match and reports exact numbers per rule', async () => {
    await file('usr/share/doc/pkg/copyright', 10);
    await file('usr/share/doc/pkg/README', 20);
    await mkdir(join(root, 'usr/share/doc/emptydir/deeper'), { recursive: true });
    await file('usr/share/doc/pkg2/hl1', 40);
    await link(join(root, 'usr/share/doc/pkg2/hl1'), join(root, 'usr/share/doc/pkg2/hl2')); // same inode: counted once
    await file('usr/share/man/man1/ls.1.gz', 5);
    await link(join(root, 'usr/share/doc/pkg2/hl1'), join(root, 'usr/share/man/man1/hl')); // counted by docs (first)
    await file('usr/share/locale/de/LC_MESSAGES/foo.mo', 7);
    await file('usr/lib/locale/C.utf8/LC_CTYPE', 100);
    await file('usr/lib/locale/locale-archive', 1000);
    await file('var/cache/apt/pkgcache.bin', 30);
    await file('var/cache/ldconfig/aux-cache', 8);
    await file('var/log/dpkg.log', 9);
    await file('var/log/alternatives.log', 11);
    await file('usr/lib/python3/dist-packages/x/__pycache__/a.cpython-311.pyc', 12);
    await file('usr/lib/python3/dist-packages/x/a.py', 3);
    await file('usr/bin/kmod', 50);
    await file('usr/share/dbus-1/system.conf', 4);
    await mkdir(join(root, 'usr/share/untouched-empty'), { recursive: true });
    await file('usr/share/thing/a/one.txt', 2);
    await file('usr/share/thing/b/two.txt', 3);
    await file('usr/share/thing/b/keep.dat', 1);

    const report = await prune({ root, rules: RULES, extraRemove: ['/usr/share/thing/*/*.txt'], logger });

    expect(report.rules).toEqual([
      { name: 'docs', files: 4, bytes: 10 + 20 + 40 },
      { name: 'man', files: 2, bytes: 5 },
      { name: 'locales', files: 2, bytes: 7 + 1000 },
      { name: 'pkgdb', files: 2, bytes: 30 + 9 },
      { name: 'caches', files: 1, bytes: 8 },
      { name: 'logs', files: 1, bytes: 11 },
      { name: 'pycache', files: 1, bytes: 12 },
      { name: 'RemoveFiles', files: 2, bytes: 5 },
    ]);
    expect(report.totalFiles).toBe(15);
    expect(report.totalBytes).toBe(70 + 5 + 1007 + 39 + 8 + 11 + 12 + 5);

    // Matched directories go when emptied (usr/share/doc matched itself by `/**`) …
    expect(here('usr/share/doc')).toBe(false);
    expect(here('usr/share/man')).toBe(false);
    expect(here('usr/share/locale')).toBe(false);
    expect(here('var/cache/apt')).toBe(false);
    expect(here('var/cache/ldconfig')).toBe(false);
    expect(here('usr/lib/python3/dist-packages/x/__pycache__')).toBe(false);
    // … directories no rule matched stay, even when pruning emptied them.
    expect(here('var/cache')).toBe(true);
    expect(here('var/log')).toBe(true);
    expect(here('usr/share/untouched-empty')).toBe(true);
    expect(here('usr/share/thing/a')).toBe(true);
    expect(here('usr/share/thing/b/keep.dat')).toBe(true);
    // A rule's exception keeps C.utf8, so usr/lib/locale (matched, not empty) stays too.
    expect(here('usr/lib/locale/C.utf8/LC_CTYPE')).toBe(true);
    expect(here('usr/lib/locale/locale-archive')).toBe(false);
    expect(here('usr/bin/kmod')).toBe(true);
    expect(here('usr/share/dbus-1/system.conf')).toBe(true);
    expect(here('usr/lib/python3/dist-packages/x/a.py')).toBe(true);
  });

  it('never removes what the keep list matches, and keeps the directories holding it', async () => {
    await file('usr/share/doc/pkg/copyright', 10);
    await file('usr/share/doc/pkg/README', 20);
    await file('usr/share/locale/de/LC_MESSAGES/foo.mo', 7);
    await file('usr/share/locale/fr/LC_MESSAGES/foo.mo', 7);
    const report = await prune({ root, rules: RULES, keep: ['usr/share/doc/*/copyright', '/usr/share/locale/de/'], logger });
    expect(report.rules.find((r) => r.name === 'docs')).toEqual({ name: 'docs', files: 1, bytes: 20 });
    expect(report.rules.find((r) => r.name === 'locales')).toEqual({ name: 'locales', files: 1, bytes: 7 });
    expect(here('usr/share/doc/pkg/copyright')).toBe(true);
    expect(here('usr/share/doc/pkg/README')).toBe(false);
    expect(here('usr/share/locale/de/LC_MESSAGES/foo.mo')).toBe(true);
    expect(here('usr/share/locale/fr')).toBe(false);
  });

  it('unlinks a matched symlink to an outside directory and leaves the outside alone', async () => {
    const outside = join(base, 'outside');
    await file(join(outside, 'precious.txt'), 8);
    await mkdir(join(root, 'usr/share'), { recursive: true });
    await symlink(outside, join(root, 'usr/share/doc'));

    const report = await prune({ root, rules: RULES, logger });
    expect(report.rules[0]).toEqual({ name: 'docs', files: 1, bytes: 0 });
    expect(await linkHere('usr/share/doc')).toBe(false);
    expect(await readFile(join(outside, 'precious.txt'), 'utf8')).toBe('x'.repeat(8));
  });

  it('never follows a climbing symlink inside a matched directory', async () => {
    // usr/share/man/x -> ../../../../etc resolves to BASE/etc, outside the root.
    await file(join(base, 'etc/passwd'), 6);
    await file('usr/share/man/man1/ls.1', 3);
    await symlink('../../../../etc', join(root, 'usr/share/man/x'));

    const report = await prune({ root, rules: RULES, logger });
    expect(report.rules[1]).toEqual({ name: 'man', files: 2, bytes: 3 });
    expect(here('usr/share/man')).toBe(false);
    expect(await readFile(join(base, 'etc/passwd'), 'utf8')).toBe('xxxxxx');
  });

  it('does not descend into an unmatched symlinked directory even if patterns match below it', async () => {
    const outside = join(base, 'outside');
    await file(join(outside, 'a/secret.txt'), 4);
    await mkdir(join(root, 'usr/share'), { recursive: true });
    await symlink(outside, join(root, 'usr/share/foo'));
    await symlink(outside, join(root, 'usr/share/bar'));

    const report = await prune({ root, rules: [], extraRemove: ['usr/share/foo/**/*.txt', 'usr/share/bar/a/*'], logger });
    expect(report.totalFiles).toBe(0);
    expect(existsSync(join(outside, 'a/secret.txt'))).toBe(true);
    expect(await readlink(join(root, 'usr/share/foo'))).toBe(outside);
  });

  it('counts the first matching rule when several match', async () => {
    await file('var/cache/apt/archives/x.deb', 100);
    const report = await prune({
      root,
      rules: [
        { name: 'first', description: '', patterns: ['var/cache/apt/archives/*.deb'] },
        { name: 'second', description: '', patterns: ['var/cache/**'] },
      ],
      logger,
    });
    expect(report.rules).toEqual([
      { name: 'first', files: 1, bytes: 100 },
      { name: 'second', files: 0, bytes: 0 },
    ]);
    expect(here('var/cache')).toBe(false); // matched by `var/cache/**` and emptied
  });

  it('refuses bad roots and climbing patterns', async () => {
    await expect(prune({ root: '/', rules: RULES, logger })).rejects.toMatchObject({ code: 'UNSAFE_PATH' });
    await expect(prune({ root: join(base, 'nope'), rules: RULES, logger })).rejects.toBeInstanceOf(UserError);
    await expect(prune({ root, rules: [], extraRemove: ['usr/../../etc'], logger })).rejects.toMatchObject({ code: 'INPUT' });
  });

  // Speed is the benchmarks' business; this checks the counts on a tree of realistic size.
  it('prunes a 20k-file tree with exact per-rule counts', async () => {
    const dirs = 200;
    const perDir = 100;
    const writes: Promise<void>[] = [];
    for (let d = 0; d < dirs; d++) {
      const top = d % 2 === 0 ? 'usr/share/doc' : 'usr/lib/keep';
      await mkdir(join(root, top, `p${d}`), { recursive: true });
      for (let f = 0; f < perDir; f++) writes.push(writeFile(join(root, top, `p${d}`, `f${f}`), 'abcd'));
    }
    await Promise.all(writes);
    const started = performance.now();
    const report = await prune({ root, rules: DEFAULT_PRUNE_RULES, logger });
    const ms = performance.now() - started;
    console.log(`pruned ${report.totalFiles} of ${dirs * perDir} files in ${ms.toFixed(0)} ms`);
    expect(report.rules.find((r) => r.name === 'docs')).toEqual({ name: 'docs', files: (dirs / 2) * perDir, bytes: (dirs / 2) * perDir * 4 });
  });
});

describe('DEFAULT_PRUNE_RULES', () => {
  const needed = [
    'usr/lib/systemd/systemd',
    'usr/lib/systemd/system/initrd.target',
    'usr/lib/udev/rules.d/60-persistent-storage.rules',
    'usr/lib/udev/hwdb.d.keep-me-not-a-hwdb-dir/x', // prefix look-alike
    'usr/share/dbus-1/system.conf',
    'usr/lib/modprobe.d/systemd.conf',
    'usr/lib/x86_64-linux-gnu/libc.so.6',
    'usr/lib/x86_64-linux-gnu/libcryptsetup.so.12',
    'usr/lib/x86_64-linux-gnu/gconv/UTF-16.so',
    'usr/lib/x86_64-linux-gnu/gconv/IBM850.so',
    'usr/lib/x86_64-linux-gnu/gconv/gconv-modules',
    'usr/lib/x86_64-linux-gnu/gconv/gconv-modules.d/gconv-modules-extra.conf',
    'usr/lib/locale/C.utf8/LC_CTYPE',
    'usr/share/zoneinfo/UTC',
    'usr/share/zoneinfo/Etc/UTC',
    'usr/share/terminfo/l/linux',
    'usr/share/keymaps/i386/qwerty/us.map.gz',
    'usr/sbin/cryptsetup',
    'etc/ld.so.cache',
    'etc/udev/rules.d/99-local.rules',
    'etc/os-release',
    'usr/lib/os-release',
  ];
  const unneeded = [
    'usr/share/doc/systemd/copyright',
    'usr/share/man/man8/systemd.8.gz',
    'usr/share/info/dir',
    'usr/share/locale/de/LC_MESSAGES/systemd.mo',
    'usr/lib/locale/locale-archive',
    'usr/lib/locale/de_DE.utf8/LC_CTYPE',
    'usr/share/i18n/charmaps/UTF-8.gz',
    'usr/lib/x86_64-linux-gnu/gconv/ISO8859-2.so',
    'usr/lib64/gconv/EUC-JP.so',
    'usr/share/common-licenses/GPL-3',
    'usr/share/licenses/glibc/COPYING',
    'usr/share/zoneinfo/Europe/Berlin',
    'usr/lib/udev/hwdb.bin',
    'usr/lib/udev/hwdb.d/20-pci-vendor-model.hwdb',
    'etc/udev/hwdb.bin',
    'var/lib/dpkg/status',
    'var/lib/apt/lists/lock',
    'var/cache/apt/pkgcache.bin',
    'usr/lib/sysimage/rpm/rpmdb.sqlite',
    'var/lib/dnf/history.sqlite',
    'var/log/dnf.log',
    'var/cache/ldconfig/aux-cache',
    'var/log/alternatives.log',
    'usr/share/bash-completion/completions/systemctl',
    'usr/share/zsh/vendor-completions/_systemctl',
    'usr/share/lintian/overrides/udev',
    'usr/include/stdio.h',
    'usr/lib/x86_64-linux-gnu/pkgconfig/libcryptsetup.pc',
    'usr/lib/python3/dist-packages/foo/__pycache__/bar.cpython-311.pyc',
    'usr/lib/systemd/catalog/systemd.catalog',
  ];

  it('removes what an initrd does not need and keeps what systemd, udev and cryptsetup use', async () => {
    for (const rel of [...needed, ...unneeded]) await file(rel, 1);
    await mkdir(join(root, 'etc'), { recursive: true });
    await symlink('../usr/share/zoneinfo/Etc/UTC', join(root, 'etc/localtime'));
    const report = await prune({ root, rules: DEFAULT_PRUNE_RULES, logger });
    for (const rel of needed) expect(here(rel), rel).toBe(true);
    for (const rel of unneeded) expect(here(rel), rel).toBe(false);
    expect(here('etc/localtime')).toBe(true);
    expect(here('var/log')).toBe(true);
    expect(here('var/cache')).toBe(true);
    expect(report.totalFiles).toBe(unneeded.length);
    expect(new Set(DEFAULT_PRUNE_RULES.map((r) => r.name)).size).toBe(DEFAULT_PRUNE_RULES.length);
  });
});

describe('package-manager rule', () => {
  it("is every package manager's database (common's PACKAGE_MANAGERS), each path with what is below it", async () => {
    const rule = DEFAULT_PRUNE_RULES.find((r) => r.name === 'package-manager')!;
    for (const name of PACKAGE_MANAGER_NAMES) for (const path of PACKAGE_MANAGERS[name].databasePaths) expect(rule.patterns).toContain(path);
    await file('var/lib/dpkg/info/udev.list', 1);
    await file('var/lib/rpm-state/x', 1);
    await file('var/lib/dpkg-keep/x', 1);
    const report = await prune({ root, rules: [rule], logger });
    expect(here('var/lib/dpkg')).toBe(false);
    expect(here('var/lib/rpm-state')).toBe(false);
    expect(here('var/lib/dpkg-keep/x')).toBe(true);
    expect(report.totalFiles).toBe(2);
  });
});
