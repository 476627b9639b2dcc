import { execa } from 'execa';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../packages/cli/bin/run.js', import.meta.url));

/** Run the real CLI as a separate process, as a user would. */
export async function mkinitrdPkg(args: string[], env: Record<string, string> = {}) {
  const result = await execa('node', [CLI, ...args], { reject: false, env: { MKINITRD_PKG_LOG_LEVEL: 'warn', ...env } });
  return { exitCode: result.exitCode ?? -1, stdout: String(result.stdout), stderr: String(result.stderr) };
}
