import type { Options as ExecaOptions } from 'execa';
import { UserError, isErrnoException } from './errors.js';
import { SYSTEM_PATH, packageForTool, resolveTool, type ResolvedTool } from './tools.js';

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
  // By absolute path, from the build's tools root or the fixed system directories; never
  // through the caller's PATH (packages/common/src/tools.ts says why).
  const tool = await resolveTool(file);
  const command = formatCommand(tool.path, args, options.env);
  const execaOptions: ExecaOptions = {
    reject: false,
    stripFinalNewline: false,
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
    ...(options.cwd !== undefined && { cwd: options.cwd }),
    env: childEnvironment(tool, options.env),
    ...(options.cleanEnv && { extendEnv: false }),
    ...(options.input !== undefined && { input: options.input }),
    ...(options.timeoutMs !== undefined && { timeout: options.timeoutMs }),
    ...(options.signal !== undefined && { cancelSignal: options.signal }),
    ...(options.inheritOutput ? { stdout: ['pipe', 'inherit'], stderr: ['pipe', 'inherit'] } : {}),
  };
  // execa is loaded on first use: most CLI invocations (pack, inspect) never spawn anything,
  // and start-up time is measured by the benchmarks.
  const { execa } = await import('execa');
  const result = await execa(tool.file, [...tool.prefixArgs, ...args], execaOptions);
  const runResult: RunResult = {
    command,
    exitCode: typeof result.exitCode === 'number' ? result.exitCode : -1,
    stdout: String(result.stdout ?? ''),
    stderr: String(result.stderr ?? ''),
  };
  const cause = (result as { cause?: unknown }).cause;
  if (isErrnoException(cause) && cause.code === 'ENOENT' && result.exitCode === undefined) {
    throw new UserError('MISSING_TOOL', `${file} is not installed`, { hint: `apt-get install ${packageForTool(file)}` });
  }
  const ok = options.okExitCodes ?? [0];
  // With reject: false, execa's `failed` is also true for any non-zero exit, which would
  // make okExitCodes meaningless: only a run that did not end by itself is a failure here.
  const didNotExit = result.timedOut || result.isCanceled || result.signal !== undefined || result.exitCode === undefined;
  if (didNotExit || !ok.includes(runResult.exitCode)) {
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

/**
 * The environment of a child: PATH is always the fixed system directories (a shell
 * pipeline, apt's methods and dpkg's helpers then resolve like `run` does), plus what a
 * tools-root program needs to read its own root's configuration. The caller's values win.
 */
export function childEnvironment(tool: ResolvedTool, env: Record<string, string | undefined> | undefined): Record<string, string | undefined> {
  return { PATH: SYSTEM_PATH, ...tool.env, ...env };
}

/** Can `name` be run (from the tools root of this build, or the system directories)? */
export async function hasCommand(name: string): Promise<boolean> {
  try {
    await resolveTool(name);
    return true;
  } catch (error) {
    if (error instanceof UserError && error.code === 'MISSING_TOOL') return false;
    throw error;
  }
}

/** Fail early, naming the package to install, when a program is missing. */
export async function requireCommands(names: readonly string[], _hint?: string): Promise<void> {
  // Each error from resolveTool names the package (host) or the ToolsTreePackages= fix.
  for (const name of names) await resolveTool(name);
}
