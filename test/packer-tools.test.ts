// Every initrd tool reads the whole generic image (issue 12 §1): the real `--preset debian`
// image, built once per compressor on the shared test cache, is ONE newc archive whose
// compressed frames decompress to exactly the `--compression none` image, and dracut's
// lsinitrd, initramfs-tools' lsinitramfs and unmkinitramfs, and GNU cpio list exactly the
// entries our `inspect` lists. (Before: they stopped at the first of ~9 archives and saw
// 374 of 1528 entries.)
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkinitrdPkg } from './lib/cli.js';

const TEST_CACHE = process.env.MKINITRD_PKG_TEST_CACHE ?? '/var/tmp/mkinitrd-pkg-test-cache';
const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const tools = ['lsinitrd', 'lsinitramfs', 'unmkinitramfs', 'cpio', 'zstd', 'xz', 'lz4', 'gzip'];
const canRun = process.getuid?.() === 0 && !process.env.MKINITRD_PKG_FAST && tools.every(has);
const DECOMPRESS: Record<string, string[]> = { zstd: ['zstd', '-dc'], gzip: ['gzip', '-dc'], xz: ['xz', '-dc'], lz4: ['lz4', '-dc'] };
const BIG = 256 * 1024 * 1024;

let dir: string;
let none: Buffer;
let names: string[];

/** Sorted member names, "./"-free, the root "." left out (tools differ on listing it). */
function normalise(list: string[]): string[] {
  return list
    .map((n) => n.replace(/^\.\//, ''))
    .filter((n) => n !== '' && n !== '.')
    .sort();
}

// The fastest level of each: the layout is under test here, not the ratio.
const FAST_LEVEL: Record<string, string[]> = { none: [], zstd: ['--compression-level', '1'], gzip: ['--compression-level', '1'], xz: ['--compression-level', '0'], lz4: ['--compression-level', '1'] };

async function build(compression: string): Promise<string> {
  const image = join(dir, `initrd.${compression}`);
  const r = await mkinitrdPkg([
    'build', '--preset', 'debian', '--output', image, '--compression', compression, ...FAST_LEVEL[compression]!,
    '--source-date-epoch', '1700000000', '--cache-dir', TEST_CACHE,
  ]);
  expect(r.exitCode, r.stderr).toBe(0);
  return image;
}

async function inspectNames(image: string): Promise<{ names: string[]; segments: { compression: string; archives: number }[] }> {
  const r = await mkinitrdPkg(['inspect', image, '--json']);
  expect(r.exitCode, r.stderr).toBe(0);
  const data = JSON.parse(r.stdout) as { entries: { name: string }[]; segments: { compression: string; archives: number }[] };
  return { names: normalise(data.entries.map((e) => e.name)), segments: data.segments };
}

// `ls -l` style lines of lsinitrd: mode, links, owner, group, size (or "major, minor"), date (3 fields), name [-> target].
const LSINITRD_LINE = /^[-dlcbps][-rwxsStT]{9}\s+\d+\s+\S+\s+\S+\s+(?:\d+,\s+)?\d+\s+\S+\s+\d+\s+[\d:]+\s(.*)$/;

beforeAll(async () => {
  if (!canRun) return;
  dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-packer-tools-'));
  none = readFileSync(await build('none'));
  names = (await inspectNames(join(dir, 'initrd.none'))).names;
}, 900_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe.skipIf(!canRun)('standard initrd tools read the whole generic image', () => {
  it('the uncompressed image is one archive that cpio lists in full', () => {
    expect(names.length).toBeGreaterThan(1000);
    const listed = execFileSync('cpio', ['-t', '--quiet'], { input: none, maxBuffer: BIG }).toString('utf8').trim().split('\n');
    expect(normalise(listed)).toEqual(names);
  });

  for (const compression of ['zstd', 'gzip', 'xz', 'lz4']) {
    it(`${compression}: decompresses to the uncompressed image; lsinitrd, lsinitramfs, unmkinitramfs and cpio list every entry`, { timeout: 600_000 }, async () => {
      const image = await build(compression);
      const inspected = await inspectNames(image);
      expect(inspected.names).toEqual(names);
      expect(inspected.segments.map((s) => [s.compression, s.archives])).toEqual([[compression, 1]]);

      const [cmd, ...args] = DECOMPRESS[compression]!;
      const plain = execFileSync(cmd!, [...args, image], { maxBuffer: BIG });
      expect(plain.equals(none)).toBe(true);

      const cpio = execFileSync('cpio', ['-t', '--quiet'], { input: plain, maxBuffer: BIG }).toString('utf8').trim().split('\n');
      expect(normalise(cpio)).toEqual(names);

      const lsinitramfs = execFileSync('lsinitramfs', [image], { maxBuffer: BIG }).toString('utf8').trim().split('\n');
      expect(normalise(lsinitramfs)).toEqual(names);

      const lsinitrd = spawnSync('lsinitrd', [image], { maxBuffer: BIG, encoding: 'utf8' });
      const listed = lsinitrd.stdout
        .split('\n')
        .map((line) => LSINITRD_LINE.exec(line)?.[1])
        .filter((n): n is string => n !== undefined)
        .map((n) => n.replace(/ -> .*$/, ''));
      expect(normalise(listed)).toEqual(names);

      const out = join(dir, `unmk.${compression}`);
      execFileSync('unmkinitramfs', [image, out]);
      const found = execFileSync('find', ['.', '-mindepth', '1'], { cwd: out, maxBuffer: BIG }).toString('utf8').trim().split('\n');
      expect(normalise(found)).toEqual(names);
      await rm(out, { recursive: true, force: true });
    });
  }
});
