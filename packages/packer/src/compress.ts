/**
 * Compression formats the kernel's initramfs unpacker understands (init/initramfs.c →
 * lib/decompress.c picks the decompressor by magic), and how we produce and detect them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { UserError, childEnvironment, resolveToolSync } from '@mkinitrd-pkg/common';

export type Compression = 'zstd' | 'xz' | 'gzip' | 'lz4' | 'none';
export const COMPRESSIONS: readonly Compression[] = ['zstd', 'xz', 'gzip', 'lz4', 'none'];

/** What a segment of an image can be (reading accepts more than we write). */
export type SegmentFormat = Compression | 'bzip2' | 'lzma' | 'lzo';

/**
 * Default levels: zstd 3 (zstd's own default: fast to build, and decompression speed at
 * boot hardly depends on the level), gzip 6 (zlib's default), xz 6, lz4 9 (as dracut).
 */
export const DEFAULT_LEVELS: Record<Compression, number> = { zstd: 3, xz: 6, gzip: 6, lz4: 9, none: 0 };
const LEVEL_RANGES: Record<Compression, [number, number]> = { zstd: [1, 22], xz: [0, 9], gzip: [1, 9], lz4: [1, 12], none: [0, 0] };

export function resolveLevel(compression: Compression, level: number | undefined): number {
  if (!COMPRESSIONS.includes(compression)) {
    throw new UserError('USAGE', `unknown compression ${JSON.stringify(compression)}`, { hint: `use one of ${COMPRESSIONS.join(', ')}` });
  }
  if (level === undefined) return DEFAULT_LEVELS[compression];
  const [lo, hi] = LEVEL_RANGES[compression];
  if (compression === 'none') {
    throw new UserError('USAGE', 'a compression level makes no sense with --compression none');
  }
  if (!Number.isInteger(level) || level < lo || level > hi) {
    throw new UserError('USAGE', `${compression} compression level must be an integer from ${lo} to ${hi}, not ${level}`);
  }
  return level;
}

/**
 * External compressors, streaming stdin → stdout. The flags are the kernel's needs:
 * xz must use CRC32 (the kernel's xz has no SHA-256/CRC64), lz4 the legacy frame format.
 * `-T0` keeps xz/zstd output independent of the number of cores (multithreaded mode
 * is used even with one thread).
 */
export function compressorCommand(compression: Exclude<Compression, 'none' | 'gzip'>, level: number): [string, string[]] {
  switch (compression) {
    case 'zstd':
      return ['zstd', ['-q', '-c', ...(level > 19 ? ['--ultra'] : []), `-${level}`, '-T0']];
    case 'xz':
      // The dictionary of xz's own preset (-6: 8 MiB), capped at 8 MiB so each of -T0's
      // threads stays near 100 MB. The kernel's unxz decodes an initramfs in multi-call
      // mode with a dynamically allocated dictionary of any size (lib/decompress_unxz.c:
      // xz_dec_init(XZ_DYNALLOC, (uint32_t)-1)); 1 MiB is only the kernel build's and
      // dracut's habit. Measured on the generic trixie image with decompressed modules
      // (128 MB of cpio): 1 MiB → 25.9 MB, 8 MiB → 24.6 MB.
      return ['xz', ['-q', '-c', '--check=crc32', '-T0', `--lzma2=preset=${level},dict=${XZ_DICT_KIB[level] ?? 8192}KiB`]];
    case 'lz4':
      return ['lz4', ['-q', '-c', '-l', `-${level}`]];
  }
}

/** xz's preset dictionaries (xz(1), "Presets"), capped at 8 MiB. */
const XZ_DICT_KIB = [256, 1024, 2048, 4096, 4096, 8192, 8192, 8192, 8192, 8192];

