import { run, flush, Errors } from '@oclif/core';
import { MACHINE_ERRNOS, asEnvironmentError, exitStatusOf, isUserError, runCleanupsSync } from '@mkinitrd-pkg/common';

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
  installSignalHandlers();
  try {
    await run(argv, binUrl);
    await flush();
    return EXIT_OK;
  } catch (error) {
    return reportError(error, debug);
  }
}

/**
 * SIGINT/SIGTERM/SIGHUP: remove the temporary outputs and work directories this run
 * registered (common/src/cleanup.ts), say so in one line, and exit 128 + the signal
 * number as a shell expects. Child processes get the terminal's SIGINT themselves; the
 * private namespaces they run in vanish with them.
 */
const SIGNALS = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;
let signalHandlersInstalled = false;
function installSignalHandlers(): void {
  if (signalHandlersInstalled) return;
  signalHandlersInstalled = true;
  for (const [name, number] of Object.entries(SIGNALS)) {
    process.on(name, () => {
      const removed = runCleanupsSync();
      process.stderr.write(`mkinitrd-pkg: interrupted by ${name}${removed.length ? `; removed ${removed.length} temporary file(s) and directories` : ''}\n`);
      process.exit(128 + number);
    });
  }
}

/** Longest message line printed: a hostile input (a 10 MB config line) must not flood the terminal. */
const MAX_LINE = 1000;
function clip(text: string): string {
  return text.length > MAX_LINE ? `${text.slice(0, MAX_LINE)}… (${text.length - MAX_LINE} more characters)` : text;
}

export function reportError(error: unknown, debug: boolean): number {
  const write = (line: string) => process.stderr.write(clip(line) + '\n');
  if (error instanceof Errors.ExitError) return error.oclif.exit ?? EXIT_USER_ERROR;
  // A failure of the machine (full disk, read-only file system, permissions) that no
  // library call wrapped is still the user's situation, not a bug: one line with its path.
  error = asEnvironmentError(error, undefined, 'cannot access', MACHINE_ERRNOS);
  if (isUserError(error)) {
    const status = exitStatusOf(error.code);
    write(`mkinitrd-pkg: ${status === EXIT_USAGE ? 'usage' : 'error'}: ${error.message.split('\n')[0]}`);
    if (error.hint) write(`hint: ${error.hint.replaceAll('\n', '\n      ')}`);
    if (debug && error.stack) write(error.stack);
    return status;
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
