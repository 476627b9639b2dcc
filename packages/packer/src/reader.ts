/**
 * Streaming reader for initrd images: every segment (uncompressed newc archives,
 * compressed runs), every archive in a segment, every member — the way the kernel walks
 * the initramfs (init/initramfs.c: NUL padding is skipped, the next segment is recognised
 * by its magic, a segment may hold several archives each ending in TRAILER!!!).
 *
 * Decompression streams through `zstd -dc`, `xz -dc`, `lz4 -dc`, `bzip2 -dc` or node's
 * zlib (gzip); nothing holds a whole image or member in memory.
 */
import { closeSync, createReadStream, fstatSync, openSync, readSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { UserError, isErrnoException } from '@mkinitrd-pkg/common';
import { ByteReader } from './bytes.js';
import { decompressorCommand, detectFormat, spawnFilter, type SegmentFormat } from './compress.js';
import { HEADER_SIZE, TRAILER_NAME, corrupt, decodeHeader, pad4, typeOfMode, type EntryType } from './newc.js';

/** One member as stored in the image. */
export interface CpioEntry {
  /** Name as UTF-8 text (invalid bytes shown as U+FFFD; `rawName` has the exact bytes). */
  name: string;
  rawName: Buffer;
  type: EntryType;
  /** Full st_mode: type and permission bits. */
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  /** Seconds since the epoch. */
  mtime: number;
  /** Data bytes stored for this member (0 for the data-less members of a hard-link group). */
  size: number;
  ino: number;
  devMajor: number;
  devMinor: number;
  rdevMajor: number;
  rdevMinor: number;
  /** Symlink target. */
  linkTarget?: string;
  rawLinkTarget?: Buffer;
  /** Name of the earlier member of the same archive this one is a hard link of. */
  hardLinkTo?: string;
  rawHardLinkTo?: Buffer;
}

export interface ImageSegment {
  index: number;
  /** Byte offset of the segment in the image file. */
  offset: number;
  format: SegmentFormat;
}

export interface ImageMember {
  segment: ImageSegment;
  /** Index of the archive within its segment. */
  archive: number;
  entry: CpioEntry;
  /**
   * The member's data (regular files), valid until the iteration moves on; what is not
   * read is skipped. Empty for other types (a symlink's target is in entry.linkTarget).
   */
  data: AsyncIterable<Buffer>;
}

export interface SegmentStats {
  /** Bytes of the image the segment occupies (for gzip/xz/lz4/bzip2: up to the end of the file). */
  size: number;
  /** Bytes of newc data (after decompression). */
  uncompressedSize: number;
  archives: number;
  entries: number;
}

export type ImageEvent =
  | { kind: 'segment'; segment: ImageSegment }
  | { kind: 'member'; member: ImageMember }
  | { kind: 'segment-end'; segment: ImageSegment; stats: SegmentStats };

/** Longest name accepted (the kernel's limit is PATH_MAX; GNU cpio writes no longer). */
const MAX_NAME = 65536;
const MAX_LINK_TARGET = 65536;
const READ_BLOCK = 256 * 1024;
const NO_DATA: AsyncIterable<Buffer> = { async *[Symbol.asyncIterator]() {} };

function openError(path: string, error: unknown): UserError {
  if (isErrnoException(error) && error.code === 'ENOENT') return new UserError('INPUT', `${path} does not exist`);
  return new UserError('IO', `cannot read ${path}: ${(error as Error).message}`);
}

/** Every member of every segment of the image at `path`, in order. */
export async function* readImage(path: string): AsyncGenerator<ImageMember, void, undefined> {
  for await (const event of readImageEvents(path)) if (event.kind === 'member') yield event.member;
}

/** readImage with segment boundaries and per-segment statistics (what `inspect` shows). */
export async function* readImageEvents(path: string): AsyncGenerator<ImageEvent, void, undefined> {
  let size: number;
  let fd: number;
  try {
    fd = openSync(path, 'r');
    const st = fstatSync(fd);
    if (!st.isFile()) {
      closeSync(fd);
      throw new UserError('INPUT', `${path} is not a regular file`);
    }
    size = st.size;
  } catch (error) {
    if (error instanceof UserError) throw error;
    throw openError(path, error);
  }
  try {
    let offset = 0;
    let index = 0;
    for (;;) {
      offset = skipNulAt(fd, offset, size);
      if (offset >= size) break;
      const head = Buffer.alloc(8);
      readSync(fd, head, 0, 8, offset);
      const format = detectFormat(head);
      if (format === undefined) {
        throw corrupt(
          index === 0
            ? `${path} is not an initrd image (unknown data at the start: ${head.subarray(0, Math.min(8, size - offset)).toString('hex')})`
            : `unrecognised data at byte ${offset} of ${path} (${head.toString('hex')}): not a cpio archive nor a known compression`,
        );
      }
      const segment: ImageSegment = { index, offset, format };
      yield { kind: 'segment', segment };
      let end: number;
      let reader: ByteReader;
      let source: AsyncGenerator<Buffer, void, undefined>;
      const what = `${format === 'none' ? 'cpio' : format} segment ${index} (at byte ${offset}) of ${path}`;
      if (format === 'none') {
        source = fileBlocks(path, offset, size);
      } else {
        end = format === 'zstd' ? zstdRunEnd(fd, offset, size) : size;
        source = decompressed(path, format, offset, end, what);
      }
      reader = new ByteReader(source, what);
      const stats: SegmentStats = { size: 0, uncompressedSize: 0, archives: 0, entries: 0 };
      try {
        for await (const event of parseArchives(reader, segment, format, stats)) yield event;
      } finally {
        await source.return(undefined);
      }
      stats.uncompressedSize = reader.position;
      if (format === 'none') end = offset + reader.position;
      stats.size = end! - offset;
      yield { kind: 'segment-end', segment, stats };
      offset = end!;
      index++;
    }
  } finally {
    closeSync(fd);
  }
}

function skipNulAt(fd: number, offset: number, size: number): number {
  const buf = Buffer.allocUnsafe(4096);
  while (offset < size) {
    const n = readSync(fd, buf, 0, Math.min(buf.length, size - offset), offset);
    if (n <= 0) return size;
    let i = 0;
    while (i < n && buf[i] === 0) i++;
    offset += i;
    if (i < n) return offset;
  }
  return offset;
}

async function* fileBlocks(path: string, start: number, end: number): AsyncGenerator<Buffer, void, undefined> {
  const handle = await open(path, 'r').catch((error: unknown) => {
    throw openError(path, error);
  });
  try {
    let pos = start;
    while (pos < end) {
      const buf = Buffer.allocUnsafe(Math.min(READ_BLOCK, end - pos));
      const { bytesRead } = await handle.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) break;
      pos += bytesRead;
      yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
    }
  } finally {
    await handle.close();
  }
}

