// End-to-end tests of `pack`, `inspect` and `extract` through the real CLI (run `npx tsc -b`
// first; `npm test` does), checked against GNU cpio, bsdtar, zstd/xz/gzip/lz4 and dracut.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, lstatSync, readdirSync, readFileSync, readlinkSync, statSync, type Stats } from 'node:fs';
import { chmod, chown, link, mkdir, mkdtemp, open, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkinitrdPkg } from './lib/cli.js';

const isRoot = process.getuid?.() === 0;
const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const BIG = 100 * 1024 * 1024;
const LONG = 'l'.repeat(230);

let dir: string;
let tree: string;

async function cli(args: string[], env: Record<string, string> = {}) {
  const r = await mkinitrdPkg(args, env);
  expect(r.exitCode, `mkinitrd-pkg ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r;
}

async function writeBig(path: string) {
  const block = Buffer.alloc(1 << 20);
  for (let i = 0; i < block.length; i += 4) block.writeUInt32LE((Math.imul(i, 2654435761) ^ (i >>> 7)) >>> 0, i);
  const handle = await open(path, 'w');
  for (let mib = 0; mib < BIG / block.length; mib++) {
    block.writeUInt32LE(mib, 0);
    await handle.write(block);
  }
  await handle.close();
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-packer-'));
  tree = join(dir, 'tree');
  for (const d of ['usr/bin', 'usr/lib/x', 'etc/ssl', 'dev', 'run', 'var/tmp', 'srv/private']) await mkdir(join(tree, d), { recursive: true });
  await writeFile(join(tree, 'usr/bin/prog'), '#!/bin/sh\necho hi\n');
  await chmod(join(tree, 'usr/bin/prog'), 0o4755);
  await writeFile(join(tree, 'etc/empty'), '');
  await writeFile(join(tree, 'etc/ssl/key'), 'secret');
  await chmod(join(tree, 'etc/ssl/key'), 0o600);
  await chmod(join(tree, 'var/tmp'), 0o1777);
  await chmod(join(tree, 'srv/private'), 0o700);
  await writeFile(join(tree, 'usr/lib/x/a'), 'hard-linked contents\n');
  await link(join(tree, 'usr/lib/x/a'), join(tree, 'usr/bin/b-link'));
  await link(join(tree, 'usr/lib/x/a'), join(tree, 'etc/c-link'));
  await symlink('../lib/x/a', join(tree, 'usr/bin/rel-link'));
  await symlink('/usr/bin/prog', join(tree, 'etc/abs-link'));
  await symlink('does/not/exist', join(tree, 'etc/dangling'));
  await writeFile(join(tree, 'usr/lib/ünïcødé ☃ 名前.txt'), 'unicode\n');
  await writeFile(join(tree, `usr/lib/${LONG}`), 'long name\n');
  await mkdir(join(tree, `usr/lib/${LONG}.d/${LONG}`), { recursive: true });
  await writeFile(join(tree, `usr/lib/${LONG}.d/${LONG}/${LONG}`), 'deep long name\n');
  await writeBig(join(tree, 'usr/lib/big.bin'));
  execFileSync('mkfifo', [join(tree, 'run/fifo')]);
  if (has('python3')) {
    execFileSync('python3', ['-c', 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])', join(tree, 'run/sock')]);
  }
  if (isRoot) {
    execFileSync('mknod', ['-m', '0666', join(tree, 'dev/null'), 'c', '1', '3']);
    execFileSync('mknod', ['-m', '0660', join(tree, 'dev/loop0'), 'b', '7', '0']);
    await chown(join(tree, 'etc/ssl/key'), 1234, 5678);
    await chown(join(tree, 'srv/private'), 4321, 8765);
  }
  await utimes(join(tree, 'etc/empty'), 1_500_000_000, 1_500_000_000);
}, 120_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Node {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size?: number;
  sha?: string;
  target?: string;
  rdev?: number;
  mtime?: number;
}

const typeOf = (st: Stats) =>
  st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isCharacterDevice() ? 'char' : st.isBlockDevice() ? 'block' : st.isFIFO() ? 'fifo' : 'socket';

async function sha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Everything below root that an archive round trip must preserve, plus hard-link groups. */
async function describeTree(root: string, { dirMtimes = true } = {}) {
  const nodes = new Map<string, Node>();
  const byIno = new Map<string, string[]>();
  const walk = async (rel: string) => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const p = join(root, r);
      const st = lstatSync(p);
      const type = typeOf(st);
      const node: Node = { type, mode: st.mode, uid: st.uid, gid: st.gid };
      if (type === 'file') {
        node.size = st.size;
        node.sha = await sha256(p);
      }
      if (type === 'symlink') node.target = readlinkSync(p);
      else if (type !== 'dir' || dirMtimes) node.mtime = Math.floor(st.mtimeMs / 1000);
      if (type === 'char' || type === 'block') node.rdev = st.rdev;
      nodes.set(r, node);
      if (type !== 'dir' && st.nlink > 1) {
        const key = `${st.dev}:${st.ino}`;
        byIno.set(key, [...(byIno.get(key) ?? []), r]);
      }
      if (type === 'dir') await walk(r);
    }
  };
  await walk('');
  const links = [...byIno.values()].map((g) => g.sort().join(' | ')).sort();
  return { nodes: Object.fromEntries(nodes), links };
}

/** Split a stream of concatenated newc archives at each TRAILER!!! (GNU cpio reads one at a time). */
function splitArchives(data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  let from = 0;
  for (;;) {
    const at = data.indexOf('TRAILER!!!\0', from, 'latin1');
    if (at < 0) break;
    const header = at - 110;
    from = at + 11;
    if (data.toString('latin1', header, header + 6) !== '070701' || data.toString('latin1', header + 94, header + 102) !== '0000000B') continue;
    const end = header + 124;
    out.push(data.subarray(start, end));
    start = end;
    while (start < data.length && data[start] === 0) start++;
    from = start;
  }
  return out;
}

function cpioExtract(archive: Buffer, dest: string) {
  execFileSync('cpio', ['-idm', '--no-absolute-filenames', '--quiet'], { cwd: dest, input: archive, maxBuffer: 1 << 20 });
}

describe('pack → GNU cpio / our extract round trip (real CLI)', () => {
  let source: Awaited<ReturnType<typeof describeTree>>;
  beforeAll(async () => {
    source = await describeTree(tree);
  }, 60_000);

  it('the test tree has every member type', () => {
    const types = new Set(Object.values(source.nodes).map((n) => n.type));
    for (const t of ['file', 'dir', 'symlink', 'fifo']) expect(types).toContain(t);
    if (isRoot) for (const t of ['char', 'block']) expect(types).toContain(t);
    if (has('python3')) expect(types).toContain('socket');
    expect(source.links).toEqual(['etc/c-link | usr/bin/b-link | usr/lib/x/a']);
  });

  for (const compression of ['none', 'zstd'] as const) {
    it(`${compression}: GNU cpio and our extract reproduce the tree`, { timeout: 120_000 }, async () => {
      const image = join(dir, `rt.${compression}`);
      const packed = JSON.parse((await cli(['pack', tree, '--output', image, '--compression', compression, '--json'])).stdout);
      expect(packed.size).toBe(statSync(image).size);
      expect(statSync(image).mode & 0o777).toBe(0o600);

      // ONE archive, whatever the compression: GNU cpio (which stops at the first
      // TRAILER!!!) sees the whole tree; the 100 MB file makes a zstd frame of its own.
      const stream = compression === 'none' ? readFileSync(image) : execFileSync('zstd', ['-dc', image], { maxBuffer: 1 << 30 });
      const archives = splitArchives(stream);
      expect(archives.length).toBe(1);
      expect(packed.segments[0].archives).toBe(1);
      if (compression === 'zstd') expect(packed.segments[0].frames).toBeGreaterThan(1);
      const viaCpio = join(dir, `cpio-${compression}`);
      await mkdir(viaCpio);
      for (const a of archives) cpioExtract(a, viaCpio);
      // GNU cpio sets directory mtimes before it fills them; compare those through ours only.
      expect(await describeTree(viaCpio, { dirMtimes: false })).toEqual(await describeTree(tree, { dirMtimes: false }));

      const viaOurs = join(dir, `ours-${compression}`);
      const extracted = JSON.parse((await cli(['extract', image, viaOurs, '--json'])).stdout);
      expect(extracted.skipped).toEqual([]);
      expect(await describeTree(viaOurs)).toEqual(source);
    });
  }
});

describe('reproducible output', () => {
  it('same tree twice and a cp -a copy with new mtimes give identical bytes', { timeout: 120_000 }, async () => {
    const copy = join(dir, 'copy');
    execFileSync('cp', ['-a', tree, copy]);
    execFileSync('find', [copy, '-exec', 'touch', '-h', '{}', '+']); // new mtimes; inode numbers differ anyway
    const epoch = '1400000000'; // older than every mtime above: all clamp to it
    for (const compression of ['none', 'zstd', 'gzip']) {
      const shas = [];
      for (const [src, n] of [
        [tree, 1],
        [tree, 2],
        [copy, 3],
      ] as const) {
        const out = join(dir, `repro-${compression}-${n}`);
        const level = compression === 'gzip' ? ['--compression-level', '1'] : [];
        await cli(['pack', src, '-o', out, '--compression', compression, '--owner', 'root', ...level], { SOURCE_DATE_EPOCH: epoch });
        shas.push(await sha256(out));
      }
      expect(new Set(shas).size, compression).toBe(1);
    }
    // The flag wins over the environment, and the clamp is visible in the archive.
    const out = join(dir, 'repro-flag');
    await cli(['pack', tree, '-o', out, '--compression', 'none', '--source-date-epoch', '1300000000'], { SOURCE_DATE_EPOCH: epoch });
    const info = JSON.parse((await cli(['inspect', out, '--json'])).stdout);
    expect(new Set(info.entries.map((e: { mtime: number }) => e.mtime))).toEqual(new Set([1_300_000_000]));
  });
});

describe('inspect reads what other tools write', () => {
  let small: string;
  let expected: string[];
  beforeAll(async () => {
    small = join(dir, 'small');
    await mkdir(join(small, 'bin'), { recursive: true });
    await writeFile(join(small, 'bin/sh'), 'shell');
    await link(join(small, 'bin/sh'), join(small, 'bin/dash'));
    await symlink('bin', join(small, 'sbin'));
    await writeFile(join(small, 'init'), '#!/bin/sh\n');
    expected = ['bin', 'bin/dash', 'bin/sh', 'init', 'sbin'];
  });

  const names = (info: { entries: { name: string; segment: number }[] }, segment = -1) =>
    info.entries
      .filter((e) => segment < 0 || e.segment === segment)
      .map((e) => e.name.replace(/^\.\//, ''))
      .filter((n) => n !== '.')
      .sort();

  async function inspect(image: string) {
    const json = JSON.parse((await cli(['inspect', image, '--json'])).stdout);
    const text = (await cli(['inspect', image])).stdout;
    expect(text).toMatch(/^Image: /);
    return json;
  }

  it('GNU cpio (find | cpio -o -H newc) and bsdtar --format newc', async () => {
    const gnu = join(dir, 'gnu.cpio');
    execFileSync('sh', ['-c', `cd "${small}" && find . | LC_ALL=C sort | cpio -o -H newc --quiet > "${gnu}"`]);
    const info = await inspect(gnu);
    expect(names(info)).toEqual(expected);
    expect(info.totals.hardlinks).toBe(1);
    expect(info.segments).toMatchObject([{ offset: 0, compression: 'none', archives: 1 }]);
    if (has('bsdtar')) {
      const bsd = join(dir, 'bsd.cpio');
      execFileSync('bsdtar', ['--format', 'newc', '-cf', bsd, '-C', small, '.']);
      const b = await inspect(bsd);
      expect(names(b)).toEqual(expected);
      expect(b.entries.find((e: { name: string }) => e.name.endsWith('sbin')).linkTarget).toBe('bin');
    }
  });

  it('a dracut-style image: uncompressed microcode cpio, padding, then compressed main (zstd, xz, gzip, lz4)', { timeout: 60_000 }, async () => {
    const early = join(dir, 'early');
    await mkdir(join(early, 'kernel/x86/microcode'), { recursive: true });
    await writeFile(join(early, 'early_cpio'), '1\n');
    await writeFile(join(early, 'kernel/x86/microcode/GenuineIntel.bin'), Buffer.alloc(4096, 0xab));
    const earlyCpio = execFileSync('sh', ['-c', `cd "${early}" && find . | LC_ALL=C sort | cpio -o -H newc --quiet`]);
    const mainCpio = execFileSync('sh', ['-c', `cd "${small}" && find . | LC_ALL=C sort | cpio -o -H newc --quiet`]);
    const compressors: [string, string[]][] = [
      ['zstd', ['zstd', '-q', '-c', '-15']],
      ['xz', ['xz', '-q', '-c', '--check=crc32']],
      ['gzip', ['gzip', '-n', '-c']],
      ['lz4', ['lz4', '-q', '-l', '-c']],
    ];
    for (const [name, [cmd, ...args]] of compressors) {
      if (!has(cmd!)) continue;
      const compressed = execFileSync(cmd!, args, { input: mainCpio });
      const image = join(dir, `dracut-style.${name}`);
      // GNU cpio pads to 512 bytes; add a few NULs more, as some tools do.
      await writeFile(image, Buffer.concat([earlyCpio, Buffer.alloc(16), compressed]));
      const info = await inspect(image);
      expect(info.segments.map((s: { compression: string }) => s.compression), name).toEqual(['none', name]);
      expect(info.segments[1].offset).toBe(earlyCpio.length + 16);
      expect(names(info, 0)).toEqual(['early_cpio', 'kernel', 'kernel/x86', 'kernel/x86/microcode', 'kernel/x86/microcode/GenuineIntel.bin']);
      expect(names(info, 1)).toEqual(expected);
      const out = join(dir, `dracut-style-${name}-x`);
      await cli(['extract', image, out]);
      expect(readFileSync(join(out, 'kernel/x86/microcode/GenuineIntel.bin'))).toEqual(Buffer.alloc(4096, 0xab));
      expect(lstatSync(join(out, 'bin/dash')).ino).toBe(lstatSync(join(out, 'bin/sh')).ino);
    }
  });

  it('our --microcode image has the same shape', async () => {
    const early = join(dir, 'early2');
    await mkdir(join(early, 'kernel/x86/microcode'), { recursive: true });
    await writeFile(join(early, 'kernel/x86/microcode/AuthenticAMD.bin'), Buffer.alloc(100, 1));
    const image = join(dir, 'ours-ucode.img');
    await cli(['pack', small, '-o', image, '--microcode', early, '--compression', 'xz']);
    const info = await inspect(image);
    expect(info.segments.map((s: { compression: string }) => s.compression)).toEqual(['none', 'xz']);
    // The kernel's early loader (lib/earlycpio.c) reads the first segment uncompressed.
    const listed = execFileSync('cpio', ['-it', '--quiet'], { input: readFileSync(image) }).toString().trim().split('\n');
    expect(listed).toEqual(['kernel', 'kernel/x86', 'kernel/x86/microcode', 'kernel/x86/microcode/AuthenticAMD.bin']);
    expect(execFileSync('sh', ['-c', `tail -c +${info.segments[1].offset + 1} "${image}" | xz -dc | cpio -it --quiet`]).toString().trim().split('\n')).toEqual(expected);
  });

  it.skipIf(!has('dracut') || !isRoot)('a real dracut image', { timeout: 120_000 }, async () => {
    const kvers = readdirSync('/usr/lib/modules');
    if (kvers.length === 0) return;
    const image = join(dir, 'dracut.img');
    const r = spawnSync('dracut', ['--no-hostonly', '--no-kernel', '--zstd', '--force', '--quiet', '-m', 'base', image, kvers[0]!], { encoding: 'utf8' });
    if (r.status !== 0) return; // dracut could not run here; the hand-made images above cover the format
    const info = await inspect(image);
    const listed = execFileSync('sh', ['-c', `zstd -dc "${image}" | cpio -it --quiet`], { maxBuffer: 1 << 26 })
      .toString()
      .trim()
      .split('\n')
      .filter((n) => n !== '.')
      .sort();
    expect(names(info)).toEqual(listed);
  });

  it('a corrupt image is a clear one-line error', async () => {
    const image = join(dir, 'corrupt.zst');
    const good = readFileSync(join(dir, 'dracut-style.zstd'));
    await writeFile(image, good.subarray(0, good.length - 40));
    const r = await mkinitrdPkg(['inspect', image]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/^mkinitrd-pkg: error: .*zstd segment/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});
