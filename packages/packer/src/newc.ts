/**
 * The "newc" cpio format, as the kernel reads it for the initramfs.
 *
 * Primary source: the kernel's Documentation/driver-api/early-userspace/buffer-format.rst
 * (and init/initramfs.c, lib/earlycpio.c). In short:
 *
 *   header  = "070701" + 13 fields of 8 ASCII hex digits:
 *             ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
 *             rdevmajor, rdevminor, namesize (including the NUL), check (0 for newc)
 *   member  = header (110 bytes) + name + NUL, padded with NULs to a multiple of 4,
 *             then filesize bytes of data, padded to a multiple of 4
 *   archive = members…, then a member named "TRAILER!!!" (which also resets the
 *             hard-link table, so archives may simply be concatenated)
 *
 * "070702" is the same layout with `check` = the 32-bit sum of the data bytes; the
 * kernel only accepts 070701, we read both.
 *
 * Names are handled as "binary strings" (latin1: one char per byte) inside the packer so
 * that any byte sequence a filesystem can hold survives unchanged and sorts bytewise.
 */
import { UserError } from '@mkinitrd-pkg/common';

export const NEWC_MAGIC = '070701';
export const NEWC_CRC_MAGIC = '070702';
export const HEADER_SIZE = 110;
export const TRAILER_NAME = 'TRAILER!!!';
/** 32-bit fields: anything larger cannot be represented. */
export const U32_MAX = 0xffff_ffff;

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

export type EntryType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';

export function typeOfMode(mode: number): EntryType | undefined {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return 'file';
    case S_IFDIR:
      return 'dir';
    case S_IFLNK:
      return 'symlink';
    case S_IFCHR:
      return 'char';
    case S_IFBLK:
      return 'block';
    case S_IFIFO:
      return 'fifo';
    case S_IFSOCK:
      return 'socket';
    default:
      return undefined;
  }
}

/** The numeric fields of one newc header. */
export interface NewcHeader {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  filesize: number;
  devMajor: number;
  devMinor: number;
  rdevMajor: number;
  rdevMinor: number;
  /** Length of the name in bytes, including the terminating NUL. */
  namesize: number;
  check: number;
}

export const pad4 = (n: number): number => (4 - (n & 3)) & 3;

/** Bytes a member occupies: header + name + NUL + padding + data + padding. */
export function memberSize(nameBytes: number, dataBytes: number): number {
  const head = HEADER_SIZE + nameBytes + 1;
  return head + pad4(head) + dataBytes + pad4(dataBytes);
}

/** Size of the "TRAILER!!!" member (110 + 11 → 124 bytes). */
export const TRAILER_SIZE = memberSize(TRAILER_NAME.length, 0);

const HEX = Buffer.from('0123456789ABCDEF', 'latin1');

function putHex8(buf: Buffer, off: number, value: number): void {
  let v = value >>> 0;
  for (let i = 7; i >= 0; i--) {
    buf[off + i] = HEX[v & 15]!;
    v >>>= 4;
  }
}

/**
 * Write a header and the (binary-string) name into `buf` at `off`; returns the offset
 * after the name's padding. The caller guarantees the room (see memberSize) and that
 * every field fits in 32 bits (validated when the entry list is built).
 */
export function encodeHeader(buf: Buffer, off: number, h: Omit<NewcHeader, 'namesize' | 'check'> & { check?: number }, name: string): number {
  return encodeMember(buf, off, name, h.ino, h.mode, h.uid, h.gid, h.nlink, h.mtime, h.filesize, h.devMajor, h.devMinor, h.rdevMajor, h.rdevMinor, h.check ?? 0);
}