/** Decompressors for reading, streaming stdin → stdout (gzip is done in-process). */
export function decompressorCommand(format: Exclude<SegmentFormat, 'none' | 'gzip'>): [string, string[]] {
  switch (format) {
    case 'zstd':
      return ['zstd', ['-q', '-d', '-c']];
    case 'xz':
      return ['xz', ['-q', '-d', '-c']];
    case 'lzma':
      // .lzma has no magic after its end: --single-stream stops there (trailing NUL padding).
      return ['xz', ['-q', '-d', '-c', '--format=lzma', '--single-stream']];
    case 'lz4':
      return ['lz4', ['-q', '-d', '-c']];
    case 'bzip2':
      return ['bzip2', ['-q', '-d', '-c']];
    case 'lzo':
      return ['lzop', ['-q', '-d', '-c']];
  }
}

/** Recognise a segment by its first bytes (after NUL padding). */
export function detectFormat(head: Buffer): SegmentFormat | undefined {
  const b = (i: number) => head[i];
  if (head.length >= 6 && head.toString('latin1', 0, 5) === '07070' && (b(5) === 0x31 || b(5) === 0x32 || b(5) === 0x37)) return 'none';
  if (b(0) === 0x28 && b(1) === 0xb5 && b(2) === 0x2f && b(3) === 0xfd) return 'zstd';
  if (b(0) === 0xfd && b(1) === 0x37 && b(2) === 0x7a && b(3) === 0x58 && b(4) === 0x5a && b(5) === 0x00) return 'xz';
  if (b(0) === 0x1f && (b(1) === 0x8b || b(1) === 0x9e)) return 'gzip';
  if (b(0) === 0x02 && b(1) === 0x21 && b(2) === 0x4c && b(3) === 0x18) return 'lz4';
  if (b(0) === 0x42 && b(1) === 0x5a && b(2) === 0x68) return 'bzip2';
  if (b(0) === 0x5d && b(1) === 0x00 && b(2) === 0x00) return 'lzma';
  if (head.length >= 8 && head.toString('latin1', 0, 8) === '\x89LZO\x00\r\n\x1a') return 'lzo';
  return undefined;
}

interface ZstdBinding {
  compress(data: Buffer, level?: number): Promise<Buffer>;
}
/** The native binding, null when this installation has none (see zstdCompress). */
let zstdBinding: ZstdBinding | null | undefined;

function loadZstdBinding(): ZstdBinding | null {
  if (zstdBinding === undefined) {
    try {
      const require = createRequire(import.meta.url);
      zstdBinding = require('@mongodb-js/zstd/bindings.js') as ZstdBinding;
    } catch {
      // Not installed (the Debian package is Architecture: all and ships no native code),
      // or no prebuilt binary for this platform: the zstd program does the work.
      zstdBinding = null;
    }
  }
  return zstdBinding;
}

/**
 * In-process zstd (runs in the libuv thread pool, so chunks compress in parallel).
 * The package's index.js wrapper of @mongodb-js/zstd 1.2.2 drops the level argument;
 * its native binding honours it, so we call the binding directly. Without the binding,
 * the zstd program compresses the chunk (same level; still parallel, one process per
 * chunk). The two give different bytes for the same input, each reproducibly.
 */
export async function zstdCompress(data: Buffer, level: number): Promise<Buffer> {
  const binding = loadZstdBinding();
  if (!binding) return compressWithProgram(data, level);
  try {
    return await binding.compress(data, level);
  } catch (error) {
    throw new Error(`zstd: ${(error as Error).message}`);
  }
}

/**
 * Which compressor (and version) makes the frames of `compression`: part of a cached
 * frame's key (pack.ts frameKey), so an upgrade or the other zstd never reuses frames.
 * Programs are named by their resolved path, size and mtime (a package upgrade changes them).
 */
