/**
 * Streaming reader for initrd images: every segment (uncompressed newc archives,
 * compressed runs), every archive in a segment, every member — the way the kernel walks
 * the initramfs (init/initramfs.c: NUL padding is skipped, the next segment is recognised
 * by its magic, a segment may hold several archives each ending in TRAILER!!!).
 *
 * Decompression streams through `zstd -dc`, `xz -dc`, `lz4 -dc`, `bzip2 -dc`, `lzop -dc`,
 * `xz --format=lzma -dc` or node's zlib (gzip); nothing holds a whole image or member in
 * memory.
 */
import { closeSync, constants as fsConstants, fstatSync, openSync, read, readSync } from 'node:fs';
import { createInflateRaw, crc32 } from 'node:zlib';
import { UserError, isErrnoException } from '@mkinitrd-pkg/common';
import { ByteReader } from './bytes.js';
import { decompressorCommand, detectFormat, spawnFilter, type SegmentFormat } from './compress.js';
import { bzip2RunEnd, lzoEnd, xzRunEnd, zstdRunEnd } from './members.js';

export { zstdRunEnd };
import { HEADER_SIZE, TRAILER_NAME, corrupt, decodeHeader, pad4, typeOfMode, type EntryType } from './newc.js';

/** How many entries of each kind an archive holds (what inspect reports and extract wrote). */
export interface EntryCounts {
  entries: number;
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  devices: number;
  fifos: number;
  sockets: number;
}

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

/**
 * Open the image once; everything after reads through this descriptor, so the path can
 * not be swapped underneath. O_NONBLOCK: opening a FIFO must not wait for a writer (it is
 * then refused: an image is a regular file).
 */
function openImage(path: string): { fd: number; size: number } {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (error) {
    throw openError(path, error);
  }
  const st = fstatSync(fd);
  if (!st.isFile()) {
    closeSync(fd);
    throw new UserError('INPUT', `${path} is not a regular file`, { hint: 'inspect and extract read initrd image files, not devices, FIFOs or directories' });
  }
  return { fd, size: st.size };
}

/** Every member of every segment of the image at `path`, in order. */
export async function* readImage(path: string): AsyncGenerator<ImageMember, void, undefined> {
  for await (const event of readImageEvents(path)) if (event.kind === 'member') yield event.member;
}

const isMagic = (head: Buffer) => detectFormat(head) !== undefined;

/**
 * readImage with segment boundaries and per-segment statistics (what `inspect` shows).
 * A segment is a run of members of one format, read as the kernel reads the image
 * (init/initramfs.c unpack_to_rootfs): skip NUL padding, pick the decompressor by magic,
 * continue right after what it consumed (see members.ts), whatever format comes next.
 */
export async function* readImageEvents(path: string): AsyncGenerator<ImageEvent, void, undefined> {
  const { fd, size } = openImage(path);
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
            : `unrecognised data at byte ${offset} of ${path} (${head.toString('hex')}): not a cpio archive nor a compression the kernel knows`,
        );
      }
      const segment: ImageSegment = { index, offset, format };
      yield { kind: 'segment', segment };
      const what = `${format === 'none' ? 'cpio' : format} segment ${index} (at byte ${offset}) of ${path}`;
      let end: number | undefined;
      let gzipEnd: { end: number } | undefined;
      let source: AsyncGenerator<Buffer, void, undefined>;
      switch (format) {
        case 'none':
          source = fileBlocks(fd, offset, size);
          break;
        case 'gzip':
          gzipEnd = { end: size };
          source = gunzipRun(fd, offset, size, what, gzipEnd);
          break;
        default:
          end = memberRunEnd(fd, format, offset, size);
          source = decompressed(fd, format, offset, end, what);
      }
      const reader = new ByteReader(source, what);
      const stats: SegmentStats = { size: 0, uncompressedSize: 0, archives: 0, entries: 0 };
      try {
        for await (const event of parseArchives(reader, segment, format, stats)) yield event;
      } finally {
        await source.return(undefined);
      }
      stats.uncompressedSize = reader.position;
      if (format === 'none') end = offset + reader.position;
      else if (gzipEnd) end = gzipEnd.end;
      stats.size = end! - offset;
      yield { kind: 'segment-end', segment, stats };
      offset = end!;
      index++;
    }
  } finally {
    closeSync(fd);
  }
}

