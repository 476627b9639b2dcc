import { describe, expect, it } from 'vitest';
import { UserError, silentLogger } from '@mkinitrd-pkg/common';
import { globToRegExp } from '@mkinitrd-pkg/common';
import { emptyDatabase, parseModuleLines, parseModulesBuiltin, resolveModuleRequest } from './moddb.js';
import { parseModinfo } from './modinfo.js';
import { addDependencies, compileModulePatterns, selectModules } from './select.js';

const logger = silentLogger();

function fixtureDb() {
  const db = emptyDatabase();
  parseModuleLines(
    db,
    [
      'kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz kernel/fs/mbcache.ko.xz kernel/lib/crc16.ko.xz',
      'kernel/fs/jbd2/jbd2.ko.xz:',
      'kernel/fs/mbcache.ko.xz:',
      'kernel/lib/crc16.ko.xz:',
      'kernel/drivers/ata/ahci.ko.zst: kernel/drivers/ata/libahci.ko.zst kernel/drivers/ata/libata.ko.zst',
      'kernel/drivers/ata/libahci.ko.zst: kernel/drivers/ata/libata.ko.zst',
      'kernel/drivers/ata/libata.ko.zst:',
      'kernel/drivers/ata/pata_acpi.ko.zst: kernel/drivers/ata/libata.ko.zst',
      'kernel/drivers/ata/pata_amd.ko.zst: kernel/drivers/ata/libata.ko.zst',
      'kernel/drivers/hid/hid-generic.ko: kernel/drivers/hid/hid.ko',
      'kernel/drivers/hid/hid.ko:',
      'kernel/drivers/virtio/virtio_pci.ko.gz:',
      'kernel/drivers/block/virtio_blk.ko.gz:',
      'kernel/arch/x86/crypto/crc32c-intel.ko:',
      'kernel/crypto/crc32c_generic.ko:',
      'kernel/crypto/sub/deep/thing.ko:',
    ].join('\n'),
  );
  parseModuleLines(db, '# Soft dependencies extracted from modules themselves.\nsoftdep ext4 pre: crypto-crc32c\n');
  parseModuleLines(
    db,
    [
      '# Aliases extracted from modules themselves.',
      'alias crypto-crc32c crc32c_intel',
      'alias crypto-crc32c crc32c_generic',
      'alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci',
    ].join('\n'),
  );
  parseModulesBuiltin(db, 'kernel/drivers/input/serio/i8042.ko\nkernel/drivers/input/keyboard/atkbd.ko\n');
  return db;
}

function select(patterns: string[]) {
  return selectModules(fixtureDb(), compileModulePatterns(patterns), '6.1.0-test', logger);
}

describe('glob', () => {
  it('keeps * and ? inside a component and lets ** cross', () => {
    expect(globToRegExp('kernel/drivers/ata/*').test('kernel/drivers/ata/ahci.ko')).toBe(true);
    expect(globToRegExp('kernel/drivers/*').test('kernel/drivers/ata/ahci.ko')).toBe(false);
    expect(globToRegExp('kernel/crypto/**').test('kernel/crypto/sub/deep/thing.ko')).toBe(true);
    expect(globToRegExp('kernel/crypto/**').test('kernel/crypto')).toBe(true);
    expect(globToRegExp('**/thing.ko').test('thing.ko')).toBe(true);
    expect(globToRegExp('**/thing.ko').test('a/b/thing.ko')).toBe(true);
    expect(globToRegExp('a/**/b').test('a/b')).toBe(true);
    expect(globToRegExp('a/**/b').test('a/x/y/b')).toBe(true);
    expect(globToRegExp('ext?').test('ext4')).toBe(true);
    expect(globToRegExp('nls_[a-c]*').test('nls_cp437')).toBe(true);
    expect(globToRegExp('nls_[!a-c]*').test('nls_cp437')).toBe(false);
    expect(globToRegExp('a.b').test('axb')).toBe(false);
  });
});

describe('module database', () => {
  it('parses modules.dep with compressed modules and normalises names', () => {
    const db = fixtureDb();
    expect(db.modules.get('ext4')).toEqual({
      name: 'ext4',
      path: 'kernel/fs/ext4/ext4.ko.xz',
      deps: ['jbd2', 'mbcache', 'crc16'],
    });
    expect(db.modules.get('hid_generic')?.deps).toEqual(['hid']);
    expect(db.modules.has('crc32c_intel')).toBe(true);
    expect(db.builtin).toEqual(new Set(['i8042', 'atkbd']));
    expect(db.softdeps.get('ext4')).toEqual({ pre: ['crypto-crc32c'], post: [] });
  });

  it('resolves soft dependency names like modprobe: module name, then aliases (exact, then globs)', () => {
    const db = fixtureDb();
    expect(resolveModuleRequest(db, 'crc16')).toEqual(['crc16']);
    expect(resolveModuleRequest(db, 'crypto-crc32c')).toEqual(['crc32c_intel', 'crc32c_generic']);
    expect(resolveModuleRequest(db, 'crypto_crc32c')).toEqual(['crc32c_intel', 'crc32c_generic']);
    expect(resolveModuleRequest(db, 'pci:v00001AF4d00001000sv00001AF4sd00000001bc01sc00i00')).toEqual(['virtio_pci']);
    expect(resolveModuleRequest(db, 'nls')).toEqual([]);
  });

  it('parses modinfo -0 output (kmod 30 mixes "key:" and "key=" records)', () => {
    const out = [
      'filename:       /m/kernel/drivers/net/e100.ko',
      'firmware=e100/d102e_ucode.bin',
      'firmware=e100/d101s_ucode.bin',
      'signature=AA:BB:\n\t\tCC:DD',
      'parm:           debug:Debug level (int)',
      'filename:       /m/kernel/fs/ext4/ext4.ko.xz',
      'softdep=pre: crypto-crc32c post: foo',
      '',
    ].join('\0');
    expect(parseModinfo(out)).toEqual([
      { filename: '/m/kernel/drivers/net/e100.ko', firmware: ['e100/d102e_ucode.bin', 'e100/d101s_ucode.bin'], softdeps: { pre: [], post: [] } },
      { filename: '/m/kernel/fs/ext4/ext4.ko.xz', firmware: [], softdeps: { pre: ['crypto-crc32c'], post: ['foo'] } },
    ]);
  });
});

