/** Human-readable rendering of inspect results (the CLI prints this; --json prints the data). */
import type { InspectEntry, InspectResult } from './inspect.js';

const TYPE_CHAR: Record<InspectEntry['type'], string> = {
  file: '-',
  dir: 'd',
  symlink: 'l',
  char: 'c',
  block: 'b',
  fifo: 'p',
  socket: 's',
};

/** ls-style permission string: "drwxr-xr-x", with setuid/setgid/sticky. */
export function modeString(type: InspectEntry['type'], mode: number): string {
  const rwx = (bits: number, special: boolean, ch: string) =>
    (bits & 4 ? 'r' : '-') + (bits & 2 ? 'w' : '-') + (special ? (bits & 1 ? ch : ch.toUpperCase()) : bits & 1 ? 'x' : '-');
  return (
    TYPE_CHAR[type] +
    rwx((mode >> 6) & 7, (mode & 0o4000) !== 0, 's') +
    rwx((mode >> 3) & 7, (mode & 0o2000) !== 0, 's') +
    rwx(mode & 7, (mode & 0o1000) !== 0, 't')
  );
}

function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

function formatTime(mtime: number): string {
  return new Date(mtime * 1000).toISOString().slice(0, 16).replace('T', ' ');
}

/** Like lsinitrd: a header per segment, then an `ls -l`-style line per member, then totals. */
export function formatInspect(result: InspectResult): string {
  const lines: string[] = [];
  lines.push(`Image: ${result.path}: ${formatSize(result.size)}, ${result.segments.length} segment${result.segments.length === 1 ? '' : 's'}`);
  const bySegment = new Map<number, InspectEntry[]>();
  for (const e of result.entries) {
    let list = bySegment.get(e.segment);
    if (!list) bySegment.set(e.segment, (list = []));
    list.push(e);
  }
  for (const s of result.segments) {
    lines.push('');
    const ratio = s.compression === 'none' ? '' : ` → ${formatSize(s.uncompressedSize)} uncompressed`;
    lines.push(
      `Segment ${s.index} at byte ${s.offset}: ${s.compression === 'none' ? 'uncompressed' : s.compression}, ${formatSize(s.size)}${ratio}, ` +
        `${s.archives} archive${s.archives === 1 ? '' : 's'}, ${s.entries} entr${s.entries === 1 ? 'y' : 'ies'}`,
    );
    const list = bySegment.get(s.index) ?? [];
    if (list.length === 0) continue;
    lines.push('='.repeat(72));
    const w = {
      nlink: Math.max(...list.map((e) => String(e.nlink).length)),
      uid: Math.max(...list.map((e) => String(e.uid).length)),
      gid: Math.max(...list.map((e) => String(e.gid).length)),
      size: Math.max(...list.map((e) => sizeColumn(e).length)),
    };
    for (const e of list) {
      let line =
        `${modeString(e.type, parseInt(e.mode, 8))} ${String(e.nlink).padStart(w.nlink)} ${String(e.uid).padEnd(w.uid)} ` +
        `${String(e.gid).padEnd(w.gid)} ${sizeColumn(e).padStart(w.size)} ${formatTime(e.mtime)} ${e.name}`;
      if (e.linkTarget !== undefined) line += ` -> ${e.linkTarget}`;
      if (e.hardLinkTo !== undefined) line += ` (hard link to ${e.hardLinkTo})`;
      lines.push(line);
    }
    lines.push('='.repeat(72));
  }
  const t = result.totals;
  lines.push('');
  lines.push(
    `Total: ${t.entries} entries (${t.files} files, ${t.dirs} dirs, ${t.symlinks} symlinks, ${t.hardlinks} hard links, ` +
      `${t.devices} devices, ${t.fifos} fifos, ${t.sockets} sockets), ${formatSize(t.dataBytes)} of data, ` +
      `${t.archives} archive${t.archives === 1 ? '' : 's'} in ${t.segments} segment${t.segments === 1 ? '' : 's'}`,
  );
  return lines.join('\n') + '\n';
}

function sizeColumn(e: InspectEntry): string {
  return e.rdev !== undefined ? e.rdev.replace(':', ', ') : String(e.size);
}
