/**
 * The one user-facing error type. Anything the user can fix (bad input, a missing
 * tool, a package that does not exist, an unreachable mirror) is a UserError with a
 * stable code and, where we know one, a hint. Plain `Error` means a bug in this program.
 * Only the CLI turns errors into exit codes.
 */
export const ERROR_CODES = [
  'USAGE',
  'CONFIG',
  'PRESET_NOT_FOUND',
  'NOT_ROOT',
  'MISSING_TOOL',
  'COMMAND_FAILED',
  'PACKAGE_NOT_FOUND',
  'DEPENDENCY_CONFLICT',
  'MIRROR_UNREACHABLE',
  'SIGNATURE',
  'SCRIPTLET_FAILED',
  'KERNEL_NOT_FOUND',
  'MODULE_NOT_FOUND',
  'INPUT',
  'UNSAFE_PATH',
  'ARCHIVE_CORRUPT',
  'ARCHIVE_LIMIT',
  'FILE_CHANGED',
  'IO',
  'SYSEXT',
  'SIGNING',
  'CACHE',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/**
 * The exit status of each code (design.md §2): 2 for usage errors, 1 for everything
 * else the user can fix. The CLI is the only place that uses it.
 */
export function exitStatusOf(code: ErrorCode): 1 | 2 {
  return code === 'USAGE' ? 2 : 1;
}

export interface UserErrorOptions {
  hint?: string;
  cause?: unknown;
}

export class UserError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: UserErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'UserError';
    this.code = code;
    this.hint = options.hint;
  }
}

export function isUserError(error: unknown): error is UserError {
  return error instanceof UserError;
}

/** Node's fs errors carry a `code` such as ENOENT; this narrows to them. */
export function isErrnoException(error: unknown): error is NodeJS.ErrnoException {
  return error instanceof Error && typeof (error as NodeJS.ErrnoException).code === 'string';
}

/**
 * errno codes that describe the machine, not this program: a full or read-only file
 * system, a quota, a missing permission, a missing file that was named. They are the
 * user's situation to fix (one line naming the path), never "this is a bug".
 */
const ENVIRONMENT_ERRNOS: Record<string, string> = {
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EROFS: 'read-only file system',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EIO: 'input/output error',
  EMFILE: 'too many open files',
  ENFILE: 'too many open files in the system',
  ENOMEM: 'out of memory',
  EFBIG: 'file too large for the file system',
  ENAMETOOLONG: 'file name too long',
  ELOOP: 'too many levels of symbolic links',
  EISDIR: 'is a directory',
  ENOTDIR: 'a path component is not a directory',
  ENOENT: 'no such file or directory',
};

/**
 * Failures of the machine itself, whatever was being done: never a bug in this program.
 * (ENOENT, EISDIR, ENOTDIR … are not here: a path that reaches a system call unchecked is
 * a missing validation, which the "this is a bug" report should surface.)
 */
export const MACHINE_ERRNOS = ['ENOSPC', 'EDQUOT', 'EROFS', 'EACCES', 'EPERM', 'EIO', 'EMFILE', 'ENFILE', 'ENOMEM', 'EFBIG'] as const;

/** What can go wrong while writing an output that is not about its inputs. */
export const OUTPUT_ERRNOS = ['ENOSPC', 'EDQUOT', 'EROFS', 'EFBIG', 'EIO'] as const;

/** The same situations as printed by tools (strerror texts in a child's stderr). */
const ENVIRONMENT_TEXTS: Array<[RegExp, string]> = [
  [/No space left on device/i, 'ENOSPC'],
  [/Disk quota exceeded/i, 'EDQUOT'],
  [/Read-only file system/i, 'EROFS'],
];

/** The errno code of an environment failure in `error` (own errno, or a tool's stderr), else undefined. */
export function environmentErrno(error: unknown, codes: readonly string[] = Object.keys(ENVIRONMENT_ERRNOS)): string | undefined {
  if (isErrnoException(error) && error.code && codes.includes(error.code)) return error.code;
  if (error instanceof UserError) {
    const text = `${error.message}\n${error.hint ?? ''}`;
    for (const [re, code] of ENVIRONMENT_TEXTS) if (codes.includes(code) && re.test(text)) return code;
  }
  return undefined;
}

/**
 * A failure of the environment while working on `path`, as one UserError('IO') line
 * that names the path; anything else is returned unchanged.
 */
export function asEnvironmentError(error: unknown, path: string | undefined, doing = 'cannot write', codes?: readonly string[]): unknown {
  const errno = environmentErrno(error, codes);
  if (!errno || (error instanceof UserError && error.code === 'IO')) return error;
  // A tool's failure whose stderr names the situation is reworded; other coded errors already say what they mean.
  if (error instanceof UserError && error.code !== 'COMMAND_FAILED') return error;
  const where = path ?? (isErrnoException(error) ? error.path : undefined);
  const hint = ['ENOSPC', 'EDQUOT', 'EFBIG'].includes(errno)
    ? 'free some space there, or choose another output location'
    : errno === 'EROFS'
      ? 'choose an output on a writable file system'
      : undefined;
  return new UserError('IO', `${where ? `${doing} ${where}` : 'failed'}: ${ENVIRONMENT_ERRNOS[errno]}`, { ...(hint && { hint }), cause: error });
}
