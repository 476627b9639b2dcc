import { afterEach, describe, expect, it, vi } from 'vitest';
import { ERROR_CODES, UserError, asEnvironmentError, exitStatusOf, withAtomicOutput } from '@mkinitrd-pkg/common';
import { EXIT_USAGE, EXIT_USER_ERROR, reportError } from './main.js';

/** What reportError writes to stderr, as lines, and the status it returns. */
function report(error: unknown, debug = false): { status: number; lines: string[] } {
  const written: string[] = [];
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    written.push(String(chunk));
    return true;
  });
  try {
    const status = reportError(error, debug);
    return { status, lines: written.join('').split('\n').filter(Boolean) };
  } finally {
    spy.mockRestore();
  }
}

afterEach(() => vi.restoreAllMocks());

describe('the error contract: every code to its exit status and one line', () => {
  it.each(ERROR_CODES.map((code) => [code]))('%s', (code) => {
    const { status, lines } = report(new UserError(code, `something about ${code}\nsecond line that must not be printed`, { hint: 'what to do' }));
    expect(status).toBe(code === 'USAGE' ? EXIT_USAGE : EXIT_USER_ERROR);
    expect(status).toBe(exitStatusOf(code));
    expect(lines[0]).toBe(`mkinitrd-pkg: ${code === 'USAGE' ? 'usage' : 'error'}: something about ${code}`);
    expect(lines[1]).toBe('hint: what to do');
    expect(lines).toHaveLength(2);
    expect(lines.join('\n')).not.toMatch(/\n\s+at /);
  });

  it('a usage error exits 2, as the README says', () => {
    expect(report(new UserError('USAGE', 'bad flag')).status).toBe(2);
  });

  it('a failure of the machine (full disk, read-only fs, permissions) is the user situation, not a bug', () => {
    for (const code of ['ENOSPC', 'EDQUOT', 'EROFS', 'EACCES', 'EIO']) {
      const error = Object.assign(new Error(`${code}: failed, write`), { code, path: '/some/where' });
      const { status, lines } = report(error);
      expect(status).toBe(1);
      expect(lines[0]).toMatch(/^mkinitrd-pkg: error: cannot access \/some\/where: /);
      expect(lines.join('\n')).not.toMatch(/bug/);
    }
  });

  it('a tool that reports a full disk on stderr names the output', () => {
    const tool = new UserError('COMMAND_FAILED', 'command exited with 70: zstd -q -c', { hint: 'zstd: error 70 : Write error : cannot write block : No space left on device' });
    const mapped = asEnvironmentError(tool, '/out/initrd.img');
    expect(mapped).toBeInstanceOf(UserError);
    expect((mapped as UserError).code).toBe('IO');
    expect((mapped as UserError).message).toBe('cannot write /out/initrd.img: no space left on device');
  });

  it('a genuine bug still says so', () => {
    const { status, lines } = report(new TypeError('x is undefined'));
    expect(status).toBe(1);
    expect(lines[0]).toBe('mkinitrd-pkg: internal error: x is undefined');
    expect(lines[1]).toMatch(/this is a bug/);
  });

  it('a 10 MB message is clipped to one readable line', () => {
    const { lines } = report(new UserError('CONFIG', 'x'.repeat(10_000_000)));
    expect(lines[0]!.length).toBeLessThan(1200);
    expect(lines).toHaveLength(1);
  });

  it('withAtomicOutput leaves no temporary and names the output when the write fails on a full disk', async () => {
    const { mkdtemp, readdir } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-enospc-'));
    const out = join(dir, 'image.img');
    const failure = withAtomicOutput(out, async () => {
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    });
    await expect(failure).rejects.toThrow(`cannot write ${out}: no space left on device`);
    expect(await readdir(dir)).toEqual([]);
  });
});
