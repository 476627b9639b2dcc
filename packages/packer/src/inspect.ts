/**
 * inspectImage: what `lsinitrd` shows, as data — segments (offset, compression, archives,
 * entries, sizes), every member, and totals.
 */
import { readImageEvents, type SegmentStats } from './reader.js';
import type { SegmentFormat } from './compress.js';
import type { EntryType } from './newc.js';

export interface InspectSegment extends SegmentStats {
  index: number;
  offset: number;
  compression: SegmentFormat;
}

export interface InspectEntry {
  segment: number;
  archive: number;
  name: string;
  type: EntryType;
  /** Full st_mode in octal, e.g. "100644". */
  mode: string;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  nlink: number;
  ino: number;
  linkTarget?: string;
  /** Earlier member (same archive) this one is a hard link of. */
  hardLinkTo?: string;
  /** "major:minor" for character and block devices. */
  rdev?: string;
}

export interface InspectTotals {
  segments: number;
  archives: number;
  entries: number;
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  devices: number;
  fifos: number;
  sockets: number;
  /** Data bytes of all members (regular files and symlink targets). */
  dataBytes: number;
  /** Bytes of newc data after decompression. */
  uncompressedSize: number;
}

export interface InspectResult {
  path: string;
  /** Size of the image file. */
  size: number;
  segments: InspectSegment[];
  entries: InspectEntry[];
  totals: InspectTotals;
}

export interface InspectOptions {
  /** Leave out the member list (segments and totals only). Default false. */
  entries?: boolean;
}

export async function inspectImage(path: string, options: InspectOptions = {}): Promise<InspectResult> {
  const withEntries = options.entries ?? true;
  const segments: InspectSegment[] = [];
  const entries: InspectEntry[] = [];
  const totals: InspectTotals = {
    segments: 0,
    archives: 0,
    entries: 0,
    files: 0,
    dirs: 0,
    symlinks: 0,
    hardlinks: 0,
    devices: 0,
    fifos: 0,
    sockets: 0,
    dataBytes: 0,
    uncompressedSize: 0,
  };
  for await (const event of readImageEvents(path)) {
    if (event.kind === 'segment-end') {
      const { segment, stats } = event;
      segments.push({ index: segment.index, offset: segment.offset, compression: segment.format, ...stats });
      totals.segments++;
      totals.archives += stats.archives;
      totals.uncompressedSize += stats.uncompressedSize;
      continue;
    }
    if (event.kind !== 'member') continue;
    const { entry, segment, archive } = event.member;
    totals.entries++;
    totals.dataBytes += entry.size;
    if (entry.hardLinkTo !== undefined) totals.hardlinks++;
    switch (entry.type) {
      case 'file':
        totals.files++;
        break;
      case 'dir':
        totals.dirs++;
        break;
      case 'symlink':
        totals.symlinks++;
        break;
      case 'char':
      case 'block':
        totals.devices++;
        break;
      case 'fifo':
        totals.fifos++;
        break;
      case 'socket':
        totals.sockets++;
        break;
    }
    if (!withEntries) continue;
    const item: InspectEntry = {
      segment: segment.index,
      archive,
      name: entry.name,
      type: entry.type,
      mode: entry.mode.toString(8).padStart(6, '0'),
      uid: entry.uid,
      gid: entry.gid,
      size: entry.size,
      mtime: entry.mtime,
      nlink: entry.nlink,
      ino: entry.ino,
    };
    if (entry.linkTarget !== undefined) item.linkTarget = entry.linkTarget;
    if (entry.hardLinkTo !== undefined) item.hardLinkTo = entry.hardLinkTo;
    if (entry.type === 'char' || entry.type === 'block') item.rdev = `${entry.rdevMajor}:${entry.rdevMinor}`;
    entries.push(item);
  }
  const { statSync } = await import('node:fs');
  return { path, size: statSync(path).size, segments, entries, totals };
}
