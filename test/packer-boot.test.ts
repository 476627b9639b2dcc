// The kernel unpacks what `pack` writes: a QEMU (TCG) boot of the host's kernel with an
// initrd packed by the CLI — an uncompressed microcode segment, then the main tree as ONE
// newc archive compressed as many independent frames (zstd frames, gzip members, lz4
// legacy streams; xz is one stream of blocks) cut at member boundaries, so that frames
// split a directory's contents and a hard-link group — whose /init checks files from every
// frame, the hard-link group and a symlink, then powers off.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, copyFile, link, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkinitrdPkg } from './lib/cli.js';
import { bootQemu, hostKernel } from '../scripts/lib/qemu.mjs';

const kernel = await hostKernel();
const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const staticBusybox =
  existsSync('/bin/busybox') && /statically linked/.test(spawnSync('file', ['-L', '/bin/busybox'], { encoding: 'utf8' }).stdout ?? '');
const canBoot = Boolean(kernel) && has('qemu-system-x86_64') && staticBusybox && process.getuid?.() === 0 && !process.env.MKINITRD_PKG_FAST;

const MARK = 'MKINITRD-PKG-PACKER-BOOT';
let dir: string;
let tree: string;
let early: string;
const expected: string[] = [];

beforeAll(async () => {
  if (!canBoot) return;
  dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-packer-boot-'));
  tree = join(dir, 'tree');
  for (const d of ['bin', 'dev', 'proc', 'data/a', 'data/y', 'data/z']) await mkdir(join(tree, d), { recursive: true });
  await copyFile('/bin/busybox', join(tree, 'bin/busybox'));
  await chmod(join(tree, 'bin/busybox'), 0o755);
  await symlink('busybox', join(tree, 'bin/sh'));
  execFileSync('mknod', ['-m', '0600', join(tree, 'dev/console'), 'c', '5', '1']);
  // Files of 700 KiB: with --chunk-size 1 (MiB) nearly each one starts a new archive.
  for (let i = 0; i < 8; i++) {
    const data = createHash('sha512').update(String(i)).digest();
    const body = Buffer.alloc(700 * 1024);
    for (let o = 0; o < body.length; o += data.length) data.copy(body, o);
    body.writeUInt32LE(i, 0);
    await writeFile(join(tree, `data/a/f${i}`), body);
    expected.push(`${createHash('sha256').update(body).digest('hex')}  /data/a/f${i}`);
  }
  // A hard-link group across directories with 1.4 MB between its members: with frames of
  // at most 1 MiB, a frame boundary falls inside the group (the kernel keeps its hard-link
  // table until TRAILER!!!), as it falls inside data/a.
  await writeFile(join(tree, 'data/y/linked'), 'linked\n');
  for (const pad of ['pad1', 'pad2']) {
    const body = Buffer.alloc(700 * 1024, pad);
    await writeFile(join(tree, `data/y/${pad}`), body);
    expected.push(`${createHash('sha256').update(body).digest('hex')}  /data/y/${pad}`);
  }
  await link(join(tree, 'data/y/linked'), join(tree, 'data/z/linked'));
  await symlink('../a/f7', join(tree, 'data/z/f7-link'));
  await writeFile(
    join(tree, 'init'),
    `#!/bin/sh
/bin/busybox mount -t proc proc /proc
echo "${MARK}-BEGIN"
/bin/busybox sha256sum /data/a/f* /data/y/pad*
/bin/busybox stat -c 'links %h' /data/z/linked
[ "$(/bin/busybox stat -c %i /data/y/linked)" = "$(/bin/busybox stat -c %i /data/z/linked)" ] && echo "same inode"
/bin/busybox cat /data/z/linked
/bin/busybox readlink /data/z/f7-link
echo "${MARK}-END"
/bin/busybox poweroff -f
`,
    { mode: 0o755 },
  );
  early = join(dir, 'early');
  await mkdir(join(early, 'kernel/x86/microcode'), { recursive: true });
  await writeFile(join(early, 'kernel/x86/microcode/GenuineIntel.bin'), Buffer.alloc(2048));
}, 60_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe.skipIf(!canBoot)('the kernel boots what pack writes', () => {
  const cases: [string, string[]][] = [
    ['zstd', ['--microcode', 'EARLY', '--chunk-size', '1']],
    ['gzip', ['--chunk-size', '1']],
    ['xz', []],
    ['lz4', ['--chunk-size', '1']],
  ];
  for (const [compression, extra] of cases) {
    it(`${compression}${extra.length ? ' ' + extra.join(' ') : ''}`, { timeout: 180_000 }, async () => {
      const image = join(dir, `initrd.${compression}`);
      const args = ['pack', tree, '--output', image, '--compression', compression, '--owner', 'root', '--json', ...extra.map((a) => (a === 'EARLY' ? early : a))];
      const r = await mkinitrdPkg(args);
      expect(r.exitCode, r.stderr).toBe(0);
      const packed = JSON.parse(r.stdout);
      const main = packed.segments.at(-1);
      expect(main.archives).toBe(1);
      if (compression !== 'xz') expect(main.frames).toBeGreaterThan(8);
      const started = Date.now();
      const session = bootQemu({ kernel: kernel!.vmlinuz, initrd: image, append: 'quiet', memoryMb: 512 });
      try {
        const out = await session.waitFor(`${MARK}-END`, 150_000);
        // For the record (not asserted: the machine is shared), time to the end of /init.
        console.log(`packer boot ${compression}: ${((Date.now() - started) / 1000).toFixed(1)} s, ${main.frames} frame(s)`);
        const body = out.slice(out.indexOf(`${MARK}-BEGIN`)).replaceAll('\r', '');
        for (const line of expected) expect(body).toContain(line);
        expect(body).toContain('links 2');
        expect(body).toContain('same inode');
        expect(body).toContain('linked\n');
        expect(body).toContain('../a/f7');
      } finally {
        session.kill();
      }
    });
  }
});
