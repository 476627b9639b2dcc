/**
 * The newc writer: a synchronous state machine that fills caller-supplied buffers with
 * the bytes of a slice of the sorted member list — one frame of the archive, ending with
 * the TRAILER!!! when it is the last one.
 *
 * Synchronous on purpose: per-file async fs calls cost more than the copy itself for the
 * small files an initrd is made of, so the hot loop is openSync/readSync/closeSync
 * straight into the output buffer, with no per-file allocation.
 */
import { closeSync, constants as fsConstants, openSync, readSync } from 'node:fs';
import { UserError, isErrnoException } from '@mkinitrd-pkg/common';
import { encodeMember, encodeTrailer, memberSize, pad4, TRAILER_SIZE } from './newc.js';
import { displayName, type PackEntry } from './scan.js';
import { at, type DirWalker } from './dirfd.js';

/** Smallest buffer `fill` accepts: one header with the longest name and symlink target. */
export const MIN_FILL_BUFFER = 64 * 1024;

const OPEN_FLAGS = fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK;

const enum Phase {
  Header,
  Data,
  Pad,
  Trailer,
  Done,
}

const scratch = Buffer.alloc(1);

function changed(entry: PackEntry, how: string): UserError {
  return new UserError('FILE_CHANGED', `${displayName(entry.path.toString('latin1'))} ${how} while it was being packed`, {
    hint: 'do not modify the tree while packing it, then run the command again',
  });
}

function readError(entry: PackEntry, error: unknown): UserError {
  if (error instanceof UserError) return error;
  const code = isErrnoException(error) ? error.code : undefined;
  if (code === 'ENOENT') return changed(entry, 'vanished');
  if (code === 'ELOOP' || code === 'ENOTDIR') return changed(entry, 'or a directory above it was replaced by a symlink');
  return new UserError('IO', `cannot read ${displayName(entry.path.toString('latin1'))}: ${(error as Error).message}`);
}

/**
 * Writes members [start, end) of `entries`, then a trailer unless `trailer` is false.
 * Files are opened relative to their directory's descriptor (`walker`, from the scan),
 * with O_NOFOLLOW on the one remaining component: never through a swapped path.
 */
export class ArchiveFiller {
  private i: number;
  private phase = Phase.Header;
  private fd = -1;
  private remaining = 0;
  /** Bytes produced so far. */
  written = 0;

  constructor(
    private readonly entries: readonly PackEntry[],
    start = 0,
    private readonly end = entries.length,
    private readonly trailer = true,
    private readonly walker: DirWalker,
  ) {
    this.i = start;
  }

  private openMember(e: PackEntry): number {
    const parts = e.name.split('/');
    const leaf = parts.pop()!;
    return openSync(at(this.walker.dir(parts), leaf), OPEN_FLAGS);
  }

  get done(): boolean {
    return this.phase === Phase.Done;
  }

  /** Close a file left open by an error. */
  close(): void {
    if (this.fd >= 0) {
      try {
        closeSync(this.fd);
      } catch {
        /* already failing */
      }
      this.fd = -1;
    }
  }

  /**
   * Fill `buf` from `off` on; returns the new end offset. Returns early (with room left)
   * only when the next header does not fit, or when the archive is complete. Streaming
   * callers pass buffers of at least MIN_FILL_BUFFER bytes (so that every header fits in
   * an empty buffer); chunk callers pass a buffer of the chunk's exact size.
   */
  fill(buf: Buffer, off = 0): number {
    const start = off;
    try {
      off = this.fillInner(buf, off);
    } catch (error) {
      this.close();
      throw error;
    }
    this.written += off - start;
    return off;
  }

