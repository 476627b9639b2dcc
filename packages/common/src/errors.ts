/**
 * The one user-facing error type. Anything the user can fix (bad input, a missing
 * tool, a package that does not exist, an unreachable mirror) is a UserError with a
 * stable code and, where we know one, a hint. Plain `Error` means a bug in this program.
 * Only the CLI turns errors into exit codes.
 */
export type ErrorCode =
  | 'USAGE'
  | 'CONFIG'
  | 'PRESET_NOT_FOUND'
  | 'NOT_ROOT'
  | 'MISSING_TOOL'
  | 'COMMAND_FAILED'
  | 'PACKAGE_NOT_FOUND'
  | 'DEPENDENCY_CONFLICT'
  | 'MIRROR_UNREACHABLE'
  | 'SCRIPTLET_FAILED'
  | 'KERNEL_NOT_FOUND'
  | 'MODULE_NOT_FOUND'
  | 'INPUT'
  | 'UNSAFE_PATH'
  | 'ARCHIVE_CORRUPT'
  | 'ARCHIVE_LIMIT'
  | 'FILE_CHANGED'
  | 'IO'
  | 'SYSEXT'
  | 'SIGNING'
  | 'CACHE';

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