describe('selectModules', () => {
  it('matches bare words against names (- and _ alike, globs allowed)', () => {
    expect([...select(['ext4', 'hid-generic', 'virtio*']).selected].sort()).toEqual(['ext4', 'hid_generic', 'virtio_blk', 'virtio_pci']);
  });

  it('matches paths with and without the compression and .ko suffix', () => {
    expect([...select(['kernel/fs/ext4/ext4.ko']).selected]).toEqual(['ext4']);
    expect([...select(['kernel/fs/ext4/ext4']).selected]).toEqual(['ext4']);
    expect([...select(['kernel/fs/ext4/ext4.ko.xz']).selected]).toEqual(['ext4']);
  });

  it('treats a trailing / as the whole tree and * as one level', () => {
    expect(select(['kernel/crypto/']).selected).toEqual(new Set(['crc32c_generic', 'thing']));
    expect(select(['kernel/crypto/*']).selected).toEqual(new Set(['crc32c_generic']));
    expect(select(['kernel/crypto/**']).selected).toEqual(new Set(['crc32c_generic', 'thing']));
  });

  it('lets later patterns override earlier ones, with - excluding', () => {
    const s = select(['kernel/drivers/ata/*', '-kernel/drivers/ata/pata_*', 'pata_amd']);
    expect([...s.selected].sort()).toEqual(['ahci', 'libahci', 'libata', 'pata_amd']);
    expect([...s.excluded]).toEqual(['pata_acpi']);
    const t = select(['pata_amd', '-kernel/drivers/ata/']);
    expect(t.selected.size).toBe(0);
  });

  it('accepts explicit built-in modules and globs that match nothing', () => {
    const s = select(['i8042', 'atkbd', 'nonexistent*', 'kernel/drivers/input/serio/i8042.ko', '-nosuchmodule']);
    expect(s.selected.size).toBe(0);
    expect(s.builtinRequested).toEqual(['i8042', 'atkbd', 'kernel/drivers/input/serio/i8042.ko']);
  });

  it('fails with MODULE_NOT_FOUND and suggestions for an explicit name that does not exist', () => {
    let error: unknown;
    try {
      select(['ext4', 'ext5', 'kernel/fs/nope/nope.ko']);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).code).toBe('MODULE_NOT_FOUND');
    expect((error as UserError).message).toContain('"ext5"');
    expect((error as UserError).message).toContain('"kernel/fs/nope/nope.ko"');
    expect((error as UserError).hint).toContain('glob');
  });

  it('rejects empty and climbing patterns', () => {
    expect(() => compileModulePatterns(['-'])).toThrow(UserError);
    expect(() => compileModulePatterns(['kernel/../x'])).toThrow(UserError);
  });
});

describe('addDependencies', () => {
  it('adds hard dependencies and soft dependencies via aliases', () => {
    const db = fixtureDb();
    const closure = new Set<string>();
    addDependencies(db, closure, ['ext4'], new Set(), new Map(), logger);
    expect([...closure].sort()).toEqual(['crc16', 'crc32c_generic', 'crc32c_intel', 'ext4', 'jbd2', 'mbcache']);
  });

  it('skips excluded soft dependencies but keeps excluded hard ones', () => {
    const db = fixtureDb();
    const s = selectModules(db, compileModulePatterns(['ext4', '-crc32c*', '-jbd2']), 'k', logger);
    const closure = new Set<string>();
    addDependencies(db, closure, [...s.selected], s.excluded, new Map(), logger);
    expect([...closure].sort()).toEqual(['crc16', 'ext4', 'jbd2', 'mbcache']);
  });

  it('uses soft dependencies from modinfo and returns what it added', () => {
    const db = fixtureDb();
    const closure = new Set<string>(['hid']);
    const added = addDependencies(db, closure, ['hid'], new Set(), new Map([['hid', { pre: [], post: ['hid-generic'] }]]), logger);
    expect(added).toEqual(['hid_generic']);
  });
});
