export { UserError, isUserError, isErrnoException } from './errors.js';
export type { ErrorCode, UserErrorOptions } from './errors.js';
export { createLogger, getLogger, setLogger, silentLogger } from './logger.js';
export type { Logger, LoggerOptions } from './logger.js';
export { run, shellQuote, formatCommand, lastLines, hasCommand, requireCommands, childEnvironment } from './run.js';
export {
  resolveTool,
  resolveToolSync,
  withToolsRoot,
  currentToolsRoot,
  findSystemTool,
  elfInterpreter,
  realpathInRoot,
  toolsRootInvocation,
  checkToolLibraries,
  packageForTool,
  SYSTEM_TOOL_DIRS,
  SYSTEM_PATH,
  HOST_TOOLS,
  TOOL_PACKAGES,
} from './tools.js';
export type { ToolsRoot, ResolvedTool } from './tools.js';
export type { RunOptions, RunResult } from './run.js';
export {
  safeComponents,
  resolveInsideRoot,
  isPathInside,
  createAtomicOutput,
  withAtomicOutput,
  pathExists,
} from './fs.js';
export type { AtomicOutput } from './fs.js';
export { createProgress, formatBytes } from './progress.js';
export type { Progress } from './progress.js';
export { hasGlob, globToRegExp, globToRegExpSource } from './glob.js';
export { createWorkDir } from './workdir.js';
export { defaultCacheDir, requireRoot, sourceDateEpochFromEnv } from './environment.js';
