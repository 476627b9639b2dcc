/**
 * Where a compressed member of an initrd ends, found the way the kernel's decompressors
 * find it (init/initramfs.c: unpack_to_rootfs hands the rest of the image to the
 * decompressor picked by magic, which reports how many bytes it consumed; the loop then
 * skips NUL padding and looks at the next magic). Userspace decompressors do not report
 * that, so we read the formats' own framing:
 *  - zstd: frame and block headers (RFC 8878 §3.1);
 *  - xz: the stream footer (xz-file-format §2.1.2: CRC32 of Backward Size and Stream
 *    Flags, the flags equal to the header's, "YZ"), confirmed by the Index indicator;
 *  - bzip2: the 48-bit end-of-stream magic 0x177245385090 + CRC, padded to a byte;
 *  - lzo (lzop files, lib/decompress_unlzo.c): the header, then blocks until a 0 length;
 *  - gzip is decoded in-process, which counts what it consumes (reader.ts);
 *  - lz4 legacy and lzma have no end marker the kernel uses before the end of the image:
 *    lib/decompress_unlz4.c consumes everything (skipping repeated legacy magics), so a
 *    member of those runs to the end of the file.
 */
import { readSync } from 'node:fs';
import { crc32 } from 'node:zlib';

const BLOCK = 1 << 20;

function readAt(fd: number, pos: number, n: number, size: number): Buffer {
  const len = Math.max(0, Math.min(n, size - pos));
  const buf = Buffer.alloc(len);
  let got = 0;
  while (got < len) {
    const r = readSync(fd, buf, got, len - got, pos + got);
    if (r <= 0) break;
    got += r;
  }
  return got === len ? buf : buf.subarray(0, got);
}

function skipNul(fd: number, pos: number, size: number): number {
  while (pos < size) {
    const b = readAt(fd, pos, 4096, size);
    let i = 0;
    while (i < b.length && b[i] === 0) i++;
    pos += i;
    if (i < b.length || b.length === 0) return pos;
  }
  return pos;
}

/**
 * End of a run of zstd frames (and skippable frames) starting at `offset`, found by
 * walking frame and block headers without decompressing. A damaged header ends the walk
 * at the end of the file; the decompressor then reports the damage.
 */
export function zstdRunEnd(fd: number, offset: number, size: number): number {
  const b = Buffer.alloc(18);
  const at = (pos: number, n: number) => (pos + n <= size ? readSync(fd, b, 0, n, pos) === n : false);
  let pos = offset;
  while (pos + 4 <= size) {
    if (!at(pos, 4)) return size;
    const magic = b.readUInt32LE(0);
    if ((magic & 0xfffffff0) >>> 0 === 0x184d2a50) {
      if (!at(pos + 4, 4)) return size;
      pos += 8 + b.readUInt32LE(0);
      continue;
    }
    if (magic !== 0xfd2fb528) break;
    if (!at(pos + 4, 1)) return size;
    const fhd = b[0]!;
    if (fhd & 0x08) return size; // reserved bit
    const fcsFlag = fhd >> 6;
    const single = (fhd >> 5) & 1;
    const checksum = (fhd >> 2) & 1;
    const dictBytes = [0, 1, 2, 4][fhd & 3]!;
    const fcsBytes = fcsFlag === 0 ? single : [1, 2, 4, 8][fcsFlag]!;
    let p = pos + 5 + (single ? 0 : 1) + dictBytes + fcsBytes;
    for (;;) {
      if (!at(p, 3)) return size;
      const header = b[0]! | (b[1]! << 8) | (b[2]! << 16);
      const last = header & 1;
      const type = (header >> 1) & 3;
      if (type === 3) return size;
      p += 3 + (type === 1 ? 1 : header >>> 3);
      if (last) break;
    }
    pos = p + (checksum ? 4 : 0);
  }
  return Math.min(pos, size);
}

const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);

/** End of one xz stream at `offset` (undefined: no valid footer found). */
function xzStreamEnd(fd: number, offset: number, size: number): number | undefined {
  const header = readAt(fd, offset, 12, size);
  if (header.length < 12 || !header.subarray(0, 6).equals(XZ_MAGIC)) return undefined;
  const f0 = header[6]!;
  const f1 = header[7]!;
  // Footers sit at offset + 12 + 4k; scan for "YZ" at offset + 22 + 4k.
  for (let pos = offset + 12; pos < size; pos += BLOCK) {
    const chunk = readAt(fd, pos, BLOCK + 12, size);
    for (let i = chunk.indexOf('YZ', 0, 'latin1'); i >= 0; i = chunk.indexOf('YZ', i + 1, 'latin1')) {
      const start = pos + i - 10; // footer start
      if (start < offset + 12 || (start - offset) % 4 !== 0 || i < 10) continue;
      if (chunk[i - 2] !== f0 || chunk[i - 1] !== f1) continue;
      if (crc32(chunk.subarray(i - 6, i)) !== chunk.readUInt32LE(i - 10)) continue;
      const backward = (chunk.readUInt32LE(i - 6) + 1) * 4;
      const index = start - backward;
      if (index < offset + 12 || readAt(fd, index, 1, size)[0] !== 0) continue;
      return start + 12;
    }
    if (chunk.length < BLOCK + 12) break;
  }
  return undefined;
}

