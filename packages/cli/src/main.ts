import { run, flush, Errors } from '@oclif/core';
import { isUserError } from '@mkinitrd-pkg/common';

/** Exit codes of the CLI contract (design.md §2). */
export const EXIT_OK = 0;
export const EXIT_USER_ERROR = 1;
export const EXIT_USAGE = 2;

function wantsDebug(argv: readonly string[]): boolean {
  return argv.includes('--debug') || process.env.MKINITRD_PKG_DEBUG === '1';
}

/**
 * The only place errors become exit codes. A user-facing error is one line (plus a hint
 * line); a stack trace is shown only with --debug.
 */
export async function main(argv: string[], binUrl: string): Promise<number> {
  const debug = wantsDebug(argv);
  try {
    await run(argv, binUrl);
    await flush();
    return EXIT_OK;
  } catch (error) {
    return reportError(error, debug);
  }
}

export function reportError(error: unknown, debug: boolean): number {
  const write = (line: string) => process.stderr.write(line + '\n');
  if (error instanceof Errors.ExitError) return error.oclif.exit ?? EXIT_USER_ERROR;
  if (isUserError(error)) {
    write(`mkinitrd-pkg: error: ${error.message}`);
    if (error.hint) write(`hint: ${error.hint.replaceAll('\n', '\n      ')}`);
    if (debug && error.stack) write(error.stack);
    return EXIT_USER_ERROR;
  }
  const oclifError = error as { oclif?: { exit?: number }; message?: string };
  if (oclifError && typeof oclifError === 'object' && oclifError.oclif) {
    // Parse errors (unknown flag, missing argument, bad option value) are usage errors.
    const firstLine = String(oclifError.message ?? error).split('\n')[0];
    write(`mkinitrd-pkg: usage: ${firstLine}`);
    write(`hint: see 'mkinitrd-pkg --help' or 'mkinitrd-pkg COMMAND --help'`);
    if (debug && error instanceof Error && error.stack) write(error.stack);
    return EXIT_USAGE;
  }
  const message = error instanceof Error ? error.message : String(error);
  write(`mkinitrd-pkg: internal error: ${message}`);
  if (debug && error instanceof Error && error.stack) write(error.stack);
  else write('hint: this is a bug; run again with --debug for the stack trace and report it');
  return EXIT_USER_ERROR;
}