/** encodeHeader with positional fields: the writer's hot path allocates nothing per member. */
export function encodeMember(
  buf: Buffer,
  off: number,
  name: string,
  ino: number,
  mode: number,
  uid: number,
  gid: number,
  nlink: number,
  mtime: number,
  filesize: number,
  devMajor: number,
  devMinor: number,
  rdevMajor: number,
  rdevMinor: number,
  check: number,
): number {
  buf[off] = 0x30; // "070701"
  buf[off + 1] = 0x37;
  buf[off + 2] = 0x30;
  buf[off + 3] = 0x37;
  buf[off + 4] = 0x30;
  buf[off + 5] = 0x31;
  putHex8(buf, off + 6, ino);
  putHex8(buf, off + 14, mode);
  putHex8(buf, off + 22, uid);
  putHex8(buf, off + 30, gid);
  putHex8(buf, off + 38, nlink);
  putHex8(buf, off + 46, mtime);
  putHex8(buf, off + 54, filesize);
  putHex8(buf, off + 62, devMajor);
  putHex8(buf, off + 70, devMinor);
  putHex8(buf, off + 78, rdevMajor);
  putHex8(buf, off + 86, rdevMinor);
  putHex8(buf, off + 94, name.length + 1);
  putHex8(buf, off + 102, check);
  let p = off + HEADER_SIZE;
  p += buf.write(name, p, 'latin1');
  buf[p++] = 0;
  const end = p + pad4(p - off);
  while (p < end) buf[p++] = 0;
  return p;
}

/** Write the TRAILER!!! member at `off`; returns the new offset. */
export function encodeTrailer(buf: Buffer, off: number): number {
  return encodeHeader(
    buf,
    off,
    { ino: 0, mode: 0, uid: 0, gid: 0, nlink: 1, mtime: 0, filesize: 0, devMajor: 0, devMinor: 0, rdevMajor: 0, rdevMinor: 0 },
    TRAILER_NAME,
  );
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  return -1;
}

function getHex8(buf: Buffer, off: number, what: string, where: string): number {
  let v = 0;
  for (let i = 0; i < 8; i++) {
    const d = hexValue(buf[off + i]!);
    if (d < 0) throw corrupt(`bad hex digit in the ${what} field of a cpio header${where}`);
    v = v * 16 + d;
  }
  return v;
}

export function corrupt(message: string): UserError {
  return new UserError('ARCHIVE_CORRUPT', message, {
    hint: 'the image is truncated, damaged, or not an initrd (newc cpio archives, uncompressed or zstd/xz/gzip/lz4/bzip2/lzma/lzo)',
  });
}

const FIELDS = ['ino', 'mode', 'uid', 'gid', 'nlink', 'mtime', 'filesize', 'devMajor', 'devMinor', 'rdevMajor', 'rdevMinor', 'namesize', 'check'] as const;

/** Parse the 110 header bytes (magic already checked by the caller or here). */
export function decodeHeader(buf: Buffer, where = ''): NewcHeader & { crc: boolean } {
  if (buf.length < HEADER_SIZE) throw corrupt(`truncated cpio header${where}`);
  const magic = buf.toString('latin1', 0, 6);
  if (magic !== NEWC_MAGIC && magic !== NEWC_CRC_MAGIC) {
    if (magic === '070707') throw corrupt(`old "odc" cpio header${where}: only newc (070701) is supported, as in the kernel`);
    throw corrupt(`no cpio magic${where} (found ${JSON.stringify(magic)})`);
  }
  const out = { crc: magic === NEWC_CRC_MAGIC } as NewcHeader & { crc: boolean };
  for (let i = 0; i < FIELDS.length; i++) out[FIELDS[i]!] = getHex8(buf, 6 + i * 8, FIELDS[i]!, where);
  return out;
}

/** Linux's dev_t split (glibc gnu_dev_major/minor), for st_rdev values from lstat. */
export function splitDev(dev: number): { major: number; minor: number } {
  const hi = Math.floor(dev / 0x1_0000_0000);
  const lo = dev >>> 0;
  const major = ((lo >>> 8) & 0xfff) | (hi & 0xffff_f000);
  const minor = (lo & 0xff) | (((lo >>> 12) | ((hi & 0xfff) << 20)) & 0xffff_ff00);
  return { major: major >>> 0, minor: minor >>> 0 };
}
