// inspect at scale, on a terminal, and on things that are not images (issue 10 items 10,
// 11, 12): 150k entries crashed (a spread into Math.max); names were printed raw; a FIFO
// made inspect/extract wait forever.
import { execFileSync } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UserError, silentLogger } from '@mkinitrd-pkg/common';
import { packTree } from './pack.js';
import { encodeHeader, encodeTrailer, memberSize } from './newc.js';
import { inspectEvents, inspectImage } from './inspect.js';
import { escapeName, formatInspectEvent } from './format.js';
import { extractImage } from './extract.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'packer-inspect-'));
});
afterAll(() => {
  // GNU rm walks relative to directory descriptors: paths longer than PATH_MAX are fine.
  if (dir) execFileSync('rm', ['-rf', dir]);
});

function archive(names: Buffer[], data = ''): Buffer {
  const parts: Buffer[] = [];
  names.forEach((name, i) => {
    const buf = Buffer.alloc(memberSize(name.length, data.length));
    const off = encodeHeader(buf, 0, { ino: i + 1, mode: 0o100644, uid: 0, gid: 0, nlink: 1, mtime: 1, filesize: data.length, devMajor: 0, devMinor: 0, rdevMajor: 0, rdevMinor: 0 }, name.toString('latin1'));
    buf.write(data, off);
    parts.push(buf);
  });
  const t = Buffer.alloc(124);
  encodeTrailer(t, 0);
  parts.push(t);
  return Buffer.concat(parts);
}

describe('inspect streams any number of entries', () => {
  it('lists 150k entries as text, one event at a time', { timeout: 120_000 }, async () => {
    const n = 150_000;
    const image = join(dir, 'many.cpio');
    await writeFile(image, archive(Array.from({ length: n }, (_, i) => Buffer.from(`d/f${i}`))));
    let lines = 0;
    let entries = 0;
    for await (const event of inspectEvents(image)) {
      const text = formatInspectEvent(event);
      if (event.kind === 'entry') {
        entries++;
        expect(text.endsWith(`d/f${entries - 1}\n`)).toBe(true);
      }
      lines += text.split('\n').length - 1;
    }
    expect(entries).toBe(n);
    expect(lines).toBeGreaterThan(n);
  });
});

describe('text output escapes names as ls -b does', () => {
  it('escapes control characters, spaces, backslashes, invalid UTF-8 and invisible Unicode', () => {
    expect(escapeName(Buffer.from('usr/lib/ünïcødé 名前'))).toBe('usr/lib/ünïcødé\\ 名前');
    expect(escapeName(Buffer.from('a\nb\rc\td\\e\x1b[31mred\x7f'))).toBe('a\\nb\\rc\\td\\\\e\\033[31mred\\177');
    expect(escapeName(Buffer.from([0x61, 0xff, 0xc3, 0x62]))).toBe('a\\377\\303b');
    expect(escapeName(Buffer.from('x\u202ey\u0085z\u2028'))).toBe('x\\342\\200\\256y\\302\\205z\\342\\200\\250');
    expect(escapeName(Buffer.from([0x9b, 0x32, 0x4a]))).toBe('\\2332J');
  });

  it('no crafted name forges a line or reaches the terminal raw', async () => {
    const evil = [Buffer.from('etc/passwd\n-rwsr-xr-x 1 0 0 0 2020-01-01 00:00 fake'), Buffer.from('\x1b]0;owned\x07title'), Buffer.from([0x63, 0x9b, 0x33, 0x31, 0x6d])];
    const image = join(dir, 'evil.cpio');
    await writeFile(image, archive(evil));
    let text = '';
    for await (const event of inspectEvents(image)) text += formatInspectEvent(event);
    const entryLines = text.split('\n').filter((l) => /^-rw/.test(l));
    expect(entryLines).toHaveLength(3);
    expect(text).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]/);
    expect(text).toContain('etc/passwd\\n-rwsr-xr-x\\ 1');
    // JSON keeps the exact (decoded) name
    const info = await inspectImage(image);
    expect(info.entries[0]!.name).toBe(evil[0]!.toString());
  });
});

describe('inputs that are not image files', () => {
  it('inspect and extract refuse a FIFO, a directory and a device at once instead of waiting', async () => {
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    for (const path of [fifo, dir, '/dev/zero']) {
      await expect(inspectImage(path)).rejects.toMatchObject({ code: 'INPUT', message: expect.stringMatching(/is not a regular file/) });
      await expect(extractImage(path, join(dir, 'out'), { logger: silentLogger() })).rejects.toMatchObject({ code: 'INPUT' });
    }
  });
});

describe('names longer than PATH_MAX (legal in newc)', () => {
  const component = 'c'.repeat(200);
  const deep = Array.from({ length: 30 }, () => component).join('/'); // 6029 bytes

  it('extract creates them (every step is relative to an open directory); a component over NAME_MAX is one short line', async () => {
    const image = join(dir, 'long.cpio');
    await writeFile(image, archive([Buffer.from(`${deep}/file`)], 'deep\n'));
    const out = join(dir, 'long-out');
    const result = await extractImage(image, out, { logger: silentLogger() });
    expect(result.files).toBe(1);
    const found = execFileSync('find', ['.', '-type', 'f'], { cwd: out }).toString().trim();
    expect(found).toBe(`./${deep}/file`);
    await writeFile(image, archive([Buffer.from(`${'n'.repeat(300)}/${'m'.repeat(5000)}`)], 'x'));
    const error = await extractImage(image, join(dir, 'long-out2'), { logger: silentLogger() }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).message.length).toBeLessThan(300);
    // inspect lists it, escaped and whole
    const info = await inspectImage(image);
    expect(info.entries[0]!.name.length).toBe(5301);
  });

  it('pack refuses a tree whose full path exceeds PATH_MAX in one short line', async () => {
    const tree = join(dir, 'deep-tree');
    const script = 'import os, sys\nos.mkdir(sys.argv[1]); os.chdir(sys.argv[1])\nfor _ in range(30):\n    os.mkdir(sys.argv[2]); os.chdir(sys.argv[2])\nopen("f", "w").write("x")';
    execFileSync('python3', ['-c', script, tree, component]);
    const error = await packTree({ source: tree, output: join(dir, 'deep.img'), logger: silentLogger() }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).code).toBe('ARCHIVE_LIMIT');
    expect((error as UserError).message.length).toBeLessThan(300);
  });
});
