import { describe, expect, it } from 'vitest';
import { UserError } from '@mkinitrd-pkg/common';
import { decodeHeader, encodeHeader, encodeTrailer, memberSize, splitDev, TRAILER_SIZE } from './newc.js';
import { entryFromStat, finishEntries, MAX_NAME_BYTES, type PackEntry, type StatLike } from './scan.js';
import { planChunks } from './writer.js';
import { detectFormat, resolveLevel } from './compress.js';

const REG = 0o100644;
const stat = (over: Partial<StatLike> = {}): StatLike => ({ mode: REG, uid: 1000, gid: 1000, size: 10, mtimeMs: 1_700_000_000_500, nlink: 1, rdev: 0, ...over });
const path = Buffer.from('/x');

function expectLimit(fn: () => unknown, code = 'ARCHIVE_LIMIT'): UserError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).code).toBe(code);
    return error as UserError;
  }
  throw new Error('expected a UserError');
}

describe('newc header', () => {
  it('encodes the 110-byte header, the NUL-terminated name and padding (buffer-format.rst)', () => {
    const buf = Buffer.alloc(256);
    const end = encodeHeader(
      buf,
      0,
      { ino: 1, mode: 0o100755, uid: 0, gid: 0, nlink: 1, mtime: 0x65000000, filesize: 5, devMajor: 0, devMinor: 0, rdevMajor: 0, rdevMinor: 0 },
      'bin/sh',
    );
    expect(buf.toString('latin1', 0, 110)).toBe(
      '070701' + '00000001' + '000081ED' + '00000000' + '00000000' + '00000001' + '65000000' + '00000005' + '00000000'.repeat(4) + '00000007' + '00000000',
    );
    expect(buf.toString('latin1', 110, 117)).toBe('bin/sh\0');
    expect(end).toBe(120); // 110 + 7 → padded to 120
    expect(end).toBe(memberSize(6, 0));
    const h = decodeHeader(buf);
    expect(h).toMatchObject({ ino: 1, mode: 0o100755, mtime: 0x65000000, filesize: 5, namesize: 7, crc: false });
  });

  it('writes a 124-byte trailer and refuses bad magic or hex', () => {
    const buf = Buffer.alloc(200);
    expect(encodeTrailer(buf, 0)).toBe(TRAILER_SIZE);
    expect(TRAILER_SIZE).toBe(124);
    expect(buf.toString('latin1', 110, 120)).toBe('TRAILER!!!');
    const bad = Buffer.from(buf);
    bad.write('070707', 0, 'latin1');
    expect(expectLimit(() => decodeHeader(bad), 'ARCHIVE_CORRUPT').message).toMatch(/odc/);
    const hex = Buffer.from(buf);
    hex[20] = 0x7a;
    expectLimit(() => decodeHeader(hex), 'ARCHIVE_CORRUPT');
  });

  it('splits dev_t like glibc', () => {
    expect(splitDev(0x0103)).toEqual({ major: 1, minor: 3 });
    expect(splitDev(0x0801)).toEqual({ major: 8, minor: 1 });
    // major 259, minor 300000 (makedev: minor low byte, major, minor high bits)
    const dev = (300000 & 0xff) | ((259 & 0xfff) << 8) | ((300000 & ~0xff) << 12);
    expect(splitDev(dev >>> 0)).toEqual({ major: 259, minor: 300000 });
  });

  it('detects segment formats by magic', () => {
    expect(detectFormat(Buffer.from('070701000'))).toBe('none');
    expect(detectFormat(Buffer.from('28b52ffd0000', 'hex'))).toBe('zstd');
    expect(detectFormat(Buffer.from('fd377a585a000004', 'hex'))).toBe('xz');
    expect(detectFormat(Buffer.from('1f8b0800', 'hex'))).toBe('gzip');
    expect(detectFormat(Buffer.from('02214c18', 'hex'))).toBe('lz4');
    expect(detectFormat(Buffer.from('hello!!!'))).toBeUndefined();
  });

  it('validates compression levels', () => {
    expect(resolveLevel('zstd', undefined)).toBe(3);
    expect(resolveLevel('xz', 9)).toBe(9);
    expectLimit(() => resolveLevel('gzip', 12), 'USAGE');
    expectLimit(() => resolveLevel('none', 3), 'USAGE');
  });
});