/** End of a run of xz streams (with their NUL stream padding) at `offset`. */
export function xzRunEnd(fd: number, offset: number, size: number): number {
  let end = xzStreamEnd(fd, offset, size);
  if (end === undefined) return size; // damaged: let xz report it
  for (;;) {
    const next = skipNul(fd, end, size);
    if ((next - end) % 4 !== 0 || next >= size) return end;
    const more = xzStreamEnd(fd, next, size);
    if (more === undefined) return end;
    end = more;
  }
}

/** The bzip2 end-of-stream magic, at each of the 8 bit offsets: the 5 bytes fully inside it. */
const BZ_EOS = 0x177245385090n;
const BZ_PATTERNS = Array.from({ length: 8 }, (_, shift) => {
  // magic placed `shift` bits into its first byte: 56 bits cover it for shift ≤ 8
  const v = BZ_EOS << BigInt(64 - 48 - shift); // left-aligned in 64 bits
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64BE(v & 0xffffffffffffffffn);
  return { shift, bytes, middle: bytes.subarray(1, 6) };
});

function bzip2StreamEnd(fd: number, offset: number, size: number, isBoundary: (pos: number) => boolean): number | undefined {
  for (let pos = offset + 4; pos < size; pos += BLOCK) {
    const chunk = readAt(fd, pos, BLOCK + 16, size);
    const found: number[] = [];
    for (const p of BZ_PATTERNS) {
      for (let i = chunk.indexOf(p.middle); i >= 0; i = chunk.indexOf(p.middle, i + 1)) {
        const first = i - 1;
        if (first < 0 || first + 7 > chunk.length) continue;
        const maskHead = 0xff >> p.shift;
        if ((chunk[first]! & maskHead) !== (p.bytes[0]! & maskHead)) continue;
        const tailBits = (p.shift + 48) - 48; // bits of the magic in byte first+6
        if (tailBits > 0) {
          const maskTail = (0xff << (8 - tailBits)) & 0xff;
          if ((chunk[first + 6]! & maskTail) !== (p.bytes[6]! & maskTail)) continue;
        }
        // magic + 32-bit CRC, padded to a byte
        const bitEnd = (pos + first) * 8 + p.shift + 48 + 32;
        found.push(Math.ceil(bitEnd / 8));
      }
    }
    found.sort((a, b) => a - b);
    for (const end of found) if (end <= size && isBoundary(end)) return end;
    if (chunk.length < BLOCK + 16) break;
  }
  return undefined;
}

/** End of one lzop file at `offset` (undefined when its framing is damaged). */
export function lzoEnd(fd: number, offset: number, size: number): number | undefined {
  let p = offset + 9;
  const u8 = () => readAt(fd, p++, 1, size)[0];
  const u16 = () => {
    const b = readAt(fd, p, 2, size);
    p += 2;
    return b.length === 2 ? b.readUInt16BE(0) : undefined;
  };
  const u32 = () => {
    const b = readAt(fd, p, 4, size);
    p += 4;
    return b.length === 4 ? b.readUInt32BE(0) : undefined;
  };
  const version = u16();
  if (version === undefined) return undefined;
  u16(); // library version
  if (version >= 0x0940) u16(); // version needed
  u8(); // method
  if (version >= 0x0940) u8(); // level
  const flags = u32();
  if (flags === undefined) return undefined;
  if (flags & 0x800) u32(); // filter
  u32(); // mode
  u32(); // mtime low
  if (version >= 0x0940) u32(); // mtime high
  const nameLen = u8();
  if (nameLen === undefined) return undefined;
  p += nameLen + 4; // name, header checksum
  for (;;) {
    const dst = u32();
    if (dst === undefined) return undefined;
    if (dst === 0) return p;
    const src = u32();
    if (src === undefined || src > dst + dst / 16 + 64 + 3 + 64) return undefined;
    if (flags & 0x001) p += 4; // adler32 of the decompressed block
    if (flags & 0x100) p += 4; // crc32 of the decompressed block
    if (src < dst) {
      if (flags & 0x002) p += 4;
      if (flags & 0x200) p += 4;
    }
    p += src;
    if (p > size) return undefined;
  }
}

/** Is `pos` where the kernel would find the end, padding, or another member? */
export function boundaryChecker(fd: number, size: number, isMagic: (head: Buffer) => boolean): (pos: number) => boolean {
  return (pos) => {
    if (pos >= size) return pos === size;
    const next = skipNul(fd, pos, size);
    return next >= size || isMagic(readAt(fd, next, 8, size));
  };
}

/** End of a run of bzip2 streams at `offset` (the end of the file when none is found). */
export function bzip2RunEnd(fd: number, offset: number, size: number, isMagic: (head: Buffer) => boolean): number {
  const boundary = boundaryChecker(fd, size, isMagic);
  let end = bzip2StreamEnd(fd, offset, size, boundary);
  if (end === undefined) return size;
  for (;;) {
    const head = readAt(fd, end, 3, size);
    if (head.toString('latin1') !== 'BZh') return end;
    const more = bzip2StreamEnd(fd, end, size, boundary);
    if (more === undefined) return end;
    end = more;
  }
}
