import { UserError } from '@mkinitrd-pkg/common';

/**
 * Reading the headers of a PE32+ image (a UKI or systemd-stub), and the two header fields
 * objcopy leaves non-reproducible. Layout: Microsoft PE/COFF specification ("PE Format"):
 * e_lfanew at 0x3c → "PE\0\0" → COFF header (20 bytes) → optional header → section table.
 */
export interface PeSection {
  name: string;
  virtualAddress: number;
  virtualSize: number;
  rawOffset: number;
  rawSize: number;
}

export interface PeHeaders {
  imageBase: bigint;
  sectionAlignment: number;
  fileAlignment: number;
  sizeOfImage: number;
  timeDateStamp: number;
  /** File offsets of the fields rewritten for reproducibility. */
  timeDateStampOffset: number;
  checkSumOffset: number;
  /** Data directory 4: the Authenticode signature (file offset and size; 0 when unsigned). */
  certificateTable: { offset: number; size: number };
  sections: PeSection[];
}

export function readPeHeaders(buf: Buffer, what = 'PE image'): PeHeaders {
  const bad = (why: string) => new UserError('INPUT', `${what} is not a PE32+ image: ${why}`);
  if (buf.length < 0x40 || buf.toString('latin1', 0, 2) !== 'MZ') throw bad('no MZ header');
  const pe = buf.readUInt32LE(0x3c);
  if (pe + 24 > buf.length || buf.toString('latin1', pe, pe + 4) !== 'PE\0\0') throw bad('no PE signature');
  const coff = pe + 4;
  const sectionCount = buf.readUInt16LE(coff + 2);
  const optionalSize = buf.readUInt16LE(coff + 16);
  const opt = coff + 20;
  if (buf.readUInt16LE(opt) !== 0x20b) throw bad('not PE32+ (optional header magic)');
  const dataDirs = opt + 112;
  const sections: PeSection[] = [];
  const table = opt + optionalSize;
  if (table + sectionCount * 40 > buf.length) throw bad('section table beyond the end of the file');
  for (let i = 0; i < sectionCount; i++) {
    const s = table + i * 40;
    sections.push({
      name: buf.toString('latin1', s, s + 8).replace(/\0+$/, ''),
      virtualSize: buf.readUInt32LE(s + 8),
      virtualAddress: buf.readUInt32LE(s + 12),
      rawSize: buf.readUInt32LE(s + 16),
      rawOffset: buf.readUInt32LE(s + 20),
    });
  }
  return {
    imageBase: buf.readBigUInt64LE(opt + 24),
    sectionAlignment: buf.readUInt32LE(opt + 32),
    fileAlignment: buf.readUInt32LE(opt + 36),
    sizeOfImage: buf.readUInt32LE(opt + 56),
    timeDateStamp: buf.readUInt32LE(coff + 4),
    timeDateStampOffset: coff + 4,
    checkSumOffset: opt + 64,
    certificateTable: { offset: buf.readUInt32LE(dataDirs + 4 * 8), size: buf.readUInt32LE(dataDirs + 4 * 8 + 4) },
    sections,
  };
}

/** A section's bytes (its virtual size: the raw data is padded to the file alignment). */
export function sectionData(buf: Buffer, section: PeSection): Buffer {
  return buf.subarray(section.rawOffset, section.rawOffset + Math.min(section.virtualSize || section.rawSize, section.rawSize));
}

/** The PE checksum (imagehlp's CheckSumMappedFile): 16-bit one's-complement-style sum + length. */
export function peChecksum(buf: Buffer, checkSumOffset: number): number {
  let sum = 0;
  for (let i = 0; i + 1 < buf.length; i += 2) {
    if (i === checkSumOffset || i === checkSumOffset + 2) continue;
    sum += buf.readUInt16LE(i);
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  if (buf.length % 2) {
    sum += buf[buf.length - 1]!;
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  return ((sum & 0xffff) + buf.length) >>> 0;
}

/**
 * objcopy (binutils 2.40) stamps the current time into the COFF header, which changes the
 * checksum too: set the time to SOURCE_DATE_EPOCH and recompute the checksum, so the same
 * inputs give the same bytes.
 */
export function normalizePeTimestamp(buf: Buffer, epoch: number): void {
  const h = readPeHeaders(buf);
  buf.writeUInt32LE(epoch >>> 0, h.timeDateStampOffset);
  buf.writeUInt32LE(peChecksum(buf, h.checkSumOffset), h.checkSumOffset);
}
