/**
 * packTree: a directory → a reproducible initrd image.
 *
 *   [uncompressed newc archive of the microcode tree]      (optional, "early cpio")
 *   [main tree: ONE newc archive, compressed as independent frames]
 *
 * The kernel unpacks a concatenation of archives and compressed members (init/initramfs.c:
 * unpack_to_rootfs loops over the buffer, skipping NUL padding and picking a
 * decompressor by magic); see Documentation/driver-api/early-userspace/buffer-format.rst.
 * The main archive is cut into frames at member boundaries (see planChunks for why the
 * kernel accepts that), so every userspace tool that stops at the first TRAILER!!! still
 * sees the whole tree: decompressing the main part gives exactly what `none` writes.
 *
 * Memory stays bounded whatever the tree size:
 *  - none: one archive streamed through a reusable buffer (synchronous fs calls);
 *  - xz: one stream through `xz -T0` (parallel blocks inside the stream; see writeImage);
 *  - zstd, gzip, lz4: frames of ~chunkSize bytes compressed in parallel (zstd and gzip
 *    in the libuv thread pool, lz4 by one program per frame) with a bounded number
 *    in flight and written in order. A frame bigger than IN_MEMORY_LIMIT (a huge file) is
 *    streamed instead: gzip through a zlib stream, the others through their program (the
 *    in-process zstd binding only compresses whole buffers); without a `zstd` program such
 *    a frame is compressed in memory, with a warning.
 */
