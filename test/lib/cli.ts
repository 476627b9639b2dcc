import { execa } from 'execa';
import { expect } from 'vitest';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../packages/cli/bin/run.js', import.meta.url));

/** Run the real CLI as a separate process, as a user would. */
export async function mkinitrdPkg(args: string[], env: Record<string, string> = {}) {
  const result = await execa('node', [CLI, ...args], { reject: false, env: { MKINITRD_PKG_LOG_LEVEL: 'warn', ...env } });
  return { exitCode: result.exitCode ?? -1, stdout: String(result.stdout), stderr: String(result.stderr) };
}

/**
 * The error contract (design.md §2): the given exit code, one line (plus at most a hint
 * line) on stderr besides JSON logs, and no stack trace.
 */
export function expectOneLineError(result: { exitCode: number; stderr: string }, message: RegExp, exitCode = 1): void {
  expect(result.exitCode, result.stderr).toBe(exitCode);
  const lines = result.stderr.trim().split('\n').filter((l) => !l.startsWith('{'));
  expect(lines[0]).toMatch(message);
  expect(lines.length).toBeLessThanOrEqual(2);
  expect(result.stderr).not.toMatch(/\n\s+at /);
}