  private fillInner(buf: Buffer, off: number): number {
    const limit = buf.length;
    const entries = this.entries;
    for (;;) {
      switch (this.phase) {
        case Phase.Header: {
          if (this.i >= this.end) {
            this.phase = this.trailer ? Phase.Trailer : Phase.Done;
            continue;
          }
          const e = entries[this.i]!;
          const target = e.type === 'symlink' ? (e.linkTarget ?? '') : undefined;
          const need = memberSize(e.name.length, target !== undefined ? target.length : 0);
          if (limit - off < need) return off;
          // devmajor/devminor describe the device holding the member: always 0, so the
          // output does not depend on the disk the tree lives on.
          off = encodeMember(buf, off, e.name, e.ino, e.mode, e.uid, e.gid, e.nlink, e.mtime, e.size, 0, 0, e.rdevMajor, e.rdevMinor, 0);
          if (target !== undefined) {
            off += buf.write(target, off, 'latin1');
            for (let p = pad4(target.length); p > 0; p--) buf[off++] = 0;
            this.i++;
            continue;
          }
          if (!e.readData) {
            this.i++;
            continue;
          }
          try {
            this.fd = this.openMember(e);
          } catch (error) {
            throw readError(e, error);
          }
          this.remaining = e.size;
          this.phase = Phase.Data;
          continue;
        }
        case Phase.Data: {
          const e = entries[this.i]!;
          let n: number;
          if (this.remaining === 0) {
            // All expected bytes copied: the file must be at EOF now.
            try {
              n = readSync(this.fd, scratch, 0, 1, null);
            } catch (error) {
              throw readError(e, error);
            }
            if (n !== 0) throw changed(e, 'grew');
            closeSync(this.fd);
            this.fd = -1;
            this.phase = Phase.Pad;
            continue;
          }
          const space = limit - off;
          if (space === 0) return off;
          // Ask for one byte more than expected when it fits: a short read then proves EOF
          // without an extra syscall, and getting that byte proves the file grew.
          const want = space > this.remaining ? this.remaining + 1 : space;
          try {
            n = readSync(this.fd, buf, off, want, null);
          } catch (error) {
            throw readError(e, error);
          }
          if (n === 0) throw changed(e, 'shrank');
          if (n > this.remaining) throw changed(e, 'grew');
          off += n;
          this.remaining -= n;
          if (this.remaining === 0 && want > n) {
            closeSync(this.fd);
            this.fd = -1;
            this.phase = Phase.Pad;
          }
          continue;
        }
        case Phase.Pad: {
          const e = entries[this.i]!;
          const pad = pad4(e.size);
          if (limit - off < pad) return off;
          for (let p = 0; p < pad; p++) buf[off++] = 0;
          this.i++;
          this.phase = Phase.Header;
          continue;
        }
        case Phase.Trailer:
          if (limit - off < TRAILER_SIZE) return off;
          off = encodeTrailer(buf, off);
          this.phase = Phase.Done;
          return off;
        case Phase.Done:
          return off;
      }
    }
  }
}

/**
 * One frame of the main archive: members [start, end), `bytes` long, and whether it ends
 * with the TRAILER!!! (only the last frame does).
 */
export interface Chunk {
  start: number;
  end: number;
  bytes: number;
  trailer: boolean;
}

/**
 * Cut the ONE archive of the member list into frames of about `chunkSize` bytes, each
 * compressed on its own (a zstd frame, gzip member, xz stream or lz4 legacy stream).
 *
 * A frame may end after any member, even inside a directory or a hard-link group,
 * because the kernel does not need archive boundaries there (init/initramfs.c):
 *  - every member returns the parser to `Reset` (do_name/do_symlink/do_copy set
 *    `next_state = Reset`), and unpack_to_rootfs only demands `state == Reset` after
 *    each compressed member ("junk at the end of compressed archive" otherwise), then
 *    looks for the next member's magic after NUL padding;
 *  - a new compressed member restarts `this_header` at 0: members start 4-aligned, which
 *    every member boundary of a newc archive is;
 *  - the hard-link table (find_link/free_hash) is only freed at TRAILER!!!, so a group's
 *    later member finds the earlier one across frames.
 * Userspace tools (cpio, lsinitrd, lsinitramfs, unmkinitramfs) see one archive, since
 * `zstd -dc` / `gzip -dc` / `xz -dc` / `lz4 -dc` decompress concatenated members into
 * exactly the uncompressed archive. A member bigger than `chunkSize` is alone in its
 * frame. The plan depends only on names and sizes, so output stays reproducible.
 */
export function planChunks(entries: readonly PackEntry[], chunkSize: number, from = 0, to = entries.length, trailer = true): Chunk[] {
  const chunks: Chunk[] = [];
  let start = from;
  let bytes = 0;
  for (let i = from; i < to; i++) {
    const e = entries[i]!;
    const size = memberSize(e.name.length, e.size);
    if (bytes > 0 && bytes + size > chunkSize) {
      chunks.push({ start, end: i, bytes, trailer: false });
      start = i;
      bytes = 0;
    }
    bytes += size;
  }
  if (!trailer) {
    if (bytes > 0) chunks.push({ start, end: to, bytes, trailer: false });
    return chunks;
  }
  if (bytes > 0 && bytes + TRAILER_SIZE > chunkSize) {
    chunks.push({ start, end: to, bytes, trailer: false });
    start = to;
    bytes = 0;
  }
  chunks.push({ start, end: to, bytes: bytes + TRAILER_SIZE, trailer: true });
  return chunks;
}

/**
 * Frames of a layered archive (ScanResult.baseCount): the base layer's frames never
 * hold a late entry, so they are the same bytes whatever the late layer is (another
 * kernel's modules) and can be reused (PackOptions.frameCache). Returns the plan and
 * how many of its frames belong to the base layer.
 */
export function planLayeredChunks(entries: readonly PackEntry[], chunkSize: number, baseCount: number): { chunks: Chunk[]; baseChunks: number } {
  if (baseCount >= entries.length || baseCount <= 0) {
    const chunks = planChunks(entries, chunkSize);
    return { chunks, baseChunks: baseCount <= 0 ? 0 : chunks.length };
  }
  const base = planChunks(entries, chunkSize, 0, baseCount, false);
  return { chunks: [...base, ...planChunks(entries, chunkSize, baseCount, entries.length, true)], baseChunks: base.length };
}