/** Decompressed bytes of image[start, end), streamed; a decompressor failure is ARCHIVE_CORRUPT. */
async function* decompressed(path: string, format: Exclude<SegmentFormat, 'none'>, start: number, end: number, what: string): AsyncGenerator<Buffer, void, undefined> {
  const input = createReadStream(path, { start, end: Math.max(start, end - 1), highWaterMark: 1 << 20 });
  if (format === 'gzip') {
    const zlib = await import('node:zlib');
    const gunzip = zlib.createGunzip({ chunkSize: 1 << 18 });
    input.on('error', (error) => gunzip.destroy(error));
    input.pipe(gunzip);
    try {
      for await (const chunk of gunzip) yield chunk as Buffer;
    } catch (error) {
      if (error instanceof UserError) throw error;
      throw corrupt(`${what}: gzip: ${(error as Error).message}`);
    } finally {
      input.destroy();
      gunzip.destroy();
    }
    return;
  }
  const [cmd, args] = decompressorCommand(format);
  const { child, exited } = spawnFilter(cmd, args, 'pipe');
  exited.catch(() => undefined);
  input.on('error', () => child.kill('SIGKILL'));
  input.pipe(child.stdin!);
  let complete = false;
  try {
    for await (const chunk of child.stdout!) yield chunk as Buffer;
    complete = true;
  } finally {
    input.destroy();
    if (!complete) child.kill('SIGKILL');
  }
  const status = await exited;
  if (status.code !== 0) {
    const message = status.stderr.trim().split('\n').slice(-2).join('; ') || `${cmd} exited with ${status.code ?? status.signal}`;
    throw corrupt(`${what}: ${message}`);
  }
}

/**
 * End of a run of zstd frames (and skippable frames) starting at `offset`, found by
 * walking frame and block headers (RFC 8878 §3.1) without decompressing. A damaged
 * header ends the walk at the end of the file; the decompressor then reports the damage.
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

/** The archives of one segment's newc stream. */
async function* parseArchives(reader: ByteReader, segment: ImageSegment, format: SegmentFormat, stats: SegmentStats): AsyncGenerator<ImageEvent, void, undefined> {
  for (;;) {
    if (!(await reader.skipNul())) return;
    const magic = await reader.peek(6);
    if (magic.toString('latin1', 0, 5) !== '07070') {
      // In an uncompressed segment, other data means the next segment starts here.
      if (format === 'none' && stats.archives > 0) return;
      throw corrupt(`no cpio archive at byte ${reader.position} of the ${format} segment at byte ${segment.offset} (found ${magic.toString('hex')})`);
    }
    yield* parseArchive(reader, segment, stats.archives, stats);
    stats.archives++;
  }
}

