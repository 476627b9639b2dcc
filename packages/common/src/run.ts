import type { Options as ExecaOptions } from 'execa';
import { UserError, isErrnoException } from './errors.js';

/** Quote one argument so that the printed command line can be pasted into a shell. */
export function shellQuote(arg: string): string {
  if (arg !== '' && /^[A-Za-z0-9_\-+=.,/:@%^]+$/.test(arg)) return arg;
  return `'${arg.replaceAll("'", `'\\''`)}'`;
}

export function formatCommand(file: string, args: readonly string[], env?: Record<string, string | undefined>): string {
  const envPart = env
    ? Object.entries(env)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => `${k}=${shellQuote(String(v))} `)
        .join('')
    : '';
  return envPart + [file, ...args].map(shellQuote).join(' ');
}

export interface RunOptions {
  cwd?: string;
  /** Extra environment variables (merged over process.env unless `cleanEnv`). */
  env?: Record<string, string | undefined>;
  cleanEnv?: boolean;
  input?: string | Buffer;
  /** Exit codes that are not failures (default: only 0). */
  okExitCodes?: number[];
  /** Stream the child's output to ours (for long, user-visible steps). */
  inheritOutput?: boolean;
  timeoutMs?: number;
  /** Turns a failed run into a more precise UserError (e.g. distilled apt messages). */
  explainFailure?: (result: RunResult) => UserError | undefined;
  signal?: AbortSignal;
}

export interface RunResult {
  command: string;
  exitCode: number;
  stdout: string;
  stderr: string;
}

/**
 * Run a program and capture its output. A failure becomes a UserError whose message
 * carries the command line (copy-pasteable) and whose hint carries the end of stderr.
 */
export async function run(file: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const command = formatCommand(file, args, options.env);
  const execaOptions: ExecaOptions = {
    reject: false,
    stripFinalNewline: false,
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
    ...(options.cwd !== undefined && { cwd: options.cwd }),
    ...(options.env !== undefined && { env: options.env }),
    ...(options.cleanEnv && { extendEnv: false }),
    ...(options.input !== undefined && { input: options.input }),
    ...(options.timeoutMs !== undefined && { timeout: options.timeoutMs }),
    ...(options.signal !== undefined && { cancelSignal: options.signal }),
    ...(options.inheritOutput ? { stdout: ['pipe', 'inherit'], stderr: ['pipe', 'inherit'] } : {}),
  };
  // execa is loaded on first use: most CLI invocations (pack, inspect) never spawn anything,
  // and start-up time is measured by the benchmarks.
  const { execa } = await import('execa');
  const result = await execa(file, args as string[], execaOptions);
  const runResult: RunResult = {
    command,
    exitCode: typeof result.exitCode === 'number' ? result.exitCode : -1,
    stdout: String(result.stdout ?? ''),
    stderr: String(result.stderr ?? ''),
  };
  const cause = (result as { cause?: unknown }).cause;
  if (isErrnoException(cause) && cause.code === 'ENOENT' && result.exitCode === undefined) {
    throw new UserError('MISSING_TOOL', `${file} is not installed`, {
      hint: `install the package that provides ${file} (e.g. apt-get install …)`,
    });
  }
  const ok = options.okExitCodes ?? [0];
  if (result.failed || !ok.includes(runResult.exitCode)) {
    const explained = options.explainFailure?.(runResult);
    if (explained) throw explained;
    const how = result.timedOut
      ? 'timed out'
      : result.signal
        ? `was killed by ${result.signal}`
        : `exited with ${runResult.exitCode}`;
    throw new UserError('COMMAND_FAILED', `command ${how}: ${command}`, {
      hint: lastLines(runResult.stderr || runResult.stdout, 5) || undefined,
    });
  }
  return runResult;
}

/** The last n non-empty lines of a text, joined: the part of a tool's output that says why. */
export function lastLines(text: string, n: number): string {
  return text
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l.length > 0)
    .slice(-n)
    .join('\n');
}

/** Is a program on PATH? */
export async function hasCommand(name: string): Promise<boolean> {
  const { execa } = await import('execa');
  const result = await execa('sh', ['-c', `command -v ${shellQuote(name)}`], { reject: false });
  return result.exitCode === 0;
}

export async function requireCommands(names: readonly string[], hint?: string): Promise<void> {
  for (const name of names) {
    if (!(await hasCommand(name))) {
      throw new UserError('MISSING_TOOL', `${name} is not installed`, {
        hint: hint ?? `install it with your package manager (Debian: apt-get install the package providing ${name})`,
      });
    }
  }
}
