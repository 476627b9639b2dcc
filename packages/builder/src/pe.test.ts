import { describe, expect, it } from 'vitest';
import { normalizePeTimestamp, peChecksum, readPeHeaders } from './pe.js';

/** A minimal PE32+ header with two sections (layout: PE/COFF specification). */
function fakePe(timestamp: number): Buffer {
  const buf = Buffer.alloc(0x400);
  buf.write('MZ', 0, 'latin1');
  buf.writeUInt32LE(0x80, 0x3c);
  buf.write('PE\0\0', 0x80, 'latin1');
  const coff = 0x84;
  buf.writeUInt16LE(0x8664, coff);
  buf.writeUInt16LE(2, coff + 2);
  buf.writeUInt32LE(timestamp, coff + 4);
  buf.writeUInt16LE(240, coff + 16);
  const opt = coff + 20;
  buf.writeUInt16LE(0x20b, opt);
  buf.writeBigUInt64LE(0x140000000n, opt + 24);
  buf.writeUInt32LE(0x1000, opt + 32);
  buf.writeUInt32LE(0x200, opt + 36);
  buf.writeUInt32LE(0x3000, opt + 56);
  const table = opt + 240;
  for (const [i, name, va, size, raw] of [
    [0, '.text', 0x1000, 0x10, 0x200],
    [1, '.uname', 0x2000, 5, 0x300],
  ] as const) {
    buf.write(name, table + i * 40, 'latin1');
    buf.writeUInt32LE(size, table + i * 40 + 8);
    buf.writeUInt32LE(va, table + i * 40 + 12);
    buf.writeUInt32LE(0x100, table + i * 40 + 16);
    buf.writeUInt32LE(raw, table + i * 40 + 20);
  }
  buf.write('6.12', 0x300, 'latin1');
  return buf;
}

describe('PE headers', () => {
  it('reads image base, alignment and the section table', () => {
    const h = readPeHeaders(fakePe(1));
    expect(h.imageBase).toBe(0x140000000n);
    expect(h.sectionAlignment).toBe(0x1000);
    expect(h.sections.map((s) => [s.name, s.virtualAddress, s.virtualSize])).toEqual([
      ['.text', 0x1000, 0x10],
      ['.uname', 0x2000, 5],
    ]);
    expect(h.certificateTable.size).toBe(0);
  });

  it('rejects what is not PE32+ with a user error', () => {
    expect(() => readPeHeaders(Buffer.from('070701'), 'x.img')).toThrow('x.img is not a PE32+ image: no MZ header');
    const noPe = fakePe(1);
    noPe.write('XX', 0x80, 'latin1');
    expect(() => readPeHeaders(noPe)).toThrow(/no PE signature/);
  });

  it('normalises the timestamp: two builds at different times give the same bytes', () => {
    const a = fakePe(1_700_000_000);
    const b = fakePe(1_800_000_000);
    expect(a.equals(b)).toBe(false);
    normalizePeTimestamp(a, 1234);
    normalizePeTimestamp(b, 1234);
    expect(a.equals(b)).toBe(true);
    const h = readPeHeaders(a);
    expect(a.readUInt32LE(h.timeDateStampOffset)).toBe(1234);
    // The stored checksum is the checksum of the file with that field skipped.
    expect(a.readUInt32LE(h.checkSumOffset)).toBe(peChecksum(a, h.checkSumOffset));
    expect(a.readUInt32LE(h.checkSumOffset)).not.toBe(0);
  });
});
