import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { compressWithProgram, compressorCommand, hasZstdBinding, zstdCompress } from './compress.js';

const hasZstdProgram = spawnSync('zstd', ['--version']).status === 0;

function unzstd(data: Buffer): Buffer {
  const result = spawnSync('zstd', ['-q', '-d', '-c'], { input: data, maxBuffer: 1 << 26 });
  expect(result.status).toBe(0);
  return result.stdout;
}

// Compressible but not trivial: repeated random blocks.
const block = randomBytes(4096);
const input = Buffer.concat(Array.from({ length: 256 }, (_, i) => (i % 3 ? block : randomBytes(512))));

describe.skipIf(!hasZstdProgram)('zstd without the native binding (the Debian package ships none)', () => {
  it('compresses through the zstd program: a frame zstd -d restores, smaller than the input, the same bytes twice', async () => {
    const once = await compressWithProgram(input, 12);
    const twice = await compressWithProgram(input, 12);
    expect(once.subarray(0, 4)).toEqual(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]));
    expect(once.length).toBeLessThan(input.length / 2);
    expect(once.equals(twice)).toBe(true);
    expect(unzstd(once).equals(input)).toBe(true);
  });

  it('honours the level', async () => {
    const fast = await compressWithProgram(input, 1);
    const small = await compressWithProgram(input, 19);
    expect(unzstd(fast).equals(input)).toBe(true);
    expect(small.length).toBeLessThanOrEqual(fast.length);
  });

  it('zstdCompress gives a frame zstd -d restores, whichever path this installation has', async () => {
    expect(typeof hasZstdBinding()).toBe('boolean');
    expect(unzstd(await zstdCompress(input, 3)).equals(input)).toBe(true);
  });
});

describe('xz for the kernel', () => {
  it('uses CRC32 and the preset\'s dictionary capped at 8 MiB (the kernel\'s unxz allocates any size)', () => {
    const dict = (level: number) => compressorCommand('xz', level)[1].find((a) => a.startsWith('--lzma2='));
    expect(compressorCommand('xz', 6)[1]).toContain('--check=crc32');
    expect(dict(0)).toBe('--lzma2=preset=0,dict=256KiB');
    expect(dict(1)).toBe('--lzma2=preset=1,dict=1024KiB');
    expect(dict(6)).toBe('--lzma2=preset=6,dict=8192KiB');
    expect(dict(9)).toBe('--lzma2=preset=9,dict=8192KiB');
  });
});