import { createHash } from 'node:crypto';
import { fdatasync, fstatSync, writeSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { UserError, withAtomicOutput, getLogger, type Logger } from '@mkinitrd-pkg/common';
import { minorGc } from './gc.js';
import { compressorCommand, compressorIdentity, externalCompress, gzipCompress, resolveLevel, spawnFilter, zstdCompress, type Compression } from './compress.js';
import { U32_MAX } from './newc.js';
import { scanTree, displayName, type PackEntry, type ScanOptions, type ScanResult } from './scan.js';
import { ArchiveFiller, MIN_FILL_BUFFER, planLayeredChunks, type Chunk } from './writer.js';

/**
 * Where compressed frames of the base layer are kept between runs, by the digest of
 * everything that decides their bytes (frameKey). The store checks what it returns
 * (builder/src/cache.ts: a damaged frame is dropped, never used); `put` failures are
 * the store's business (a full cache disk must not fail a build).
 */
export interface FrameCache {
  get(key: string): Promise<Buffer | undefined>;
  put(key: string, frame: Buffer): Promise<void>;
}

/** Bump when the bytes of a frame for the same input could change (the key's format). */
export const FRAME_CACHE_FORMAT = 1;

/**
 * The key of one compressed frame: its uncompressed bytes (the newc members, headers and
 * data: everything the frame holds), the compressor and its version, the level, and the
 * format. Content-addressed, so a hit is by construction the frame a compression would
 * give: an image built with cached frames is byte-identical to one built without.
 */
export function frameKey(compressor: string, level: number, data: Buffer): string {
  return createHash('sha256').update(`mkinitrd-pkg frame ${FRAME_CACHE_FORMAT}\0${compressor}\0${level}\0`).update(data).digest('hex');
}

export interface PackOptions extends ScanOptions {
  /** The directory to pack (a symlink here is resolved once; inside the tree never followed). */
  source: string;
  /** The image to write (atomically: temp file in the same directory + rename). */
  output: string;
  /** Default zstd. */
  compression?: Compression;
  /** Compression level; default: see DEFAULT_LEVELS (zstd 3, gzip 6, xz 6, lz4 9). */
  level?: number;
  /** A tree holding kernel/x86/microcode/*.bin, packed first as an uncompressed archive. */
  microcode?: string;
  /** Mode of the output file, default 0o600. */
  mode?: number;
  /** Target size of each separately compressed frame of the main archive, default 8 MiB. */
  chunkSize?: number;
  /** Frames compressed at once; default: the number of CPUs, fewer at high zstd levels (memory). */
  parallelism?: number;
  logger?: Logger;
  /**
   * Reuse compressed frames from this store, and fill it: the base layer's frames (see
   * ScanOptions.lateNames) for every kernel, a kernel part's frames when the same kernel
   * is built again. Only frames compressed from memory (zstd, gzip, lz4) are cached.
   */
  frameCache?: FrameCache;
  /** Called with (bytes of archive produced, total) as packing proceeds. */
  onProgress?: (done: number, total: number) => void;
}

export interface PackSegment {
  /** Byte offset of the segment in the image. */
  offset: number;
  /** Bytes the segment occupies in the image. */
  size: number;
  compression: Compression;
  /** What the segment holds: 'microcode' or 'main'. */
  role: 'microcode' | 'main';
  /** Complete newc archives in the segment (always 1: one TRAILER!!!). */
  archives: number;
  /** Independently compressed members (zstd frames, gzip members, xz/lz4 streams); 1 when uncompressed. */
  frames: number;
  entries: number;
  /** Bytes of newc data before compression. */
  uncompressedSize: number;
}

export interface PackResult {
  output: string;
  /** Size of the image in bytes. */
  size: number;
  compression: Compression;
  level: number;
  /** Members of the main tree (without the microcode segment). */
  entries: number;
  /** Regular file and symlink data bytes in the main tree. */
  dataBytes: number;
  segments: PackSegment[];
  /** Frames taken from PackOptions.frameCache, and frames compressed (and stored). */
  frameCache?: { hits: number; stored: number };
}

/**
 * 8 MiB: zstd -3's window is 2 MiB, so smaller archives cost <0.2% in size, and two in
 * flight keep the peak RSS of `pack` well under 256 MB (measured with the CLI: ~160 MB at
 * level 3 on a 710 MB tree, 190–220 MB at levels 9–19).
 */
export const DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024;
/** Chunks up to this many chunk sizes are compressed from memory; bigger ones are streamed. */
const IN_MEMORY_FACTOR = 2;
const STREAM_BUFFER = 1024 * 1024;
/** Bytes of compressed output between two young-generation collections (see gc.ts). */
const GC_EVERY = 16 * 1024 * 1024;

/**
 * Peak memory of one in-process zstd compression of a chunk, by level (measured with
 * @mongodb-js/zstd 1.2.2 on 8 MiB chunks: level 3 6 MB, 9 17 MB, 12 47 MB, 15 71 MB,
 * 19 91 MB). The default parallelism keeps the contexts within ZSTD_MEMORY_BUDGET, so
 * that `pack` stays under ~256 MB at any level up to 19.
 */
function zstdMemoryMB(level: number): number {
  if (level <= 3) return 8;
  if (level <= 6) return 12;
  if (level <= 9) return 20;
  if (level <= 12) return 50;
  if (level <= 15) return 75;
  if (level <= 19) return 100;
  return 300; // --ultra levels: windows up to 128 MiB
}
const ZSTD_MEMORY_BUDGET_MB = 100;

export function defaultParallelism(compression: Compression, level: number): number {
  const cpus = availableParallelism();
  if (compression !== 'zstd') return cpus;
  return Math.max(1, Math.min(cpus, Math.floor(ZSTD_MEMORY_BUDGET_MB / zstdMemoryMB(level))));
}

function writeAll(fd: number, buf: Buffer, length = buf.length): void {
  let off = 0;
  while (off < length) off += writeSync(fd, buf, off, length - off);
}

/**
 * The output is fsync'd before the rename (createAtomicOutput). Starting fdatasync in the
 * thread pool every EARLY_SYNC bytes, while the main thread keeps writing, leaves little
 * for that final fsync: measured 136–153 ms instead of 170–196 ms for a 710 MB archive.
 */
const EARLY_SYNC = 128 * 1024 * 1024;
class EarlySync {
  private since = 0;
  private readonly pending: Promise<void>[] = [];
  constructor(private readonly fd: number) {}
  wrote(bytes: number): void {
    this.since += bytes;
    if (this.since < EARLY_SYNC) return;
    this.since = 0;
    // Errors are ignored here: the final fsync reports them.
    this.pending.push(new Promise((resolve) => fdatasync(this.fd, () => resolve())));
  }
  /** Wait for the early syncs (before the file descriptor may be closed). */
  async settle(): Promise<void> {
    await Promise.all(this.pending);
  }
}

function validate(options: PackOptions): void {
  const sde = options.sourceDateEpoch;
  if (sde !== undefined && !(Number.isInteger(sde) && sde >= 0 && sde <= U32_MAX)) {
    throw new UserError('USAGE', `source date epoch must be an integer from 0 to ${U32_MAX}, not ${sde}`);
  }
  if (options.owner !== undefined && options.owner !== 'keep' && options.owner !== 'root') {
    throw new UserError('USAGE', `owner must be 'keep' or 'root', not ${JSON.stringify(options.owner)}`);
  }
  if (options.chunkSize !== undefined && !(Number.isInteger(options.chunkSize) && options.chunkSize >= MIN_FILL_BUFFER)) {
    throw new UserError('USAGE', `chunk size must be at least ${MIN_FILL_BUFFER} bytes`);
  }
  if (options.parallelism !== undefined && !(Number.isInteger(options.parallelism) && options.parallelism >= 1)) {
    throw new UserError('USAGE', `parallelism must be a positive integer, not ${options.parallelism}`);
  }
  if (options.mode !== undefined && !(Number.isInteger(options.mode) && options.mode >= 0 && options.mode <= 0o7777)) {
    throw new UserError('USAGE', `output mode must be an octal permission like 0600, not ${options.mode}`);
  }
}

/** Pack `options.source` into the image `options.output`. Never follows a symlink inside the tree. */
export async function packTree(options: PackOptions): Promise<PackResult> {
  validate(options);
  const root = options.source;
  const compression = options.compression ?? 'zstd';
  const level = resolveLevel(compression, options.level);
  const logger = options.logger ?? getLogger();
  const scanOptions: ScanOptions = {};
  if (options.owner !== undefined) scanOptions.owner = options.owner;
  if (options.sourceDateEpoch !== undefined) scanOptions.sourceDateEpoch = options.sourceDateEpoch;
  if (options.lateNames !== undefined) scanOptions.lateNames = options.lateNames;
  // Scan before creating the output, so an output inside the tree is never packed half-written.
  const microcode = options.microcode !== undefined ? scanTree(options.microcode, scanOptions) : undefined;
  let main: ScanResult;
  try {
    main = scanTree(root, scanOptions);
  } catch (error) {
    microcode?.walker.close();
    throw error;
  }
  try {
    return await packScanned(options, main, microcode, compression, level, logger);
  } finally {
    // The trees' directory descriptors (the writer read every file through them).
    main.walker.close();
    microcode?.walker.close();
  }
}

async function packScanned(options: PackOptions, main: ScanResult, microcode: ScanResult | undefined, compression: Compression, level: number, logger: Logger): Promise<PackResult> {
  logger.debug({ root: main.root, entries: main.entries.length, bytes: main.archiveBytes }, 'scanned tree');
  const total = main.archiveBytes + (microcode?.archiveBytes ?? 0);
  const progress = new ProgressTracker(total, options.onProgress);

  return withAtomicOutput(
    options.output,
    async (out) => {
      const fd = out.handle.fd;
      const early = new EarlySync(fd);
      let written: { segments: PackSegment[]; mainOffset: number; frames: number; frameCache?: { hits: number; stored: number } };
      try {
        written = await writeImage(fd, main, microcode, { ...options, compression, level, logger }, progress, early);
      } finally {
        await early.settle();
      }
      const { segments, mainOffset, frames, frameCache } = written;
      const size = fstatSync(fd).size;
      segments.push(segment(mainOffset, size - mainOffset, compression, 'main', frames, main));
      const result: PackResult = {
        output: options.output,
        size,
        compression,
        level,
        entries: main.entries.length,
        dataBytes: main.dataBytes,
        segments,
        ...(frameCache && { frameCache }),
      };
      logger.debug({ ...result, segments: undefined }, 'packed image');
      return result;
    },
    options.mode ?? 0o600,
  );
}

/** The segments, in order, into `fd`: microcode (uncompressed), then the main tree. */
async function writeImage(
  fd: number,
  main: ScanResult,
  microcode: ScanResult | undefined,
  options: PackOptions & { compression: Compression; level: number; logger: Logger },
  progress: ProgressTracker,
  early: EarlySync,
): Promise<{ segments: PackSegment[]; mainOffset: number; frames: number; frameCache?: { hits: number; stored: number } }> {
  const { compression, level, logger } = options;
  const segments: PackSegment[] = [];
  let mainOffset = 0;
  if (microcode) {
    writeArchiveSync(fd, microcode, progress, early);
    segments.push(segment(0, microcode.archiveBytes, 'none', 'microcode', 1, microcode));
    mainOffset = microcode.archiveBytes;
  }
  if (compression === 'none') {
    writeArchiveSync(fd, main, progress, early);
    return { segments, mainOffset, frames: 1 };
  }
  if (compression === 'xz') {
    // ONE xz stream: dracut's lsinitrd reads xz with `xzcat --single-stream` and would
    // see only the first of several streams. `xz -T0` still compresses in parallel (it
    // cuts the stream into independent blocks itself) with bounded memory.
    const [cmd, args] = compressorCommand('xz', level);
    await pipeArchive(cmd, args, fd, main, { start: 0, end: main.entries.length, bytes: main.archiveBytes, trailer: true }, progress);
    return { segments, mainOffset, frames: 1 };
  }
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const { chunks } = planLayeredChunks(main.entries, chunkSize, main.baseCount);
  const parallelism = options.parallelism ?? defaultParallelism(compression, level);
  const cache = options.frameCache ? { store: options.frameCache, compressor: compressorIdentity(compression), hits: 0, stored: 0 } : undefined;
  await writeChunked(fd, main, chunks, { compression, level, chunkSize, parallelism, logger, early, cache }, progress);
  return { segments, mainOffset, frames: chunks.length, ...(cache && { frameCache: { hits: cache.hits, stored: cache.stored } }) };
}

function segment(offset: number, size: number, compression: Compression, role: PackSegment['role'], frames: number, scan: ScanResult): PackSegment {
  return { offset, size, compression, role, archives: 1, frames, entries: scan.entries.length, uncompressedSize: scan.archiveBytes };
}

class ProgressTracker {
  private done = 0;
  constructor(
    private readonly total: number,
    private readonly callback: ((done: number, total: number) => void) | undefined,
  ) {}
  add(bytes: number): void {
    this.done += bytes;
    this.callback?.(this.done, this.total);
  }
}

let syncBuffer: Buffer | undefined;

/** One archive, streamed synchronously into `fd` (the 'none' path: as fast as cpio). */
function writeArchiveSync(fd: number, tree: ScanResult, progress: ProgressTracker, early: EarlySync): void {
  // Shared between calls: safe because this function never yields to the event loop.
  syncBuffer ??= Buffer.allocUnsafe(STREAM_BUFFER);
  const buf = syncBuffer;
  const filler = new ArchiveFiller(tree.entries, 0, tree.entries.length, true, tree.walker);
  while (!filler.done) {
    const n = filler.fill(buf, 0);
    writeAll(fd, buf, n);
    early.wrote(n);
    progress.add(n);
  }
}

/** One frame through an external compressor writing to `fd`. */
async function pipeArchive(
  cmd: string,
  args: string[],
  fd: number,
  tree: ScanResult,
  chunk: Chunk,
  progress: ProgressTracker,
): Promise<void> {
  const { child, exited } = spawnFilter(cmd, args, fd);
  const stdin = child.stdin!;
  const filler = new ArchiveFiller(tree.entries, chunk.start, chunk.end, chunk.trailer, tree.walker);
  const buffers = [Buffer.allocUnsafe(STREAM_BUFFER), Buffer.allocUnsafe(STREAM_BUFFER)];
  const pending: (Promise<void> | undefined)[] = [undefined, undefined];
  let failed: unknown;
  const exitFailure = exited.then(
    () => new Promise<never>(() => undefined),
    (error: unknown) => Promise.reject(error),
  );
  exitFailure.catch(() => undefined);
  try {
    for (let k = 0; !filler.done; k ^= 1) {
      // Wait until this buffer's previous write has been handed to the pipe.
      if (pending[k]) await Promise.race([pending[k], exitFailure]);
      const buf = buffers[k]!;
      const n = filler.fill(buf, 0);
      if (n === 0) continue;
      pending[k] = new Promise<void>((resolve, reject) => stdin.write(buf.subarray(0, n), (e) => (e ? reject(e) : resolve())));
      pending[k]!.catch(() => undefined);
      progress.add(n);
    }
    await Promise.race([Promise.all(pending), exitFailure]);
    stdin.end();
  } catch (error) {
    failed = error;
    child.kill('SIGKILL');
  }
  let status;
  try {
    status = await exited;
  } catch (error) {
    throw failed instanceof UserError ? failed : error;
  }
  if (failed instanceof UserError) throw failed;
  if (status.code !== 0) {
    throw new UserError('COMMAND_FAILED', `${cmd} ${args.join(' ')} ${status.signal ? `was killed by ${status.signal}` : `exited with ${status.code}`}`, {
      hint: status.stderr.trim() || (failed instanceof Error ? failed.message : undefined),
    });
  }
  if (failed) throw failed;
}

interface ChunkOptions {
  compression: Exclude<Compression, 'none'>;
  level: number;
  chunkSize: number;
  parallelism: number;
  logger: Logger;
  early: EarlySync;
  /** Frames compressed from memory are looked up in and stored to `store` (counted in hits/stored). */
  cache: { store: FrameCache; compressor: string; hits: number; stored: number } | undefined;
}

/**
 * Frames, each compressed on its own (thread pool or one program each), `parallelism` at
 * a time, written in order. Memory: `parallelism` pooled chunk buffers, plus one reusable
 * buffer for the occasional chunk up to IN_MEMORY_FACTOR × chunkSize (a big file), plus
 * what zstd holds; bigger chunks are streamed.
 */
async function writeChunked(fd: number, tree: ScanResult, chunks: Chunk[], options: ChunkOptions, progress: ProgressTracker): Promise<void> {
  const { compression, level, chunkSize, parallelism } = options;
  const inMemoryLimit = IN_MEMORY_FACTOR * chunkSize;
  const budget = Math.max(parallelism * chunkSize, inMemoryLimit + chunkSize);
  const pool: Buffer[] = [];
  let big: Buffer | undefined;
  let bigBusy = false;
  const queue: { result: Promise<Buffer>; buffer: Buffer; bytes: number }[] = [];
  let inFlight = 0;
  const compress =
    compression === 'zstd' ? zstdCompress : compression === 'gzip' ? gzipCompress : (data: Buffer, lvl: number) => externalCompress(compression, lvl, data);

  let outputSinceGc = 0;
  const flushHead = async () => {
    if (outputSinceGc > GC_EVERY) {
      // Here no local still references an output already written.
      outputSinceGc = 0;
      minorGc();
    }
    const head = queue.shift()!;
    const out = await head.result;
    writeAll(fd, out);
    options.early.wrote(out.length);
    outputSinceGc += out.length;
    inFlight -= head.bytes;
    if (head.buffer === big) bigBusy = false;
    else pool.push(head.buffer);
    progress.add(head.bytes);
  };

  try {
    for (const chunk of chunks) {
      if (chunk.bytes > inMemoryLimit) {
        while (queue.length > 0) await flushHead();
        await streamChunk(fd, tree, chunk, options);
        progress.add(chunk.bytes);
        continue;
      }
      const isBig = chunk.bytes > chunkSize;
      while (queue.length >= parallelism || (queue.length > 0 && (inFlight + chunk.bytes > budget || (isBig && bigBusy)))) await flushHead();
      let buffer: Buffer;
      if (isBig) {
        big ??= Buffer.allocUnsafe(inMemoryLimit);
        bigBusy = true;
        buffer = big;
      } else {
        buffer = pool.pop() ?? Buffer.allocUnsafe(chunkSize);
      }
      const view = buffer.subarray(0, chunk.bytes);
      const filler = new ArchiveFiller(tree.entries, chunk.start, chunk.end, chunk.trailer, tree.walker);
      const n = filler.fill(view, 0);
      if (n !== chunk.bytes || !filler.done) throw new Error(`packer: chunk size mismatch (${n} of ${chunk.bytes} bytes)`);
      let result: Promise<Buffer>;
      const cache = options.cache;
      if (cache) {
        const key = frameKey(cache.compressor, level, view);
        const hit = await cache.store.get(key);
        if (hit) {
          cache.hits++;
          result = Promise.resolve(hit);
        } else {
          result = compress(view, level).then(async (out) => {
            await cache.store.put(key, out);
            cache.stored++;
            return out;
          });
        }
      } else result = compress(view, level);
      result.catch(() => undefined);
      queue.push({ result, buffer, bytes: chunk.bytes });
      inFlight += chunk.bytes;
    }
    while (queue.length > 0) await flushHead();
  } finally {
    // On failure, let the compressions still running finish before the caller closes fd.
    await Promise.allSettled(queue.map((q) => q.result));
  }
}

/** A frame too big to hold in memory: stream it through a compressor. */
async function streamChunk(fd: number, tree: ScanResult, chunk: Chunk, options: ChunkOptions): Promise<void> {
  const noProgress = new ProgressTracker(0, undefined);
  if (options.compression === 'gzip') {
    await gzipStream(fd, tree, chunk, options.level);
    return;
  }
  const [cmd, args] = compressorCommand(options.compression, options.level);
  try {
    await pipeArchive(cmd, args, fd, tree, chunk, noProgress);
  } catch (error) {
    if (!(error instanceof UserError && error.code === 'MISSING_TOOL' && options.compression === 'zstd')) throw error;
    const first = tree.entries[chunk.start]!;
    options.logger.warn(
      `no zstd program: compressing a ${Math.round(chunk.bytes / 2 ** 20)} MiB archive (from ${displayName(first.name)}) in memory`,
    );
    const buffer = Buffer.allocUnsafe(chunk.bytes);
    const filler = new ArchiveFiller(tree.entries, chunk.start, chunk.end, chunk.trailer, tree.walker);
    filler.fill(buffer, 0);
    writeAll(fd, await zstdCompress(buffer, options.level));
  }
}

async function gzipStream(fd: number, tree: ScanResult, chunk: Chunk, level: number): Promise<void> {
  const zlib = await import('node:zlib');
  const gz = zlib.createGzip({ level, chunkSize: STREAM_BUFFER });
  const finished = new Promise<void>((resolve, reject) => {
    gz.on('data', (d: Buffer) => {
      // A write error (a full disk) thrown from an event handler would be uncaught:
      // hand it to the stream, which rejects `finished` and the pending writes.
      try {
        writeAll(fd, d);
      } catch (error) {
        gz.destroy(error as Error);
      }
    });
    gz.once('end', resolve);
    // `on`, not `once`: a write after a failure emits a second error, which must not be uncaught.
    gz.on('error', reject);
  });
  finished.catch(() => undefined);
  const filler = new ArchiveFiller(tree.entries, chunk.start, chunk.end, chunk.trailer, tree.walker);
  const buffers = [Buffer.allocUnsafe(STREAM_BUFFER), Buffer.allocUnsafe(STREAM_BUFFER)];
  const pending: (Promise<void> | undefined)[] = [undefined, undefined];
  try {
    for (let k = 0; !filler.done; k ^= 1) {
      if (pending[k]) await Promise.race([pending[k], finished]);
      if (gz.destroyed) await finished;
      const buf = buffers[k]!;
      const n = filler.fill(buf, 0);
      pending[k] = new Promise<void>((resolve, reject) => gz.write(buf.subarray(0, n), (e) => (e ? reject(e) : resolve())));
      pending[k]!.catch(() => undefined); // awaited below, or superseded by `finished`'s error
    }
    await Promise.race([Promise.all(pending), finished]);
    gz.end();
    await finished;
  } catch (error) {
    gz.destroy();
    throw error;
  }
}