function memberRunEnd(fd: number, format: Exclude<SegmentFormat, 'none' | 'gzip'>, offset: number, size: number): number {
  switch (format) {
    case 'zstd':
      return zstdRunEnd(fd, offset, size);
    case 'xz':
      return xzRunEnd(fd, offset, size);
    case 'bzip2':
      return bzip2RunEnd(fd, offset, size, isMagic);
    case 'lzo':
      return lzoEnd(fd, offset, size) ?? size;
    case 'lz4':
    case 'lzma':
      return size;
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

function readAsync(fd: number, buf: Buffer, pos: number): Promise<number> {
  return new Promise((resolve, reject) => read(fd, buf, 0, buf.length, pos, (error, n) => (error ? reject(error) : resolve(n))));
}

async function* fileBlocks(fd: number, start: number, end: number): AsyncGenerator<Buffer, void, undefined> {
  let pos = start;
  while (pos < end) {
    const buf = Buffer.allocUnsafe(Math.min(READ_BLOCK, end - pos));
    const bytesRead = await readAsync(fd, buf, pos);
    if (bytesRead === 0) break;
    pos += bytesRead;
    yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
  }
}

/**
 * gzip members from `start` on, decoded in-process (RFC 1952): header parsed here, the
 * deflate data by zlib's raw inflate, which reports how many bytes it consumed, then the
 * CRC32/ISIZE trailer checked. Consecutive members form one run; `state.end` is where the
 * run ends (Node's gunzip would instead stop silently at NUL padding and fail on a
 * different magic after a member).
 */
async function* gunzipRun(fd: number, start: number, size: number, what: string, state: { end: number }): AsyncGenerator<Buffer, void, undefined> {
  let pos = start;
  for (let member = 0; ; member++) {
    const head = Buffer.alloc(10);
    readSync(fd, head, 0, 10, pos);
    if (head[0] !== 0x1f || (head[1] !== 0x8b && head[1] !== 0x9e)) {
      if (member > 0) break;
      throw corrupt(`${what}: no gzip header`);
    }
    if (head[2] !== 8) throw corrupt(`${what}: gzip member at byte ${pos} uses an unknown method ${head[2]}`);
    const flags = head[3]!;
    let p = pos + 10;
    const byte = () => {
      const b = Buffer.alloc(1);
      if (p >= size || readSync(fd, b, 0, 1, p) !== 1) throw corrupt(`${what}: truncated gzip header at byte ${pos}`);
      p++;
      return b[0]!;
    };
    if (flags & 4) {
      const xlen = byte() | (byte() << 8);
      p += xlen;
    }
    if (flags & 8) while (byte() !== 0);
    if (flags & 16) while (byte() !== 0);
    if (flags & 2) p += 2;
    if (p > size) throw corrupt(`${what}: truncated gzip header at byte ${pos}`);

    const inflate = createInflateRaw({ chunkSize: 1 << 18 });
    let ended = false;
    let failed: Error | undefined;
    inflate.on('end', () => (ended = true));
    inflate.on('error', (error) => {
      if (!ended) failed ??= error;
    });
    const pump = (async () => {
      for (let q = p; q < size && !ended && !failed && !inflate.destroyed; ) {
        const buf = Buffer.allocUnsafe(Math.min(READ_BLOCK, size - q));
        const n = await readAsync(fd, buf, q);
        if (n === 0) break;
        q += n;
        if (!inflate.write(buf.subarray(0, n)) && !ended && !inflate.destroyed) {
          await new Promise<void>((resolve) => {
            const done = () => {
              inflate.off('drain', done).off('end', done).off('error', done).off('close', done);
              resolve();
            };
            inflate.on('drain', done).on('end', done).on('error', done).on('close', done);
          });
        }
      }
      if (!ended && !failed && !inflate.destroyed) inflate.end();
    })();
    pump.catch((error: unknown) => inflate.destroy(error as Error));
    let crc = 0;
    let length = 0;
    let consumed = 0;
    try {
      for await (const chunk of inflate) {
        crc = crc32(chunk as Buffer, crc);
        length = (length + (chunk as Buffer).length) % 0x1_0000_0000;
        yield chunk as Buffer;
      }
      // The member ended: the pump may be waiting for a 'drain' that will never come now
      // (zlib stops taking input at the end of the deflate stream); closing releases it.
      consumed = inflate.bytesWritten;
      inflate.destroy();
      await pump;
    } catch (error) {
      if (error instanceof UserError) throw error;
      throw corrupt(`${what}: gzip: ${(error as Error).message}`);
    } finally {
      inflate.destroy();
    }
    if (failed) throw corrupt(`${what}: gzip: ${failed.message}`);
    p += consumed;
    const trailer = Buffer.alloc(8);
    if (p + 8 > size || readSync(fd, trailer, 0, 8, p) !== 8) throw corrupt(`${what}: gzip member at byte ${pos} is truncated`);
    if (trailer.readUInt32LE(0) !== crc >>> 0 || trailer.readUInt32LE(4) !== length) {
      throw corrupt(`${what}: gzip member at byte ${pos} fails its CRC32/length check`);
    }
    pos = p + 8;
    state.end = pos;
  }
}

/** Decompressed bytes of image[start, end), streamed through the format's program; a failure is ARCHIVE_CORRUPT. */
async function* decompressed(fd: number, format: Exclude<SegmentFormat, 'none' | 'gzip'>, start: number, end: number, what: string): AsyncGenerator<Buffer, void, undefined> {
  const [cmd, args] = decompressorCommand(format);
  const { child, exited } = spawnFilter(cmd, args, 'pipe');
  exited.catch(() => undefined);
  const stdin = child.stdin!;
  let stop = false;
  const feed = (async () => {
    for await (const block of fileBlocks(fd, start, end)) {
      if (stop) break;
      if (!stdin.write(block)) {
        await new Promise<void>((resolve) => {
          const done = () => {
            stdin.off('drain', done).off('close', done).off('error', done);
            resolve();
          };
          stdin.on('drain', done).on('close', done).on('error', done);
        });
      }
    }
    stdin.end();
  })();
  feed.catch(() => child.kill('SIGKILL'));
  let complete = false;
  try {
    for await (const chunk of child.stdout!) yield chunk as Buffer;
    complete = true;
  } finally {
    stop = true;
    if (!complete) child.kill('SIGKILL');
  }
  const status = await exited;
  if (status.code !== 0) {
    const message = status.stderr.trim().split('\n').slice(-2).join('; ') || `${cmd} exited with ${status.code ?? status.signal}`;
    throw corrupt(`${what}: ${message}`);
  }
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
