// inspect/extract read what the kernel unpacks (issue 10 item 3): members in any order
// of formats, NUL padding between them, several members of one format in a row. Before,
// a gzip member followed by zstd failed ("incorrect header check"), and anything after a
// gzip member's NUL padding was silently dropped.
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '@mkinitrd-pkg/common';
import { encodeHeader, encodeTrailer, memberSize } from './newc.js';
import { inspectImage } from './inspect.js';
import { extractImage } from './extract.js';

const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'packer-mixed-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A complete newc archive of regular files `name` → contents. */
function archive(files: Record<string, string>, trailer = true): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const [name, data] of Object.entries(files)) {
    const buf = Buffer.alloc(memberSize(name.length, data.length));
    const off = encodeHeader(buf, 0, { ino: ino++, mode: 0o100644, uid: 0, gid: 0, nlink: 1, mtime: 1, filesize: data.length, devMajor: 0, devMinor: 0, rdevMajor: 0, rdevMinor: 0 }, name);
    buf.write(data, off);
    parts.push(buf);
  }
  if (trailer) {
    const t = Buffer.alloc(124);
    encodeTrailer(t, 0);
    parts.push(t);
  }
  return Buffer.concat(parts);
}

const tool = (cmd: string, args: string[]) => (input: Buffer) => execFileSync(cmd, args, { input });
const COMPRESS: Record<string, (b: Buffer) => Buffer> = {
  none: (b) => b,
  gzip: (b) => gzipSync(b),
  zstd: tool('zstd', ['-q', '-c']),
  xz: tool('xz', ['-q', '-c', '--check=crc32']),
  bzip2: tool('bzip2', ['-q', '-c']),
  lzo: tool('lzop', ['-q', '-c']),
  lzma: tool('xz', ['-q', '-c', '--format=lzma']),
  lz4: tool('lz4', ['-q', '-l', '-c']),
};
const tools: Record<string, string> = { zstd: 'zstd', xz: 'xz', bzip2: 'bzip2', lzo: 'lzop', lzma: 'xz', lz4: 'lz4' };
const available = Object.keys(COMPRESS).filter((f) => !tools[f] || has(tools[f]!));

async function check(name: string, layout: { format: string; pad: number }[]) {
  const parts: Buffer[] = [];
  const expected: Record<string, string> = {};
  layout.forEach(({ format, pad }, i) => {
    const files = { [`seg${i}-${format}/a`]: `${format} ${i} a\n`.repeat(50 + i), [`seg${i}-${format}/b`]: `b${i}` };
    Object.assign(expected, files);
    parts.push(COMPRESS[format]!(archive(files)), Buffer.alloc(pad));
  });
  const image = join(dir, name);
  await writeFile(image, Buffer.concat(parts));
  const info = await inspectImage(image);
  // Members of one format in a row (and xz stream padding) are one segment.
  const runs = (list: string[]) => list.filter((f, i) => i === 0 || f !== list[i - 1]);
  expect(runs(info.segments.map((s) => s.compression))).toEqual(runs(layout.map((l) => l.format)));
  expect(info.segments.length).toBeGreaterThanOrEqual(runs(layout.map((l) => l.format)).length);
  expect(info.entries.map((e) => e.name).sort()).toEqual(Object.keys(expected).sort());
  const out = join(dir, `${name}.x`);
  await extractImage(image, out, { logger: silentLogger() });
  for (const [file, data] of Object.entries(expected)) expect(await readFile(join(out, file), 'utf8')).toBe(data);
}

describe('images made of members in several formats, as the kernel reads them', () => {
  it('gzip, NUL padding, then zstd; bzip2 then zstd; xz streams then gzip members', async () => {
    await check('gz-zst', [{ format: 'gzip', pad: 16 }, { format: 'zstd', pad: 0 }]);
    if (available.includes('bzip2')) await check('bz-zst', [{ format: 'bzip2', pad: 0 }, { format: 'zstd', pad: 0 }]);
    await check('gz-gz-zst', [{ format: 'gzip', pad: 0 }, { format: 'gzip', pad: 4 }, { format: 'zstd', pad: 512 }]);
    await check('xz-gz', [{ format: 'xz', pad: 4 }, { format: 'xz', pad: 8 }, { format: 'gzip', pad: 0 }]);
  });

  it('every format the kernel decompresses, in one image (lz4 and lzma last: they run to the end, as in the kernel)', async () => {
    const order = ['none', 'gzip', 'zstd', 'bzip2', 'xz', 'lzo', 'none', 'lzma'].filter((f) => available.includes(f));
    await check('all', order.map((format) => ({ format, pad: 4 })));
    if (available.includes('lz4')) await check('then-lz4', [{ format: 'zstd', pad: 0 }, { format: 'lz4', pad: 0 }]);
  });

  it('what cannot be read is an error naming the place, never a silent short listing', async () => {
    const good = COMPRESS.zstd!(archive({ a: 'x' }));
    const image = join(dir, 'junk');
    await writeFile(image, Buffer.concat([gzipSync(archive({ b: 'y' })), Buffer.alloc(4), Buffer.from('garbage after the padding')]));
    await expect(inspectImage(image)).rejects.toMatchObject({ code: 'ARCHIVE_CORRUPT', message: expect.stringMatching(/unrecognised data at byte \d+/) });
    // a damaged gzip member (CRC) between two good members
    const gz = gzipSync(archive({ c: 'z'.repeat(100) }));
    gz[gz.length - 6] ^= 0xff;
    await writeFile(image, Buffer.concat([good, gz, good]));
    await expect(inspectImage(image)).rejects.toMatchObject({ code: 'ARCHIVE_CORRUPT' });
    // a member that ends inside an entry
    const cut = archive({ d: 'w'.repeat(1000) }).subarray(0, 300);
    await writeFile(image, Buffer.concat([COMPRESS.zstd!(cut), good]));
    await expect(inspectImage(image)).rejects.toMatchObject({ code: 'ARCHIVE_CORRUPT' });
    expect(readFileSync(image).length).toBeGreaterThan(0);
  });
});
