import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { link, mkdir, mkdtemp, realpath, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '@mkinitrd-pkg/common';
import { packTree, type FrameCache } from './pack.js';
import { readImage } from './reader.js';
import { MIN_FILL_BUFFER } from './writer.js';

const logger = silentLogger();
const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const LATE = ['usr/lib/modules', 'usr/lib/firmware'];
let base: string;

/** A frame store in memory, counting what the packer asks of it. */
class MemoryFrames implements FrameCache {
  readonly frames = new Map<string, Buffer>();
  async get(key: string) {
    return this.frames.get(key);
  }
  async put(key: string, frame: Buffer) {
    this.frames.set(key, Buffer.from(frame));
  }
}

/** Incompressible data, so frames are several and their bytes tell them apart. */
const noise = (n: number, seed: number) => Buffer.concat([Buffer.from(`seed ${seed}\n`), randomBytes(n)]);

async function makeTree(name: string, kver: string, shared: Record<string, Buffer>): Promise<string> {
  const root = join(base, name);
  for (const d of ['usr/bin', 'usr/lib/systemd', `usr/lib/modules/${kver}/kernel`, 'usr/lib/firmware', 'etc']) await mkdir(join(root, d), { recursive: true });
  for (const [path, data] of Object.entries(shared)) await writeFile(join(root, path), data);
  await link(join(root, 'usr/bin/a'), join(root, 'usr/lib/modules/alias-of-a')); // a hard link across the layers
  await writeFile(join(root, `usr/lib/modules/${kver}/kernel/m.ko`), noise(1.5 * MIN_FILL_BUFFER, kver.length));
  await writeFile(join(root, `usr/lib/modules/${kver}/modules.dep`), `kernel/m.ko: ${kver}\n`);
  await writeFile(join(root, 'usr/lib/firmware/fw.bin'), `firmware for ${kver}`);
  return root;
}

let shared: Record<string, Buffer>;
beforeAll(async () => {
  base = await realpath(await mkdtemp(join(tmpdir(), 'packer-layers-')));
  shared = {
    'usr/bin/a': noise(1.5 * MIN_FILL_BUFFER, 1),
    'usr/bin/b': noise(1.5 * MIN_FILL_BUFFER, 2),
    'usr/lib/systemd/systemd': noise(1.5 * MIN_FILL_BUFFER, 3),
    'usr/lib/zz-after-modules': Buffer.from('a base file named after usr/lib/modules'),
    'etc/initrd-release': Buffer.from('ID=test\n'),
  };
});
afterAll(() => rm(base, { recursive: true, force: true }));

const pack = (source: string, output: string, frameCache?: FrameCache, compression: 'zstd' | 'none' | 'gzip' = 'zstd') =>
  packTree({ source, output: join(base, output), logger, compression, sourceDateEpoch: 1_700_000_000, owner: 'root', lateNames: LATE, chunkSize: MIN_FILL_BUFFER, ...(frameCache && { frameCache }) });

async function names(image: string): Promise<string[]> {
  const out: string[] = [];
  for await (const m of readImage(image)) {
    for await (const _ of m.data) void _;
    out.push(m.entry.name);
  }
  return out;
}

describe('layered archive: base entries, then the kernel part', () => {
  it('puts the late names last, parents before children, inode numbers in that order', async () => {
    const root = await makeTree('k1', '6.1.0-1', shared);
    const { output } = await pack(root, 'order.img', undefined, 'none');
    const list = await names(join(base, 'order.img'));
    const firstLate = list.findIndex((n) => n.startsWith('usr/lib/firmware') || n.startsWith('usr/lib/modules'));
    expect(list.slice(firstLate).every((n) => LATE.some((l) => n === l || n.startsWith(`${l}/`)))).toBe(true);
    expect(list.slice(0, firstLate)).toContain('usr/lib/zz-after-modules');
    for (const [i, n] of list.entries()) {
      const parent = n.slice(0, n.lastIndexOf('/'));
      if (n.includes('/')) expect(list.indexOf(parent), `${parent} before ${n}`).toBeLessThan(i);
    }
    // GNU cpio reads it as one archive with every entry (the layout is for us, not for tools).
    const listed = execFileSync('cpio', ['-t', '--quiet'], { input: readFileSync(output) }).toString().trim().split('\n');
    expect(listed).toEqual(list.filter((n) => n !== 'TRAILER!!!'));
  });

  it('reuses the base frames for another kernel, byte-identical to packing without the cache', async () => {
    const frames = new MemoryFrames();
    const k1 = await makeTree('c1', '6.1.0-1', shared);
    const k2 = await makeTree('c2', '6.12.0-22', shared);
    const plain1 = await pack(k1, 'plain1.img');
    const plain2 = await pack(k2, 'plain2.img');
    const first = await pack(k1, 'cached1.img', frames);
    expect(first.frameCache!.hits).toBe(0);
    expect(first.frameCache!.stored).toBeGreaterThanOrEqual(3);
    expect(frames.frames.size).toBe(first.frameCache!.stored);
    const again = await pack(k1, 'cached1b.img', frames);
    expect(again.frameCache).toEqual({ hits: first.frameCache!.stored, stored: 0 });
    // Another kernel: every base frame comes from the cache, only the kernel part is compressed.
    const other = await pack(k2, 'cached2.img', frames);
    const frameCount = other.segments.at(-1)!.frames;
    expect(other.frameCache!.stored).toBeGreaterThanOrEqual(1);
    expect(other.frameCache!.hits).toBeGreaterThanOrEqual(3);
    expect(other.frameCache!.hits + other.frameCache!.stored).toBe(frameCount);
    expect(other.frameCache!.stored).toBeLessThan(frameCount / 2);
    expect(sha(readFileSync(join(base, 'cached1.img')))).toBe(sha(readFileSync(plain1.output)));
    expect(sha(readFileSync(join(base, 'cached1b.img')))).toBe(sha(readFileSync(plain1.output)));
    expect(sha(readFileSync(join(base, 'cached2.img')))).toBe(sha(readFileSync(plain2.output)));
    // Decompressed, the frames are exactly the uncompressed layered archive.
    const none = await pack(k2, 'none2.img', undefined, 'none');
    expect(sha(execFileSync('zstd', ['-dc'], { input: readFileSync(join(base, 'cached2.img')), maxBuffer: 1 << 26 }))).toBe(sha(readFileSync(none.output)));
  });

  it('a changed base file misses only its own frames; another level or compressor never hits', async () => {
    const frames = new MemoryFrames();
    const k1 = await makeTree('d1', '6.1.0-1', shared);
    const stored = (await pack(k1, 'd1.img', frames)).frameCache!.stored;
    const changed = await makeTree('d2', '6.1.0-1', { ...shared, 'usr/lib/systemd/systemd': noise(1.5 * MIN_FILL_BUFFER, 4) });
    const partial = await pack(changed, 'd2.img', frames);
    expect(partial.frameCache!.hits).toBeGreaterThan(0);
    expect(partial.frameCache!.stored).toBeGreaterThan(0);
    expect(sha(readFileSync(join(base, 'd2.img')))).toBe(sha(readFileSync((await pack(changed, 'd2-plain.img')).output)));
    const level = await packTree({ source: k1, output: join(base, 'd1-l5.img'), logger, level: 5, sourceDateEpoch: 1_700_000_000, owner: 'root', lateNames: LATE, chunkSize: MIN_FILL_BUFFER, frameCache: frames });
    expect(level.frameCache).toEqual({ hits: 0, stored });
    const gzip = await pack(k1, 'd1.gz.img', frames, 'gzip');
    expect(gzip.frameCache).toEqual({ hits: 0, stored });
  });
});