async function* parseArchive(reader: ByteReader, segment: ImageSegment, archive: number, stats: SegmentStats): AsyncGenerator<ImageEvent, void, undefined> {
  const links = new Map<string, Buffer>();
  for (;;) {
    const at = reader.position;
    const where = ` at byte ${at} of segment ${segment.index}`;
    const h = decodeHeader(await reader.read(HEADER_SIZE, 'cpio header'), where);
    if (h.namesize < 1 || h.namesize > MAX_NAME) throw corrupt(`implausible name size ${h.namesize} in the cpio header${where}`);
    const nameBytes = await reader.read(h.namesize, 'member name');
    await reader.skip(pad4(HEADER_SIZE + h.namesize), 'name padding');
    if (nameBytes[h.namesize - 1] !== 0) throw corrupt(`member name is not NUL-terminated${where}`);
    const rawName = Buffer.from(nameBytes.subarray(0, h.namesize - 1));
    const dataPad = pad4(h.filesize);
    if (rawName.length === TRAILER_NAME.length && rawName.toString('latin1') === TRAILER_NAME) {
      await reader.skip(h.filesize + dataPad, 'trailer data');
      return;
    }
    if (rawName.length === 0) throw corrupt(`member with an empty name${where}`);
    if (rawName.includes(0)) throw corrupt(`member name contains a NUL byte${where}`);
    const type = typeOfMode(h.mode);
    if (type === undefined) throw corrupt(`member ${rawName.toString('utf8')} has an unknown file type (mode ${h.mode.toString(8)})${where}`);
    const entry: CpioEntry = {
      name: rawName.toString('utf8'),
      rawName,
      type,
      mode: h.mode,
      uid: h.uid,
      gid: h.gid,
      nlink: h.nlink,
      mtime: h.mtime,
      size: h.filesize,
      ino: h.ino,
      devMajor: h.devMajor,
      devMinor: h.devMinor,
      rdevMajor: h.rdevMajor,
      rdevMinor: h.rdevMinor,
    };
    let data: AsyncIterable<Buffer> = NO_DATA;
    let fileData: MemberData | undefined;
    if (type === 'symlink') {
      if (h.filesize > MAX_LINK_TARGET) throw corrupt(`symlink ${entry.name} has an implausible target length ${h.filesize}${where}`);
      const target = Buffer.from(await reader.read(h.filesize, 'symlink target'));
      if (target.length === 0 || target.includes(0)) throw corrupt(`symlink ${entry.name} has an empty target or one with a NUL byte${where}`);
      entry.rawLinkTarget = target;
      entry.linkTarget = target.toString('utf8');
      await reader.skip(dataPad, 'data padding');
    } else if (type === 'file') {
      data = fileData = new MemberData(reader, h.filesize, h.crc ? h.check : undefined, entry.name);
    } else {
      // Directories, devices, fifos and sockets carry no data; skip whatever is there.
      await reader.skip(h.filesize + dataPad, 'member data');
    }
    if (h.nlink > 1 && type !== 'dir' && type !== 'symlink') {
      const key = `${h.ino}:${h.devMajor}:${h.devMinor}`;
      const first = links.get(key);
      if (first) {
        entry.rawHardLinkTo = first;
        entry.hardLinkTo = first.toString('utf8');
      } else links.set(key, rawName);
    }
    stats.entries++;
    yield { kind: 'member', member: { segment, archive, entry, data } };
    await fileData?.finish();
  }
}

/**
 * A member's data: iterable (possibly partly) by the consumer; `finish` skips what was
 * not read, the padding, and checks a 070702 sum.
 */
class MemberData implements AsyncIterable<Buffer> {
  private left: number;
  private sum = 0;

  constructor(
    private readonly reader: ByteReader,
    private readonly size: number,
    private readonly check: number | undefined,
    private readonly name: string,
  ) {
    this.left = size;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer, void, undefined> {
    for await (const piece of this.reader.take(this.left, `data of ${this.name}`)) {
      this.left -= piece.length;
      if (this.check !== undefined) this.add(piece);
      yield piece;
    }
  }

  private add(piece: Buffer): void {
    let sum = this.sum;
    for (let i = 0; i < piece.length; i++) sum = (sum + piece[i]!) >>> 0;
    this.sum = sum;
  }

  async finish(): Promise<void> {
    if (this.check !== undefined) {
      for await (const piece of this.reader.take(this.left, `data of ${this.name}`)) {
        this.left -= piece.length;
        this.add(piece);
      }
      if (this.sum !== this.check) throw corrupt(`checksum mismatch for ${this.name} (070702 archive)`);
    } else {
      await this.reader.skip(this.left, `data of ${this.name}`);
      this.left = 0;
    }
    await this.reader.skip(pad4(this.size), 'data padding');
  }
}
