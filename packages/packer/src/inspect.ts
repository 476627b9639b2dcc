/**
 * inspectImage / inspectEvents: what `lsinitrd` shows, as data — segments (offset,
 * compression, archives, entries, sizes), every member, and totals.
 *
 * inspectEvents streams: it holds one member at a time (an image of 12 million entries
 * is listed in constant memory); inspectImage collects the same events into one object
 * for callers that want it all (and can afford it).
 */
import { fstatSync, openSync, closeSync, constants as fsConstants } from 'node:fs';
import { readImageEvents, type CpioEntry, type EntryCounts, type SegmentStats } from './reader.js';
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

export interface InspectTotals extends EntryCounts {
  segments: number;
  archives: number;
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

export type InspectEvent =
  | { kind: 'image'; path: string; size: number }
  | { kind: 'segment'; index: number; offset: number; compression: SegmentFormat }
  /** `raw` has the exact bytes of names and targets (for escaping them in text output). */
  | { kind: 'entry'; entry: InspectEntry; raw: CpioEntry }
  | { kind: 'segment-end'; segment: InspectSegment }
  | { kind: 'end'; totals: InspectTotals };

export function emptyTotals(): InspectTotals {
  return { segments: 0, archives: 0, entries: 0, files: 0, dirs: 0, symlinks: 0, hardlinks: 0, devices: 0, fifos: 0, sockets: 0, dataBytes: 0, uncompressedSize: 0 };
}

function imageSize(path: string): number {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (the reader refuses it next).
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch {
    return 0; // the reader reports why
  }
  try {
    return fstatSync(fd).size;
  } finally {
    closeSync(fd);
  }
}

/** The image as a stream of events, one member at a time (constant memory). */
export async function* inspectEvents(path: string, options: InspectOptions = {}): AsyncGenerator<InspectEvent, void, undefined> {
  const withEntries = options.entries ?? true;
  const totals = emptyTotals();
  let started = false;
  for await (const event of readImageEvents(path)) {
    if (!started) {
      started = true;
      yield { kind: 'image', path, size: imageSize(path) };
    }
    if (event.kind === 'segment') {
      yield { kind: 'segment', index: event.segment.index, offset: event.segment.offset, compression: event.segment.format };
      continue;
    }
    if (event.kind === 'segment-end') {
      const { segment, stats } = event;
      totals.segments++;
      totals.archives += stats.archives;
      totals.uncompressedSize += stats.uncompressedSize;
      yield { kind: 'segment-end', segment: { index: segment.index, offset: segment.offset, compression: segment.format, ...stats } };
      continue;
    }
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
    yield { kind: 'entry', entry: item, raw: entry };
  }
  if (!started) yield { kind: 'image', path, size: imageSize(path) };
  yield { kind: 'end', totals };
}

/** All of inspectEvents in one object. */
export async function inspectImage(path: string, options: InspectOptions = {}): Promise<InspectResult> {
  const result: InspectResult = { path, size: 0, segments: [], entries: [], totals: emptyTotals() };
  for await (const event of inspectEvents(path, options)) {
    if (event.kind === 'image') result.size = event.size;
    else if (event.kind === 'entry') result.entries.push(event.entry);
    else if (event.kind === 'segment-end') result.segments.push(event.segment);
    else if (event.kind === 'end') result.totals = event.totals;
  }
  return result;
}
