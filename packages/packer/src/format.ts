/**
 * Human-readable rendering of inspect results (the CLI prints this; --json prints the
 * data), one event at a time so that any number of entries streams, with every name and
 * link target escaped as `ls -b` does: an image's names must not reach a terminal raw.
 */
import type { CpioEntry } from './reader.js';
import type { InspectEntry, InspectEvent, InspectResult, InspectSegment, InspectTotals } from './inspect.js';

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

export function formatSize(bytes: number): string {
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

const NAMED_ESCAPES: Record<number, string> = { 7: '\\a', 8: '\\b', 9: '\\t', 10: '\\n', 11: '\\v', 12: '\\f', 13: '\\r', 0x20: '\\ ', 0x5c: '\\\\' };
const octal = (byte: number) => '\\' + byte.toString(8).padStart(3, '0');
/** Code points a terminal does not print as themselves: controls (C0, DEL, C1), format characters (bidi overrides …), separators, surrogates, private use, unassigned. */
const NONPRINTING = /[\p{C}\p{Zl}\p{Zp}\uFFFD]/u;

/**
 * A name as `ls -b` (--quoting-style=escape) shows it in a UTF-8 locale: C escapes for
 * \a \b \t \n \v \f \r, space and backslash; every other byte that is not part of a
 * printable UTF-8 character as a 3-digit octal escape. So no name can forge a line or send
 * an escape sequence, and the bytes stay recoverable.
 */
export function escapeName(raw: Buffer): string {
  let out = '';
  let plain = 0;
  const flush = (i: number) => {
    if (i > plain) out += raw.toString('latin1', plain, i);
  };
  let i = 0;
  while (i < raw.length) {
    const b = raw[i]!;
    if (b > 0x20 && b < 0x7f && b !== 0x5c) {
      i++;
      continue;
    }
    flush(i);
    if (b < 0x80) {
      out += NAMED_ESCAPES[b] ?? octal(b);
      plain = ++i;
      continue;
    }
    const len = b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    let ok = len > 0 && i + len <= raw.length;
    for (let k = 1; ok && k < len; k++) ok = (raw[i + k]! & 0xc0) === 0x80;
    const ch = ok ? raw.toString('utf8', i, i + len) : '';
    if (ok && [...ch].length === 1 && !NONPRINTING.test(ch)) {
      out += ch;
      i += len;
    } else {
      const n = ok ? len : 1;
      for (let k = 0; k < n; k++) out += octal(raw[i + k]!);
      i += n;
    }
    plain = i;
  }
  flush(i);
  return out;
}

const RULE = '='.repeat(72);

/**
 * Text for one inspect event (like lsinitrd: a header per segment, an `ls -l`-style line
 * per member with fixed-width columns, so that nothing needs the whole list first).
 */
export function formatInspectEvent(event: InspectEvent): string {
  switch (event.kind) {
    case 'image':
      return `Image: ${escapeName(Buffer.from(event.path))}: ${formatSize(event.size)}\n`;
    case 'segment':
      return `\nSegment ${event.index} at byte ${event.offset}: ${event.compression === 'none' ? 'uncompressed' : event.compression}\n${RULE}\n`;
    case 'entry':
      return formatEntry(event.entry, event.raw);
    case 'segment-end':
      return formatSegmentEnd(event.segment);
    case 'end':
      return formatTotals(event.totals);
  }
}

function formatSegmentEnd(s: InspectSegment): string {
  const ratio = s.compression === 'none' ? '' : ` → ${formatSize(s.uncompressedSize)} uncompressed`;
  return (
    `${RULE}\nSegment ${s.index}: ${formatSize(s.size)}${ratio}, ` +
    `${s.archives} archive${s.archives === 1 ? '' : 's'}, ${s.entries} entr${s.entries === 1 ? 'y' : 'ies'}\n`
  );
}

function formatTotals(t: InspectTotals): string {
  return (
    `\nTotal: ${t.entries} entries (${t.files} files, ${t.dirs} dirs, ${t.symlinks} symlinks, ${t.hardlinks} hard links, ` +
    `${t.devices} devices, ${t.fifos} fifos, ${t.sockets} sockets), ${formatSize(t.dataBytes)} of data, ` +
    `${t.archives} archive${t.archives === 1 ? '' : 's'} in ${t.segments} segment${t.segments === 1 ? '' : 's'}\n`
  );
}

function formatEntry(e: InspectEntry, raw?: Pick<CpioEntry, 'rawName' | 'rawLinkTarget' | 'rawHardLinkTo'>): string {
  const name = escapeName(raw?.rawName ?? Buffer.from(e.name));
  let line =
    `${modeString(e.type, parseInt(e.mode, 8))} ${String(e.nlink).padStart(3)} ${String(e.uid).padEnd(5)} ` +
    `${String(e.gid).padEnd(5)} ${sizeColumn(e).padStart(9)} ${formatTime(e.mtime)} ${name}`;
  if (e.linkTarget !== undefined) line += ` -> ${escapeName(raw?.rawLinkTarget ?? Buffer.from(e.linkTarget))}`;
  if (e.hardLinkTo !== undefined) line += ` (hard link to ${escapeName(raw?.rawHardLinkTo ?? Buffer.from(e.hardLinkTo))})`;
  return line + '\n';
}

/** The whole text of an inspect result held in memory (formatInspectEvent streams the same). */
export function formatInspect(result: InspectResult): string {
  const parts: string[] = [formatInspectEvent({ kind: 'image', path: result.path, size: result.size })];
  let e = 0;
  for (const s of result.segments) {
    parts.push(formatInspectEvent({ kind: 'segment', index: s.index, offset: s.offset, compression: s.compression }));
    for (; e < result.entries.length && result.entries[e]!.segment === s.index; e++) parts.push(formatEntry(result.entries[e]!));
    parts.push(formatSegmentEnd(s));
  }
  parts.push(formatTotals(result.totals));
  return parts.join('');
}

function sizeColumn(e: InspectEntry): string {
  return e.rdev !== undefined ? e.rdev.replace(':', ', ') : String(e.size);
}