describe('entryFromStat limits (what newc cannot hold)', () => {
  it('refuses files of 4 GiB or more, accepts 4 GiB − 1', () => {
    expect(entryFromStat('big', path, stat({ size: 2 ** 32 - 1 }), {}).size).toBe(2 ** 32 - 1);
    expect(expectLimit(() => entryFromStat('big', path, stat({ size: 2 ** 32 }), {})).message).toMatch(/4 GiB/);
  });

  it('refuses mtimes beyond 32 bits unless clamped, and negative mtimes', () => {
    const future = stat({ mtimeMs: 2 ** 32 * 1000 });
    expect(expectLimit(() => entryFromStat('f', path, future, {})).hint).toMatch(/source-date-epoch/);
    expect(entryFromStat('f', path, future, { sourceDateEpoch: 1_600_000_000 }).mtime).toBe(1_600_000_000);
    expect(entryFromStat('f', path, stat({ mtimeMs: (2 ** 32 - 1) * 1000 + 999 }), {}).mtime).toBe(2 ** 32 - 1);
    expectLimit(() => entryFromStat('f', path, stat({ mtimeMs: -1000 }), {}));
  });

  it('clamps to SOURCE_DATE_EPOCH but keeps older times; normalises owners', () => {
    const e = entryFromStat('f', path, stat(), { sourceDateEpoch: 1_800_000_000, owner: 'root' });
    expect(e.mtime).toBe(1_700_000_000);
    expect([e.uid, e.gid]).toEqual([0, 0]);
    expect(entryFromStat('f', path, stat(), { owner: 'keep' }).uid).toBe(1000);
  });

  it('refuses names the kernel would refuse and unknown types', () => {
    expectLimit(() => entryFromStat('a'.repeat(MAX_NAME_BYTES + 1), path, stat(), {}));
    expectLimit(() => entryFromStat('x', path, stat({ mode: 0o160644 }), {}), 'INPUT');
  });

  it('stores device numbers and symlink targets', () => {
    const dev = entryFromStat('null', path, stat({ mode: 0o020666, rdev: 0x0103, size: 0 }), {});
    expect([dev.type, dev.rdevMajor, dev.rdevMinor, dev.size, dev.readData]).toEqual(['char', 1, 3, 0, false]);
    const link = entryFromStat('sh', path, stat({ mode: 0o120777, size: 4 }), {}, 'bash');
    expect([link.type, link.size, link.linkTarget]).toEqual(['symlink', 4, 'bash']);
  });
});

function entries(names: string[], sizes: Record<string, number> = {}): PackEntry[] {
  return names.map((name) => entryFromStat(name, path, stat(name.endsWith('/') ? { mode: 0o040755 } : { size: sizes[name] ?? 10 }), {}));
}

describe('finishEntries and planChunks', () => {
  it('assigns inodes in name order, shares them in a link group, puts the data on the last member', () => {
    const list = entries(['a', 'b', 'c', 'd']);
    finishEntries(list, [[list[3]!, list[1]!]]);
    expect(list.map((e) => e.ino)).toEqual([1, 2, 3, 2]);
    expect(list.map((e) => e.nlink)).toEqual([1, 2, 1, 2]);
    expect(list.map((e) => e.size)).toEqual([10, 0, 10, 10]);
    expect(list[1]!.readData).toBe(false);
  });

  it('gives directories 2 + subdirectories links', () => {
    const list = ['d', 'd/e', 'd/e/f', 'd/g'].map((name) => entryFromStat(name, path, stat({ mode: 0o040755 }), {}));
    finishEntries(list, []);
    expect(list.map((e) => e.nlink)).toEqual([4, 3, 2, 2]);
  });

  it('cuts one archive into frames at member boundaries, inside hard-link groups too; big members alone; one trailer at the end', () => {
    const names = Array.from({ length: 20 }, (_, i) => `f${String(i).padStart(2, '0')}`);
    const list = entries(names, { f10: 5000 });
    for (const e of list) if (e.name !== 'f10') e.size = 400;
    finishEntries(list, [[list[2]!, list[7]!]]);
    const chunks = planChunks(list, 2048);
    // contiguous, complete cover
    expect(chunks[0]!.start).toBe(0);
    for (let i = 1; i < chunks.length; i++) expect(chunks[i]!.start).toBe(chunks[i - 1]!.end);
    expect(chunks.at(-1)!.end).toBe(list.length);
    // only the last frame carries the TRAILER!!!
    expect(chunks.map((c) => c.trailer)).toEqual(chunks.map((_, i) => i === chunks.length - 1));
    // the kernel keeps its hard-link table across frames: a group may be split (f02 … f07)
    const chunkOf = (i: number) => chunks.findIndex((c) => c.start <= i && i < c.end);
    expect(chunkOf(2)).not.toBe(chunkOf(7));
    const big = chunks[chunkOf(10)]!;
    expect([big.start, big.end]).toEqual([10, 11]);
    // sizes are exact, and no frame but a lone big member exceeds the target
    let total = 0;
    for (const c of chunks) {
      let bytes = c.trailer ? TRAILER_SIZE : 0;
      for (let i = c.start; i < c.end; i++) bytes += memberSize(list[i]!.name.length, list[i]!.size);
      expect(c.bytes).toBe(bytes);
      if (c.end - c.start > 1) expect(c.bytes).toBeLessThanOrEqual(2048);
      total += c.bytes;
    }
    expect(total).toBe(list.reduce((n, e) => n + memberSize(e.name.length, e.size), TRAILER_SIZE));
    expect(planChunks(list, 2048)).toEqual(chunks);
    // an empty tree is one frame holding just the trailer
    expect(planChunks([], 2048)).toEqual([{ start: 0, end: 0, bytes: TRAILER_SIZE, trailer: true }]);
  });
});