export function compressorIdentity(compression: Compression): string {
  if (compression === 'gzip') return `zlib ${process.versions.zlib}`;
  if (compression === 'zstd' && loadZstdBinding()) {
    const require = createRequire(import.meta.url);
    let version = 'unknown';
    try {
      version = (require('@mongodb-js/zstd/package.json') as { version: string }).version;
    } catch {
      // an exports map may hide package.json; the binding's file then names it
      version = require.resolve('@mongodb-js/zstd/bindings.js');
    }
    return `@mongodb-js/zstd ${version}`;
  }
  if (compression === 'none') return 'none';
  const tool = resolveToolSync(compression);
  let id = tool.path;
  try {
    const st = statSync(tool.path);
    id += ` ${st.size} ${st.mtimeMs}`;
  } catch {
    // resolveToolSync found it; a vanished file fails the compression itself
  }
  return `${id} ${compressorCommand(compression as Exclude<Compression, 'none' | 'gzip'>, 0)[1].join(' ')}`;
}

/** Whether zstd runs in-process (false: through the zstd program). */
export function hasZstdBinding(): boolean {
  return loadZstdBinding() !== null;
}

/** One buffer through the zstd program (stdin → stdout), for installations without the binding. */
export async function compressWithProgram(data: Buffer, level: number): Promise<Buffer> {
  const [cmd, args] = compressorCommand('zstd', level);
  const { child, exited } = spawnFilter(cmd, args, 'pipe');
  const chunks: Buffer[] = [];
  child.stdout!.on('data', (d: Buffer) => chunks.push(d));
  child.stdin!.end(data);
  const { code, signal, stderr } = await exited;
  if (code !== 0) {
    throw new UserError('COMMAND_FAILED', `${cmd} failed (${signal ?? `exit ${code}`}): ${stderr.trim().split('\n').at(-1) ?? ''}`);
  }
  return Buffer.concat(chunks);
}

export async function gzipCompress(data: Buffer, level: number): Promise<Buffer> {
  const zlib = await import('node:zlib');
  return new Promise((resolve, reject) =>
    zlib.gzip(data, { level, chunkSize: 1 << 20 }, (error, out) => (error ? reject(error) : resolve(out))),
  );
}

/** Compress one in-memory frame with the external program (lz4; zstd, xz work too). */
export async function externalCompress(compression: Exclude<Compression, 'none' | 'gzip'>, level: number, data: Buffer): Promise<Buffer> {
  const [cmd, args] = compressorCommand(compression, level);
  const { child, exited } = spawnFilter(cmd, args, 'pipe');
  const parts: Buffer[] = [];
  child.stdout!.on('data', (d: Buffer) => parts.push(d));
  child.stdin!.end(data);
  const status = await exited;
  if (status.code !== 0) {
    throw new UserError('COMMAND_FAILED', `${cmd} ${args.join(' ')} ${status.signal ? `was killed by ${status.signal}` : `exited with ${status.code}`}`, {
      hint: status.stderr.trim() || undefined,
    });
  }
  return Buffer.concat(parts);
}

/** Spawn a filter process; ENOENT becomes MISSING_TOOL. stderr is collected (last 4 KiB). */
export function spawnFilter(
  cmd: string,
  args: string[],
  stdout: 'pipe' | number,
): { child: ChildProcess; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> } {
  // By absolute path from the tools root or the system directories, never PATH
  // (packages/common/src/tools.ts); a missing program throws MISSING_TOOL naming its package.
  const tool = resolveToolSync(cmd);
  const child = spawn(tool.file, [...tool.prefixArgs, ...args], { stdio: ['pipe', stdout, 'pipe'], env: { ...process.env, ...childEnvironment(tool, undefined) } });
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    stderr = (stderr + d).slice(-4096);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve, reject) => {
    child.once('error', (error: NodeJS.ErrnoException) => {
      reject(new UserError('COMMAND_FAILED', `cannot run ${tool.path}: ${error.message}`));
    });
    child.once('close', (code, signal) => resolve({ code, signal, stderr }));
  });
  // Errors writing to stdin (EPIPE when the child died) surface through `exited`.
  child.stdin!.on('error', () => undefined);
  return { child, exited };
}
