import { describe, expect, it } from 'vitest';
import { formatCommand, run, shellQuote } from './run.js';
import { UserError } from './errors.js';

describe('shellQuote', () => {
  it('leaves plain words alone and quotes the rest so the line can be pasted', () => {
    expect(shellQuote('apt-get')).toBe('apt-get');
    expect(shellQuote('a b')).toBe("'a b'");
    expect(shellQuote("it's")).toBe("'it'\\''s'");
    expect(shellQuote('')).toBe("''");
  });
  it('formats env and arguments', () => {
    expect(formatCommand('env', ['x y'], { A: '1' })).toBe("A=1 env 'x y'");
  });
});

describe('run', () => {
  it('returns output of a successful command', async () => {
    const r = await run('sh', ['-c', 'echo hi']);
    expect(r.stdout).toBe('hi\n');
  });
  it('turns a failure into a UserError carrying the command line and stderr', async () => {
    const error = await run('sh', ['-c', 'echo boom >&2; exit 3']).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).message).toContain("sh -c 'echo boom >&2; exit 3'");
    expect((error as UserError).message).toContain('exited with 3');
    expect((error as UserError).hint).toBe('boom');
  });
  it('accepts the exit codes a caller names as success (modinfo exits 1 for one bad module of a batch)', async () => {
    const r = await run('sh', ['-c', 'echo partial; exit 1'], { okExitCodes: [0, 1] });
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toBe('partial\n');
    const error = await run('sh', ['-c', 'exit 2'], { okExitCodes: [0, 1] }).catch((e: unknown) => e);
    expect((error as UserError).message).toContain('exited with 2');
  });
  it('reports a missing program as MISSING_TOOL', async () => {
    const error = await run('definitely-not-a-program-xyz', []).catch((e: unknown) => e);
    expect((error as UserError).code).toBe('MISSING_TOOL');
  });
});
